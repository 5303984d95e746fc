"""probe(): the main video stream, its properties, every other stream, and one-line errors."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

import media_factory as mf
from conftest import shared_media_files
from vsrup.errors import InputDataError
from vsrup.media.probe import probe


def test_plain_mp4(tmp_path):
    info = probe(mf.mp4_aac(tmp_path))
    v = info.video
    assert (v.index, v.codec, v.width, v.height, v.pix_fmt, v.bit_depth) == (0, "h264", 64, 48, "yuv420p", 8)
    assert v.rate == 25 and v.frames == 12 and v.duration == pytest.approx(12 / 25)
    assert v.variable_rate is False and v.rotation == 0 and v.interlaced is False
    assert [(s.kind, s.codec, s.language) for s in info.streams] == [("video", "h264", None), ("audio", "aac", "eng")]
    audio = info.streams[1]
    assert (audio.channels, audio.sample_rate, audio.layout) == (2, 48000, "stereo")


def test_to_dict_is_json(tmp_path):
    info = probe(mf.mkv_opus_subrip(tmp_path))
    data = json.loads(json.dumps(info.to_dict()))
    assert data["video"]["time_base"] == "1/1000"  # Matroska's millisecond time base
    assert [s["codec"] for s in data["streams"]] == ["h264", "opus", "srt"]  # FFmpeg names the SubRip decoder srt
    assert data["streams"][1]["title"] == "Commentaire"


def test_cover_art_is_not_the_main_video(tmp_path):
    info = probe(mf.mp4_cover(tmp_path))
    assert info.video.index == 0 and info.video.codec == "h264"
    cover = [s for s in info.streams if s.attached_pic]
    assert len(cover) == 1 and cover[0].codec == "png" and cover[0].index != info.video.index


def test_rotation_sar_and_start(tmp_path):
    assert probe(mf.mp4_rotated(tmp_path, 90)).video.rotation == 90
    assert probe(mf.mp4_rotated(tmp_path, 270)).video.display_size == (48, 64)
    assert probe(mf.mp4_sar(tmp_path)).video.sar == Fraction(32, 27)
    offset = probe(mf.mkv_start_offset(tmp_path))
    assert offset.video.start_time == pytest.approx(2.0)
    assert offset.streams[1].start_time == pytest.approx(1.9)


def test_variable_rate(tmp_path):
    assert probe(mf.mp4_vfr(tmp_path)).video.variable_rate is True
    assert probe(mf.mkv_vfr(tmp_path)).video.variable_rate is True
    assert probe(mf.mkv_two_audio(tmp_path)).video.variable_rate is False


def test_ten_bit_hdr(tmp_path):
    v = probe(mf.hevc_10bit_hdr(tmp_path)).video
    assert (v.codec, v.pix_fmt, v.bit_depth) == ("hevc", "yuv420p10le", 10)
    assert (v.color_primaries, v.color_trc, v.colorspace, v.color_range) == (9, 16, 9, 1)


def test_hdr10_static_metadata(tmp_path):
    video = probe(mf.hevc_hdr10_mastering(tmp_path)).video
    assert (video.mastering_display, video.content_light) == (mf.MASTERING_DISPLAY, mf.CONTENT_LIGHT)
    assert probe(mf.hevc_10bit_hdr(tmp_path)).video.mastering_display is None  # tags alone are not metadata


def test_side_data_pyav_cannot_name_means_no_metadata_not_a_crash():
    from vsrup.media.probe import _content_light, _mastering_display

    class FrameWithNewerSideData:  # PyAV builds every entry's Type on access and raises for one it lacks
        @property
        def side_data(self):
            raise ValueError("30 is not a valid Type")

    frame = FrameWithNewerSideData()
    assert _mastering_display(frame) is None and _content_light(frame) is None


def test_interlaced_and_matroska_duration(tmp_path):
    v = probe(mf.interlaced_mpeg2(tmp_path)).video
    assert v.interlaced is True and v.frames is None  # Matroska does not count frames
    assert v.duration == pytest.approx(12 / 25, abs=0.01)  # from the per-track DURATION tag


def test_languages_titles_attachments(tmp_path):
    two = probe(mf.mkv_two_audio(tmp_path))
    assert [(s.codec, s.language, s.title) for s in two.streams if s.kind == "audio"] == [
        ("ac3", "eng", "Main"),
        ("aac", "spa", "Commentary"),
    ]
    attach = probe(mf.mkv_cover_attachment(tmp_path))
    files = [(s.kind, s.filename, s.mimetype) for s in attach.streams if s.kind == "attachment"]
    assert files == [("attachment", "notes.txt", "text/plain")]


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (mf.empty_file, "empty file"),
        (mf.text_file, "not a readable media file"),
        (mf.audio_only, "no video stream"),
        (mf.moov_at_end_truncated, "not a readable media file"),
        (lambda d: d, "is a directory"),
    ],
)
def test_bad_input_is_one_line_data_error(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(InputDataError) as err:
        probe(path)
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message
    assert err.value.exit_code == 65


@pytest.mark.parametrize("path", shared_media_files(".mp4", ".mkv", ".webm", ".mpg"), ids=lambda p: p.name)
def test_shared_media(path):
    info = probe(path)
    v = info.video
    assert not info.streams[v.index].attached_pic and info.streams[v.index].kind == "video"
    assert v.width > 0 and v.height > 0 and v.bit_depth >= 8 and v.time_base > 0
    json.dumps(info.to_dict())
