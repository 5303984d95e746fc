"""Running a loaded model on windows: what the pipeline owns around every model call.

For each window the pipeline hands over, ``ModelRunner``:
1. takes the window's optical flow from ``Flows`` (estimated a window ahead, in a background
   thread, on the model's device) when the model asks for it;
2. runs the model under the memory plan for the window's shape (``memory.Planner``), retrying with
   a smaller plan on CUDA out-of-memory (not in a resumable job: its plans are fixed by its budget);
3. on a CPU, estimates the job's duration from the first step of the first window, once;
4. colour-fixes a generative model's frames toward the bicubic input, clamps them to [0, 1], and
   resizes them to the asked size (antialiased Lanczos) when the model's own scale gives another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from vsrup.config import UpscaleConfig
from vsrup.events import Emit, Event, ignore
from vsrup.models import Model, Window
from vsrup.progress import Tracker, sampled_frames
from vsrup.resize import lanczos_resize


class Flows:
    """Flow of the coming windows, one estimated ahead in a background thread; closed on exit."""

    def __init__(self, model: Model, method: str):
        self.worker = None
        if model.info.flow:
            from vsrup.flow import FlowWorker

            self.worker = FlowWorker(method, model.info.device)
        self.pending: dict[tuple[int, ...], Future] = {}

    def prefetch(self, frames: np.ndarray, indices: tuple[int, ...]) -> None:
        """Start estimating the flow of frames (T, h, w, 3) that a coming window holds."""
        if self.worker is not None and len(indices) > 1 and indices not in self.pending:
            self.pending[indices] = self.worker.submit(frames)

    def ready(self, indices: tuple[int, ...]) -> bool:
        """Whether ``get`` for these frames returns without waiting for the flow to be estimated."""
        return self.worker is None or len(indices) < 2 or (indices in self.pending and self.pending[indices].done())

    def get(self, frames: np.ndarray, indices: tuple[int, ...]):
        """The Flow between neighbouring ``frames`` (T, h, w, 3); None when the model wants none or T = 1."""
        if self.worker is None or len(indices) < 2:
            return None
        self.prefetch(frames, indices)
        return self.pending.pop(indices).result()

    def __enter__(self) -> Flows:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.worker is not None:
            self.worker.close()


class ModelRunner:
    """Runs one model on the windows of one job (see the module doc)."""

    def __init__(self, model: Model, config: UpscaleConfig, total: int | None = None, emit: Emit = ignore, tracker: Tracker | None = None,
                 budget: int | None = None):
        s = config.sample
        self.model, self.config, self.emit = model, config, emit
        self.tracker = tracker or Tracker()  # the job's progress: this window's stage, and the model's work inside it
        self.windows = 0
        self.planner = None
        if model.info.cost is not None:
            import torch

            from vsrup.memory import Planner

            self.planner = Planner(model.info.cost, torch.device(model.info.device), s.tile, s.tile_overlap, s.batch, emit, budget)
        self.estimate = None
        if model.info.generative and model.info.device == "cpu":
            if model.info.kind == "sequential":  # every frame once; the first is a restart, cheaper than the rest: not timed
                self.estimate = CpuEstimate(total, 1, 0, emit, skip=1, compiling=s.compile)
            else:
                self.estimate = CpuEstimate(total, s.clip_len, s.clip_overlap, emit, compiling=s.compile)

    def run(self, window: Window, call: Callable[[Any, Callable[[float], None]], Any]) -> np.ndarray:
        """``call(plan, progress)`` -> the model's (T, H', W', 3) tensor; returns (T, H, W, 3) float32 at the asked scale."""
        t_frames, height, width, _ = window.frames.shape  # (T, h, w, 3)
        self.windows += 1
        tracker, base = self.tracker, self.tracker.work
        if self.model.info.window != 1 and self.model.info.kind == "clip":
            of = f"/{tracker.windows}" if tracker.windows else ""
            tracker.stage("sample", f"sampling clip {self.windows}{of}", clip=self.windows, clips=tracker.windows, frames=t_frames)
        elif self.windows == 1:  # independent frames, and a sequential model's steps: one stage, not one per frame
            tracker.stage("sample", "upscaling frames")
        estimate = self.estimate.watch(window) if self.estimate is not None and not self.estimate.done else ignore_progress

        def progress(fraction: float) -> None:
            estimate(fraction)
            tracker.worked(base + fraction * t_frames)

        if self.planner is None:
            out = call(None, progress)
        else:
            out = self.planner.run(lambda plan: call(plan, progress), t_frames, height, width)  # (T, H', W', 3)
        images = self.finish(out, window)
        tracker.worked(base + t_frames)
        return images

    def finish(self, out, window: Window) -> np.ndarray:
        """Colour fix (generative models), clamp, host copy, asked scale: (T, H', W', 3) -> (T, H, W, 3) float32.

        Frame by frame and in place in the model's float32 output, so the working set is one frame's
        colour fix beside the window (on a CPU job the device's memory is the host's).
        """
        if isinstance(out, np.ndarray):  # a model without torch (lanczos): no colour fix
            images = np.clip(out, 0.0, 1.0, out=out)  # (T, H', W', 3)
        else:
            images = self.fix_colours(out, window).clamp_(0, 1).cpu().numpy()  # (T, H', W', 3)
        width, height = self.config.output_size(window.frames.shape[2], window.frames.shape[1])
        if images.shape[1:3] == (height, width):
            return images
        return lanczos_resize(images, height, width)  # (T, H, W, 3)

    def fix_colours(self, out, window: Window):
        """The colour fix of a generative model's (T, H', W', 3) tensor toward the bicubic input, in place, a frame at a time."""
        import torch

        from vsrup.color import bicubic_upscale, color_fix

        method = self.config.sample.color_fix
        if self.model.info.generative and method != "none":
            for k in range(out.shape[0]):
                lr = torch.from_numpy(window.frames[k : k + 1]).to(out.device)  # (1, h, w, 3)
                out[k : k + 1] = color_fix(out[k : k + 1], bicubic_upscale(lr, out.shape[1], out.shape[2]), method)  # (1, H', W', 3)
        return out


