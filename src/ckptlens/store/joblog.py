"""Job logs and warnings: what a workflow job prints and warns lands in its Snakemake log file."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path

from .requires import MissingDependency


def warn(msg: str) -> None:
    """A RuntimeWarning that is also printed to stderr (so that the job log has it even where
    Python's warning filters would show it once or not at all)."""
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    print(f"WARNING: {msg}", file=sys.stderr)


def peak_rss_mib() -> float:
    """The largest resident set this process has had, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def job_log(path):
    """Send a job's prints and warnings to its log file (and keep a copy on stderr on failure); a
    job that succeeds ends its log with its peak memory, one that lacks a package
    (:class:`~.requires.MissingDependency`) with that one line and exit status 1."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as log:
        old_out, old_err, old_show = sys.stdout, sys.stderr, warnings.showwarning
        buf = io.StringIO()

        class Tee(io.TextIOBase):
            def write(self, s):
                log.write(s)
                buf.write(s)
                return len(s)

            def flush(self):
                log.flush()

        sys.stdout = sys.stderr = Tee()
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: log.write(
            warnings.formatwarning(m, c, f, n, line)
        )
        try:
            yield
            print(f"peak memory: {peak_rss_mib():.0f} MiB")
        except MissingDependency as exc:  # one line, no traceback: the fix is an install
            print(f"ERROR: {exc}")
            sys.stdout, sys.stderr = old_out, old_err
            old_err.write(buf.getvalue()[-4000:])
            raise SystemExit(1) from None
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stdout, sys.stderr = old_out, old_err
            old_err.write(buf.getvalue()[-4000:])
            raise
        finally:
            sys.stdout, sys.stderr, warnings.showwarning = old_out, old_err, old_show
