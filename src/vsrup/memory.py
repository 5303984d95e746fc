"""Memory planning (UNet tile and batch, VAE tile, from free memory) and the CUDA OOM retry policy.

Cost model (per model call, activations only; the weights are already resident, so call
``free_memory`` after the models are on the device), affine in the tile's latent pixels P:
  UNet   (UNET_FIXED + batch * P * UNET_BYTES_PER_PX) * dtype_bytes / 4
  VAE    VAE_FIXED + P * VAE_BYTES_PER_PX + VAE_ATTENTION_BYTES * P^2     decoder in fp32, one tile per call
The constants are measured peaks (VmHWM over the run) of the real-config x4 UNet and VAE decoder,
random weights, fp32, CPU, at 32^2, 48^2 and 64^2 latents (benchmarks/bench_tiles.py --calibrate):
UNet 89 / 108 / 124 MiB, VAE 101 / 148 / 272 MiB; the constants below bound all three. The
quadratic term is the mid-block attention's P x P fp32 scores and probabilities, which CPU
materialises (the VAE's growth from 48^2 to 64^2 fits ~11 B/px^2). CUDA bf16 halves the UNet
terms (dtype_bytes / 4); that, and the caching allocator, are assumptions not measured here (no
GPU in this session). The plan spends SAFETY of the free memory less RESERVE, and prefers the training tile 128 whenever one such tile fits.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch

from vsrup.errors import VsrupError

UNET_FIXED = 96 * 2**20  # fp32 bytes per call whatever the tile (fit intercept ~77 MiB)
UNET_BYTES_PER_PX = 16_000  # fp32 bytes per latent px per tile (fit slope ~12 KB/px)
VAE_FIXED = 64 * 2**20  # fp32 bytes per decode call
VAE_BYTES_PER_PX = 40_000  # fp32 bytes per latent px of the decoded tile
VAE_ATTENTION_BYTES = 8  # per (latent px)^2: fp32 scores + probabilities, single head
SAFETY = 0.8  # fraction of free memory a plan may use: allocator fragmentation, cuDNN workspaces
RESERVE = 512 * 2**20  # bytes kept free besides: the frame buffers, CUDA context growth
TILES = (128, 96, 64, 48, 32)  # auto tile candidates, latent px; 128 is the training size
TILE_FLOOR = 32  # the OOM policy stops here
MAX_BATCH = 16  # tiles per UNet call: 16 of 128^2 are ~18 TFLOP, ~50 ms on an H100 (estimated, not measured): enough to hide the launches
# now that the host never waits per tile; 64 would hold ~8 GB of bf16 activations for no expected gain and break the
# 12 GB budget (docs/benchmarks.md; bench_networks --batch 16 / 64 on a GPU is the check)

T = TypeVar("T")


class OutOfMemory(VsrupError):
    """Out of device memory even at the smallest tile and batch (exit 1)."""


@dataclass(frozen=True)
class MemoryPlan:
    frame: tuple[int, int]  # latent (h, w)
    tile: int  # UNet tile, latent px; 0 = untiled
    overlap: int  # UNet tile overlap, latent px
    batch: int  # tiles (or whole samples when tile == 0) per UNet call
    vae_tile: int  # VAE decode tile, latent px; 0 = whole frame
    vae_overlap: int

    def describe(self) -> str:
        """One line for the log."""
        h, w = self.frame
        unet = f"tile {self.tile}, overlap {self.overlap}" if self.tile else "untiled"
        vae = f"tile {self.vae_tile}, overlap {self.vae_overlap}" if self.vae_tile else "untiled"
        return f"UNet {unet}, {self.batch} per call; VAE decode {vae} (latent {h}x{w})"


def free_memory(device: torch.device) -> int:
    """Bytes the next allocations can use: CUDA free memory, else available RAM (cgroup limit included)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available = int(fields["MemAvailable"].split()[0]) * 1024
    limit, usage = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    if limit.exists() and usage.exists() and limit.read_text().strip() != "max":
        available = min(available, int(limit.read_text()) - int(usage.read_text()))
    return available


def unet_bytes(pixels: int, batch: int, dtype_bytes: int) -> int:
    """Peak activation bytes of one UNet call on ``batch`` tiles of ``pixels`` latent px."""
    return (UNET_FIXED + batch * pixels * UNET_BYTES_PER_PX) * dtype_bytes // 4


