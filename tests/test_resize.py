"""Lanczos resampling: exact sizes, flat fields stay flat, and it is the Lanczos-3 of the definition
(written out below in numpy, the implementation vsrup had before it used Pillow's)."""

import numpy as np
import pytest

from vsrup.resize import lanczos_resize

LOBES = 3


def reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Separable Lanczos-3, pixel centres at half-integers, the kernel widened by the shrink factor; edges replicate."""

    def axis(x, axis, n_out):
        n_in = x.shape[axis]
        scale = n_out / n_in
        stretch = max(1.0, 1.0 / scale)
        centres = (np.arange(n_out) + 0.5) / scale - 0.5
        reach = int(np.ceil(LOBES * stretch))
        src = np.floor(centres)[:, None] + np.arange(-reach, reach + 1)[None, :]  # (n_out, K)
        d = np.abs(src - centres[:, None]) / stretch
        w = np.where(d < LOBES, np.sinc(d) * np.sinc(d / LOBES), 0.0)
        w /= w.sum(axis=1, keepdims=True)
        taken = np.take(x, np.clip(src, 0, n_in - 1).astype(int), axis=axis)  # (..., n_out, K, ...)
        shape = [1] * taken.ndim
        shape[axis], shape[axis + 1] = n_out, w.shape[1]
        return (taken * w.reshape(shape)).sum(axis=axis + 1)

    return axis(axis(x.astype(np.float64), x.ndim - 3, out_h), x.ndim - 2, out_w)


@pytest.mark.parametrize("h,w,oh,ow", [(5, 7, 20, 28), (121, 81, 363, 243), (64, 48, 32, 24), (9, 9, 3, 27), (1, 1, 4, 4)])
def test_exact_size_and_flat_field(h, w, oh, ow):
    flat = np.full((2, h, w, 3), 0.3, np.float32)
    out = lanczos_resize(flat, oh, ow)
    assert out.shape == (2, oh, ow, 3) and out.dtype == np.float32
    assert np.abs(out - 0.3).max() < 1e-6


@pytest.mark.parametrize("size", [(1280, 960), (160, 120), (448, 336), (90, 200)], ids=["x4", "/2", "x1.4", "mixed"])
def test_is_the_lanczos3_of_the_definition_up_and_down(size):
    """Away from the edges the two agree to float32 precision, on noise (every tap shows). Within the kernel's
    reach of an edge the definition replicates the edge pixel and Pillow renormalises the in-frame taps: on
    picture-like (smooth) content that is within 1.5 levels of 255."""
    rng = np.random.default_rng(0)
    noise = rng.random((2, 240, 320, 3)).astype(np.float32)
    ours, ref = lanczos_resize(noise, size[1], size[0]), reference(noise, size[1], size[0])
    margin = 12  # output pixels: more than the widest kernel's reach (3 input px x the shrink factor 2)
    assert np.abs(ours - ref)[:, margin:-margin, margin:-margin].max() < 1e-4
    assert np.abs(ours - reference(noise[:, ::-1], size[1], size[0])).max() > 0.1  # the comparison can fail
    smooth = np.clip(reference(rng.random((1, 31, 41, 3)), 240, 320), 0, 1).astype(np.float32)
    assert np.abs(lanczos_resize(smooth, size[1], size[0]) - reference(smooth, size[1], size[0])).max() < 1.5 / 255


def test_overshoot_is_kept_not_clipped():
    step = np.zeros((1, 8, 16, 1), np.float32)
    step[..., 8:, :] = 1.0
    out = lanczos_resize(step, 32, 64)
    assert out.min() < -0.01 and out.max() > 1.01  # Lanczos rings at an edge; the pipeline clamps later
