"""Memory planning (UNet tile and batch, VAE tile, from free memory) and the CUDA OOM retry policy.

Each model describes its device calls with a ``Cost``; the pipeline asks ``Planner`` for the plan of
each window shape, and runs the window under ``Planner.run``, which retries it with a smaller plan on
CUDA out-of-memory. Nothing here knows a model.

Cost model (per model call, activations only; the weights are already resident, so plans are made
after the models are on the device), affine in the tile's latent pixels P:
  UNet   (unet_fixed + batch * P * unet_per_px) * dtype_bytes / 4
  VAE    vae_fixed + P * vae_per_px + vae_attention * P^2     decoder in fp32, one tile per call
Frame-sized states, per latent px F of the frame, checked against the budget: a tiled decode's with the frame's
statistics (vae_state_per_px) and a pass-by-pass encode's (encode_state_per_px; 0 for a model that plans none).
The x4 constants are measured peaks (VmHWM over the run) of the real-config x4 UNet and VAE decoder,
random weights, fp32, CPU, at 32^2, 48^2 and 64^2 latents (benchmarks/bench_tiles.py --calibrate):
UNet 89 / 108 / 124 MiB, VAE 101 / 148 / 272 MiB; the constants below bound all three. The
quadratic term is the mid-block attention's P x P fp32 scores and probabilities, which CPU
materialises (the VAE's growth from 48^2 to 64^2 fits ~11 B/px^2). CUDA bf16 halves the UNet
terms (dtype_bytes / 4); that, and the caching allocator, are assumptions not measured here (no
GPU in this session). The plan spends SAFETY of the free memory less RESERVE, and prefers the training tile 128 whenever one such tile fits.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import torch

from vsrup.errors import VsrupError
from vsrup.events import Emit, Event, ignore
from vsrup.host_memory import available_host_memory

SAFETY = 0.8  # fraction of free memory a plan may use: allocator fragmentation, cuDNN workspaces
RESERVE = 512 * 2**20  # bytes kept free besides: the frame buffers, CUDA context growth
TILES = (128, 96, 64, 48, 32)  # auto tile candidates, latent px; 128 is the training size
TILE_FLOOR = 32  # the OOM policy stops here
MAX_BATCH = 16  # tiles per UNet call: 16 of 128^2 are ~18 TFLOP, ~50 ms on an H100 (estimated, not measured): enough to hide the launches
# now that the host never waits per tile; 64 would hold ~8 GB of bf16 activations for no expected gain and break the
# 12 GB budget (docs/benchmarks.md; bench_networks --batch 16 / 64 on a GPU is the check)

T = TypeVar("T")


@dataclass(frozen=True)
class Cost:
    """A model's device calls, as the memory plan sees them (activation bytes; see the module notes).

    The defaults are the measured x4 UNet and VAE decoder (fp32 bytes).
    """

    dtype_bytes: int  # bytes per element of the UNet's activations (2 for fp16/bf16)
    vae_dtype_bytes: int = 4  # bytes per element of the VAE decoder's (fp16 jobs decode in fp32)
    rows_per_frame: int = 1  # UNet batch rows per frame and step: 2 with classifier-free guidance
    frames_together: bool = True  # a window's frames share UNet calls (else one frame per call)
    unet_fixed: int = 96 * 2**20  # fp32 bytes per UNet call whatever the tile (fit intercept ~77 MiB)
    unet_per_px: int = 16_000  # fp32 bytes per latent px per tile (fit slope ~12 KB/px)
    vae_fixed: int = 64 * 2**20  # fp32 bytes per decode call
    vae_per_px: int = 40_000  # fp32 bytes per latent px of the decoded tile
    vae_attention: int = 8  # per (latent px)^2: fp32 scores + probabilities, single head
    vae_state_per_px: int = 21 * 2**10  # bytes per latent px of the frame: a tiled decode's states with frame statistics
    # (1.33 KiB per output px measured on the CPU, full-size x4 config, fp32: docs/tiling.md)
    encode_state_per_px: int = 0  # bytes per latent px of the frame: a pass-by-pass VAE encode's states with frame statistics
    # (fp32; 0: the model encodes nothing frame-sized, as the x4)
    vae_tiles: tuple[int, ...] = TILES  # decode tile candidates, the first that fits is used; 0 = the whole frame
    vae_halo: int = 0  # latent px computed around each decode tile, each side (and thrown away)
    latent: Callable[[int, int], tuple[int, int]] | None = None  # an input frame's (h, w) -> its latent's; None: the same (the x4)

    def unet_bytes(self, pixels: int, batch: int) -> int:
        """Peak activation bytes of one UNet call on ``batch`` tiles of ``pixels`` latent px."""
        return (self.unet_fixed + batch * pixels * self.unet_per_px) * self.dtype_bytes // 4

    def vae_bytes(self, pixels: int) -> int:
        """Peak activation bytes of one fp32 VAE decode of a tile of ``pixels`` latent px."""
        return self.vae_fixed + pixels * self.vae_per_px + self.vae_attention * pixels**2

    def vae_state_bytes(self, pixels: int) -> int:
        """Device bytes of a tiled decode's frame-sized states (the frame's GroupNorm statistics) for ``pixels`` latent px."""
        return pixels * self.vae_state_per_px * self.vae_dtype_bytes // 4

    def encode_state_bytes(self, pixels: int) -> int:
        """Device bytes of a pass-by-pass encode's frame-sized states (the frame's GroupNorm statistics) for ``pixels`` latent px."""
        return pixels * self.encode_state_per_px * self.vae_dtype_bytes // 4

    def rows(self, t_frames: int) -> int:
        """UNet batch rows of one step of a window of ``t_frames`` frames."""
        return self.rows_per_frame * (t_frames if self.frames_together else 1)


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
    vae_frame_stats: bool = True  # tiles normalised with the frame's GroupNorm statistics (else each with its own)
    encode_frame_stats: bool = True  # the VAE encode likewise (else in blended tiles, each with its own statistics)

    def describe(self) -> str:
        """One line for the log."""
        h, w = self.frame
        unet = f"tile {self.tile}, overlap {self.overlap}" if self.tile else "untiled"
        stats = "frame statistics" if self.vae_frame_stats else "each tile's own statistics: the frame's states do not fit"
        vae = f"tile {self.vae_tile}, overlap {self.vae_overlap}, {stats}" if self.vae_tile else "untiled"
        encode = "" if self.encode_frame_stats or not self.vae_tile else "; VAE encode in blended tiles, each tile's own statistics: the frame's encoder states do not fit"
        return f"UNet {unet}, {self.batch} per call; VAE decode {vae}{encode} (latent {h}x{w})"


def free_memory(device: torch.device) -> int:
    """Bytes the next allocations can use: CUDA free memory, else the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_host_memory()


