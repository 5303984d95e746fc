"""The non-neural baseline: separable Lanczos-3. A fast preview, and what diffusion is compared against.

No torch: the preview path starts without it.
"""

from __future__ import annotations

import numpy as np

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.events import Emit, Event, ignore
from vsrup.models import ModelInfo, Progress, Window
from vsrup.resize import lanczos_resize

FILES = None  # no weights
PIPELINE_CLASSES = ()  # no folder holds it


def settle(sample: SampleConfig) -> SampleConfig:
    """Lanczos has no sampler: the sampler and temporal options do not change its frames."""
    return sample


class Model:
    def __init__(self, source: str | None, config: UpscaleConfig, emit: Emit = ignore):
        if config.device not in ("auto", "cpu"):
            emit(Event("warning", message=f"--model lanczos runs on the CPU; --device {config.device} is ignored"))
        # Native at every asked size (scale None): the pipeline has nothing to resize. Frames are independent: windows of one.
        self.info = ModelInfo(name="lanczos", scale=None, kind="clip", flow=False, generative=False, cost=None, window=1)
        self.config = config

    def sample(self, window: Window, plan: None, progress: Progress) -> np.ndarray:
        t, h, w, _ = window.frames.shape  # (T, h, w, 3)
        out_w, out_h = self.config.output_size(w, h)
        return lanczos_resize(window.frames, out_h, out_w)  # (T, H, W, 3)
