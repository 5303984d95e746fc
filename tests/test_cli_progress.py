"""Progress that tells the truth (rate and ETA from work over time, stages, estimated totals, the bar
gone after Ctrl-C, the CPU estimate without the compile time) and the --log-json schema of docs/cli.md."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

import media_factory as mf

from tiny_sd import tiny_sd_x4_cache  # noqa: F401  (fixture)

from vsrup import cli
from vsrup.events import Event
from vsrup.models import Window
from vsrup.progress import Tracker, sampled_frames
from vsrup.runner import CpuEstimate

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_burst_of_frames_does_not_make_a_fast_eta():
    """24 frames in clips of 8, 10 s per clip: when the first clip's 8 frames arrive microseconds apart,
    the ETA is the two clips left (20 s), not the 1 s a rate between those events would give."""
    clock = Clock()
    rate = cli.Rate(clock)
    rate.add(0.0)  # the work starts
    for k in range(1, 8):  # the window's steps report its progress
        clock.now = 10.0 * k / 8
        rate.add(8.0 * k / 8)
    for i in range(8):  # then its frames come out at once
        clock.now = 10.0 + 1e-6 * i
        rate.add(8.0)
    assert rate.eta(8.0, 24) == pytest.approx(20.0, rel=0.01)


def test_the_rate_follows_the_last_30_seconds_and_needs_one_second():
    clock = Clock()
    rate = cli.Rate(clock)
    rate.add(0.0)
    clock.now = 0.5
    rate.add(5.0)
    assert rate.per_second() is None  # half a second says nothing yet
    for t in range(1, 100):  # 1 frame/s for 100 s, then 4 frames/s
        clock.now = float(t)
        rate.add(float(t))
    for t in range(100, 140):
        clock.now = float(t)
        rate.add(99.0 + 4 * (t - 99))
    assert rate.per_second() == pytest.approx(4.0, rel=0.05)


def test_the_reporter_starts_its_clock_with_the_work_not_the_model_load(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(cli.time, "monotonic", clock)
    report = cli.Reporter(log_json=True)
    lines = []
    report.json_line = lines.append
    tracker = Tracker("in.mkv", 24, estimated=True, window=8, overlap=2, emit=report)
    report(Event("start", path="in.mkv", total=24, data={"total_estimated": True}))
    clock.now = 60.0  # a minute loading the model
    tracker.stage("sample", "sampling clip 1/4", clip=1, clips=4, frames=8)
    clock.now = 70.0
    tracker.worked(8.0)
    progress = [r for r in lines if r["event"] == "progress"][-1]
    assert progress["eta_seconds"] == pytest.approx((sampled_frames(24, 8, 2) - 8) * 10 / 8, rel=0.01)
    assert progress["fps"] == pytest.approx(0.8 * 24 / 30, rel=0.01) and progress["total_estimated"] is True


def test_the_bar_shows_the_stage_the_estimated_total_and_goes_after_ctrl_c():
    from rich.console import Console

    report = cli.Reporter()
    report.err = Console(file=io.StringIO(), force_terminal=True, width=120)
    tracker = Tracker("in.mkv", 24, estimated=True, window=8, overlap=2, emit=report)
    report(Event("start", path="in.mkv", total=24, data={"total_estimated": True}))
    tracker.stage("sample", "sampling clip 1/4", clip=1, clips=4, frames=8)
    tracker.worked(4.0)
    report.progress.refresh()
    assert "0/~24" in report.err.file.getvalue() and "sampling clip 1/4 50%" in report.err.file.getvalue()
    with pytest.raises(cli.typer.Exit) as stopped:
        with cli.reporting(report):
            raise KeyboardInterrupt
    assert stopped.value.exit_code == 130 and report.progress is None
    screen = report.err.file.getvalue()
    tail = screen[screen.rindex("sampling clip"):]
    assert "\x1b[2K" in tail and tail.rstrip().endswith("vsrup: error: interrupted")  # the bar's line erased, then the error


def test_the_cpu_estimate_leaves_the_compile_time_out(monkeypatch):
    clock = iter([0.0, 60.0, 62.0])  # watched at 0 s; the first step ends after a 58 s compile, the second 2 s later
    monkeypatch.setattr("vsrup.runner.time.perf_counter", lambda: next(clock))
    events = []
    estimate = CpuEstimate(total=8, clip_len=8, overlap=2, emit=events.append, compiling=True)
    progress = estimate.watch(Window(np.zeros((8, 4, 6, 3), np.float32), tuple(range(8))))
    progress(0.1)
    progress(0.2)  # a tenth of the window in 2 s: 20 s for the window of 8 frames
    assert [e.data["estimate_seconds"] for e in events] == [20.0]
    assert "after compiling" in events[0].message


def documented() -> dict[str, set[str]]:
    """The fields of each event type, from the examples in docs/cli.md."""
    examples = [json.loads(line) for line in re.findall(r'^\{"event".*\}$', DOCS.read_text(), re.M)]
    fields: dict[str, set[str]] = {}
    for e in examples:
        keys = set(e) - ({"estimate_seconds"} if e["event"] == "warning" else set())
        assert fields.setdefault(e["event"], keys) == keys, f"two examples of {e['event']} disagree"
    return fields


def test_docs_show_one_example_of_every_event_type():
    assert set(documented()) == {"start", "stage", "progress", "info", "warning", "memory", "download", "done", "skipped", "error", "summary", "unit"}


def test_log_json_events_have_the_documented_fields(run_vsrup, tmp_path):
    fields = documented()
    (tmp_path / "bad").mkdir()
    long, bad = mf.long_mkv(tmp_path, frames=20), mf.corrupt(tmp_path / "bad")
    code, _ = run_vsrup("upscale", long, bad, f"{tmp_path}/out/", "-m", "lanczos", "-s", "2", "--device", "cuda", "--log-json")
    assert code == 65
    events = [json.loads(line) for line in run_vsrup.stdout.splitlines()]
    code, _ = run_vsrup("upscale", long, bad, f"{tmp_path}/out/", "-m", "lanczos", "-s", "2", "--skip-existing", "--log-json")
    events += [json.loads(line) for line in run_vsrup.stdout.splitlines()]
    code, _ = run_vsrup("upscale", long, tmp_path / "x.mkv", "--bogus", "--log-json")
    usage = [json.loads(line) for line in run_vsrup.stdout.splitlines()]
    assert code == 2 and [e["event"] for e in usage] == ["error"] and usage[0]["exit_code"] == 2
    events += usage
    kinds = {e["event"] for e in events}
    assert {"start", "stage", "progress", "warning", "memory", "done", "skipped", "error", "summary"} <= kinds
    for e in events:
        keys = set(e) - ({"estimate_seconds"} if e["event"] == "warning" else set())
        assert keys == fields[e["event"]], (e["event"], keys ^ fields[e["event"]])
    start = next(e for e in events if e["event"] == "start")
    assert start["total"] == 20 and start["total_estimated"] is True  # MKV does not count its frames: duration x rate
    stages = [e["stage"] for e in events if e["event"] == "stage" and e["input"] == str(long)]
    assert stages == ["load", "decode", "sample", "finish"]
    done = next(e for e in events if e["event"] == "done")
    assert done["frames"] == 20 and done["output"] == f"{tmp_path}/out/long.mkv" and done["seconds"] > 0
    warning = next(e for e in events if e["event"] == "warning")
    assert warning["input"] == str(long)  # the model's own events carry the job's input


def test_sampling_stages_name_the_clip_and_count_its_work():
    import torch

    from vsrup.config import SampleConfig, UpscaleConfig
    from vsrup.models import ModelInfo
    from vsrup.runner import ModelRunner

    class Halfway:
        info = ModelInfo(name="flat", scale=2, kind="clip", flow=False, generative=False, cost=None)

        def sample(self, window, plan, progress):
            t, h, w, _ = window.frames.shape
            progress(0.5)
            return torch.full((t, 2 * h, 2 * w, 3), 0.25)

    events = []
    config = UpscaleConfig(scale=2, sample=SampleConfig(color_fix="none", clip_len=4, clip_overlap=1))
    tracker = Tracker("in.mp4", 10, window=4, overlap=1, emit=events.append)
    runner = ModelRunner(Halfway(), config, tracker=tracker)
    frames = np.zeros((4, 4, 4, 3), np.float32)
    for start in (0, 3):
        window = Window(frames, tuple(range(start, start + 4)))
        runner.run(window, lambda plan, progress: Halfway().sample(window, plan, progress))
    assert [e.message for e in events if e.kind == "stage"] == ["sampling clip 1/3", "sampling clip 2/3"]
    assert [e.data["work"] for e in events if e.kind == "progress"] == [2.0, 4.0, 6.0, 8.0]
    assert tracker.work_total == 12  # 10 frames in clips of 4 overlapping by 1: 0-3, 3-6, 6-9


def test_a_diffusion_job_reports_its_clips_and_the_steps_inside_them(tiny_sd_x4_cache, run_vsrup, tmp_path):
    """The tiny SD x4 model from a seeded cache, on an MKV (no frame count: the total is estimated), at x3.5."""
    import av

    src = mf.make_video(tmp_path / "in.mkv", frames=10, size=(24, 16))
    code, err = run_vsrup("upscale", src, tmp_path / "o.mkv", "--steps", "3", "--clip-len", "4", "--clip-overlap", "1",
                          "--scale", "3.5", "--log-json")
    assert code == 0, err
    events = [json.loads(line) for line in run_vsrup.stdout.splitlines()]
    start = next(e for e in events if e["event"] == "start")
    assert start["total"] == 10 and start["total_estimated"] is True and (start["width"], start["height"]) == (84, 56)
    stages = [e["message"] for e in events if e["event"] == "stage"]
    assert stages[2] == "estimating the optical flow of clip 1"  # the later clips' flow is estimated ahead, often in time
    assert [m for m in stages if "optical flow" not in m] == [
        "loading the model", "decoding the first frames", "sampling clip 1/3", "sampling clip 2/3", "sampling clip 3/3", "encoding the last frames"]
    work = [e["work"] for e in events if e["event"] == "progress"]
    sampled = sum(e["frames"] for e in events if e["event"] == "stage" and e["stage"] == "sample")
    assert any(w % 1 for w in work[:4]) and work == sorted(work) and work[-1] == sampled  # steps inside a clip count by their share
    assert next(e for e in events if e["event"] == "progress")["work_total"] == 12  # expected: 10 frames, 2 overlaps sampled twice
    assert any(e["event"] == "warning" and "estimate_seconds" in e for e in events)  # the CPU estimate
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (84, 56)