def plan_memory(
    free_bytes: int,
    h: int,
    w: int,
    cost: Cost,
    *,
    samples: int,
    tile: int | None,
    overlap: int,
    batch: int | None,
) -> MemoryPlan:
    """Tile and batch for a (h, w) latent: ``samples`` UNet rows per step (frames, times 2 with CFG).

    tile None = auto (the first of TILES that fits, so 128 whenever it fits), 0 = untiled, else
    fixed; batch None = as many tiles per call as fit, at most every tile of a step and MAX_BATCH.
    """
    from vsrup.sampling.tiles import spans

    budget = max(0, int(free_bytes * SAFETY) - RESERVE)
    area = lambda t: min(t, h) * min(t, w) if t else h * w  # noqa: E731  latent px of one tile
    if tile is None:
        tile = next((t for t in TILES if cost.unet_bytes(area(t), 1) <= budget), TILE_FLOOR)
    unet_overlap = overlap if overlap < tile or tile == 0 else tile // 4
    if batch is None:
        per_step = samples * (len(spans(h, tile, unet_overlap)) * len(spans(w, tile, unet_overlap)) if tile else 1)
        per_tile = cost.unet_bytes(area(tile), 2) - cost.unet_bytes(area(tile), 1)
        fits = (budget - cost.unet_bytes(0, 0)) // per_tile
        batch = max(1, min(fits, per_step, MAX_BATCH))
    vae_area = lambda t: area(t + 2 * cost.vae_halo) if t else h * w  # noqa: E731  latent px one decode tile computes
    vae_tile = 0 if tile == 0 else next((t for t in cost.vae_tiles if cost.vae_bytes(vae_area(t)) <= budget), TILE_FLOOR)  # --tile 0: untiled everywhere
    vae_overlap = min(overlap, vae_tile // 4)  # VAE errors are spread, not at edges (docs/tiling.md): 25% suffices
    # The frame's GroupNorm statistics need its decoder states on the device (vae_decode.py): when they do not fit
    # beside a tile's activations, each tile is normalised on its own (tone steps between tiles; the plan says so).
    # Likewise a pass-by-pass encode's frame-sized states (Cost.encode_state_per_px; 0 for a model that encodes nothing):
    # when they do not fit, the encode runs in blended tiles, and so does the decode, whose frame statistics need more.
    encode_stats = vae_tile == 0 or cost.encode_state_bytes(h * w) <= budget
    frame_stats = vae_tile == 0 or (encode_stats and cost.vae_state_bytes(h * w) + cost.vae_bytes(vae_area(vae_tile)) <= budget)
    return MemoryPlan((h, w), tile, unet_overlap, batch, vae_tile, vae_overlap, frame_stats, encode_stats)


def smaller_tile(tile: int) -> int | None:
    """Half the tile, a multiple of 8, not below TILE_FLOOR; None at the floor."""
    if tile <= TILE_FLOOR:
        return None
    return max(TILE_FLOOR, tile // 2 // 8 * 8)


def shrink(plan: MemoryPlan, stage: str) -> MemoryPlan | None:
    """The next smaller plan after an OOM in ``stage`` ("unet": batch, then tile; "vae": tile statistics, then
    tile; "encode": the encode's and the decode's tile statistics, then the VAE tile); None at the floor."""
    if stage == "unet":
        if plan.batch > 1:
            return replace(plan, batch=plan.batch // 2)
        tile = plan.tile or max(plan.frame)
        new = smaller_tile(tile)
        return None if new is None else replace(plan, tile=new, overlap=plan.overlap * new // tile)
    if stage == "encode" and plan.vae_tile and plan.encode_frame_stats:  # the decode's frame statistics need more than these
        return replace(plan, vae_frame_stats=False, encode_frame_stats=False)
    if stage == "vae" and plan.vae_tile and plan.vae_frame_stats:  # the frame-sized states are most of a tiled decode's memory
        return replace(plan, vae_frame_stats=False)
    if stage in ("vae", "encode"):
        tile = plan.vae_tile or max(plan.frame)
        new = smaller_tile(tile)
        return None if new is None else replace(plan, vae_tile=new, vae_overlap=plan.vae_overlap * new // tile)
    raise ValueError(f"unknown stage {stage!r}; expected 'unet', 'vae' or 'encode'")


class StageOutOfMemory(Exception):
    """CUDA ran out of memory inside ``stage`` ("unet", "vae" or "encode"): which part of the plan to shrink."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Mark the calls of one stage, so an OOM inside them shrinks that stage's part of the plan.

    A model wraps its VAE decodes in ``stage("vae")`` (and a planned frame-sized VAE encode in ``stage("encode")``);
    an OOM outside any stage counts as the UNet's.
    """
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise StageOutOfMemory(name) from None


def release_cached_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomRetry:
    """Runs window-level callables under the current plan; on CUDA OOM shrinks the plan and retries.

    The shrunk plan is kept for the rest of the job (``self.plan``), so later windows do not fail
    again first. ``fn(plan)`` must start from its inputs each time (same window, same seeds): a retry
    reproduces what a first run at the smaller plan would give.
    """

    def __init__(self, plan: MemoryPlan, on_shrink: Callable[[str], None] = lambda message: None, *, fixed: bool = False):
        self.plan = plan
        self.on_shrink = on_shrink
        self.fixed = fixed  # a job's plan (jobs/): never shrunk, so that every unit is computed alike

    def run(self, fn: Callable[[MemoryPlan], T]) -> T:
        while True:
            try:
                return fn(self.plan)
            except StageOutOfMemory as error:
                where = error.stage
            except torch.cuda.OutOfMemoryError:
                where = "unet"
            # Recover here, outside the handlers: their tracebacks would keep the failed call's tensors alive.
            release_cached_memory()
            if self.fixed:
                raise OutOfMemory(
                    f"out of GPU memory in the {where} with this job's fixed plan ({self.plan.describe()}); a job keeps one "
                    "plan for all its units so that they agree bit for bit: run again with --restart and a smaller --tile or --batch"
                )
            smaller = shrink(self.plan, where)
            if smaller is None:
                raise OutOfMemory(
                    f"out of GPU memory even at the smallest {where} tile ({self.plan.describe()}); "
                    "close other GPU programs, lower --clip-len, or run with --device cpu"
                )
            self.plan = smaller
            self.on_shrink(f"out of GPU memory in the {where}; retrying with {smaller.describe()}")


class Planner:
    """The memory plans of one job: one per window shape (frames, latent h, w), made once and logged.

    ``budget``: plan from these free bytes instead of the device's free memory now, and never shrink the
    plan on out-of-memory (a resumable job's units, wherever and whenever they run, get the same plans).
    """

    def __init__(self, cost: Cost, device: torch.device, tile: int | None, overlap: int, batch: int | None, emit: Emit = ignore,
                 budget: int | None = None):
        self.cost, self.device, self.emit = cost, device, emit
        self.tile, self.overlap, self.batch = tile, overlap, batch
        self.budget = budget
        self.retries: dict[tuple[int, int, int], OomRetry] = {}

    def plan(self, t_frames: int, h: int, w: int) -> MemoryPlan:
        """The plan for a window of ``t_frames`` input frames of (h, w) (their latent's, ``cost.latent``), before any retry."""
        free = self.budget if self.budget is not None else free_memory(self.device)
        if self.cost.latent is not None:
            h, w = self.cost.latent(h, w)
        return plan_memory(free, h, w, self.cost, samples=self.cost.rows(t_frames), tile=self.tile, overlap=self.overlap, batch=self.batch)

    def run(self, fn: Callable[[MemoryPlan], T], t_frames: int, h: int, w: int) -> T:
        """``fn(plan)`` under the plan for this window shape, retried smaller on CUDA out-of-memory."""
        key = (t_frames, h, w)
        if key not in self.retries:
            plan = self.plan(t_frames, h, w)
            self.emit(Event("info", message=f"memory plan for {t_frames} frame(s) of {w}x{h}: {plan.describe()}"))
            self.retries[key] = OomRetry(plan, on_shrink=lambda message: self.emit(Event("warning", message=message)),
                                         fixed=self.budget is not None)
        return self.retries[key].run(fn)
