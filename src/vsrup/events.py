"""Progress events. The library never prints: it calls ``emit(Event)`` and the CLI renders it.

Kinds: ``start`` (a job begins; ``total`` frames if known), ``progress`` (``done`` of ``total``),
``info`` (a decision worth telling: model, tile size, deinterlacing), ``warning`` (something was
changed or dropped), ``done`` (output written), ``skipped`` (``--skip-existing``), ``error``,
``download`` (bytes ``done`` of ``total`` of the model file named in ``message``), ``memory`` (the
host memory a job's frames need, in ``data``; for scripts: the console shows it only with --log-json),
and ``unit`` (a resumable job's unit starts, is done, was done before, or is retried; docs/jobs.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str  # start|progress|info|warning|done|skipped|error|download|memory|unit
    path: str = ""  # the input the event is about
    message: str = ""
    done: int = 0  # frames finished so far
    total: int | None = None  # frames expected; None when the container does not say
    data: dict[str, Any] = field(default_factory=dict)


Emit = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default sink: drop every event."""
