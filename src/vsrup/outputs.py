"""Output safety: where results go, and the guarantee that nothing half-written is ever left.

Every output is written to a temporary file in the output's own directory (so the final rename
is atomic, a POSIX guarantee within one file system) whose name keeps the real extension (FFmpeg
picks the container from it). Once it is complete it is committed: fsynced, moved into place, and
the directory fsynced, so a power cut leaves the old state or the new one. Without ``overwrite`` the
move never replaces a file: an output that appeared during the run (another job, the user) is left
alone, and the result is kept beside it under a visible name. On any failure, Ctrl-C or SIGTERM the
temporary file is removed; one left by a killed run (SIGKILL) is removed the next time the same output
is written. Signals that arrive during the commit are held: a job either completes or leaves nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vsrup.errors import Interrupted, OutputError, UsageError, VsrupError
from vsrup.events import Emit, Event, ignore

PARTIAL = re.compile(r"\.(?P<stem>.*)\.vsrup-(?P<pid>\d+)\.partial(?P<suffix>\.[^.]*)?")  # partial_path's names
SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # turned into Interrupted; SIGINT too unless the shell ignored it


def check_output(source: Path, target: Path, *, overwrite: bool) -> None:
    """Refuse an output that is the input, or that exists without ``overwrite``."""
    if target.resolve() == source.resolve() or (target.exists() and os.path.samefile(source, target)):
        raise UsageError(f"{target}: output is the input; vsrup never modifies its input")
    if target.exists() and not overwrite:
        raise UsageError(f"{target}: output exists; pass --overwrite to replace it or --skip-existing to keep it")
    if target.is_dir():
        raise UsageError(f"{target}: output is a directory")


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.stem}.vsrup-{os.getpid()}.partial{target.suffix}")


@contextmanager
def atomic_output(target: Path, *, overwrite: bool = False, emit: Emit = ignore) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; commit it onto ``target`` if the block succeeds."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(target, e) from None
    remove_stale_partials(target, emit)
    partial = partial_path(target)
    try:
        yield partial
    except OSError as e:
        discard(partial)
        raise output_error(target, e) from None
    except VsrupError as e:
        discard(partial)
        e.args = tuple(str(a).replace(str(partial), str(target)) for a in e.args)  # name the file the user asked for
        raise
    except BaseException:
        discard(partial)
        raise
    commit(partial, target, overwrite=overwrite)


def commit(partial: Path, target: Path, *, overwrite: bool) -> None:
    """fsync ``partial``, move it onto ``target`` (never replacing a file unless ``overwrite``), fsync the directory."""
    hold_signals()
    try:
        fsync(partial)
        if overwrite:
            os.replace(partial, target)
        else:
            move_no_replace(partial, target)
    except FileExistsError:
        kept = keep(partial, target)
        raise UsageError(
            f"{target}: output appeared during the run and was left alone; the result is kept as {kept} "
            "(pass --overwrite to replace it)"
        ) from None
    except OSError as e:
        discard(partial)
        raise output_error(target, e) from None
    try:
        fsync(target.parent)
    except OSError as e:  # the rename may not survive a crash: the job has failed, its output goes
        discard(target)
        raise output_error(target, e) from None


def keep(partial: Path, target: Path) -> Path:
    """Give a finished result whose target was taken a visible name beside it (the partial's own if that fails)."""
    kept = target.with_name(f"{target.stem}.vsrup-{os.getpid()}{target.suffix}")
    try:
        move_no_replace(partial, kept)
    except OSError:
        return partial
    return kept


def _libc_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28, musl >= 1.2.5
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_renameat2 = _libc_renameat2()
AT_FDCWD = -100
RENAME_NOREPLACE = 1
NO_SUPPORT = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)  # the call or the file system lacks it


def move_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` atomically unless ``dst`` exists (FileExistsError, nothing moved).

    renameat2(RENAME_NOREPLACE) where the kernel and file system have it; else a hard link (which
    fails if ``dst`` exists) and an unlink; on file systems with neither (FAT, some network and FUSE
    mounts), a check then a rename, which a file created between the two would lose to.
    """
    if _renameat2 is not None:
        if _renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in NO_SUPPORT:
            raise OSError(code, os.strerror(code), str(src), None, str(dst))  # EEXIST makes a FileExistsError
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in NO_SUPPORT + (errno.EMLINK,):
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.rename(src, dst)
        return
    try:
        os.unlink(src)
    except OSError:
        discard(dst)
        raise


NO_SYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)  # file systems that cannot sync (a directory, or at all)


def fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to the device, where the file system can."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in NO_SYNC:
            raise
    finally:
        os.close(fd)


def discard(path: Path) -> None:
    """Remove a file of ours, if it is there; cleanup never hides the error that caused it (EROFS, EIO)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def remove_stale_partials(target: Path, emit: Emit = ignore) -> None:
    """Remove temporary files of ``target`` left by runs that no longer exist (killed with SIGKILL, a crash)."""
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = PARTIAL.fullmatch(entry.name)
        if match is None or match["stem"] != target.stem or (match["suffix"] or "") != target.suffix:
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and not alive(pid):
            discard(entry)
            emit(Event("info", path=str(target), message=f"removed {entry}, the temporary file of an earlier run (process {pid}) that did not finish"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def output_error(target: Path, error: OSError) -> OutputError:
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno == errno.ENOSPC:
        reason = "no space left on device"
    return OutputError(f"{target}: cannot write output: {reason}")


# --- signals ------------------------------------------------------------------------------------------


class _Signals:
    held = False  # from a commit until the next job starts (or for good, once the work is over)
    pending: list[int] = []  # signals that arrived while held
    raised = False  # a SIGTERM or SIGHUP has been raised: the rest of a storm must not interrupt the cleanup


def _on_signal(signum, frame):
    if _Signals.held:
        _Signals.pending.append(signum)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt  # every time: a second Ctrl-C still stops a slow cleanup
    if not _Signals.raised:
        _Signals.raised = True
        raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into an exception, so cleanup runs (Python's default kills at once).

    Only the first is raised: a storm of them (a supervisor repeating SIGTERM) would otherwise
    interrupt the cleanup itself, and Python's shutdown. SIGINT raises KeyboardInterrupt as Python's
    own handler does, unless the shell ignored it (a background job in a script): that choice is
    respected. All three are held while an output is committed (``hold_signals``).
    """
    _Signals.held, _Signals.pending, _Signals.raised = False, [], False
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)


def hold_signals() -> None:
    """Keep signals pending from now on: a job whose output is (being) committed has completed.

    A signal that arrives during the commit, or after it, stops a batch before its next job
    (``release_signals``); after the last job it changes nothing.
    """
    _Signals.held = True


def release_signals() -> None:
    """A job starts: signals act again, and one that was held is raised now."""
    _Signals.held = False
    if _Signals.pending:
        signum = _Signals.pending[0]
        _Signals.pending = []
        _on_signal(signum, None)


def ignore_late_signals() -> None:
    """The work is over: a signal now would only interrupt Python's shutdown, or (once Python has put
    its default handlers back, which it does for every handler but SIG_IGN) kill it with the wrong code."""
    _Signals.raised = True  # meanwhile, our handler lets SIGTERM and SIGHUP pass
    for signum in SIGNALS + (signal.SIGINT,):
        if signal.getsignal(signum) is _on_signal:
            try:
                signal.signal(signum, signal.SIG_IGN)
            except OSError:  # "ignored due to race condition": one arrived while swapping; ours stays, and lets it pass
                pass
