"""VideoWriter: probe -> decode -> x2 nearest -> encode, then probe and decode the output and compare.

What must survive: one frame per input frame at the input's pts, the stream list (copied, or
converted as docs/media.md says), languages and titles, rotation, SAR, colour tags, bit depth,
the exact output size and the audio's timing.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction

import av
import numpy as np
import pytest

import media_factory as mf
from conftest import shared_media_files
from vsrup.config import EncodeConfig
from vsrup.errors import InputDataError, OutputError, UsageError
from vsrup.media.decode import decode_frames
from vsrup.media.encode import VideoWriter, from_rgb
from vsrup.media.probe import MediaInfo, probe

FAST = EncodeConfig(preset="ultrafast")


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, axis=0).repeat(scale, axis=1)  # (h*s, w*s, 3) nearest neighbour


def roundtrip(src, out, *, scale=2, config=FAST, trim=False, frames=None):
    """Returns (input info, output info, input pts in s, output pts in s, events)."""
    events = []
    info = probe(src)
    size = (info.video.width * scale, info.video.height * scale)
    pts_in = []
    with VideoWriter(out, info, config, size, trim=trim, emit=events.append) as writer:
        for frame in itertools.islice(decode_frames(info, emit=events.append), frames):
            writer.write(upscale(frame.image, scale), frame.pts)
            pts_in.append(frame.pts * info.video.time_base)
    assert writer.frames_written == len(pts_in)
    result = probe(out)
    pts_out = [f.pts * result.video.time_base for f in decode_frames(result)]
    return info, result, pts_in, pts_out, events


def assert_video_preserved(info: MediaInfo, result: MediaInfo, pts_in, pts_out, scale=2):
    v, o = info.video, result.video
    assert len(pts_out) == len(pts_in)
    tick = o.time_base
    # Matroska cannot store negative timestamps: when a copied track starts below zero (AAC priming
    # from MP4), the muxer shifts *every* stream by the same amount. Sync is kept; nothing else moves.
    shift = pts_out[0] - pts_in[0] if result.format_name.startswith("matroska") else 0
    assert 0 <= shift < Fraction(1, 10)
    assert all(abs(b - a - shift) <= tick for a, b in zip(pts_in, pts_out)), "output frames must keep the input pts"
    assert (o.width, o.height) == (v.width * scale, v.height * scale)
    assert o.rotation == v.rotation
    assert o.sar == (v.sar if v.sar not in (None, 0) else o.sar)
    assert (o.color_primaries, o.color_trc) == (v.color_primaries, v.color_trc)
    assert o.colorspace == v.matrix  # untagged input gets the matrix it was converted with, tagged
    assert o.full_range == v.full_range
    assert o.bit_depth == v.bit_depth


def streams(info: MediaInfo, kind=None):
    return [(s.kind, s.codec, s.language) for s in info.streams if kind is None or s.kind == kind]


def track_names(path, kind):
    """(language, title) per stream. MP4/MOV keep a track's title in its handler name."""
    with av.open(str(path)) as c:
        mp4 = c.format.name.startswith("mov")
        names = []
        for s in c.streams:
            if s.type != kind:
                continue
            language = s.metadata.get("language")
            title = s.metadata.get("handler_name" if mp4 else "title")
            if mp4 and title in ("SoundHandler", "VideoHandler", "SubtitleHandler"):  # FFmpeg's defaults
                title = None
            names.append((None if language in (None, "und") else language, title))
        return names


def audio_span(path, index):
    """(start, end) in seconds of the packets of audio stream ``index``."""
    with av.open(str(path)) as c:
        s = c.streams[index]
        times = [(p.pts, p.duration) for p in c.demux(s) if p.size and p.pts is not None]
    start = min(t for t, _ in times) * s.time_base
    end = max(t + d for t, d in times) * s.time_base
    return float(start), float(end)


def warnings(events):
    return [e.message for e in events if e.kind == "warning"]


# --- synthetic inputs, one container/codec situation each ---------------------------------------

