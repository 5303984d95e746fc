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
def weights(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix that resamples one axis; rows sum to 1, edges replicate."""
    scale = n_out / n_in
    stretch = max(1.0, 1.0 / scale)  # widen the kernel when shrinking: that is the antialiasing
    centres = (np.arange(n_out) + 0.5) / scale - 0.5  # (n_out,) source coordinate of each output pixel
    support = LOBES * stretch
    taps = np.arange(-int(np.ceil(support)), int(np.ceil(support)) + 1)  # (K,)
    src = np.floor(centres)[:, None] + taps[None, :]  # (n_out, K) source pixel of each tap
    w = _lanczos((src - centres[:, None]) / stretch)  # (n_out, K)
    w /= w.sum(axis=1, keepdims=True)
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.repeat(np.arange(n_out), len(taps))
    np.add.at(matrix, (rows, np.clip(src, 0, n_in - 1).astype(np.int64).ravel()), w.ravel())
    return matrix.astype(np.float32)


def lanczos_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize ``x`` of shape (..., h, w, C), float32, to (..., out_h, out_w, C). Values may overshoot [0, 1]."""
    h, w, c = x.shape[-3:]
    lead = x.shape[:-3]
    x = x.astype(np.float32, copy=False).reshape(-1, h, w * c)  # (N, h, w*C)
    y = np.matmul(weights(h, out_h), x)  # (N, out_h, w*C)
    y = y.reshape(-1, out_h, w, c).transpose(0, 1, 3, 2)  # (N, out_h, C, w)
    y = np.matmul(y, weights(w, out_w).T)  # (N, out_h, C, out_w)
    return np.ascontiguousarray(y.transpose(0, 1, 3, 2)).reshape(*lead, out_h, out_w, c)  # (..., out_h, out_w, C)
