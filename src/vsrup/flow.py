"""Optical flow between neighbouring frames, occlusion masks, and the one warp everything uses.

Conventions (all of vsrup follows these; the tests pin them):

* A flow is a (N, 2, h, w) tensor in pixels, channel 0 = dx (to the right), channel 1 = dy (down).
* Pixel centres sit at integer coordinates 0..w-1 and 0..h-1.
* ``warp(x, flow)`` is a backward warp: ``output(p) = x(p + flow(p))``, sampled bilinearly.
  So if ``flow`` is f_{a→b} (on a's grid, pointing from each pixel of a to where it is in b),
  ``warp(frame_b, f_{a→b})`` looks like ``frame_a``.
* Beyond the frame the warp replicates the edge pixel. That value is not evidence of anything,
  so every mask built here counts a pixel whose target lies outside the frame's extent
  [-0.5, w-0.5] x [-0.5, h-0.5] as occluded / invalid.
* ``Flow`` holds, for each pair k = (frame k, frame k+1), the flow both ways and the occlusion
  mask of each frame. Field names say which frame's grid each tensor lives on:
  ``i_to_next[k]`` and ``occ_i[k]`` live on frame k, ``next_to_i[k]`` and ``occ_next[k]`` on frame k+1.

The latent grid of the x4 upscaler is the low-resolution grid, so flows estimated on the input
frames apply to latents unchanged.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vsrup.config import FLOW_METHODS
from vsrup.errors import UsageError

# DIS preset. Measured on a 2-core CPU (docs/temporal.md): MEDIUM recovers sub-pixel motion on
# real frames clearly better than FAST/ULTRAFAST and costs ~2x50 ms per 480p pair, off the GPU's
# critical path (FlowWorker), against seconds of UNet time per frame.
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
DIS_MIN_SIDE = 16  # OpenCV DIS needs at least 12 px; smaller frames are padded to this

# MGLD-VSR's forward-backward consistency check (latent pixels, non-squared norms).
OCC_ALPHA = 0.01  # relative tolerance on |f| + |W(b, f)|
OCC_BETA = 0.5  # absolute tolerance in pixels


@dataclass(frozen=True)
class Flow:
    """Flows and occlusion masks of a clip of T frames (T-1 neighbouring pairs; pair k = frames k, k+1).

    Masks are float, 1 = occluded (no trustworthy match in the other frame), 0 = visible in both.
    """

    i_to_next: torch.Tensor  # (T-1, 2, h, w) f_{k→k+1}, on frame k's grid
    next_to_i: torch.Tensor  # (T-1, 2, h, w) f_{k+1→k}, on frame k+1's grid
    occ_i: torch.Tensor  # (T-1, 1, h, w) pixels of frame k that have no match in frame k+1
    occ_next: torch.Tensor  # (T-1, 1, h, w) pixels of frame k+1 that have no match in frame k

    def __post_init__(self) -> None:
        pairs, _, h, w = self.i_to_next.shape
        for name, channels in (("i_to_next", 2), ("next_to_i", 2), ("occ_i", 1), ("occ_next", 1)):
            shape = tuple(getattr(self, name).shape)
            if shape != (pairs, channels, h, w):
                raise ValueError(f"Flow.{name} has shape {shape}, expected {(pairs, channels, h, w)}")

    @property
    def num_frames(self) -> int:
        return self.i_to_next.shape[0] + 1

    def to(self, device: torch.device | str) -> Flow:
        return Flow(*(t.to(device) for t in (self.i_to_next, self.next_to_i, self.occ_i, self.occ_next)))


def _pixel_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack((xs, ys))  # (2, h, w) pixel-centre coordinates (x, y)


def warp(x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """output(p) = x(p + flow(p)); x (N, C, h, w), flow (N, 2, h, w) -> (N, C, h, w).

    Sampling is done in float32 whatever x's dtype (bf16 coordinates would be off by ~1/256 of the
    frame) and returned in x's dtype. Outside the frame the edge pixel is replicated.
    ``mode`` is ``bilinear`` or ``nearest`` (same coordinates, nearest pixel centre).
    """
    _, _, h, w = x.shape
    target = _pixel_grid(h, w, x.device) + flow.float()  # (N, 2, h, w) where each output pixel reads
    # align_corners=True maps -1 and +1 to the centres of the first and last pixels.
    gx = 2.0 * target[:, 0] / max(w - 1, 1) - 1.0  # (N, h, w)
    gy = 2.0 * target[:, 1] / max(h - 1, 1) - 1.0  # (N, h, w)
    grid = torch.stack((gx, gy), dim=-1)  # (N, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode=mode, padding_mode="border", align_corners=True)  # (N, C, h, w)
    return out.to(x.dtype)


def upscale_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """A flow on a grid ``factor`` times finer: (N, 2, h, w) -> (N, 2, f*h, f*w), in the fine grid's pixels.

    Fine pixel j sits at coarse coordinate (j + 0.5) / f - 0.5 (pixel centres at half-integers of
    the frame's extent, as bicubic upscaling and every resize in vsrup place them), which is what
    bilinear interpolation with align_corners=False samples; the vectors scale by f.
    """
    fine = F.interpolate(flow.float(), scale_factor=factor, mode="bilinear", align_corners=False)  # (N, 2, f*h, f*w)
    return fine * factor


def leaves_frame(flow: torch.Tensor) -> torch.Tensor:
    """(N, 2, h, w) -> (N, 1, h, w) bool: the flow's target lies outside the frame's extent."""
    _, _, h, w = flow.shape
    target = _pixel_grid(h, w, flow.device) + flow.float()  # (N, 2, h, w)
    outside_x = (target[:, 0] < -0.5) | (target[:, 0] > w - 0.5)  # (N, h, w)
    outside_y = (target[:, 1] < -0.5) | (target[:, 1] > h - 0.5)  # (N, h, w)
    return (outside_x | outside_y).unsqueeze(1)  # (N, 1, h, w)


def occlusion(flow_ab: torch.Tensor, flow_ba: torch.Tensor) -> torch.Tensor:
    """Occlusion mask of frame a, (N, 1, h, w) float, 1 = occluded. flow_ab on a's grid, flow_ba on b's.

    MGLD-VSR's forward-backward check (non-squared norms, pixels):
        occluded  <=>  |f + W(b, f)| > 0.01 (|f| + |W(b, f)|) + 0.5   or   p + f(p) leaves the frame
    with f = f_{a→b}, b = f_{b→a} and W the warp above.
    """
    back = warp(flow_ba, flow_ab)  # (N, 2, h, w) b's flow read where each pixel of a lands
    gap = (flow_ab + back).norm(dim=1, keepdim=True)  # (N, 1, h, w) zero when the round trip returns home
    magnitude = flow_ab.norm(dim=1, keepdim=True) + back.norm(dim=1, keepdim=True)  # (N, 1, h, w)
    tolerance = OCC_ALPHA * magnitude + OCC_BETA  # (N, 1, h, w)
    return ((gap > tolerance) | leaves_frame(flow_ab)).float()  # (N, 1, h, w)


def _to_gray_u8(frames: np.ndarray) -> list[np.ndarray]:
    u8 = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # (T, h, w, 3)
    return [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in u8]  # T x (h, w)


def _dis_pairs(frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = frames.shape[1:3]
    # DIS refuses images under 12 px; tiny frames are edge-padded to DIS_MIN_SIDE and the flow cropped back.
    pad = ((0, max(0, DIS_MIN_SIDE - h)), (0, max(0, DIS_MIN_SIDE - w)))
    gray = [np.pad(g, pad, mode="edge") for g in _to_gray_u8(frames)]
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)  # one per call: DIS objects are not thread-safe
    # calc(a, b) returns f_{a→b} on a's grid with a(p) ≈ b(p + f(p)): our warp convention.
    fwd = [dis.calc(a, b, None)[:h, :w] for a, b in zip(gray[:-1], gray[1:])]  # T-1 x (h, w, 2)
    bwd = [dis.calc(b, a, None)[:h, :w] for a, b in zip(gray[:-1], gray[1:])]  # T-1 x (h, w, 2)
    return _stack_hw2(fwd, frames), _stack_hw2(bwd, frames)


def _stack_hw2(flows: list[np.ndarray], frames: np.ndarray) -> torch.Tensor:
    if not flows:
        return torch.zeros(0, 2, frames.shape[1], frames.shape[2])  # (0, 2, h, w)
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()  # (T-1, 2, h, w)


@lru_cache(maxsize=2)
def _raft_model(device: str) -> torch.nn.Module:
    from torchvision.models.optical_flow import Raft_Large_Weights, raft_large

    return raft_large(weights=Raft_Large_Weights.DEFAULT, progress=False).to(device).eval()


def require(method: str) -> None:
    """UsageError now, before any work, when ``method`` cannot run here."""
    if method == "raft":
        try:
            import torchvision  # noqa: F401
        except ImportError:
            raise UsageError(
                "--flow raft needs torchvision: `pip install torchvision` (a build matching your torch), or use --flow dis"
            ) from None


def _raft_pairs(frames: np.ndarray, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    require("raft")
    t, h, w, _ = frames.shape
    if t < 2:
        return torch.zeros(0, 2, h, w), torch.zeros(0, 2, h, w)  # (0, 2, h, w) each
    model = _raft_model(device)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).to(device) * 2.0 - 1.0  # (T, 3, h, w) RAFT wants [-1, 1]
    pad_h, pad_w = -h % 8, -w % 8  # RAFT needs sides divisible by 8
    x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")  # (T, 3, h', w')
    first = torch.cat((x[:-1], x[1:]))  # (2(T-1), 3, h', w') frames k, then frames k+1
    second = torch.cat((x[1:], x[:-1]))  # (2(T-1), 3, h', w')
    with torch.inference_mode():
        flows = model(first, second)[-1][:, :, :h, :w].float().cpu()  # (2(T-1), 2, h, w)
    return flows[: t - 1].contiguous(), flows[t - 1 :].contiguous()


def estimate_flow(frames: np.ndarray, method: str = "dis", device: str = "cpu") -> Flow:
    """Flows and occlusion masks for every neighbouring pair of ``frames`` (T, h, w, 3) float32 in [0, 1].

    ``dis``: OpenCV DIS on the luma, CPU. ``raft``: torchvision RAFT-large on ``device``; torchvision
    is optional and imported only here. Tensors come back on the CPU.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, h, w, 3), got {frames.shape}")
    if method == "dis":
        i_to_next, next_to_i = _dis_pairs(frames)
    elif method == "raft":
        i_to_next, next_to_i = _raft_pairs(frames, device)
    else:
        raise UsageError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    return Flow(
        i_to_next=i_to_next,  # (T-1, 2, h, w)
        next_to_i=next_to_i,  # (T-1, 2, h, w)
        occ_i=occlusion(i_to_next, next_to_i),  # (T-1, 1, h, w) on frame k
        occ_next=occlusion(next_to_i, i_to_next),  # (T-1, 1, h, w) on frame k+1
    )


class FlowWorker:
    """One background thread that estimates flows while the GPU samples.

    ``submit(frames)`` returns at once with a Future; submit the next clip's frames before sampling
    the current clip, then call ``.result()`` when that clip's turn comes. Errors surface there.
    One thread keeps the CPU use bounded and the results in submission order.
    """

    def __init__(self, method: str = "dis", device: str = "cpu"):
        require(method)
        self.method = method
        self.device = device
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vsrup-flow")

    def submit(self, frames: np.ndarray) -> Future[Flow]:
        return self._pool.submit(estimate_flow, frames, self.method, self.device)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FlowWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