CASES = [
    # (generator, output extension, expected non-video streams of the output, warnings expected)
    (mf.mp4_aac, ".mp4", [("audio", "aac", "eng")], 0),
    (mf.mkv_opus_subrip, ".mkv", [("audio", "opus", "fra"), ("subtitle", "srt", "fra")], 0),
    (mf.mkv_opus_subrip, ".mp4", [("audio", "opus", "fra"), ("subtitle", "mov_text", "fra")], 1),
    (mf.mkv_opus_subrip, ".mov", [("audio", "aac", "fra"), ("subtitle", "mov_text", "fra")], 2),
    (mf.mp4_mov_text, ".mkv", [("audio", "aac", None), ("subtitle", "srt", "eng")], 1),
    (mf.mkv_webvtt, ".webm", [("subtitle", "webvtt", "ger")], 0),
    (mf.mkv_webvtt, ".mp4", [("subtitle", "mov_text", "ger")], 1),
    (mf.mov_pcm, ".mov", [("audio", "pcm_s16le", None)], 0),
    (mf.mkv_two_audio, ".mp4", [("audio", "ac3", "eng"), ("audio", "aac", "spa")], 0),
    (mf.webm_vp9_opus, ".webm", [("audio", "opus", None)], 0),
    (mf.webm_vp9_opus, ".mkv", [("audio", "opus", None)], 0),
    (mf.interlaced_mpeg2, ".mkv", [("audio", "mp2", None)], 0),
    (mf.mp4_rotated, ".mp4", [("audio", "aac", None)], 0),
    (mf.mp4_sar, ".mkv", [], 0),
    (mf.mp4_vfr, ".mp4", [("audio", "aac", None)], 0),
    (mf.mkv_vfr, ".mkv", [("audio", "opus", None)], 0),
    (mf.mp4_start_offset, ".mp4", [("audio", "aac", None)], 0),
    (mf.mkv_start_offset, ".mkv", [("audio", "ac3", None)], 0),
    (mf.hevc_10bit_hdr, ".mp4", [], 0),
    (mf.h264_full_range, ".mp4", [], 0),
    (mf.yuv422_mkv, ".mkv", [], 0),
    (mf.mp4_cover, ".mp4", [("audio", "aac", None), ("video", "png", None)], 0),
    (mf.mp4_cover, ".mkv", [("audio", "aac", None), ("video", "png", None)], 0),
    (mf.mkv_cover_attachment, ".mkv", [("audio", "aac", None), ("video", "mjpeg", None), ("attachment", None, None)], 0),
    (mf.mkv_cover_attachment, ".mp4", [("audio", "aac", None), ("video", "mjpeg", None)], 1),
]


