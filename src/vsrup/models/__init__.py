"""The model contract: what the pipeline relies on from every model family, declared in one place.

A family is one module under ``models/`` (and its loop under ``sampling/`` if it has one). The
registry (``models/registry.py``) turns ``--model`` into a family and a source once; the family
module provides:

    FILES            hub.Layout | None       the files its folder must hold (None: no weights)
    PIPELINE_CLASSES tuple[str, ...]         model_index.json "_class_name"s that mark a folder as this family's
    settle(sample)   SampleConfig            its defaults filled in; a UsageError for options it refuses
    Model(source, config, emit)              the loaded model, with ``info`` and either
                                             ``sample`` (a clip model) or ``step`` (a sequential one)

The pipeline owns everything around the model: decoding, which frames go together (clips, scene
cuts, restart points), optical flow (estimated in a background thread on the low-resolution frames,
on the model's device), the memory plan and its out-of-memory retries (``memory.py``, from the
model's ``Cost``), the colour fix, the CPU time estimate, resizing to the asked scale, cross-fading
and encoding. A model sees only ``Window``s and a ``MemoryPlan``, and reports its progress.

Two kinds of model:

* **clip** (sd-x4, StableVSR, Upscale-A-Video): ``sample(window, plan, progress)`` gets consecutive frames with their
  input indices (which seed their noise) and, if ``info.flow``, the flow between neighbours, and
  returns outputs for the same frames. Windows (``--clip-len`` frames, or ``info.window``) overlap
  and are cross-faded by the pipeline; a frame's result may depend only on the window that holds it.
  A model whose frames are independent (lanczos) sets ``window`` 1: no overlap, nothing blended.
* **sequential** (causal models): ``step(window, state, plan, progress)`` gets one frame (T = 1) and
  the state returned for the previous frame, and returns (output, new state). ``state`` is None at
  a restart point: the first frame of a shot (a scene cut, a change of frame size), and every
  ``info.restart_every`` frames after it when that is set. Restart points depend only on the video,
  so a run that starts at one (``--frames``, a resumed or sharded job) gives the frames of a whole
  run. With a state, ``window.flow`` (if ``info.flow``) is the flow of the pair (previous frame,
  this frame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from vsrup.config import SampleConfig

    from vsrup.flow import Flow
    from vsrup.memory import Cost, MemoryPlan

Progress = Callable[[float], None]  # the fraction of the window's work done so far, 0 < f <= 1


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline needs to know about a loaded model, before it runs."""

    name: str  # the family's short name, for messages
    scale: int | None  # the factor the model produces; the pipeline resizes to the asked size when they differ. None: any size (lanczos)
    kind: Literal["clip", "sequential"]
    flow: bool  # the model wants ``Window.flow``
    generative: bool  # a diffusion model: its frames get the colour fix, and CPU jobs the time estimate
    cost: Cost | None  # its device calls, for the memory plan; None when it has no device work
    device: str = "cpu"  # where its work runs, a torch device name ("cpu", "cuda:0", "mps"): flow (RAFT) and plans go there
    restart_every: int | None = None  # sequential models: the state also restarts every this many frames
    window: int | None = None  # clip models: frames sampled together (overlapped by --clip-overlap); None = the job's --clip-len, 1 = frames independent


@dataclass(frozen=True)
class Window:
    """Consecutive low-resolution frames of one shot, as the model sees them."""

    frames: np.ndarray  # (T, h, w, 3) float32 RGB in [0, 1]
    indices: tuple[int, ...]  # each frame's 0-based position in the input; seeds its noise
    flow: Flow | None = None  # between neighbouring frames, on the low-resolution grid; None unless info.flow


class ClipModel(Protocol):
    info: ModelInfo

    def sample(self, window: Window, plan: MemoryPlan | None, progress: Progress) -> torch.Tensor | np.ndarray:
        """(T, h, w, 3) frames -> (T, h * scale, w * scale, 3) float32, nominally [0, 1]: a torch tensor on any
        device, or a numpy array (a model without torch). ``plan`` is None for a model without a ``cost``.

        Not clamped and not colour-fixed: the pipeline does both, in place. ``plan`` may change between calls
        (out-of-memory retries call again with a smaller one, and must get the same frames).
        """
        ...


class SequentialModel(Protocol):
    info: ModelInfo

    def step(self, window: Window, state: Any | None, plan: MemoryPlan | None, progress: Progress) -> tuple[torch.Tensor, Any]:
        """One frame (T = 1) and the previous frame's state (None at a restart) -> ((1, H, W, 3), state)."""
        ...


Model = ClipModel | SequentialModel


def settle_fixed(sample: SampleConfig, name: str, refused: dict[str, str], defaults: dict) -> SampleConfig:
    """``settle`` for a family with a fixed recipe: a UsageError for each option of ``refused`` (option -> why)
    that is set, for a scheduler other than ``defaults["scheduler"]`` and for fewer than 1 step; then ``defaults``."""
    from vsrup.errors import UsageError

    for option, why in refused.items():
        if getattr(sample, option) is not None:
            raise UsageError(f"--{option.replace('_', '-')} does not apply to --model {name}: {why}")
    sample = sample.with_defaults(defaults)
    if sample.scheduler != defaults["scheduler"]:
        raise UsageError(f"--model {name} samples with {defaults['scheduler']}, as published; got --scheduler {sample.scheduler}")
    if sample.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {sample.steps}")
    return sample
