"""Mistakes a user of ffmpeg, video2x or Real-ESRGAN makes on the way in, through the real entry point.

Each job is the lanczos model on a few tiny frames: well under a second each.
"""

import pytest

import media_factory as mf


@pytest.fixture
def clip(tmp_path):
    return mf.make_video(tmp_path / "a.mp4", frames=4, size=(32, 24))


def test_quiet_prints_nothing_for_a_batch_that_worked(run_vsrup, tmp_path, clip):
    other = mf.make_video(tmp_path / "b.mp4", frames=3, size=(32, 24))
    code, err = run_vsrup("upscale", clip, other, tmp_path / "out", "-m", "lanczos", "-s", "2", "-q")
    assert code == 0 and err == "", err
    assert (tmp_path / "out" / "a.mp4").exists() and (tmp_path / "out" / "b.mp4").exists()
    code, err = run_vsrup("upscale", clip, other, tmp_path / "out2", "-m", "lanczos", "-s", "2")
    assert "2 done, 0 skipped, 0 failed" in err  # without -q the summary is there


def test_format_that_contradicts_a_named_output_is_refused(run_vsrup, tmp_path, clip):
    code, err = run_vsrup("upscale", clip, tmp_path / "outF.mp4", "--format", "webm", "-m", "lanczos")
    assert code == 2 and "--format webm" in err and ".mp4" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == [clip]
    code, err = run_vsrup("upscale", clip, tmp_path / "outF", "--format", "mkv", "-m", "lanczos", "-s", "2")
    assert code == 0 and (tmp_path / "outF.mkv").exists(), err  # a name without extension takes the format


def test_several_inputs_never_make_a_directory_named_like_a_video(run_vsrup, tmp_path, clip):
    other = mf.make_video(tmp_path / "b.mp4", frames=3, size=(32, 24))
    code, err = run_vsrup("upscale", clip, other, tmp_path / "out.mp4", "-m", "lanczos")
    assert code == 2 and "out.mp4" in err and "directory" in err, err
    assert not (tmp_path / "out.mp4").exists()


def test_a_trailing_slash_names_a_directory_for_one_input(run_vsrup, tmp_path, clip):
    code, err = run_vsrup("upscale", clip, f"{tmp_path}/newdir/", "-m", "lanczos", "-s", "2")
    assert code == 0, err
    assert (tmp_path / "newdir" / "a.mp4").is_file()


def test_a_missing_local_model_folder_is_not_taken_for_a_hub_id(run_vsrup, tmp_path, clip, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # were it taken as a Hub id, the message would be about the cache
    code, err = run_vsrup("upscale", clip, tmp_path / "o.mp4", "--model", "weights/sdx4")
    assert code == 2 and "'weights/sdx4': no such folder" in err and "cache" not in err, err


@pytest.mark.parametrize("make", [mf.mp4_aac, mf.long_mkv], ids=["mp4", "mkv"])
def test_frames_past_the_end_is_the_same_usage_error_in_every_container(run_vsrup, tmp_path, make):
    src = make(tmp_path)
    code, err = run_vsrup("upscale", src, tmp_path / ("o" + src.suffix), "-m", "lanczos", "-s", "2", "--frames", "100:200")
    assert code == 2, err
    assert "--frames starts at 100 but the input has" in err and err.count("\n") == 1, err
    assert not (tmp_path / ("o" + src.suffix)).exists()


def test_device_with_lanczos_warns_that_it_is_ignored(run_vsrup, tmp_path, clip):
    code, err = run_vsrup("upscale", clip, tmp_path / "o.mp4", "-m", "lanczos", "-s", "2", "--device", "cuda")
    assert code == 0 and "lanczos runs on the CPU; --device cuda is ignored" in err, err


def test_an_audio_codec_is_named_as_one(run_vsrup, tmp_path, clip):
    code, err = run_vsrup("upscale", clip, tmp_path / "o.mp4", "-m", "lanczos", "--codec", "aac")
    assert code == 2 and "aac is an audio encoder; --codec takes a video encoder" in err, err