@pytest.mark.parametrize("make, ext, expected, n_warnings", CASES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_roundtrip(tmp_path, make, ext, expected, n_warnings):
    src = make(tmp_path)
    out = tmp_path / f"out.partial{ext}"
    info, result, pts_in, pts_out, events = roundtrip(src, out)
    assert_video_preserved(info, result, pts_in, pts_out)
    assert result.streams[result.video.index].kind == "video" and not result.streams[result.video.index].attached_pic
    assert sorted(streams(result)[1:], key=str) == sorted(expected, key=str)
    assert len(warnings(events)) == n_warnings, warnings(events)
    titles_in = sorted((s.language, s.title) for s in info.streams if s.kind == "audio")
    assert sorted(track_names(out, "audio")) == titles_in
    for a_in, a_out in zip(
        [s for s in info.streams if s.kind == "audio"], [s for s in result.streams if s.kind == "audio"]
    ):
        start_in, end_in = audio_span(src, a_in.index)
        start_out, end_out = audio_span(out, a_out.index)
        assert start_out == pytest.approx(start_in, abs=0.03)  # one timeline: audio keeps its offset
        assert end_out - start_out == pytest.approx(end_in - start_in, abs=0.05)


def test_ten_bit_hdr_stays_ten_bit_hdr(tmp_path):
    info, result, *_ = roundtrip(mf.hevc_10bit_hdr(tmp_path), tmp_path / "o.partial.mkv")
    o = result.video
    assert (o.codec, o.pix_fmt, o.bit_depth) == ("hevc", "yuv420p10le", 10)
    assert (o.color_primaries, o.color_trc, o.colorspace, o.color_range) == (9, 16, 9, 1)


@pytest.mark.parametrize("codec, suffix", [(None, ".mkv"), (None, ".webm"), ("libx264", ".mkv")])
def test_hdr10_mastering_display_and_light_levels_are_kept(tmp_path, codec, suffix):
    src = mf.hevc_hdr10_mastering(tmp_path)  # default encoders: libx265 (10-bit), libsvtav1 (10-bit WebM)
    info = probe(src)
    assert (info.video.mastering_display, info.video.content_light) == (mf.MASTERING_DISPLAY, mf.CONTENT_LIGHT)
    preset = None if suffix == ".webm" else "ultrafast"  # SVT-AV1 has no x26x presets (and says so)
    config = EncodeConfig(preset=preset, codec=codec, pix_fmt="yuv420p10le" if codec else None)
    _, result, _, _, events = roundtrip(src, tmp_path / f"o.partial{suffix}", config=config)
    assert (result.video.mastering_display, result.video.content_light) == (mf.MASTERING_DISPLAY, mf.CONTENT_LIGHT)
    assert warnings(events) == []


def test_hdr10_metadata_an_encoder_cannot_carry_is_dropped_with_a_warning(tmp_path):
    src = mf.hevc_hdr10_mastering(tmp_path)
    _, result, _, _, events = roundtrip(src, tmp_path / "o.partial.webm", config=EncodeConfig(codec="libvpx-vp9"))
    assert result.video.mastering_display is None
    assert any("cannot carry the input's HDR10 mastering display" in w for w in warnings(events))


def test_odd_output_size_is_exact_and_said(tmp_path):
    src = mf.make_video(tmp_path / "odd420.mp4", size=(32, 24), frames=5)  # 4:2:0 input, x3 -> 96x72 even
    _, result, *_ , events = roundtrip(src, tmp_path / "even.partial.mp4", scale=3)
    assert result.video.pix_fmt == "yuv420p" and warnings(events) == []
    src = mf.odd_size(tmp_path)  # 33x25 x3 -> 99x75
    info, result, pts_in, pts_out, events = roundtrip(src, tmp_path / "odd.partial.mp4", scale=3)
    assert_video_preserved(info, result, pts_in, pts_out, scale=3)
    assert (result.video.width, result.video.height, result.video.pix_fmt) == (99, 75, "yuv444p")
    src = mf.make_video(tmp_path / "odd_in.mkv", size=(34, 26), frames=5)  # 4:2:0 in, 51x39 out (x1.5)
    info = probe(src)
    events = []
    with VideoWriter(tmp_path / "o.partial.mkv", info, FAST, (51, 39), emit=events.append) as writer:
        for frame in decode_frames(info):
            writer.write(np.zeros((39, 51, 3), np.float32), frame.pts)
    assert probe(tmp_path / "o.partial.mkv").video.pix_fmt == "yuv444p"
    assert any("4:4:4" in m for m in warnings(events))


def test_pictures_survive_the_roundtrip(tmp_path):
    """Pixels, not just metadata: the output decodes back close to the x2 input."""
    src = mf.make_video(tmp_path / "p.mp4", frames=4, pix_fmt="yuv444p", options={"crf": "0", "preset": "ultrafast"})
    info = probe(src)
    out = tmp_path / "p.partial.mkv"
    inputs = []
    with VideoWriter(out, info, EncodeConfig(crf=0, preset="ultrafast"), (128, 96)) as writer:
        for frame in decode_frames(info):
            inputs.append(upscale(frame.image, 2))
            writer.write(inputs[-1], frame.pts)
    outputs = [f.image for f in decode_frames(probe(out))]
    assert all(np.abs(a - b).mean() < 0.004 for a, b in zip(inputs, outputs))


def test_audio_modes(tmp_path):
    src = mf.mkv_two_audio(tmp_path)
    _, result, *_, events = roundtrip(src, tmp_path / "n.partial.mkv", config=EncodeConfig(preset="ultrafast", audio="none"))
    assert streams(result, "audio") == [] and len([e for e in events if e.kind == "info"]) == 2
    _, result, *_ = roundtrip(src, tmp_path / "a.partial.mkv", config=EncodeConfig(preset="ultrafast", audio="aac"))
    assert streams(result, "audio") == [("audio", "aac", "eng"), ("audio", "aac", "spa")]


def test_pcm_that_mp4_refuses_is_reencoded(tmp_path):
    src = mf.mkv_pcm(tmp_path)
    _, result, *_, events = roundtrip(src, tmp_path / "p.partial.mp4")
    audio = streams(result, "audio")
    assert len(audio) == 1
    if audio[0][1] != "pcm_s16le":  # FFmpeg versions differ on stereo PCM in MP4; either way, nothing is lost
        assert audio[0][1] == "aac" and any("re-encoded" in m for m in warnings(events))


def test_webm_drops_what_it_cannot_hold_with_warnings(tmp_path):
    src = mf.mkv_cover_attachment(tmp_path)
    _, result, *_, events = roundtrip(src, tmp_path / "w.partial.webm")
    assert streams(result) == [("video", "vp9", None), ("audio", "opus", None)]
    found = warnings(events)
    assert any("re-encoded to libopus" in m for m in found)
    assert any("cover art" in m for m in found) and any("attachments" in m for m in found)


def test_trim_cuts_other_streams_to_the_written_span(tmp_path):
    src = mf.long_mkv(tmp_path)  # 30 frames, 1.2 s of video and audio
    info = probe(src)
    out = tmp_path / "t.partial.mkv"
    with VideoWriter(out, info, FAST, (128, 96), trim=True) as writer:
        for frame in itertools.islice(decode_frames(info), 10, 20):
            writer.write(upscale(frame.image, 2), frame.pts)
    result = probe(out)
    pts = [f.pts * result.video.time_base for f in decode_frames(result)]
    assert pts[0] == pytest.approx(0.4) and len(pts) == 10
    start, end = audio_span(out, 1)
    assert start == pytest.approx(0.4, abs=0.03) and end == pytest.approx(0.8, abs=0.03)


def test_zero_frames_is_an_error(tmp_path):
    info = probe(mf.mp4_aac(tmp_path))
    writer = VideoWriter(tmp_path / "z.partial.mp4", info, FAST, (128, 96))
    with pytest.raises(InputDataError, match="no video frames"):
        writer.close()


def test_exception_inside_leaves_nothing_open(tmp_path):
    info = probe(mf.mp4_aac(tmp_path))
    out = tmp_path / "x.partial.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, info, FAST, (128, 96)) as writer:
            writer.write(np.zeros((96, 128, 3), np.float32), 0)
            raise RuntimeError("model crashed")
    os.remove(out)  # the file handle is released: the caller can delete it


def test_write_checks_shape_and_order(tmp_path):
    info = probe(mf.mp4_aac(tmp_path))
    with VideoWriter(tmp_path / "s.partial.mp4", info, FAST, (128, 96)) as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((48, 64, 3), np.float32), 0)
        writer.write(np.zeros((96, 128, 3), np.float32), 5)
        with pytest.raises(ValueError, match="increase"):
            writer.write(np.zeros((96, 128, 3), np.float32), 5)


