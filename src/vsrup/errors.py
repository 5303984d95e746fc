"""User-facing errors. Each carries the process exit code the CLI returns for it.

The library raises these; the CLI prints ``vsrup: error: <message>`` on one line and exits
with ``exit_code``. Anything else that escapes is a bug (exit 1, still one line unless
``VSRUP_DEBUG=1``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1  # runtime failure: model, device, out of memory below the floor, bug
EXIT_USAGE = 2  # bad command line or options
EXIT_DATA = 65  # bad or unreadable input data (EX_DATAERR)
EXIT_IO = 74  # output I/O error: disk full, permission denied (EX_IOERR)
EXIT_SIGINT = 130  # interrupted by SIGINT (Ctrl-C)
EXIT_SIGTERM = 143  # terminated by SIGTERM


class VsrupError(Exception):
    """Base class: a message meant for the user, and an exit code."""

    exit_code = EXIT_RUNTIME


class UsageError(VsrupError):
    """The options or paths given make no sense (exit 2)."""

    exit_code = EXIT_USAGE


class InputDataError(VsrupError):
    """The input is missing, unreadable, corrupt, truncated or has no video (exit 65)."""

    exit_code = EXIT_DATA


class OutputError(VsrupError):
    """The output cannot be written: disk full, permission denied (exit 74)."""

    exit_code = EXIT_IO


class ModelError(VsrupError):
    """The model cannot be found, downloaded or loaded (exit 1)."""

    exit_code = EXIT_RUNTIME


class Interrupted(VsrupError):
    """The job was stopped by a signal; ``exit_code`` is 128 + signal number."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum
