"""Shared test helpers. Real media from public projects lives in ../shared/media when present."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def shared_media_files(*suffixes: str) -> list[Path]:
    """Files of ../shared/media with one of ``suffixes`` (all when none), or [] when it is absent."""
    if not SHARED_MEDIA.is_dir():
        return []
    return sorted(p for p in SHARED_MEDIA.iterdir() if p.is_file() and (not suffixes or p.suffix.lower() in suffixes))


@pytest.fixture
def shared_media() -> Path:
    if not SHARED_MEDIA.is_dir():
        pytest.skip("../shared/media is not present")
    return SHARED_MEDIA


@pytest.fixture
def run_vsrup(capsys):
    """``run_vsrup(*ARGS)``: ``vsrup ARGS`` through the console entry point in this process, as
    (exit code, stderr); its stdout is left in ``run_vsrup.stdout``. The signal handlers that main() installs, and the SIG_IGN it leaves after
    the work, are put back afterwards, so that Ctrl-C still stops pytest."""
    from vsrup.cli import main

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def run(*args) -> tuple[int, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        run.stdout = captured.out  # what the command printed on stdout, for the tests that read it
        return done.value.code, captured.err

    yield run
    for signum, handler in saved.items():
        signal.signal(signum, handler)