def test_disk_full_is_an_output_error(tmp_path):
    """A symlink named like a video that points at /dev/full: every write fails with ENOSPC, for real."""
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is not available")
    info = probe(mf.long_mkv(tmp_path))
    out = tmp_path / "full.partial.mkv"
    out.symlink_to("/dev/full")
    with pytest.raises(OutputError, match="No space left") as err:
        with VideoWriter(out, info, FAST, (128, 96)) as writer:
            for frame in decode_frames(info):
                writer.write(upscale(frame.image, 2), frame.pts)
    assert err.value.exit_code == 74 and "\n" not in str(err.value)


def test_unwritable_path_is_an_output_error(tmp_path):
    info = probe(mf.mp4_aac(tmp_path))
    with pytest.raises(OutputError):
        VideoWriter(tmp_path / "no" / "such" / "dir.partial.mp4", info, FAST, (128, 96))


def test_container_refusals_come_before_any_frame(tmp_path):
    info = probe(mf.mp4_aac(tmp_path))
    with pytest.raises(UsageError, match="extension"):
        VideoWriter(tmp_path / "o.partial.xyz", info, FAST, (128, 96))
    with pytest.raises(UsageError, match="libx264"):
        VideoWriter(tmp_path / "o.partial.webm", info, EncodeConfig(codec="libx264"), (128, 96))


