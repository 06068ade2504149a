#!/usr/bin/env bash
# Quick start: `./run.sh demo` (set up, run the demo, write the report) or `./run.sh test`
# (set up, run the test suite). Set-up is a local virtualenv in .venv; torch is installed as the
# exact CPU build 2.13.0 first, so pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv

setup() {
  if [ ! -f "$VENV/.ckptlens-installed" ] || [ pyproject.toml -nt "$VENV/.ckptlens-installed" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "torch==2.13.0"
    "$VENV/bin/pip" install -q -e '.[test]'
    touch "$VENV/.ckptlens-installed"
  fi
}

case "${1:-}" in
  demo)
    setup
    "$VENV/bin/snakemake" "${@:2}"
    "$VENV/bin/snakemake" --report report.html
    echo "Done: results/demo/ and report.html"
    ;;
  test)
    setup
    "$VENV/bin/python" -m pytest "${@:2}"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: ./run.sh demo|test|setup [extra snakemake/pytest arguments]" >&2
    exit 2
    ;;
esac
