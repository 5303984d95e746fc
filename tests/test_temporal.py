"""The temporal mechanisms measured on the output video, with tiny random x4 models on a synthetic pan.

benchmarks/bench_temporal.py is the instrument; these tests hold its numbers to the issue's bars.
Random weights say nothing about quality; they do show what guidance, propagation and clips do.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_temporal as bench  # noqa: E402
from tiny_sd import one_torch_thread, tiny_sd_x4_folder  # noqa: E402, F401  (fixtures)

from vsrup.config import SampleConfig, UpscaleConfig  # noqa: E402
from vsrup.models import sd_x4  # noqa: E402
from vsrup.pipeline import in_span, upscale_frames  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def measured(tiny_sd_x4_folder):
    torch.manual_seed(0)
    return bench.measure(tiny_sd_x4_folder)


def test_motion_guidance_halves_the_warping_error_and_keeps_detail(measured):
    rows = measured["rows"]
    off, guided = rows["off"], rows["guidance on x0 (default)"]
    assert guided["warping_error"] <= 0.5 * off["warping_error"]
    assert guided["detail"] >= 0.7 * off["detail"]


def test_propagation_lowers_the_warping_error_further(measured):
    rows = measured["rows"]
    assert rows["guidance on x0 + propagation every 3rd step"]["warping_error"] < rows["guidance on x0 (default)"]["warping_error"]


def test_no_jump_at_clip_boundaries(measured):
    cb = measured["clip_boundary"]
    assert cb["ratio"] <= 1.25  # consecutive-frame difference across boundaries vs inside clips
    assert cb["ratio_to_one_clip"] <= 1.25  # and against the same frames sampled as one clip


@pytest.mark.parametrize("k", [3, 6, 9])
def test_partial_runs_give_the_whole_runs_frames_bit_for_bit(tiny_sd_x4_folder, k):
    """Two runs over [0, k) and [k, n) give exactly the frames of one run, guidance, clips and cuts included."""
    frames = bench.pan(n=14, h=16, w=20)
    frames[10:] = frames[10:, :, ::-1] * 0.5 + 0.4  # a scene cut at 10
    config = UpscaleConfig(model=str(tiny_sd_x4_folder), device="cpu", sample=SampleConfig(steps=4, clip_len=5, clip_overlap=2))
    upscaler = sd_x4.Model(str(tiny_sd_x4_folder), config)
    items = [bench.Frame(i, f) for i, f in enumerate(frames)]

    def run(first, stop):
        return [(f.index, image) for f, image in upscale_frames(items, upscaler, config, in_span(first, stop), stop)]

    whole = run(0, None)
    parts = run(0, k) + run(k, None)
    assert [i for i, _ in whole] == [i for i, _ in parts] == list(range(14))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole, parts))