@pytest.mark.parametrize("pix_fmt", ["bgr0", "rgb24", "gbrp10le", "rgb48le", "yuv420p", "yuv444p10le"])
def test_values_outside_0_1_saturate_instead_of_wrapping(tmp_path, pix_fmt):
    """A model overshoots near edges: 1.3 must become white and -0.3 black, in every output format."""
    video = probe(mf.mp4_aac(tmp_path)).video
    image = np.zeros((4, 4, 3), np.float32)  # (h, w, 3)
    image[:2], image[2:] = 1.3, -0.3
    rgb = from_rgb(image, pix_fmt, video).to_ndarray(format="rgb24")  # (4, 4, 3) uint8
    assert rgb[:2].min() >= 250 and rgb[2:].max() <= 5, rgb[..., 0]


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_short_libx265_encodes_get_valid_timestamps(tmp_path, frames):
    """libx265 leaves the dts of encodes of 1 or 2 frames uninitialised (what the heap held); 3 are fine.

    Several encodes in one process: the first often finds zeroed memory, the later ones rarely do.
    """
    src = mf.make_video(tmp_path / "ten.mp4", frames=frames, pix_fmt="yuv420p10le")
    info = probe(src)
    for attempt in range(6):
        out = tmp_path / f"o{attempt}.partial.mp4"
        with VideoWriter(out, info, EncodeConfig(), (128, 96)) as writer:  # 10-bit in: libx265, its default preset
            for frame in decode_frames(info):
                writer.write(upscale(frame.image, 2), frame.pts)
        result = probe(out)
        assert result.video.codec == "hevc" and len(list(decode_frames(result))) == frames


@pytest.mark.parametrize("make", [mf.mp4_mov_text, mf.mkv_webvtt])
def test_text_subtitles_into_mpeg_ts_are_dropped_with_a_warning_not_written_as_data(tmp_path, make):
    """MPEG-TS muxes any codec it does not know as private data: a copy it accepts is read back first."""
    info, result, *_, events = roundtrip(make(tmp_path), tmp_path / "o.partial.ts")
    assert [s.kind for s in result.streams] == [s.kind for s in info.streams if s.kind != "subtitle"]
    assert any("subtitles" in m and "dropped" in m for m in warnings(events)), warnings(events)


def test_pcm_into_mpeg_ts_is_reencoded_not_written_as_data(tmp_path):
    info, result, *_, events = roundtrip(mf.mov_pcm(tmp_path), tmp_path / "o.partial.ts")
    assert streams(result, "audio") == [("audio", "mp2", None)]  # MPEG-TS's own default audio codec
    assert any("unknown data stream" in m and "re-encoded to mp2" in m for m in warnings(events)), warnings(events)


# --- real media from other projects ----------------------------------------------------------------

SHARED = shared_media_files(".mp4", ".mkv", ".webm", ".mpg")
MAX_FRAMES = 30  # keep the suite fast: long files are cut (with trim) after this many frames
MAX_PIXELS = 400 * 300  # larger inputs are written at x1 to save encode time


