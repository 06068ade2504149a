"""The ``ckptlens`` command: one's own checkpoints in two commands, from any folder.

::

    ckptlens layers PATH                 what a checkpoint (or a folder of them) holds, and the target
                                         patterns that select each part
    ckptlens init PATH... [-o FILE]      a commented, valid config for those checkpoints (one run per PATH;
                                         hf:ORG/NAME for a repository's branches on the hub)
    ckptlens run CONFIG [snakemake ...]  the packaged workflow in the current folder, then report.html
    ckptlens report CONFIG [-o FILE]     the HTML report alone
    ckptlens fetch CONFIG                the hub revisions of CONFIG into the Hugging Face cache (on a
                                         login node with internet; the jobs then read them offline)

``layers`` and ``init`` read safetensors headers only (no tensor, no torch); a ``.pt``/``.bin`` state
dict is read through :func:`ckptlens.sources.readers.open_checkpoint` (``weights_only``: a pickle that
needs more is refused and no code in it runs). What training saves beside the weights
(``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``, ``training_args.bin``) is never opened.

``run`` and ``report`` hand over to Snakemake (``python -m snakemake``) with the packaged Snakefile,
``--configfile=CONFIG``, ``--directory`` the current folder (results/, logs and .snakemake/ go there,
never into the installed package) and the packaged workflow profile (``--profile slurm`` is the
packaged SLURM profile). Their own options (``--no-report``, ``--report-file``, ``-o``) may come
before or after CONFIG; every other option after CONFIG is Snakemake's. The packages the config's
runs and the report need are checked before Snakemake starts.

Errors are one line, ``ckptlens: error: ...`` naming the file or config key, exit status 2.

Here: the parser, :func:`main` and :class:`CLIError`; each command lives in its module
(:mod:`.layers`, :mod:`.init`, :mod:`.run` for ``run`` and ``report``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ckptlens.store import layout

EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(EXIT_USAGE, f"ckptlens: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from .fetch import DEFAULT_RECORD, cmd_fetch
    from .init import cmd_init
    from .layers import cmd_layers
    from .run import cmd_report, cmd_run

    parser = _Parser(
        prog="ckptlens",
        description="Per-layer training dynamics over a series of checkpoints: look inside them, write a config, "
        "run the workflow and its report.",
        epilog="Quick start: ckptlens init out/ && ckptlens run config.yaml --cores 4",
    )
    parser.add_argument("--version", action="version", version=f"ckptlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "layers",
        help="what a checkpoint holds: architecture, weight matrices, per-head pieces, modules, target patterns",
        description="What a checkpoint holds: the detected architecture (adapter), every weight matrix with its "
        "shape, the per-head pieces and circuits (…head{h}.q/.k/.v/.o/.qk/.ov), the modules activations and gradients "
        "can be captured on, and the target patterns that select each group. PATH is a .safetensors or .pt/.bin "
        "file, a save_pretrained or Trainer checkpoint folder, a shard index, or a folder (or glob) of "
        "checkpoints (then also the steps found, how each is read, and what was skipped and why), or "
        "hf:ORG/NAME[@REVISION] on the Hugging Face Hub (its branches as a series). Safetensors "
        "are read from their header only (on the hub by HTTP range requests); no optimizer state or other pickle "
        "beside the weights is opened.",
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help="a checkpoint file or folder, a shard index, a folder/glob of checkpoints, or hf:ORG/NAME[@REVISION]",
    )
    p.add_argument("--json", action="store_true", help="print everything as JSON instead of text")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser(
        "init",
        help="write a commented, valid config for a series of checkpoints (one run per PATH)",
        description="Write a commented config for the checkpoints at each PATH (a folder or glob of checkpoints; "
        "several PATHs = several runs, e.g. seeds): the source with the steps found, the architecture's default "
        "targets, a probe when a tokenizer is found beside the checkpoints (with a built-in probe text written "
        "next to the config as probe.txt), and a metric set that runs in minutes on a laptop for a model that "
        "size. The config is validated before it is written. hf:ORG/NAME: a repository's branches on the Hugging "
        "Face Hub (up to 32 log-spaced revisions; its tokenizer downloaded into tokenizers/ beside the config).",
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="a folder (or glob) of checkpoints, or hf:ORG/NAME; one run each"
    )
    p.add_argument(
        "-o", "--output", default="config.yaml", metavar="FILE", help="the config to write (default: %(default)s)"
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(func=cmd_init)

    snakemake_help = (
        "any Snakemake option or target, after CONFIG (e.g. --cores 4, -n, --profile slurm for the packaged "
        f"SLURM profile, --workflow-profile DIR, {layout.metrics_table('RUN')})"
    )
    p = sub.add_parser(
        "run",
        help="run the packaged workflow on CONFIG in the current folder, then write the HTML report",
        description=f"Run the packaged Snakemake workflow on CONFIG in the current folder ({layout.run_dir('<run>')}/, "
        "logs and .snakemake/ go here), locally or with --profile slurm, then write the HTML report. The packaged "
        "default workflow profile is used unless you give --workflow-profile (or --profile slurm); Snakemake applies "
        "it after a --profile of yours, so give --workflow-profile none to use your profile alone. Ctrl-C stops "
        "Snakemake cleanly; rerunning continues where it stopped.",
    )
    p.add_argument(
        "--report-file", default="report.html", metavar="FILE", help="the report to write (default: %(default)s)"
    )
    p.add_argument("--no-report", action="store_true", help="do not write the report")
    p.add_argument("config", metavar="CONFIG", help="the config (e.g. from `ckptlens init`)")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="SNAKEMAKE_OPTIONS", help=snakemake_help)
    p.set_defaults(func=cmd_run, own_options=p)

    p = sub.add_parser(
        "report",
        help="write the HTML report of CONFIG's results in the current folder",
        description="Write the Snakemake HTML report (figures and the PCA, correlation and dynamics tables) of "
        "the results in the current folder.",
    )
    p.add_argument(
        "-o", "--output", default="report.html", metavar="FILE", help="the report to write (default: %(default)s)"
    )
    p.add_argument("config", metavar="CONFIG", help="the config the results were computed with")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="SNAKEMAKE_OPTIONS", help=snakemake_help)
    p.set_defaults(func=cmd_report, own_options=p)

    p = sub.add_parser(
        "fetch",
        help="download the hub revisions of CONFIG into the Hugging Face cache, for jobs without internet",
        description="Download the revisions every huggingface-source run of CONFIG selects into the Hugging Face "
        "cache (HF_HOME / HF_HUB_CACHE, or the source's cache_dir), on a machine with internet such as a cluster's "
        "login node; the workflow's jobs then read them offline (HF_HUB_OFFLINE=1). Each revision is resolved to "
        "its commit and the disk needed is said before anything is downloaded; an interrupted fetch continues "
        "where it stopped when run again; a rate-limited request (HTTP 429) waits as long as the hub asks.",
    )
    p.add_argument("config", metavar="CONFIG", help="the config whose huggingface runs to fetch")
    p.add_argument("--run", action="append", metavar="RUN", help="only this run (repeatable)")
    p.add_argument("-n", "--dry-run", action="store_true", help="resolve and say the disk needed; download nothing")
    p.add_argument(
        "--interval", type=float, default=0.5, metavar="S", help="seconds between two requests (default: %(default)s)"
    )
    p.add_argument(
        "--workers", type=int, default=1, metavar="N", help="files of a revision at once (default: %(default)s)"
    )
    p.add_argument(
        "--attempts", type=int, default=5, metavar="N", help="tries per request before giving up (default: %(default)s)"
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=2.0,
        metavar="S",
        help="first wait after a failure without Retry-After, doubling (default: %(default)s)",
    )
    p.add_argument(
        "--record",
        default=DEFAULT_RECORD,
        metavar="FILE",
        help="where the resolved commits are written (default: %(default)s)",
    )
    p.set_defaults(func=cmd_fetch)
    return parser


def take_own_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Move ``parser``'s own options out of ``args.snakemake_args`` (everything after CONFIG, kept
    whole by REMAINDER, which argparse's intermixed parsing does not support) into ``args``:
    ``ckptlens run config.yaml --no-report`` is ckptlens's option, not Snakemake's. Only exact
    option names count (``--report`` stays Snakemake's, never a prefix of ``--report-file``)."""
    own = {o: a for a in parser._actions if a.option_strings and a.dest != "help" for o in a.option_strings}
    rest, out, i = list(args.snakemake_args), [], 0
    while i < len(rest):
        tok = rest[i]
        name, eq, value = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        action = own.get(name)
        if action is None:
            out.append(tok)
        elif action.nargs == 0:  # a flag
            if eq:
                parser.error(f"argument {name}: takes no value")
            setattr(args, action.dest, action.const)
        elif eq:
            setattr(args, action.dest, value)
        elif i + 1 < len(rest):
            i += 1
            setattr(args, action.dest, rest[i])
        else:
            parser.error(f"argument {name}: expected one argument")
        i += 1
    args.snakemake_args = out


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `ckptlens layers X | head`: the reader is gone, so is the output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "own_options", None) is not None:
        take_own_options(args.own_options, args)
    from ..sources import SourceError
    from ..sources.local import DiscoveryError
    from ..store.records import CheckpointError
    from ..store.requires import MissingDependency

    try:
        return args.func(args)
    except (CLIError, CheckpointError, DiscoveryError, SourceError, MissingDependency) as exc:
        print(f"ckptlens: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ckptlens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:
        if os.environ.get("CKPTLENS_DEBUG"):
            raise
        print(f"ckptlens: error: {exc} ({type(exc).__name__}; CKPTLENS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_USAGE
