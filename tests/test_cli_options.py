"""The options people reach for first (output size, encoder control, time trimming, faststart) and
--help, through the real entry point. Jobs are the lanczos model on a few tiny frames."""

import os
import subprocess
import sys

import av
import numpy as np
import pytest

import media_factory as mf

from vsrup.config import UpscaleConfig


@pytest.fixture
def clip(tmp_path):
    return mf.make_video(tmp_path / "a.mp4", frames=6, size=(32, 24))


def video_of(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = [f.pts for f in c.decode(s)]
        return s.width, s.height, pts


@pytest.mark.parametrize("args,size", [
    (["-s", "3.5"], (112, 84)),
    (["-s", "2"], (64, 48)),
    (["--width", "100"], (100, 76)),  # 75 follows the aspect ratio, rounded to even
    (["--height", "50"], (66, 50)),
    (["--width", "40", "--height", "40"], (40, 40)),
])
def test_output_size_from_a_float_scale_or_a_target_size(run_vsrup, tmp_path, clip, args, size):
    code, err = run_vsrup("upscale", clip, tmp_path / "o.mp4", "-m", "lanczos", *args)
    assert code == 0, err
    assert video_of(tmp_path / "o.mp4")[:2] == size
    assert ("stretched" in err) == (args[0] == "--width" and "--height" in args)


def test_output_size_rounding():
    assert UpscaleConfig(scale=3).output_size(853, 480) == (2559, 1440)  # an integer scale is exact, odd or not
    assert UpscaleConfig(scale=3.5).output_size(853, 480) == (2986, 1680)  # 2985.5 -> the nearest even
    assert UpscaleConfig(width=1920).output_size(853, 480) == (1920, 1080)
    assert UpscaleConfig(height=2160).output_size(640, 480) == (2880, 2160)


@pytest.mark.parametrize("args", [["--width", "20"], ["-s", "2", "--height", "48"]])
def test_a_size_that_is_no_upscale_or_contradicts_is_a_usage_error(run_vsrup, tmp_path, clip, args):
    code, err = run_vsrup("upscale", clip, tmp_path / "o.mp4", "-m", "lanczos", *args)
    assert code == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "o.mp4").exists()


def test_encoder_options_reach_the_encoder(run_vsrup, tmp_path, clip):
    code, err = run_vsrup("upscale", clip, tmp_path / "o.mp4", "-m", "lanczos", "-s", "2", "--threads", "1",
                          "-e", "x264-params=keyint=7", "--encoder-opt", "tune=grain", "--encoder-opt", "maxrate=2M", "-e", "bufsize=4M")
    assert code == 0, err
    header = (tmp_path / "o.mp4").read_bytes()  # x264 writes its settings into the stream (an SEI)
    assert b"keyint=7" in header and b"psy_rd=1.00:0.25" in header and b"threads=1" in header  # tune grain: psy-trellis 0.25
    assert b"vbv_maxrate=2000" in header


@pytest.mark.parametrize("args,named", [
    (["--encoder-opt", "bogus=1"], "--encoder-opt bogus: libx264 has no such option"),
    (["--crf", "60"], "--crf 60 is outside libx264's range 0..51"),
    (["--codec", "libvpx-vp9", "--preset", "turbo"], "--preset turbo"),
    (["--preset", "turbo"], "--preset turbo is not one of libx264's presets"),
    (["--codec", "libsvtav1", "--preset", "fast"], "--preset fast: libsvtav1 takes a number"),
    (["--encoder-opt", "profile=baseline", "--pix-fmt", "yuv444p"], "libx264 refused its settings: baseline profile doesn't support 4:4:4"),
])
def test_encoder_settings_it_cannot_take_fail_before_the_work_naming_the_option(run_vsrup, tmp_path, clip, monkeypatch, args, named):
    from vsrup import pipeline

    def must_not_load(self):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(pipeline.LazyModel, "get", must_not_load)
    suffix = ".webm" if "libvpx-vp9" in args or "libsvtav1" in args else ".mp4"
    code, err = run_vsrup("upscale", clip, tmp_path / ("o" + suffix), "-m", "lanczos", "-s", "2", *args)
    assert code == 2 and named in err and err.count("\n") == 1, err


