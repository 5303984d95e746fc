"""What the pipeline does around every model call: flow, the memory plan, the CPU estimate, the colour fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_sd import one_torch_thread, tiny_sd_x4_cache, x4_model  # noqa: F401  (fixtures)

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.models import ModelInfo, Window
from vsrup.runner import CpuEstimate, Flows, ModelRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Constant:
    """A stand-in generative model: a flat 0.25 output, whatever the input."""

    info = ModelInfo(name="flat", scale=2, kind="clip", flow=True, generative=True, cost=None)
    device = torch.device("cpu")

    def sample(self, window, plan, progress):
        t, h, w, _ = window.frames.shape
        progress(0.5)
        return torch.full((t, 2 * h, 2 * w, 3), 0.25)


def test_the_cpu_estimate_is_one_warning_from_the_first_step(tiny_sd_x4_cache):
    events = []
    model, config = x4_model(steps=3, guidance=5.0, tile=0)
    runner = ModelRunner(model, config, total=100, emit=events.append)
    frames = np.random.default_rng(0).random((2, 8, 12, 3), dtype=np.float32)
    for indices in ((0, 1), (2, 3)):
        window = Window(frames, indices)
        runner.run(window, lambda plan, progress: model.sample(window, plan, progress))
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].message.startswith("running on the CPU: about")
    assert "for 100 frame(s) of 12x8" in warnings[0].message and warnings[0].data["estimate_seconds"] > 0


def test_the_estimate_scales_with_the_frames_sampled_overlaps_included(monkeypatch):
    clock = iter([0.0, 2.0])  # started at 0 s; the first report comes 2 s later
    monkeypatch.setattr("vsrup.runner.time.perf_counter", lambda: next(clock))
    events = []
    estimate = CpuEstimate(total=20, clip_len=8, overlap=2, emit=events.append)
    progress = estimate.watch(Window(np.zeros((8, 4, 6, 3), np.float32), tuple(range(8))))
    progress(0.25)  # a quarter of the window in 2 s: 8 s per window of 8, 1 s per frame
    progress(0.5)  # later reports change nothing
    windows = 3  # 20 frames in clips of 8 overlapping by 2: 0-7, 6-13, 12-19
    assert [e.data["estimate_seconds"] for e in events] == [float(20 + (windows - 1) * 2)]


def test_a_sequential_models_estimate_skips_its_restart_frame_and_counts_each_frame_once(monkeypatch):
    """The first frame of a causal model runs without its guidance (cheaper); each frame is sampled once."""
    now = [0.0]

    class Causal(Constant):
        info = ModelInfo(name="causal", scale=2, kind="sequential", flow=False, generative=True, cost=None)

        def sample(self, window, plan, progress):
            now[0] += 1.0 if window.indices == (0,) else 3.0  # half of the restart frame in 1 s, of a guided one in 3 s
            return super().sample(window, plan, progress)

    monkeypatch.setattr("vsrup.runner.time.perf_counter", lambda: now[0])
    events = []
    runner = ModelRunner(Causal(), UpscaleConfig(scale=2, sample=SampleConfig(clip_len=8, clip_overlap=2)), total=50, emit=events.append)
    for i in range(2):
        window = Window(np.zeros((1, 4, 6, 3), np.float32), (i,))
        runner.run(window, lambda plan, progress: Causal().sample(window, plan, progress))
    assert [e.data["estimate_seconds"] for e in events if e.kind == "warning"] == [50 * 6.0]  # 6 s a frame, 50 frames, no overlaps


def test_colour_fix_and_clamp_apply_to_generative_models_only():
    frames = np.full((1, 4, 4, 3), 0.75, np.float32)
    window = Window(frames, (0,))
    fixed = ModelRunner(Constant(), UpscaleConfig(scale=2, sample=SampleConfig(color_fix="adain"))).run(
        window, lambda plan, progress: Constant().sample(window, plan, progress)
    )
    assert np.allclose(fixed, 0.75, atol=1e-3)  # the flat output takes the input's mean
    plain = ModelRunner(Constant(), UpscaleConfig(scale=2, sample=SampleConfig(color_fix="none"))).run(
        window, lambda plan, progress: Constant().sample(window, plan, progress)
    )
    assert np.allclose(plain, 0.25)


def test_output_is_resized_to_the_asked_scale_and_clamped():
    frames = np.zeros((2, 6, 10, 3), np.float32)
    window = Window(frames, (0, 1))
    out = ModelRunner(Constant(), UpscaleConfig(scale=3, sample=SampleConfig(color_fix="none"))).run(
        window, lambda plan, progress: 4.0 * Constant().sample(window, plan, progress)
    )
    assert out.shape == (2, 18, 30, 3) and out.dtype == np.float32 and out.max() <= 1.0


def test_flows_only_for_models_that_ask_and_the_worker_closes():
    frames = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
    with Flows(Constant(), "dis") as flows:
        flows.prefetch(frames, (0, 1, 2))
        flow = flows.get(frames, (0, 1, 2))
        assert flow.num_frames == 3 and flows.get(frames[:1], (0,)) is None
        worker = flows.worker
    with pytest.raises(RuntimeError):  # closed: it takes no more work
        worker.submit(frames)

    class NoFlow(Constant):
        info = ModelInfo(name="flat", scale=2, kind="clip", flow=False, generative=True, cost=None)

    with Flows(NoFlow(), "dis") as flows:
        assert flows.worker is None and flows.get(frames, (0, 1, 2)) is None
