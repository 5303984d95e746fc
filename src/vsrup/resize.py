"""Lanczos-3 resampling, antialiased when shrinking: Pillow's, on float32 planes, in parallel.

Used by the `lanczos` model, by alpha channels, and to bring a model's output to the asked size
(the x4 result down to x2, x3.5 or a --width). Pillow's resampler is the separable Lanczos-3 of the
definition (tests/test_resize.py holds it written out in numpy): pixel centres at half-integers (the
convention of OpenCV INTER_AREA and FFmpeg's swscale), so the frame's extent maps onto the frame's
extent, and the kernel widened by the shrink factor when shrinking, which is the antialiasing. It runs
on 32-bit float planes without clipping (values may overshoot [0, 1]) and releases the GIL, so the
planes of a window resize on all cores.

Why not the others (docs/benchmarks.md, "Lanczos preview"): OpenCV's INTER_LANCZOS4 is a fixed 8-tap
kernel that does not widen when shrinking (it aliases the x4 -> x2 step), and swscale's float path
differs from the definition by up to 9 levels of 255 on detailed frames, for no gain in speed here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
from PIL import Image


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="vsrup-resize")


def _plane(src: np.ndarray, dst: np.ndarray) -> None:
    """Resize one (h, w) float32 plane into ``dst`` (H, W)."""
    image = Image.fromarray(np.ascontiguousarray(src))  # float32 (h, w): mode F
    dst[...] = np.asarray(image.resize((dst.shape[1], dst.shape[0]), Image.Resampling.LANCZOS))


def lanczos_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize ``x`` of shape (..., h, w, C), float32, to (..., out_h, out_w, C). Values may overshoot [0, 1]."""
    x = x.astype(np.float32, copy=False)
    out = np.empty(x.shape[:-3] + (out_h, out_w, x.shape[-1]), np.float32)
    planes = x.reshape(-1, *x.shape[-3:])  # (N, h, w, C)
    targets = out.reshape(-1, out_h, out_w, x.shape[-1])  # (N, H, W, C), a view of out
    jobs = [(planes[n, ..., c], targets[n, ..., c]) for n in range(planes.shape[0]) for c in range(x.shape[-1])]
    list(_pool().map(lambda job: _plane(*job), jobs))  # waits for every plane, and re-raises a plane's error
    return out
