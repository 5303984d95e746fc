"""A job's progress as the library reports it: its stage, frames written, and model work done.

The pipeline tells the ``Tracker`` the frames it writes, the model runner the windows it samples and
the model's progress inside each (steps of a diffusion window). The tracker emits ``stage`` events and
one kind of ``progress`` event that carries both counts. Rates and times left are the renderer's
(``cli.Rate``): the library says what was done, the clock says when.
"""

from __future__ import annotations

import math

from vsrup.events import Emit, Event, ignore


def sampled_frames(frames: int, window: int, overlap: int) -> int:
    """Frames' worth of model work for ``frames`` frames in windows of ``window`` overlapping by ``overlap``:
    frames in an overlap are sampled twice (scene cuts, which shorten clips, are not foreseen)."""
    windows = max(1, math.ceil((frames - overlap) / max(1, window - overlap)))
    return frames + (windows - 1) * overlap


class Tracker:
    """Progress of one job: ``path`` the input, ``total`` frames expected (``estimated`` when the container
    did not say and duration x rate stands in), ``work_total`` frames' worth of model work expected."""

    def __init__(self, path: str = "", total: int | None = None, *, estimated: bool = False, window: int = 1, overlap: int = 0, emit: Emit = ignore):
        self.path, self.total, self.estimated, self.emit = path, total, estimated, emit
        self.work_total = sampled_frames(total, window, overlap) if total else None
        self.windows = None if not total else max(1, math.ceil((total - overlap) / max(1, window - overlap)))
        self.done = 0  # frames written
        self.work = 0.0  # frames' worth of model work done, fractions of a window included
        self.stage_name = None

    def stage(self, name: str, message: str, **data) -> None:
        """``name``: load|decode|flow|sample|finish; ``message`` says it to a person."""
        self.stage_name = name
        self.emit(Event("stage", path=self.path, message=message, data={"stage": name, **data}))

    def frames(self, done: int) -> None:
        self.done = done
        self._report()

    def worked(self, work: float) -> None:
        self.work = work
        self._report()

    def _report(self) -> None:
        self.emit(Event("progress", path=self.path, done=self.done, total=self.total,
                        data={"total_estimated": self.estimated, "work": round(self.work, 3), "work_total": self.work_total}))
