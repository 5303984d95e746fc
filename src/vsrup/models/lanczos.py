"""The non-neural baseline: separable Lanczos-3. A fast preview, and what diffusion is compared against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vsrup.resize import lanczos_resize


class LanczosUpscaler:
    def __init__(self, scale: int):
        self.scale = scale

    def upscale(self, frames: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        t, h, w, _ = frames.shape  # (T, h, w, 3)
        return lanczos_resize(frames, h * self.scale, w * self.scale)  # (T, H, W, 3)
