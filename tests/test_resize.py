"""Lanczos resampling: exact sizes, flat fields stay flat, and it agrees with Pillow's Lanczos."""

import numpy as np
import pytest
from PIL import Image

from vsrup.resize import lanczos_resize


@pytest.mark.parametrize("h,w,oh,ow", [(5, 7, 20, 28), (121, 81, 363, 243), (64, 48, 32, 24), (9, 9, 3, 27), (1, 1, 4, 4)])
def test_exact_size_and_flat_field(h, w, oh, ow):
    flat = np.full((2, h, w, 3), 0.3, np.float32)
    out = lanczos_resize(flat, oh, ow)
    assert out.shape == (2, oh, ow, 3)
    assert np.abs(out - 0.3).max() < 1e-6


@pytest.mark.parametrize("size", [(1280, 960), (160, 120)])
def test_matches_pillow_lanczos_up_and_down(size):
    coarse = np.random.default_rng(0).random((31, 41, 3)).astype(np.float32)
    rgb = np.clip(lanczos_resize(coarse, 240, 320) * 255, 0, 255).round().astype(np.uint8)  # smooth: no clipping between passes
    ref = np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS)).astype(np.float32)
    ours = np.clip(lanczos_resize(rgb.astype(np.float32), size[1], size[0]), 0, 255)
    assert np.abs(ours - ref).mean() < 0.5  # Pillow rounds and clips between its two passes; we do not
    assert np.abs(ours - ref).max() <= 2.5  # Pillow rounds twice in fixed point
