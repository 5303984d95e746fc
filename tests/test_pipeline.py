"""The streaming core: frames in order, exactly once, and the same whatever span a run covers.

Stand-in models hold to the contract of ``vsrup.models`` (``info``, ``device``, ``sample`` or ``step``)
without any network: the pipeline must carry both kinds through one contract.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from test_clips import sequence
from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.errors import InputDataError, OutputError, UsageError
from vsrup.flow import Flow
from vsrup.models import ModelInfo
from vsrup.pipeline import Job, Result, exit_code, in_span, plan_jobs, upscale_frames


class ClipDependent:
    """A stand-in clip model whose output depends on the whole clip (like a temporal model): x2 nearest + clip mean."""

    info = ModelInfo(name="clip-mean", scale=2, kind="clip", flow=False, generative=False, cost=None)
    device = torch.device("cpu")

    def __init__(self):
        self.calls = []

    def sample(self, window, plan, progress):
        frames, indices = window.frames, window.indices
        self.calls.append(list(indices))
        up = frames.repeat(2, axis=1).repeat(2, axis=2)  # (T, 2h, 2w, 3)
        return torch.from_numpy(0.5 * up + 0.1 * frames.mean() + 0.01 * np.asarray(indices, np.float32)[:, None, None, None])


def run(frames, config, first=0, stop=None, model=None):
    model = model or ClipDependent()
    out = list(upscale_frames(frames, model, config, in_span(first, stop), stop))
    return [f.index for f, _ in out], [img for _, img in out], model.calls


CONFIG = UpscaleConfig(scale=2, sample=SampleConfig(clip_len=6, clip_overlap=2, scene_threshold=0.3))


@pytest.mark.parametrize("k", [1, 4, 5, 7, 9, 13])
def test_two_partial_runs_equal_one_whole_run_bit_for_bit(k):
    frames = sequence(17, cuts=(11,))
    idx, whole, _ = run(frames, CONFIG)
    assert idx == list(range(17))
    idx_a, part_a, _ = run(frames, CONFIG, 0, k)
    idx_b, part_b, _ = run(frames, CONFIG, k, None)
    assert idx_a + idx_b == idx
    for a, b in zip(whole, part_a + part_b):
        assert np.array_equal(a, b)


def test_partial_run_samples_only_the_clips_it_needs_and_stops_early():
    frames = sequence(30)
    _, _, calls = run(frames, CONFIG, 10, 13)
    assert calls == [[8, 9, 10, 11, 12, 13], [12, 13, 14, 15, 16, 17]]


@pytest.mark.parametrize("asked,shape", [({"scale": 3}, (36, 60)), ({"scale": 3.5}, (42, 70)), ({"width": 50}, (30, 50)), ({"height": 25, "width": 33}, (25, 33))])
def test_model_scale_is_resized_to_the_asked_size(asked, shape):
    frames = sequence(5, h=12, w=20)
    config = replace(CONFIG, **asked)
    _, out, _ = run(frames, config)
    assert all(img.shape == (*shape, 3) for img in out)


def test_plan_jobs(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mkv"
    a.touch(), b.touch()
    assert plan_jobs([a], tmp_path / "out.mp4") == [Job(a, tmp_path / "out.mp4")]
    assert plan_jobs([a, b], tmp_path / "o", "mkv") == [Job(a, tmp_path / "o" / "a.mkv"), Job(b, tmp_path / "o" / "b.mkv")]
    assert plan_jobs([tmp_path], tmp_path / "o") == [Job(a, tmp_path / "o" / "a.mp4"), Job(b, tmp_path / "o" / "b.mkv")]
    (tmp_path / "c.mp4").touch()
    with pytest.raises(UsageError):
        plan_jobs([tmp_path / "c.mp4", tmp_path / "a.mp4"], tmp_path / "b.mkv")  # a file as the output of several


def test_exit_code_of_a_batch():
    job = Job(None, None)
    ok, data, io = Result(job, "done"), Result(job, "failed", error=InputDataError("x")), Result(job, "failed", error=OutputError("y"))
    assert exit_code([ok, Result(job, "skipped")]) == 0
    assert exit_code([ok, data]) == 65
    assert exit_code([data, io]) == 1


class Recurrent:
    """A stand-in sequential model: out_i = 0.5 up(x_i) + 0.5 W(out_{i-1}, f_{i->i-1}); a restart drops the memory.

    It records what it was given: each frame's index, whether it had a state, and the flow's pair.
    """

    info = ModelInfo(name="recurrent", scale=2, kind="sequential", flow=True, generative=False, cost=None, restart_every=4)
    device = torch.device("cpu")

    def __init__(self, restart_every=4):
        self.info = replace(Recurrent.info, restart_every=restart_every)
        self.calls = []

    def step(self, window, state, plan, progress):
        from vsrup.flow import upscale_flow, warp

        assert window.frames.shape[0] == 1 and len(window.indices) == 1
        self.calls.append((window.indices[0], state is not None, None if window.flow is None else window.flow.num_frames))
        up = torch.from_numpy(window.frames.repeat(2, axis=1).repeat(2, axis=2)).permute(0, 3, 1, 2)  # (1, 3, 2h, 2w)
        if state is not None:
            assert isinstance(window.flow, Flow) and window.flow.num_frames == 2  # the pair (previous, this)
            back = upscale_flow(window.flow.next_to_i, 2)  # (1, 2, 2h, 2w) this frame -> the previous one
            up = 0.5 * up + 0.5 * warp(state, back)
        progress(1.0)
        return up.permute(0, 2, 3, 1), up  # (1, 2h, 2w, 3), the state


@pytest.mark.parametrize("k", [1, 3, 4, 6, 9, 12])
def test_sequential_model_partial_runs_equal_one_whole_run(k):
    frames = sequence(15, cuts=(10,), h=16, w=20)
    config = replace(CONFIG, sample=replace(CONFIG.sample, clip_len=6))
    idx, whole, calls = run(frames, config, model=Recurrent())
    assert idx == list(range(15))
    # Restart points: the first frame, every 4 frames of a shot, and the cut at 10 (which starts a new count).
    assert [i for i, had_state, _ in calls if not had_state] == [0, 4, 8, 10, 14]
    assert all(pair == 2 for _, had_state, pair in calls if had_state)
    idx_a, part_a, _ = run(frames, config, 0, k, model=Recurrent())
    model_b = Recurrent()
    idx_b, part_b, _ = run(frames, config, k, None, model=model_b)
    assert idx_a + idx_b == idx
    assert all(np.array_equal(a, b) for a, b in zip(whole, part_a + part_b))
    first_run = model_b.calls[0][0]
    assert first_run == max(r for r in (0, 4, 8, 10, 14) if r <= k)  # it starts at the restart point before k


def test_sequential_state_carries_flow_and_memory():
    frames = sequence(6, h=16, w=20)
    _, with_memory, _ = run(frames, CONFIG, model=Recurrent(restart_every=100))
    _, memoryless, _ = run(frames, CONFIG, model=Recurrent(restart_every=1))
    assert np.array_equal(with_memory[0], memoryless[0])  # frame 0 is a restart either way
    assert all(np.abs(a - b).max() > 0.01 for a, b in zip(with_memory[1:], memoryless[1:]))


def test_a_sequential_models_next_flow_is_estimated_while_a_frame_samples(monkeypatch):
    """The pair (i, i+1) is handed to the flow worker before frame i samples (and never across a cut), so the
    flow is off the critical path; the frames are those of estimating each pair when it is needed."""
    from vsrup.flow import FlowWorker

    order = []
    submit = FlowWorker.submit
    monkeypatch.setattr(FlowWorker, "submit", lambda self, frames: (order.append("flow"), submit(self, frames))[1])

    class Logged(Recurrent):
        def step(self, window, state, plan, progress):
            order.append(window.indices[0])
            return super().step(window, state, plan, progress)

    frames = sequence(8, cuts=(5,), h=16, w=20)
    _, images, _ = run(frames, CONFIG, model=Logged(restart_every=None))
    # 4 pairs in the shot 0-4 and 2 in the shot 5-7: each submitted before the first frame of its pair samples
    assert order == ["flow", 0, "flow", 1, "flow", 2, "flow", 3, 4, "flow", 5, "flow", 6, 7]
    from vsrup.clips import restarts
    from vsrup.flow import estimate_flow
    from vsrup.models import Window

    straight, state, previous, reference = Recurrent(restart_every=None), None, None, []  # each pair's flow when needed
    for frame, restart in restarts(frames, None, CONFIG.sample.scene_threshold):
        state = None if restart else state
        flow = estimate_flow(np.stack([previous.image, frame.image])) if state is not None else None
        out, state = straight.step(Window(frame.image[None], (frame.index,), flow), state, None, lambda fraction: None)
        reference.append(out[0].clamp(0, 1).numpy())
        previous = frame
    assert len(images) == len(reference) == 8
    assert all(np.array_equal(a, b) for a, b in zip(images, reference))


def test_sequential_model_without_fixed_restarts_runs_from_a_shot_start():
    """Without restart_every the shot's end is not known ahead: a partial run computes from each shot start
    that a wanted frame may follow (here 0, since the cut at 5 is not yet seen there), and stops at the end."""
    frames = sequence(12, cuts=(5,), h=16, w=20)
    model = Recurrent(restart_every=None)
    idx, part, _ = run(frames, CONFIG, 8, 10, model=model)
    assert idx == [8, 9] and [i for i, _, _ in model.calls] == list(range(10))
    assert [i for i, had_state, _ in model.calls if not had_state] == [0, 5]
    _, whole, _ = run(frames, CONFIG, model=Recurrent(restart_every=None))
    assert all(np.array_equal(a, b) for a, b in zip(part, whole[8:10]))
