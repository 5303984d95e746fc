"""Output safety through the real entry point: the commit never replaces what it must not, is durable,
and a failure at any layer (write, flush, rename) leaves neither a partial file nor an output.

Faults are injected at the lowest layer vsrup controls: the file object the muxer writes through,
os.fsync, and the rename itself (renameat2, os.link, os.replace).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

import media_factory as mf
from vsrup import outputs
from vsrup.media import encode
from vsrup.media.encode import VideoWriter

SRC = Path(__file__).resolve().parents[1] / "src"


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the commit ------------------------------------------------------------------------------------


def test_an_output_that_appears_during_the_run_is_left_alone_and_the_result_kept_beside_it(tmp_path, monkeypatch, run_vsrup):
    src = mf.long_mkv(tmp_path, frames=40)
    out = tmp_path / "o.mkv"
    write = VideoWriter.write

    def someone_else_writes_the_output(self, image, pts):
        if not out.exists():
            out.write_bytes(b"precious")
        write(self, image, pts)

    monkeypatch.setattr(VideoWriter, "write", someone_else_writes_the_output)
    code, err = run_vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert code == 2, err
    assert out.read_bytes() == b"precious"
    kept = tmp_path / f"o.vsrup-{os.getpid()}.mkv"
    assert err.startswith("vsrup: error: ") and err.count("\n") == 1 and str(kept) in err and "--overwrite" in err, err
    assert frame_count(kept) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name, kept.name])


def test_overwrite_replaces_an_output_that_appears_during_the_run(tmp_path, monkeypatch, run_vsrup):
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "o.mp4"
    write = VideoWriter.write

    def appears(self, image, pts):
        out.write_bytes(b"old")
        write(self, image, pts)

    monkeypatch.setattr(VideoWriter, "write", appears)
    code, err = run_vsrup("upscale", src, out, "-m", "lanczos", "-s", "2", "--overwrite")
    assert code == 0, err
    assert frame_count(out) == 12


@pytest.mark.parametrize("fallback", ["renameat2", "link", "check-then-replace"])
def test_the_no_replace_move_refuses_an_existing_file_on_every_path(tmp_path, monkeypatch, fallback):
    if fallback != "renameat2":
        monkeypatch.setattr(outputs, "_renameat2", None)
    elif outputs._renameat2 is None:
        pytest.skip("no renameat2 in this libc")
    if fallback == "check-then-replace":

        def no_hard_links(src, dst):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(os, "link", no_hard_links)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"new")
    b.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        outputs.move_no_replace(a, b)
    assert a.read_bytes() == b"new" and b.read_bytes() == b"old"
    outputs.move_no_replace(a, c)
    assert not a.exists() and c.read_bytes() == b"new"


def test_video_output_is_fsynced_before_the_rename_and_its_directory_after(tmp_path, monkeypatch, run_vsrup):
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "out" / "o.mp4"
    synced = []
    fsync = os.fsync

    def recording_fsync(fd):
        synced.append((Path(os.readlink(f"/proc/self/fd/{fd}")), out.exists()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    code, err = run_vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert code == 0, err
    (file, moved_before), (folder, moved_after) = synced
    assert file.parent == out.parent and file.name.endswith(".partial.mp4") and not moved_before
    assert folder == out.parent and moved_after


# --- injected faults --------------------------------------------------------------------------------


def inject(monkeypatch, stage: str, code: int) -> None:
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if stage == "write":  # the file object the muxer writes through: the header gets out, then the disk fails

        class Failing(io.BufferedWriter):
            writes = 0

            def write(self, data):
                Failing.writes += 1
                if Failing.writes > 1:
                    fail()
                return super().write(data)

        monkeypatch.setattr(encode, "open", lambda path, mode: Failing(io.FileIO(path, mode)), raising=False)
    elif stage == "flush":
        monkeypatch.setattr(os, "fsync", fail)
    else:  # rename: whichever way the move goes

        def renameat2(*args):
            ctypes.set_errno(code)
            return -1

        monkeypatch.setattr(outputs, "_renameat2", renameat2, raising=False)
        monkeypatch.setattr(os, "link", fail)
        monkeypatch.setattr(os, "replace", fail)
        monkeypatch.setattr(os, "rename", fail)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS], ids=errno.errorcode.get)
@pytest.mark.parametrize("stage", ["write", "flush", "rename"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_injected_io_faults_exit_74_in_one_line_and_leave_nothing(tmp_path, monkeypatch, run_vsrup, stage, code, overwrite):
    src = mf.mp4_aac(tmp_path)
    before = sha(src)
    out = tmp_path / "out" / "o.mp4"
    inject(monkeypatch, stage, code)
    code_, err = run_vsrup("upscale", src, out, "-m", "lanczos", "-s", "2", *(["--overwrite"] if overwrite else []))
    assert code_ == 74, err
    assert err.startswith(f"vsrup: error: {out}: ") and err.count("\n") == 1, err
    assert os.strerror(code).lower() in err.lower()
    assert list(out.parent.iterdir()) == []
    assert sha(src) == before


def test_a_read_only_file_system_is_exit_74_not_the_cleanup_s_own_error(tmp_path, monkeypatch, run_vsrup):
    """On a read-only file system, open() fails with EROFS and so does the cleanup's unlink, file or not."""
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "ro" / "o.mp4"
    out.parent.mkdir()
    unlink = os.unlink

    def read_only(path, *args, **kwargs):
        if Path(path).parent == out.parent:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(encode, "open", read_only, raising=False)
    monkeypatch.setattr(os, "unlink", read_only)
    code, err = run_vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert code == 74, err
    assert err == f"vsrup: error: {out}: cannot write output: Read-only file system\n"


