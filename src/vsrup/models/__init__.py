"""Upscalers: a clip of RGB frames in, the same frames x ``scale`` out.

``load_upscaler`` is the one entry point; ``registry`` is the only module that names Hub repos
and diffusers classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from vsrup.config import UpscaleConfig
from vsrup.events import Emit, ignore


class Upscaler(Protocol):
    scale: int  # the factor the model produces; the pipeline resizes to the asked scale when they differ

    def upscale(self, frames: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        """(T, h, w, 3) float32 in [0, 1] -> (T, h*scale, w*scale, 3) float32.

        ``indices`` are the frames' 0-based positions in the input; they seed the noise, so a
        frame's result does not depend on which clip or run it was sampled in. The returned array
        is the caller's: the cross-fade blends into it in place.
        """
        ...


def load_upscaler(config: UpscaleConfig, emit: Emit = ignore) -> Upscaler:
    from vsrup.models.registry import load

    return load(config, emit)
