"""color.py: AdaIN matches statistics, the wavelet fix swaps low frequencies and keeps detail, none is identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsrup.color import bicubic_upscale, color_fix, low_frequencies
from vsrup.errors import UsageError


def scene(t: int = 2, h: int = 24, w: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(upscaled output with fine detail, its bicubic reference from a 4x smaller input): (T, 4h, 4w, 3) each."""
    rng = np.random.default_rng(seed)
    lr = rng.random((t, h, w, 3)).astype(np.float32)  # (T, h, w, 3)
    ref = bicubic_upscale(lr, 4 * h, 4 * w)  # (T, 4h, 4w, 3)
    detail = 0.08 * rng.standard_normal((t, 4 * h, 4 * w, 3)).astype(np.float32)  # what the model "adds"
    return ref + detail, ref


def lows(x: np.ndarray) -> np.ndarray:
    return low_frequencies(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


def test_bicubic_upscale_matches_torch_and_keeps_type():
    torch.manual_seed(0)
    x = torch.rand(2, 5, 7, 3)
    up = bicubic_upscale(x, 20, 28)
    expected = F.interpolate(x.permute(0, 3, 1, 2), size=(20, 28), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1)
    assert isinstance(up, torch.Tensor) and torch.allclose(up, expected)
    up_np = bicubic_upscale(x.numpy(), 20, 28)
    assert isinstance(up_np, np.ndarray) and up_np.dtype == np.float32 and up_np.shape == (2, 20, 28, 3)


def test_none_is_identity():
    out, ref = scene()
    assert color_fix(out, ref, "none") is out


def test_adain_matches_reference_mean_and_std_per_frame_and_channel():
    out, ref = scene()
    cast = out * np.array([1.3, 0.8, 1.0], np.float32) + np.array([0.1, -0.05, 0.2], np.float32)
    fixed = color_fix(cast, ref, "adain")
    assert np.allclose(fixed.mean(axis=(1, 2)), ref.mean(axis=(1, 2)), atol=1e-5)
    assert np.allclose(fixed.std(axis=(1, 2)), ref.std(axis=(1, 2)), atol=1e-4)
    assert not np.allclose(cast.std(axis=(1, 2)), ref.std(axis=(1, 2)), atol=1e-2)  # there was something to fix


def test_wavelet_restores_low_frequencies_and_keeps_high_frequency_detail():
    out, ref = scene()
    cast = out + np.array([0.15, -0.1, 0.05], np.float32)  # a constant colour cast
    fixed = color_fix(cast, ref, "wavelet")
    # low band: the cast is gone and the low frequencies are ref's (the constant cancels exactly)
    assert np.abs(lows(fixed) - lows(ref)).mean() < 0.1 * np.abs(lows(cast) - lows(ref)).mean()
    assert np.allclose(fixed, color_fix(out, ref, "wavelet"), atol=1e-5)
    # high band: out's detail survives
    high_out = out - lows(out)
    high_fixed = fixed - lows(fixed)
    kept = 1.0 - np.square(high_fixed - high_out).mean() / np.square(high_out).mean()
    assert kept > 0.95


def test_wavelet_fixes_a_cast_that_varies_across_the_frame_and_adain_cannot():
    out, ref = scene(h=32, w=48)
    ramp = np.linspace(-0.15, 0.15, out.shape[2], dtype=np.float32)[None, None, :, None]  # a left-to-right tint
    cast = out + ramp * np.array([1.0, 0.0, -1.0], np.float32)
    err = {m: np.abs(lows(color_fix(cast, ref, m)) - lows(ref)).mean() for m in ("adain", "wavelet", "none")}
    assert err["wavelet"] < 0.2 * err["none"]
    assert err["adain"] > 0.5 * err["none"]


def test_adain_rescales_detail_that_wavelet_keeps():
    out, ref = scene()
    high_out = out - lows(out)
    energy = {}
    for method in ("adain", "wavelet"):
        fixed = color_fix(out, ref, method)
        energy[method] = np.square(fixed - lows(fixed)).mean() / np.square(high_out).mean()
    assert energy["wavelet"] == pytest.approx(1.0, abs=0.05)
    assert energy["adain"] < 0.95  # ref (bicubic) has a smaller std than the detailed output


def test_tensors_in_tensors_out_and_bad_arguments():
    out, ref = scene()
    fixed = color_fix(torch.from_numpy(out), torch.from_numpy(ref), "wavelet")
    assert isinstance(fixed, torch.Tensor) and np.allclose(fixed.numpy(), color_fix(out, ref, "wavelet"), atol=1e-6)
    with pytest.raises(UsageError, match="colour fix"):
        color_fix(out, ref, "histogram")
    with pytest.raises(ValueError, match="one shape"):
        color_fix(out, ref[:, :-1], "adain")
