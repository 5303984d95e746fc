"""Memory planning and the CUDA out-of-memory retry policy, on CPU with fake callables."""

from __future__ import annotations

import sys

import pytest
import torch

from vsrup import memory
from vsrup.errors import EXIT_RUNTIME, VsrupError
from vsrup.memory import Cost, MemoryPlan, OomRetry, OutOfMemory, Planner, free_memory, plan_memory, shrink, stage

GIB = 2**30
BF16, FP32 = Cost(dtype_bytes=2), Cost(dtype_bytes=4)  # the x4 model's measured costs


def test_oom_error_class_exists_on_cpu_torch():
    assert issubclass(torch.cuda.OutOfMemoryError, RuntimeError)


def test_free_memory_on_cpu_is_positive():
    assert free_memory(torch.device("cpu")) > 0


def test_plenty_of_memory_gives_the_training_tile_and_every_tile_in_one_call():
    plan = plan_memory(80 * GIB, 270, 480, BF16, samples=16, tile=None, overlap=32, batch=None)
    assert (plan.tile, plan.overlap) == (128, 32)
    assert plan.batch == memory.MAX_BATCH  # 16 samples x 15 tiles > 16
    small = plan_memory(80 * GIB, 270, 480, BF16, samples=1, tile=None, overlap=32, batch=None)
    assert small.batch == 15  # a step's 15 tiles, in one call


def test_little_memory_gives_a_smaller_tile_and_batch():
    one_64_tile = BF16.unet_bytes(64 * 64, 1)
    free = int((one_64_tile + memory.RESERVE) / memory.SAFETY) + 1
    plan = plan_memory(free, 270, 480, BF16, samples=2, tile=None, overlap=32, batch=None)
    assert (plan.tile, plan.overlap, plan.batch) == (64, 32, 1)
    assert plan.vae_tile < 128
    nothing = plan_memory(0, 270, 480, BF16, samples=2, tile=None, overlap=32, batch=None)
    assert (nothing.tile, nothing.batch, nothing.vae_tile) == (memory.TILE_FLOOR, 1, memory.TILE_FLOOR)


def test_given_tile_and_batch_are_kept_and_overlap_fits_the_tile():
    plan = plan_memory(80 * GIB, 270, 480, FP32, samples=2, tile=24, overlap=32, batch=3)
    assert (plan.tile, plan.overlap, plan.batch) == (24, 6, 3)
    untiled = plan_memory(80 * GIB, 270, 480, BF16, samples=4, tile=0, overlap=32, batch=None)
    assert (untiled.tile, untiled.batch) == (0, 4)


def test_untiled_means_the_vae_decode_too():
    """--tile 0 is untiled everywhere: the VAE decodes whole frames even where a tile would be chosen."""
    plan = plan_memory(80 * GIB, 64, 200, FP32, samples=1, tile=0, overlap=32, batch=None)
    assert (plan.tile, plan.vae_tile) == (0, 0)
    assert "VAE decode untiled" in plan.describe()
    tiled = plan_memory(80 * GIB, 64, 200, FP32, samples=1, tile=None, overlap=32, batch=None)
    assert tiled.vae_tile == 128  # auto still tiles the decode above 128 latent px a side


def test_description_is_one_line():
    text = plan_memory(80 * GIB, 270, 480, BF16, samples=2, tile=None, overlap=32, batch=None).describe()
    assert "\n" not in text and "tile 128" in text and "270x480" in text


def test_shrink_halves_batch_then_tile_then_stops():
    plan = MemoryPlan((270, 480), tile=128, overlap=32, batch=4, vae_tile=128, vae_overlap=32)
    seen = []
    while plan is not None:
        seen.append((plan.tile, plan.overlap, plan.batch))
        plan = shrink(plan, "unet")
    assert seen == [(128, 32, 4), (128, 32, 2), (128, 32, 1), (64, 16, 1), (32, 8, 1)]
    vae = shrink(MemoryPlan((270, 480), 128, 32, 4, 0, 32), "vae")
    assert (vae.vae_tile, vae.tile, vae.batch) == (240, 128, 4)  # untiled: half the frame's long side


def test_an_encode_oom_blends_the_encode_and_the_decode_then_shrinks_the_vae_tile():
    plan = MemoryPlan((240, 428), tile=64, overlap=32, batch=8, vae_tile=128, vae_overlap=32)
    seen = []
    while plan is not None:
        seen.append((plan.encode_frame_stats, plan.vae_frame_stats, plan.vae_tile, plan.tile, plan.batch))
        plan = shrink(plan, "encode")
    assert seen == [(True, True, 128, 64, 8), (False, False, 128, 64, 8), (False, False, 64, 64, 8), (False, False, 32, 64, 8)]


class FakeClip:
    """Raises CUDA OOM while batch * tile^2 exceeds ``limit``; records every attempt."""

    def __init__(self, limit: int):
        self.limit = limit
        self.attempts: list[tuple[int, int]] = []

    def __call__(self, plan: MemoryPlan) -> str:
        self.attempts.append((plan.tile, plan.batch))
        big = torch.zeros(1000)  # a tensor the failed attempt's frame holds
        if plan.batch * plan.tile**2 > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory ({big.numel()})")
        return f"done at {plan.tile}x{plan.batch}"


def test_oom_retries_smaller_and_keeps_the_reduced_plan():
    messages = []
    retry = OomRetry(MemoryPlan((270, 480), 128, 32, 4, 128, 32), on_shrink=messages.append)
    clip = FakeClip(limit=64 * 64)
    assert retry.run(clip) == "done at 64x1"
    assert clip.attempts == [(128, 4), (128, 2), (128, 1), (64, 1)]
    assert (retry.plan.tile, retry.plan.overlap, retry.plan.batch) == (64, 16, 1)
    assert len(messages) == 3 and all("\n" not in m for m in messages)
    clip.attempts.clear()
    retry.run(clip)  # the next clip starts at the reduced plan
    assert clip.attempts == [(64, 1)]


