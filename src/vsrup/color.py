"""Colour fix: match the upscaled frames' colours to the bicubic-upscaled input.

Diffusion upscalers drift in colour (a cast, a shifted tone). Both fixes take the colours from
``ref``, the input upscaled with bicubic to the output size, and keep the detail of ``out``:
  adain    per frame and channel, shift and scale ``out`` so its mean and std are ``ref``'s
           (StableSR / MGLD-VSR's "adain"; eps 1e-5 inside the std). Global: it cannot fix a cast
           that varies across the frame, and it rescales the detail along with the colours.
  wavelet  low frequencies from ``ref``, high frequencies from ``out`` (StableSR's wavelet fix):
           low(x) = 5 passes of a 3x3 binomial blur dilated by 1, 2, 4, 8, 16 px, replicate padding;
           output = out - low(out) + low(ref). Local, and it leaves the detail alone.
  none     ``out`` unchanged.
Frames are (T, H, W, 3) float32 numpy arrays or torch tensors; the result has the input's type.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vsrup.config import COLOR_FIXES
from vsrup.errors import UsageError

ADAIN_EPS = 1e-5  # added to the variance, as in StableSR
WAVELET_LEVELS = 5  # blur radii 1, 2, 4, 8, 16 px: the low band is below ~1/64 cycles per pixel


def _as_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    return t.float().permute(0, 3, 1, 2)  # (T, 3, H, W)


def _like(result: torch.Tensor, template: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    result = result.permute(0, 2, 3, 1).contiguous()  # (T, H, W, 3)
    if isinstance(template, torch.Tensor):
        return result.to(template.dtype)
    return result.numpy().astype(np.float32, copy=False)


def bicubic_upscale(frames: np.ndarray | torch.Tensor, height: int, width: int) -> np.ndarray | torch.Tensor:
    """(T, h, w, 3) -> (T, height, width, 3), bicubic, align_corners=False (half-integer pixel centres).

    Not clamped: bicubic overshoots [0, 1] slightly at edges, which is fine for a colour reference.
    """
    x = _as_tensor(frames)  # (T, 3, h, w)
    y = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)  # (T, 3, H, W)
    return _like(y, frames)


def _adain(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    out_mean = out.mean(dim=(2, 3), keepdim=True)  # (T, 3, 1, 1)
    out_std = (out.var(dim=(2, 3), keepdim=True, unbiased=False) + ADAIN_EPS).sqrt()  # (T, 3, 1, 1)
    ref_mean = ref.mean(dim=(2, 3), keepdim=True)  # (T, 3, 1, 1)
    ref_std = (ref.var(dim=(2, 3), keepdim=True, unbiased=False) + ADAIN_EPS).sqrt()  # (T, 3, 1, 1)
    return (out - out_mean) / out_std * ref_std + ref_mean  # (T, 3, H, W)


def low_frequencies(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H, W): the wavelet fix's low band (5 dilated binomial blurs)."""
    c = x.shape[1]
    taps = torch.tensor([1.0, 2.0, 1.0], device=x.device) / 4.0  # (3,)
    kernel = (taps[:, None] * taps[None, :]).expand(c, 1, 3, 3).contiguous()  # (C, 1, 3, 3)
    for level in range(WAVELET_LEVELS):
        radius = 2**level
        x = F.pad(x, (radius,) * 4, mode="replicate")  # (N, C, H + 2r, W + 2r)
        x = F.conv2d(x, kernel, dilation=radius, groups=c)  # (N, C, H, W)
    return x


def _wavelet(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # out - low(out) + low(ref) = out - low(out - ref): the blur is linear, so one pass does.
    return out - low_frequencies(out - ref)  # (T, 3, H, W)


def color_fix(out: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, method: str) -> np.ndarray | torch.Tensor:
    """Colour-fix ``out`` (T, H, W, 3) toward ``ref`` (T, H, W, 3, same size) with ``method`` adain|wavelet|none.

    Not clamped; the caller clamps to [0, 1] when it quantises.
    """
    if method not in COLOR_FIXES:
        raise UsageError(f"unknown colour fix {method!r}; choose one of {', '.join(COLOR_FIXES)}")
    if tuple(out.shape) != tuple(ref.shape):
        raise ValueError(f"color_fix needs out and ref of one shape, got {tuple(out.shape)} and {tuple(ref.shape)}")
    if method == "none":
        return out
    o = _as_tensor(out)  # (T, 3, H, W)
    r = _as_tensor(ref).to(o.device)  # (T, 3, H, W)
    fixed = _adain(o, r) if method == "adain" else _wavelet(o, r)  # (T, 3, H, W)
    return _like(fixed, out)
