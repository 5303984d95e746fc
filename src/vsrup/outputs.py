"""Output safety: where results go, and the guarantee that nothing half-written is ever left.

Every output is written to a temporary file in the output's own directory (so the final rename
is atomic, a POSIX guarantee within one file system) whose name keeps the real extension (FFmpeg
picks the container from it), then moved into place only once it is complete. On any failure,
Ctrl-C or SIGTERM the temporary file is removed.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vsrup.errors import Interrupted, OutputError, UsageError, VsrupError


def check_output(source: Path, target: Path, *, overwrite: bool) -> None:
    """Refuse an output that is the input, or that exists without ``overwrite``."""
    if target.resolve() == source.resolve() or (target.exists() and os.path.samefile(source, target)):
        raise UsageError(f"{target}: output is the input; vsrup never modifies its input")
    if target.exists() and not overwrite:
        raise UsageError(f"{target}: output exists; pass --overwrite to replace it or --skip-existing to keep it")
    if target.is_dir():
        raise UsageError(f"{target}: output is a directory")


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` if the block succeeds."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(target, e) from None
    partial = target.with_name(f".{target.stem}.vsrup-{os.getpid()}.partial{target.suffix}")
    try:
        yield partial
        os.replace(partial, target)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise output_error(target, e) from None
    except VsrupError as e:
        partial.unlink(missing_ok=True)
        e.args = tuple(str(a).replace(str(partial), str(target)) for a in e.args)  # name the file the user asked for
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def output_error(target: Path, error: OSError) -> OutputError:
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno == errno.ENOSPC:
        reason = "no space left on device"
    return OutputError(f"{target}: cannot write output: {reason}")


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into an exception, so cleanup runs (Python's default kills at once).

    SIGINT already raises KeyboardInterrupt, unless the shell ignored it (a background job in a
    script): that choice is respected.
    """
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
