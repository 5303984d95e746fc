"""The README's main command with no --model: the SD x4 upscaler, loaded from a seeded Hugging Face cache.

The cache holds tiny random components under the real repo id with HF_HUB_OFFLINE=1, so the real
loading code runs and the job takes seconds on a CPU.
"""

import subprocess
from pathlib import Path
import sys

import av
import numpy as np

import media_factory as mf
from tiny_sd import point_hf_at, tiny_sd_x4_cache  # noqa: F401  (fixture)


def vsrup(*args):
    """The console command in a fresh process: what a user runs."""
    return subprocess.run([sys.executable, "-m", "vsrup", *map(str, args)], capture_output=True, text=True, timeout=600)


def streams(path):
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        times = [round(f.time, 4) for f in c.decode(video)]
        return times, (video.width, video.height), [(s.type, s.codec_context.name) for s in c.streams]


def test_readme_command_runs_end_to_end_from_the_cache(tiny_sd_x4_cache, tmp_path):
    src = mf.make_video(tmp_path / "in.mp4", frames=10, size=(24, 16), audio=(mf.Audio("aac", language="eng"),))
    out = tmp_path / "out.mp4"
    result = vsrup("upscale", src, out, "--scale", "4")
    assert result.returncode == 0, result.stderr
    assert "running on the CPU: about" in result.stderr  # the time estimate comes before the long work
    src_times, (w, h), src_streams = streams(src)
    out_times, size, out_streams = streams(out)
    assert out_times == src_times  # one output frame per input frame, each at its input time
    assert size == (4 * w, 4 * h)
    assert out_streams == src_streams == [("video", "h264"), ("audio", "aac")]
    with av.open(str(out)) as c:
        assert c.streams.audio[0].language == "eng"


def test_offline_without_a_cached_copy_says_so(monkeypatch, tmp_path, run_vsrup):
    point_hf_at(monkeypatch, tmp_path / "empty-hf")
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "out.mp4"
    code, err = run_vsrup("upscale", src, out)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "vsrup download" in lines[0] and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_download_offline_is_one_line_and_exit_1(monkeypatch, tmp_path, run_vsrup):
    point_hf_at(monkeypatch, tmp_path / "empty-hf")
    code, err = run_vsrup("download")
    assert code == 1
    assert err.startswith("vsrup: error: ") and err.count("\n") == 1, err


def test_download_finds_a_cached_model_offline(tiny_sd_x4_cache, run_vsrup):
    code, err = run_vsrup("download", "sd-x4")
    assert code == 0, err
    printed = [line for line in run_vsrup.stdout.splitlines() if line.strip()]
    assert (Path(printed[-1]) / "model_index.json").exists()


def rgb_frames(path):
    with av.open(str(path)) as c:
        return [(round(f.time, 4), f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]


def test_two_partial_runs_equal_one_whole_run_to_the_last_bit(tiny_sd_x4_cache, tmp_path, run_vsrup):
    """`--frames 0:K` + `--frames K:N` give exactly the whole run's frames (lossless RGB output to compare)."""
    src = mf.make_video(tmp_path / "in.mp4", frames=11, size=(20, 12))
    lossless = ["--codec", "libx264rgb", "--crf", "0", "--pix-fmt", "rgb24", "--steps", "3", "--clip-len", "4", "--clip-overlap", "2"]
    for name, span in (("whole.mkv", []), ("a.mkv", ["--frames", "0:5"]), ("b.mkv", ["--frames", "5:"])):
        code, err = run_vsrup("upscale", src, tmp_path / name, *lossless, *span)
        assert code == 0, err
    whole = rgb_frames(tmp_path / "whole.mkv")
    parts = rgb_frames(tmp_path / "a.mkv") + rgb_frames(tmp_path / "b.mkv")
    assert [t for t, _ in whole] == [t for t, _ in parts] and len(whole) == 11
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole, parts))


def test_frames_folder_with_the_default_model(tiny_sd_x4_cache, tmp_path, run_vsrup):
    from PIL import Image

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2, 10):
        Image.fromarray((rng.random((12, 16, 4)) * 255).astype(np.uint8), "RGBA").save(src / f"{i}.png")
    code, err = run_vsrup("frames", src, out, "--steps", "2")
    assert code == 0, err
    for i in (1, 2, 10):
        with Image.open(out / f"{i}.png") as im:
            assert im.size == (64, 48) and im.mode == "RGBA"


def test_flow_raft_without_torchvision_fails_before_any_work(tiny_sd_x4_cache, tmp_path, run_vsrup):
    src = mf.mp4_aac(tmp_path)
    code, err = run_vsrup("upscale", src, tmp_path / "out.mp4", "--flow", "raft")
    assert code == 2 and "torchvision" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]
