"""flow.py: the warp convention, DIS flows on known motion, occlusion masks, the worker, the RAFT error path."""

from __future__ import annotations

import sys
import threading

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_media_files
from vsrup import flow as flow_mod
from vsrup.errors import UsageError
from vsrup.flow import Flow, FlowWorker, estimate_flow, leaves_frame, occlusion, warp


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]: multi-scale smooth noise, textured at every scale DIS looks at."""
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w, 3), np.float32)
    for cell, weight in ((16, 0.5), (6, 0.3), (2, 0.2)):
        coarse = rng.random((h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        out += weight * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0)


def shifted_pair(big: np.ndarray, dx: int, dy: int, margin: int) -> np.ndarray:
    """Two crops of ``big``; content moves by (dx, dy) from frame 0 to frame 1. -> (2, h, w, 3)."""
    h, w = big.shape[0] - 2 * margin, big.shape[1] - 2 * margin
    frame0 = big[margin : margin + h, margin : margin + w]
    frame1 = big[margin - dy : margin - dy + h, margin - dx : margin - dx + w]  # frame1(p) = frame0(p - d)
    return np.stack([frame0, frame1])


def epe(estimate: torch.Tensor, dx: float, dy: float, border: int) -> float:
    """Mean end-point error of a (2, h, w) flow against the constant (dx, dy), away from the border."""
    err = (estimate[0] - dx) ** 2 + (estimate[1] - dy) ** 2  # (h, w)
    return float(err.sqrt()[border:-border, border:-border].mean())


def as_nchw(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]  # (1, 3, h, w)


# ---------------------------------------------------------------- warp


def test_warp_integer_shift_reads_p_plus_flow():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 16)  # (N, C, h, w)
    flow = torch.zeros(2, 2, 12, 16)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # dx = 2 (right), dy = -1 (up)
    out = warp(x, flow)
    # output(y, x) = x(y - 1, x + 2) wherever that source exists
    assert torch.allclose(out[:, :, 1:, :-2], x[:, :, :-1, 2:], atol=1e-6)


def test_warp_subpixel_shift_is_exact_on_a_linear_ramp():
    h, w = 10, 14
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ramp = (0.3 * xs - 0.7 * ys + 1.0)[None, None]  # (1, 1, h, w), bilinear reproduces it exactly
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = 0.25, 0.6
    out = warp(ramp, flow)
    expected = ramp + 0.3 * 0.25 - 0.7 * 0.6
    assert torch.allclose(out[..., :-1, :-1], expected[..., :-1, :-1], atol=1e-5)


def test_warp_replicates_the_edge_outside_the_frame():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 5, 6)
    flow = torch.zeros(1, 2, 5, 6)
    flow[:, 0] = 100.0  # every pixel reads far to the right
    out = warp(x, flow)
    assert torch.allclose(out, x[..., -1:].expand_as(x), atol=1e-6)


def test_warp_nearest_rounds_to_the_nearest_pixel_centre():
    x = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8)
    flow = torch.zeros(1, 2, 1, 8)
    flow[:, 0] = 0.4
    assert torch.equal(warp(x, flow, mode="nearest"), x)
    flow[:, 0] = 0.6
    assert torch.equal(warp(x, flow, mode="nearest")[..., :-1], x[..., 1:])


def test_warp_samples_in_float32_and_keeps_the_input_dtype():
    torch.manual_seed(0)
    x = torch.rand(1, 4, 200, 300)
    flow = torch.full((1, 2, 200, 300), 0.5)
    out = warp(x.bfloat16(), flow)
    assert out.dtype == torch.bfloat16
    # only the bf16 rounding of values, not of coordinates (bf16 coordinates would be off by ~1 px)
    assert (out.float() - warp(x, flow)).abs().max() < 1e-2


# ---------------------------------------------------------------- occlusion and validity


def test_occlusion_threshold_is_mgld_non_squared():
    zero = torch.zeros(1, 2, 8, 8)
    back = torch.zeros(1, 2, 8, 8)
    back[:, 0, 2:4, 2:4] = 0.45  # round trip misses by 0.45 px: within 0.5 + 0.01 * 0.45
    back[:, 0, 5:7, 5:7] = 0.55  # misses by 0.55 px: beyond 0.5 + 0.01 * 0.55
    occ = occlusion(zero, back)[0, 0]
    assert occ[2:4, 2:4].sum() == 0
    assert occ[5:7, 5:7].min() == 1
    assert occ.sum() == 4


def test_leaves_frame_flags_targets_beyond_half_a_pixel():
    flow = torch.zeros(1, 2, 4, 10)
    flow[:, 0] = 3.0
    out = leaves_frame(flow)[0, 0]
    assert out[:, 7:].all() and not out[:, :7].any()  # column 7 lands on 10 > 9.5; column 6 on 9


# ---------------------------------------------------------------- DIS on known motion


@pytest.mark.parametrize("dx, dy", [(3, 0), (-2, 1), (1, -4)])
def test_integer_shift_is_recovered_both_ways(dx, dy):
    frames = shifted_pair(texture(112, 144), dx, dy, margin=8)  # (2, 96, 128, 3)
    flow = estimate_flow(frames)
    assert flow.i_to_next.shape == (1, 2, 96, 128) and flow.occ_i.shape == (1, 1, 96, 128)
    assert epe(flow.i_to_next[0], dx, dy, border=8) < 0.5
    assert epe(flow.next_to_i[0], -dx, -dy, border=8) < 0.5


def test_subpixel_shift_is_recovered():
    big = as_nchw(texture(112, 144, seed=1))  # (1, 3, H, W)
    shift = torch.zeros(1, 2, 112, 144)
    shift[:, 0], shift[:, 1] = -1.5, 0.75
    moved = warp(big, shift)  # moved(p) = big(p + s): content moves by -s
    frames = torch.cat([big, moved]).permute(0, 2, 3, 1).numpy()  # (2, H, W, 3)
    flow = estimate_flow(np.ascontiguousarray(frames))
    assert epe(flow.next_to_i[0], -1.5, 0.75, border=10) < 0.25
    assert epe(flow.i_to_next[0], 1.5, -0.75, border=10) < 0.25


def test_occlusion_marks_the_band_that_leaves_the_frame():
    frames = shifted_pair(texture(112, 144, seed=2), 3, 0, margin=8)  # content moves 3 px right
    flow = estimate_flow(frames)
    occ_i, occ_next = flow.occ_i[0, 0], flow.occ_next[0, 0]  # (h, w) each
    assert occ_i[:, -3:].mean() > 0.95  # frame 0's right band leaves
    assert occ_next[:, :3].mean() > 0.95  # frame 1's left band has just entered
    assert occ_i[4:-4, 4:-4].mean() < 0.01  # the interior is seen in both frames
    assert occ_next[4:-4, 4:-4].mean() < 0.01


def test_single_frame_gives_an_empty_flow():
    flow = estimate_flow(texture(32, 48)[None])
    assert flow.num_frames == 1 and flow.i_to_next.shape == (0, 2, 32, 48)


def test_flow_rejects_mismatched_fields():
    with pytest.raises(ValueError, match="occ_next"):
        Flow(torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4), torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 4, 4))


# ---------------------------------------------------------------- real video


def decode_frames(path, indices: list[int]) -> np.ndarray:
    av = pytest.importorskip("av")
    wanted = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                wanted[i] = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
            if i >= max(indices):
                break
    return np.stack([wanted[i] for i in indices])


def media(name: str):
    found = [p for p in shared_media_files() if p.name == name]
    if not found:
        pytest.skip(f"../shared/media/{name} is not present")
    return found[0]


def test_real_pair_warp_lowers_the_difference():
    # testsrc2: a moving gradient bar, checkerboard and squares over static colour bars, at an LR-like size.
    pair = decode_frames(media("torchcodec_testsrc2_vp9.webm"), [5, 6])
    pair = np.stack([cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in pair])  # (2, 180, 320, 3)
    flow = estimate_flow(pair)
    frame0, frame1 = as_nchw(pair[0]), as_nchw(pair[1])
    warped = warp(frame1, flow.i_to_next)  # frame 1 brought onto frame 0's grid
    visible = 1.0 - flow.occ_i  # (1, 1, h, w)
    before = float(((frame1 - frame0).abs() * visible).sum() / visible.sum() / 3)
    after = float(((warped - frame0).abs() * visible).sum() / visible.sum() / 3)
    assert after < 0.5 * before  # measured here: 0.0127 -> 0.0040


def test_integer_shift_of_a_real_frame_is_recovered():
    # A film-countdown frame with grain: real texture, 320x240, the size of a typical LR input.
    frame = decode_frames(media("ffmpegpython_in1.mp4"), [20])[0]  # (240, 320, 3)
    dx, dy = 3, -2
    frames = shifted_pair(frame, dx, dy, margin=8)  # (2, 224, 304, 3)
    flow = estimate_flow(frames)
    assert epe(flow.i_to_next[0], dx, dy, border=8) < 0.5
    assert epe(flow.next_to_i[0], -dx, -dy, border=8) < 0.5


# ---------------------------------------------------------------- worker and RAFT


def test_worker_runs_in_its_own_thread_and_matches_the_direct_call(monkeypatch):
    frames = shifted_pair(texture(72, 88, seed=3), 2, 1, margin=4)
    release = threading.Event()
    seen = {}
    real = flow_mod.estimate_flow

    def slow_estimate(*args):
        seen["thread"] = threading.current_thread().name
        release.wait(timeout=10)
        return real(*args)

    monkeypatch.setattr(flow_mod, "estimate_flow", slow_estimate)
    with FlowWorker() as worker:
        future = worker.submit(frames)
        assert not future.done()  # submit returned while the flow was still being computed
        release.set()
        result = future.result(timeout=30)
    assert seen["thread"].startswith("vsrup-flow")
    direct = real(frames)
    assert torch.equal(result.i_to_next, direct.i_to_next) and torch.equal(result.occ_next, direct.occ_next)


def test_worker_reports_errors_through_the_future():
    with FlowWorker(method="nope") as worker:
        with pytest.raises(UsageError, match="unknown flow method"):
            worker.submit(texture(16, 16)[None]).result(timeout=30)


def test_raft_without_torchvision_is_a_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` raise ImportError
    with pytest.raises(UsageError, match="pip install torchvision") as info:
        estimate_flow(texture(32, 32)[None].repeat(2, axis=0), method="raft")
    assert "\n" not in str(info.value)


def test_tiny_frames_get_a_flow_of_their_own_size():
    """DIS refuses images under 12 px; a 1x1 or 8x9 video must still work."""
    for h, w in ((1, 1), (8, 9), (3, 40)):
        flow = estimate_flow(np.random.default_rng(0).random((3, h, w, 3), dtype=np.float32))
        assert flow.i_to_next.shape == (2, 2, h, w) and torch.isfinite(flow.i_to_next).all()