# --- temporary files of dead runs -------------------------------------------------------------------


def test_stale_partials_of_dead_processes_are_removed_and_live_ones_kept(tmp_path, run_vsrup):
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "o.mp4"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".o.vsrup-{dead.pid}.partial.mp4"
        running = tmp_path / f".o.vsrup-{alive.pid}.partial.mp4"
        other = tmp_path / f".other.vsrup-{dead.pid}.partial.mp4"
        for path in (stale, running, other):
            path.write_bytes(b"half")
        code, err = run_vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
        assert code == 0, err
        assert not stale.exists() and running.exists() and other.exists()
        assert f"removed {stale}" in err
    finally:
        alive.kill()
        alive.wait()


# --- signals around the commit ----------------------------------------------------------------------


SLOW_RENAME = """
import os, sys, time
from pathlib import Path
replace = os.replace
def slow(src, dst):
    replace(src, dst)  # the rename is done; a signal handled now must not make the job look failed
    Path(sys.argv[-1] + ".renamed").touch()
    time.sleep(2)
os.replace = slow
from vsrup.cli import main
main(sys.argv[1:-1])
"""


def test_sigterm_during_the_final_rename_either_completes_or_leaves_nothing(tmp_path):
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "o.mp4"
    marker = tmp_path / "o.mp4.renamed"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["upscale", str(src), str(out), "-m", "lanczos", "-s", "2", "--overwrite"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RENAME, *args, str(out)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the run never reached the rename"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, out.exists()) in ((0, True), (143, False)), (proc.returncode, err)
    if out.exists():
        assert frame_count(out) == 12


def test_ignoring_late_signals_survives_a_signal_that_races_the_swap(monkeypatch):
    """CPython refuses `signal.signal(SIGTERM, SIG_IGN)` with "ignored due to race condition" when a SIGTERM
    arrives during the call (seen once in a storm in CI): the work is over, so that must not be a traceback."""
    from vsrup import outputs

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    real = signal.signal

    def racing(signum, handler):
        if handler is signal.SIG_IGN:
            raise OSError(f"Signal {signum} ignored due to race condition")
        return real(signum, handler)

    try:
        outputs.install_signal_handlers()
        monkeypatch.setattr(signal, "signal", racing)
        outputs.ignore_late_signals()  # raised before
        monkeypatch.setattr(signal, "signal", real)
        outputs._on_signal(signal.SIGTERM, None)  # and a late SIGTERM passes through our handler quietly
    finally:
        for signum, handler in saved.items():
            real(signum, handler)