def test_x265_never_prints_its_own_lines(tmp_path, clip):
    """x265 writes its errors to stderr itself: they come back inside vsrup's one line."""
    result = subprocess.run([sys.executable, "-m", "vsrup", "upscale", clip, tmp_path / "o.mp4", "-m", "lanczos", "-s", "2",
                             "--codec", "libx265", "-e", "x265-params=ctu=7"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "vsrup: error: libx265 refused its settings: max cu size must be 16, 32, or 64\n"
    ok = subprocess.run([sys.executable, "-m", "vsrup", "upscale", clip, tmp_path / "p.mp4", "-m", "lanczos", "-s", "2", "-q",
                         "--codec", "libx265", "--preset", "ultrafast"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr


@pytest.mark.parametrize("args,kept", [
    (["--start", "0.08"], [2, 3, 4, 5]),
    (["--start", "00:00:00.04", "--end", "0.12"], [1, 2]),
    (["--start", "0:0.04", "--duration", "0.08"], [1, 2]),
    (["--duration", "0.1"], [0, 1, 2]),
])
def test_time_trimming_keeps_the_frames_of_the_span_with_their_timestamps(run_vsrup, tmp_path, clip, args, kept):
    whole = video_of(clip)[2]  # 25 fps: frame i at 0.04 i s
    code, err = run_vsrup("upscale", clip, tmp_path / "o.mp4", "-m", "lanczos", "-s", "2", *args)
    assert code == 0, err
    assert video_of(tmp_path / "o.mp4")[2] == [whole[i] for i in kept]


@pytest.mark.parametrize("make", [mf.mp4_aac, mf.long_mkv], ids=["mp4", "mkv"])
def test_a_start_past_the_end_is_a_usage_error(run_vsrup, tmp_path, make):
    src = make(tmp_path)
    code, err = run_vsrup("upscale", src, tmp_path / ("o" + src.suffix), "-m", "lanczos", "-s", "2", "--start", "1:00")
    assert code == 2 and "--start 60 s is past the end of the input" in err, err


@pytest.mark.parametrize("suffix,flag,front", [(".mp4", None, True), (".mov", None, True), (".mp4", "--no-faststart", False)])
def test_mp4_and_mov_have_their_index_at_the_front_by_default(run_vsrup, tmp_path, clip, suffix, flag, front):
    out = tmp_path / ("o" + suffix)
    code, err = run_vsrup("upscale", clip, out, "-m", "lanczos", "-s", "2", *([flag] if flag else []))
    assert code == 0, err
    data = out.read_bytes()
    assert (data.find(b"moov") < data.find(b"mdat")) == front


def help_text(*command):
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "vsrup", *command, "--help"], capture_output=True, text=True, env=env).stdout


def test_help_is_grouped_shows_choices_and_ranges_and_fits_80_columns():
    text = help_text("upscale")
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in text, max(lines, key=len)
    assert "Usage: vsrup upscale [OPTIONS] INPUT... OUTPUT" in text and "{" not in text and "<list" not in text
    for panel in ("Input and output", "Model and sampling", "Temporal consistency", "Tiles and memory", "Encoding", "Batch and logging"):
        assert f"─ {panel} ─" in text, panel
    assert "copy|aac|none" in text and "ddim|ddpm|dpm++" in text and "2m|unipc|euler" in text and "[0<=x<=63]" in text and "[1.0<=x<=8.0]" in text
    assert "ultrafast" in text and "yuv420p10le" in text and "libvpx-vp9" in text  # --preset, --pix-fmt, --codec name their values
    frames = help_text("frames")
    assert max(map(len, frames.splitlines())) <= 80 and "Usage: vsrup frames [OPTIONS] IN_DIR OUT_DIR" in frames


def test_a_time_span_is_the_frame_span_it_holds(run_vsrup, tmp_path, clip):
    """Times become frame indices once, from the decoded timestamps: the output is the --frames one, byte for byte."""
    code, err = run_vsrup("upscale", clip, tmp_path / "t.mkv", "-m", "lanczos", "-s", "2", "--start", "0.04", "--end", "0.16")
    assert code == 0, err
    code, err = run_vsrup("upscale", clip, tmp_path / "f.mkv", "-m", "lanczos", "-s", "2", "--frames", "1:4")
    assert code == 0, err
    assert video_of(tmp_path / "t.mkv")[2] == video_of(tmp_path / "f.mkv")[2] and len(video_of(tmp_path / "t.mkv")[2]) == 3
    code, err = run_vsrup("upscale", clip, tmp_path / "e.mkv", "-m", "lanczos", "--start", "0.041", "--end", "0.05")
    assert code == 2 and "no frame starts between 0.041 s and 0.05 s" in err, err


def test_an_image_folder_takes_a_width_too(run_vsrup, tmp_path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("1.png", (40, 30)), ("2.png", (40, 30))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / "in" / name)
    code, err = run_vsrup("frames", tmp_path / "in", tmp_path / "out", "-m", "lanczos", "--width", "100")
    assert code == 0, err
    assert [Image.open(tmp_path / "out" / n).size for n in ("1.png", "2.png")] == [(100, 76), (100, 76)]  # 75 -> even