def vae_bytes(pixels: int) -> int:
    """Peak activation bytes of one fp32 VAE decode of a tile of ``pixels`` latent px."""
    return VAE_FIXED + pixels * VAE_BYTES_PER_PX + VAE_ATTENTION_BYTES * pixels**2


def plan_memory(
    free_bytes: int,
    h: int,
    w: int,
    *,
    samples: int,
    tile: int | None,
    overlap: int,
    batch: int | None,
    dtype_bytes: int,
) -> MemoryPlan:
    """Tile and batch for a (h, w) latent: ``samples`` per UNet step (frames, times 2 with CFG).

    tile None = auto (the first of TILES that fits, so 128 whenever it fits), 0 = untiled, else
    fixed; batch None = as many tiles per call as fit, at most every tile of a step and MAX_BATCH.
    """
    from vsrup.sampling.tiles import spans

    budget = max(0, int(free_bytes * SAFETY) - RESERVE)
    area = lambda t: min(t, h) * min(t, w) if t else h * w  # noqa: E731  latent px of one tile
    if tile is None:
        tile = next((t for t in TILES if unet_bytes(area(t), 1, dtype_bytes) <= budget), TILE_FLOOR)
    unet_overlap = overlap if overlap < tile or tile == 0 else tile // 4
    if batch is None:
        per_step = samples * (len(spans(h, tile, unet_overlap)) * len(spans(w, tile, unet_overlap)) if tile else 1)
        per_tile = unet_bytes(area(tile), 2, dtype_bytes) - unet_bytes(area(tile), 1, dtype_bytes)
        fits = (budget - unet_bytes(0, 0, dtype_bytes)) // per_tile
        batch = max(1, min(fits, per_step, MAX_BATCH))
    vae_tile = 0 if tile == 0 else next((t for t in TILES if vae_bytes(area(t)) <= budget), TILE_FLOOR)  # --tile 0: untiled everywhere
    vae_overlap = min(overlap, vae_tile // 4)  # VAE errors are spread, not at edges (docs/tiling.md): 25% suffices
    return MemoryPlan((h, w), tile, unet_overlap, batch, vae_tile, vae_overlap)


def smaller_tile(tile: int) -> int | None:
    """Half the tile, a multiple of 8, not below TILE_FLOOR; None at the floor."""
    if tile <= TILE_FLOOR:
        return None
    return max(TILE_FLOOR, tile // 2 // 8 * 8)


def shrink(plan: MemoryPlan, stage: str) -> MemoryPlan | None:
    """The next smaller plan after an OOM in ``stage`` ("unet": batch, then tile; "vae": tile); None at the floor."""
    if stage == "unet":
        if plan.batch > 1:
            return replace(plan, batch=plan.batch // 2)
        tile = plan.tile or max(plan.frame)
        new = smaller_tile(tile)
        return None if new is None else replace(plan, tile=new, overlap=plan.overlap * new // tile)
    if stage == "vae":
        tile = plan.vae_tile or max(plan.frame)
        new = smaller_tile(tile)
        return None if new is None else replace(plan, vae_tile=new, vae_overlap=plan.vae_overlap * new // tile)
    raise ValueError(f"unknown stage {stage!r}; expected 'unet' or 'vae'")


def release_cached_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomRetry:
    """Runs clip-level callables under the current plan; on CUDA OOM shrinks the plan and retries.

    The shrunk plan is kept for the rest of the job (``self.plan``), so later clips do not fail
    again first. ``fn(plan)`` must start from its inputs each time (same clip, same seeds): a retry
    reproduces what a first run at the smaller plan would give.
    """

    def __init__(self, plan: MemoryPlan, on_shrink: Callable[[str], None] = lambda message: None):
        self.plan = plan
        self.on_shrink = on_shrink

    def run(self, fn: Callable[[MemoryPlan], T], stage: str = "unet") -> T:
        while True:
            try:
                return fn(self.plan)
            except torch.cuda.OutOfMemoryError:
                pass  # recover below, outside the handler: its traceback would keep the failed call's tensors alive
            release_cached_memory()
            smaller = shrink(self.plan, stage)
            if smaller is None:
                raise OutOfMemory(
                    f"out of GPU memory even at the smallest {stage} tile ({self.plan.describe()}); "
                    "close other GPU programs, lower --clip-len, or run with --device cpu"
                )
            self.plan = smaller
            self.on_shrink(f"out of GPU memory in the {stage}; retrying the clip with {smaller.describe()}")