@pytest.mark.parametrize("src", SHARED, ids=lambda p: p.name)
def test_shared_media_roundtrip(tmp_path, src):
    info = probe(src)
    ext = ".mkv" if src.suffix == ".mpg" else src.suffix
    scale = 2 if info.video.width * info.video.height <= MAX_PIXELS else 1
    long = info.video.frames is None or info.video.frames > MAX_FRAMES
    out = tmp_path / f"out.partial{ext}"
    info, result, pts_in, pts_out, events = roundtrip(src, out, scale=scale, trim=long, frames=MAX_FRAMES)
    assert_video_preserved(info, result, pts_in, pts_out, scale=scale)
    kept = [(s.kind, s.language) for s in result.streams if s.kind in ("audio", "subtitle", "attachment") or s.attached_pic]
    had = [(s.kind, s.language) for s in info.streams if s.kind in ("audio", "subtitle", "attachment") or s.attached_pic]
    assert kept == had  # same container family: everything is copied
    if not long:
        for a_in, a_out in zip(
            [s for s in info.streams if s.kind == "audio"], [s for s in result.streams if s.kind == "audio"]
        ):
            assert audio_span(out, a_out.index)[0] == pytest.approx(audio_span(src, a_in.index)[0], abs=0.03)
            assert audio_span(out, a_out.index)[1] == pytest.approx(audio_span(src, a_in.index)[1], abs=0.05)


def test_partial_input_still_writes_with_warnings(tmp_path):
    """--allow-partial on a damaged file: the writer's second demuxer meets the damage too and copes."""
    info = probe(mf.corrupt(tmp_path))
    events = []
    out = tmp_path / "c.partial.mkv"
    with VideoWriter(out, info, FAST, (128, 96), emit=events.append) as writer:
        for frame in decode_frames(info, allow_partial=True, emit=events.append):
            writer.write(upscale(frame.image, 2), frame.pts)
    assert 0 < len(list(decode_frames(probe(out)))) == writer.frames_written < 30
    assert warnings(events)


def test_vp9_defaults_finish_and_presets_map_onto_its_speed():
    from vsrup.media.encode import encoder_options, vpx_speed

    default = encoder_options("libvpx-vp9", EncodeConfig(), (3840, 2160), lambda text: None)
    assert default == {"crf": "31", "b": "0", "cpu-used": "4", "deadline": "good", "row-mt": "1", "tile-columns": "3"}  # 8 tiles of 480 px
    assert vpx_speed("fast", 1920)["tile-columns"] == "2" and vpx_speed("fast", 320)["tile-columns"] == "0"
    assert vpx_speed("ultrafast", 1920)["cpu-used"] == "8" and vpx_speed("ultrafast", 1920)["deadline"] == "realtime"
    assert vpx_speed("veryslow", 1920)["cpu-used"] == "0" and vpx_speed("placebo", 1920)["cpu-used"] == "0"
    assert encoder_options("libvpx-vp9", EncodeConfig(options=(("cpu-used", "6"),)), (640, 360), lambda text: None)["cpu-used"] == "6"


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_the_same_frames_give_the_same_file_every_time(tmp_path, suffix):
    """x264's AVX-512 code read past the rows of a 96-px-wide frame and gave a different stream on
    most runs; vsrup caps it at AVX2 on such CPUs (``has_avx512``). Matroska wrote random segment and
    track UIDs and the date; vsrup muxes bitexact. Five encodes, with audio, must be one file."""
    src = mf.make_video(tmp_path / f"in{suffix}", frames=30, size=(48, 32), audio=(mf.Audio(),))
    info = probe(src)
    rng = np.random.default_rng(1)
    images = [np.clip(np.linspace(0, 1, 96)[None, :, None] + 0.1 * rng.standard_normal((64, 96, 3)), 0, 1).astype(np.float32)
              for _ in range(30)]
    digests = set()
    for run in range(5):
        out = tmp_path / f"out{run}{suffix}"
        with VideoWriter(out, info, EncodeConfig(threads=1), (96, 64)) as writer:
            for k, image in enumerate(images):
                writer.write(image, k * 512)
        digests.add(out.read_bytes())
    assert len(digests) == 1
