"""Separable Lanczos-3 resampling in numpy, antialiased when shrinking.

Used by the `lanczos` model, by alpha channels, and to bring the x4 model's output down to
x2 or x3. Pixel centres sit at half-integers (the convention of PIL, OpenCV INTER_AREA and
FFmpeg's swscale), so a resize maps the frame's extent onto the frame's extent exactly.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

LOBES = 3


def _lanczos(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    out = np.sinc(x) * np.sinc(x / LOBES)
    out[x >= LOBES] = 0.0
    return out


@lru_cache(maxsize=64)
def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel of one axis, the source pixels it reads and their weights: (n_out, K) each.

    Weights sum to 1 per output pixel; source indices are clamped, so edges replicate.
    """
    scale = n_out / n_in
    stretch = max(1.0, 1.0 / scale)  # widen the kernel when shrinking: that is the antialiasing
    centres = (np.arange(n_out) + 0.5) / scale - 0.5  # (n_out,) source coordinate of each output pixel
    reach = int(np.ceil(LOBES * stretch))
    src = np.floor(centres)[:, None] + np.arange(-reach, reach + 1)[None, :]  # (n_out, K)
    w = _lanczos((src - centres[:, None]) / stretch)  # (n_out, K)
    w /= w.sum(axis=1, keepdims=True)
    return np.clip(src, 0, n_in - 1).astype(np.intp), w.astype(np.float32)


def _resample(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    index, weight = taps(x.shape[axis], n_out)  # (n_out, K)
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = np.zeros(x.shape[:axis] + (n_out,) + x.shape[axis + 1 :], np.float32)
    tap = np.empty_like(out)  # one output-sized scratch buffer, reused by every tap
    for k in range(index.shape[1]):
        np.take(x, index[:, k], axis=axis, out=tap)
        tap *= weight[:, k].reshape(shape)
        out += tap
    return out


def lanczos_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize ``x`` of shape (..., h, w, C), float32, to (..., out_h, out_w, C). Values may overshoot [0, 1]."""
    x = x.astype(np.float32, copy=False)
    y = _resample(x, x.ndim - 3, out_h)  # (..., out_h, w, C)
    return _resample(y, y.ndim - 2, out_w)  # (..., out_h, out_w, C)
