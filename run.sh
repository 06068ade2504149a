#!/usr/bin/env bash
# Quick start: `./run.sh demo` (set up, run the demo, write the report) or `./run.sh test`
# (set up, run the test suite); `./run.sh test-fast` is the edit-test loop (no Snakemake runs, no
# model training: tests/workflow/ and tests/slurm/ are marked slow and left out), `./run.sh lint`
# the format and lint checks CI runs. Set-up is a local virtualenv in .venv; torch is installed as
# the exact CPU build 2.13.0 first, so pip never pulls a multi-GB CUDA build.
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
    echo "Done: results/runs/demo/ and report.html"
    ;;
  test)
    setup
    "$VENV/bin/python" -m pytest "${@:2}"
    ;;
  test-fast)
    setup
    "$VENV/bin/python" -m pytest -m "not slow" "${@:2}"
    ;;
  lint)
    setup
    "$VENV/bin/ruff" check src tests bench examples workflow/scripts
    "$VENV/bin/ruff" format --check src tests bench examples workflow/scripts
    "$VENV/bin/snakefmt" --check workflow
    "$VENV/bin/snakemake" --lint
    "$VENV/bin/snakemake" --lint --configfile tests/configs/catalogue.yaml
    ;;
  example)
    # ./run.sh example NAME [snakemake args]: one study from examples/NAME.yaml, its report in
    # reports/NAME.html. The MiniLM studies first fine-tune the model (once) into data/minilm, the
    # Llama study trains its series into data/llama_gqa.
    name=${2:?usage: ./run.sh example induction|linearity|two_tasks|minilm|llama_gqa|vit_digits|pythia_table}
    config="examples/$name.yaml"
    [ -f "$config" ] || { echo "no such example: $config" >&2; exit 2; }
    setup
    if grep -q "data/minilm" "$config" && { [ ! -f data/minilm/seed2/train_log.csv ] || [ ! -f data/minilm/probe_all.txt ]; }; then
      "$VENV/bin/python" examples/minilm/finetune.py --out data/minilm --seeds 0 1 2 --head-seed 0 --steps 60 --save-every 10
    fi
    if grep -q "data/vit_digits" "$config" && [ ! -f data/vit_digits/accuracy.csv ]; then
      "$VENV/bin/python" examples/vit_digits/finetune.py --out data/vit_digits --seeds 0 1 2
    fi
    if grep -q "data/llama_gqa" "$config" && [ ! -f data/llama_gqa/probe_tokens.npy ]; then
      "$VENV/bin/python" examples/llama/train.py --out data/llama_gqa
    fi
    "$VENV/bin/snakemake" --configfile "$config" "${@:3}"
    mkdir -p reports
    "$VENV/bin/snakemake" --configfile "$config" --report "reports/$name.html"
    echo "Done: results/figures/ and reports/$name.html"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: ./run.sh demo|test|test-fast|lint|setup|example NAME [extra snakemake/pytest arguments]" >&2
    exit 2
    ;;
esac