def ignore_progress(fraction: float) -> None:
    """Progress nobody watches."""


class CpuEstimate:
    """The job's duration on a CPU, from the first progress report of its first window (after ``skip`` windows);
    one warning.

    With ``compiling`` (--compile) the first step also waits for torch.compile: the estimate is then
    timed from the first report to the next, so the compile time is not multiplied by the job's length.
    """

    def __init__(self, total: int | None, clip_len: int, overlap: int, emit: Emit, *, skip: int = 0, compiling: bool = False):
        self.total, self.clip_len, self.overlap, self.emit, self.skip = total, clip_len, overlap, emit, skip
        self.compiling = compiling
        self.done = False

    def watch(self, window: Window) -> Callable[[float], None]:
        if self.skip:
            self.skip -= 1
            return ignore_progress
        started, base = time.perf_counter(), 0.0
        t_frames, height, width, _ = window.frames.shape

        def progress(fraction: float) -> None:
            nonlocal started, base
            if self.done or fraction <= base:
                return
            now = time.perf_counter()
            if self.compiling:  # the first report came after the compile: time from here
                self.compiling, started, base = False, now, fraction
                return
            self.done = True
            per_frame = (now - started) / (fraction - base) / t_frames
            if self.total is None:
                scope = f"per frame of {width}x{height}"
                seconds = per_frame
            else:
                scope = f"for {self.total} frame(s) of {width}x{height}"
                seconds = per_frame * sampled_frames(self.total, self.clip_len, self.overlap)
            source = "the second step, after compiling" if base else "the first step of the first window"
            self.emit(Event(
                "warning",
                message=f"running on the CPU: about {duration(seconds)} {scope} (from {source})",
                data={"estimate_seconds": round(seconds, 1)},
            ))

        return progress


def duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
