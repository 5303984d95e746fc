"""The streaming core: frames in order, exactly once, and the same whatever span a run covers."""

from dataclasses import replace

import numpy as np
import pytest

from test_clips import sequence
from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.pipeline import exit_code, in_span, plan_jobs, upscale_frames, Job, Result
from vsrup.errors import InputDataError, OutputError, UsageError


class ClipDependent:
    """A stand-in model whose output depends on the whole clip (like a temporal model): x2 nearest + clip mean."""

    scale = 2

    def __init__(self):
        self.calls = []

    def upscale(self, frames, indices):
        self.calls.append(list(indices))
        up = frames.repeat(2, axis=1).repeat(2, axis=2)  # (T, 2h, 2w, 3)
        return up + frames.mean(axis=0).mean() + 0.01 * np.asarray(indices, np.float32)[:, None, None, None]


def run(frames, config, first=0, stop=None):
    model = ClipDependent()
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


def test_model_scale_is_resized_to_the_asked_scale():
    frames = sequence(5, h=12, w=20)
    config = replace(CONFIG, scale=3)
    _, out, _ = run(frames, config)
    assert all(img.shape == (36, 60, 3) for img in out)


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