def test_recovery_runs_outside_the_except_block(monkeypatch):
    handling = []
    monkeypatch.setattr(memory, "release_cached_memory", lambda: handling.append(sys.exc_info()[0]))
    OomRetry(MemoryPlan((64, 64), 64, 16, 2, 64, 16)).run(FakeClip(limit=64 * 64))
    assert handling == [None]  # no exception (and no traceback holding tensors) alive during recovery


def test_below_the_floor_raises_a_one_line_user_error():
    retry = OomRetry(MemoryPlan((270, 480), 64, 16, 1, 64, 16))
    with pytest.raises(OutOfMemory) as caught:
        retry.run(FakeClip(limit=0))
    assert isinstance(caught.value, VsrupError) and caught.value.exit_code == EXIT_RUNTIME == 1
    assert "\n" not in str(caught.value) and "out of GPU memory" in str(caught.value)
    assert caught.value.__context__ is None  # raised outside the handler: no chained traceback


def test_vae_stage_gives_up_frame_statistics_then_shrinks_the_vae_tile_only():
    retry = OomRetry(MemoryPlan((270, 480), 128, 32, 4, 128, 32))
    calls = []

    def decode(plan):
        calls.append((plan.vae_tile, plan.vae_frame_stats))
        with stage("vae"):  # the model marks its VAE calls
            if plan.vae_tile > 32:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return plan.vae_tile

    assert retry.run(decode) == 32
    # The frame-sized states go first (a smaller tile would not shrink them), then the tile halves.
    assert calls == [(128, True), (128, False), (64, False), (32, False)]
    assert (retry.plan.tile, retry.plan.batch) == (128, 4)


def test_frame_statistics_only_where_the_states_fit():
    small = int((BF16.vae_state_bytes(270 * 480) + BF16.vae_bytes(128 * 128) + memory.RESERVE) / memory.SAFETY) + 1
    assert plan_memory(small + GIB, 270, 480, BF16, samples=2, tile=None, overlap=32, batch=None).vae_frame_stats
    starved = plan_memory(small - GIB, 270, 480, BF16, samples=2, tile=None, overlap=32, batch=None)
    assert not starved.vae_frame_stats and "each tile's own statistics" in starved.describe()
    assert FP32.vae_state_bytes(1000) == 2 * Cost(dtype_bytes=4, vae_dtype_bytes=2).vae_state_bytes(1000)


def test_other_errors_are_not_swallowed():
    def broken(plan):
        raise RuntimeError("not an OOM")

    with pytest.raises(RuntimeError, match="not an OOM"):
        OomRetry(MemoryPlan((64, 64), 64, 16, 2, 64, 16)).run(broken)


def test_cost_describes_the_model_not_x4_constants():
    x4_cfg = Cost(dtype_bytes=2, rows_per_frame=2)
    framewise = Cost(dtype_bytes=2, frames_together=False, unet_per_px=30_000)
    assert (x4_cfg.rows(8), framewise.rows(8)) == (16, 1)  # CFG doubles the rows; frame-wise models call one frame at a time
    assert framewise.unet_bytes(128 * 128, 1) > x4_cfg.unet_bytes(128 * 128, 1)
    little = int((x4_cfg.unet_bytes(128 * 128, 1) + memory.RESERVE) / memory.SAFETY) + 1
    assert plan_memory(little, 270, 480, x4_cfg, samples=16, tile=None, overlap=32, batch=None).tile == 128
    assert plan_memory(little, 270, 480, framewise, samples=1, tile=None, overlap=32, batch=None).tile < 128


def test_planner_makes_one_plan_per_window_shape_logs_it_and_keeps_shrinks():
    events = []
    planner = Planner(BF16, torch.device("cpu"), tile=None, overlap=32, batch=None, emit=events.append)
    clip = FakeClip(limit=10**9)
    planner.run(clip, 8, 270, 480)
    planner.run(clip, 8, 270, 480)
    planner.run(clip, 2, 270, 480)
    plans = [e.message for e in events if e.kind == "info"]
    assert len(plans) == 2 and plans[0].startswith("memory plan for 8 frame(s) of 480x270")


def test_a_decoder_that_tiles_exactly_decodes_the_whole_frame_when_it_fits_and_counts_its_halo():
    """Stream-DiffVSR's tiny decoder (vae_tiles starting at 0 = the whole frame; tiles computed with a halo)."""
    tiny = Cost(dtype_bytes=2, vae_fixed=0, vae_per_px=32_000, vae_attention=0, vae_state_per_px=0, vae_tiles=(0, 256, 128, 64, 32), vae_halo=20)
    need = lambda px: int((max(tiny.unet_bytes(128 * 128, 1), tiny.vae_bytes(px)) + memory.RESERVE) / memory.SAFETY) + 1  # noqa: E731
    assert plan_memory(need(270 * 480), 270, 480, tiny, samples=1, tile=None, overlap=32, batch=None).vae_tile == 0
    assert plan_memory(need(270 * 480) - GIB // 4, 270, 480, tiny, samples=1, tile=None, overlap=32, batch=None).vae_tile == 256
    # a 128 tile computes 168 x 168 latent px: with memory for 128 x 128 only, the next smaller tile is chosen
    assert plan_memory(need(168 * 168), 270, 480, tiny, samples=1, tile=None, overlap=32, batch=None).vae_tile == 128
    assert plan_memory(need(128 * 128), 270, 480, tiny, samples=1, tile=None, overlap=32, batch=None).vae_tile == 64
