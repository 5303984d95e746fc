"""decode_frames(): every frame once, exact timestamps, colour-exact RGB, damage reported."""

from __future__ import annotations

import errno

import av
import numpy as np
import pytest

import media_factory as mf
from conftest import SHARED_MEDIA, shared_media_files
from vsrup.errors import InputDataError, VsrupError
from vsrup.media import decode
from vsrup.media.decode import check_length, decode_frames
from vsrup.media.probe import probe

LOSSLESS = {"crf": "0", "preset": "ultrafast"}  # x264 lossless: only the colour conversion is left to measure


def container_pts(path, index=0):
    """The presentation timestamps the demuxer reports, sorted: what decoding must reproduce."""
    with av.open(str(path)) as c:
        return sorted(p.pts for p in c.demux(c.streams[index]) if p.size and p.pts is not None)


def decode_all(path, **kwargs):
    events = []
    info = probe(path)
    frames = list(decode_frames(info, emit=events.append, **kwargs))
    return info, frames, events


@pytest.mark.parametrize("make", [mf.mp4_aac, mf.mp4_vfr, mf.mkv_vfr, mf.mp4_start_offset, mf.webm_vp9_opus])
def test_every_frame_once_with_its_pts(tmp_path, make):
    path = make(tmp_path)
    info, frames, events = decode_all(path)
    assert [f.pts for f in frames] == container_pts(path)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.float32 for f in frames)
    assert all(0 <= f.image.min() and f.image.max() <= 1 for f in frames)
    assert events == []


@pytest.mark.parametrize(
    "pix_fmt, color, tolerance",
    [
        ("yuv420p", None, 0.035),  # chroma is subsampled: edges of the gradient lose a little
        ("yuv444p", None, 0.006),  # no subsampling: only 8-bit rounding, twice
        ("yuv444p", (1, 1, 1, 2), 0.006),  # full range BT.709
        ("yuv444p", (5, 6, 5, 1), 0.006),  # BT.601
    ],
)
def test_colour_matches_the_source_pictures(tmp_path, pix_fmt, color, tolerance):
    """The generator converts RGB with swscale using the tagged matrix; we must invert it."""
    path = mf.make_video(tmp_path / "c.mp4", frames=3, pix_fmt=pix_fmt, color=color, options=LOSSLESS)
    _, frames, _ = decode_all(path)
    for f in frames:
        truth = mf.picture(f.index, 64, 48).astype(np.float32) / 255
        assert np.abs(f.image - truth).mean() < tolerance


def test_ten_bit_keeps_precision(tmp_path):
    path = mf.make_video(
        tmp_path / "ten.mkv", frames=2, codec="libx265", pix_fmt="yuv444p10le", options={"x265-params": "lossless=1:log-level=error"}
    )
    _, frames, _ = decode_all(path)
    image = frames[0].image
    truth = mf.picture(0, 64, 48).astype(np.float32) / 255
    assert np.abs(image - truth).mean() < 0.004
    # 8-bit levels would sit on multiples of 1/255; 10-bit ones mostly do not.
    off_grid = np.abs(image * 255 - np.rint(image * 255)) > 0.05
    assert off_grid.mean() > 0.3


def test_interlaced_is_deinterlaced_in_auto(tmp_path):
    path = mf.interlaced_mpeg2(tmp_path)
    info, frames, events = decode_all(path)
    assert [f.pts for f in frames] == container_pts(path)  # bwdif send_frame: one out per one in, same pts
    assert [e.kind for e in events] == ["info"] and "deinterlac" in events[0].message
    _, plain, quiet = decode_all(path, deinterlace="off")
    assert len(plain) == len(frames) and quiet == []
    assert any(np.abs(a.image - b.image).max() > 0.01 for a, b in zip(frames, plain))  # the filter ran


def test_deinterlace_on_for_progressive_input(tmp_path):
    _, frames, events = decode_all(mf.mp4_aac(tmp_path), deinterlace="on")
    assert len(frames) == 12 and events[0].kind == "info"


def test_truncated_raises_or_gives_partial(tmp_path):
    path = mf.truncated(tmp_path)
    info = probe(path)
    with pytest.raises(InputDataError, match="truncated") as err:
        list(decode_frames(info))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    events = []
    frames = list(decode_frames(info, allow_partial=True, emit=events.append))
    assert 0 < len(frames) < 30
    assert [e.kind for e in events] == ["warning"] and "truncated" in events[0].message


def test_corrupt_raises_or_gives_partial(tmp_path):
    path = mf.corrupt(tmp_path)
    info = probe(path)
    with pytest.raises(InputDataError) as err:
        list(decode_frames(info))
    assert "\n" not in str(err.value)
    events = []
    frames = list(decode_frames(info, allow_partial=True, emit=events.append))
    assert 0 < len(frames) < 30 and events and all(e.kind == "warning" for e in events)
    pts = [f.pts for f in frames]
    assert pts == sorted(set(pts))


def test_bad_deinterlace_mode(tmp_path):
    from vsrup.errors import UsageError

    with pytest.raises(UsageError):
        next(decode_frames(probe(mf.mp4_aac(tmp_path)), deinterlace="maybe"))


def test_out_of_order_pts_are_repaired(shared_media):
    """This real file decodes with pts 0, 79, 113, 146, 133, ...: one is repaired, with one warning."""
    path = shared_media / "autoeditor_embedded-image_h264-mjpeg.mkv"
    info, frames, events = decode_all(path)
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert len(frames) == 60
    assert [e.kind for e in events] == ["warning"] and "repaired 1 " in events[0].message


def test_shared_ten_bit_hdr_decodes_to_16_bit_precision(shared_media):
    path = SHARED_MEDIA / "torchcodec_bt2020_10bit.mp4"
    info = probe(path)
    frame = next(decode_frames(info))
    levels = np.unique(np.rint(frame.image * 1023))
    assert info.video.bit_depth == 10 and len(levels) > 256


def test_a_frame_size_change_mid_stream_is_resized_to_the_first_frame_s_size_with_a_warning(tmp_path):
    info, frames, events = decode_all(mf.ts_size_change(tmp_path))
    assert len(frames) == 24 and {f.image.shape for f in frames} == {(48, 64, 3)}
    assert [e.kind for e in events] == ["warning"] and "frame size changes from 64x48 to 96x72 at frame 12" in events[0].message
    truth = mf.picture(0, 96, 72)[::3, ::3].astype(np.float32) / 255  # the second part starts at picture 0 again
    assert np.abs(frames[12].image[::2, ::2] - truth).mean() < 0.05


class OutOfMemory:
    """A container whose demuxer runs out of memory at its third packet, as FFmpeg says it (ENOMEM)."""

    def __init__(self, container):
        self.container = container

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()

    def demux(self, *streams):
        for n, packet in enumerate(self.container.demux(*streams)):
            if n == 2:
                raise av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory")
            yield packet


@pytest.mark.parametrize("allow_partial", [False, True])
def test_out_of_memory_in_the_decoder_says_memory_not_damage(tmp_path, monkeypatch, allow_partial):
    info = probe(mf.long_mkv(tmp_path))
    opened = decode.open_input
    monkeypatch.setattr(decode, "open_input", lambda path: OutOfMemory(opened(path)))
    with pytest.raises(VsrupError) as err:
        list(decode_frames(info, allow_partial=allow_partial))
    message = str(err.value)
    assert err.value.exit_code == 1 and "out of memory" in message and "damaged" not in message and "\n" not in message


@pytest.mark.parametrize("make", [mf.truncated, mf.faststart_truncated])
def test_truncation_is_found_before_decoding_where_the_container_says_its_length(tmp_path, make):
    info = probe(make(tmp_path))
    with pytest.raises(InputDataError, match="truncated") as err:
        check_length(info)
    assert "--allow-partial" in str(err.value) and "\n" not in str(err.value)


COMPLETE = [mf.mp4_aac, mf.mp4_vfr, mf.mkv_vfr, mf.mp4_start_offset, mf.mkv_start_offset, mf.webm_vp9_opus, mf.long_mkv,
            mf.mov_pcm, mf.mkv_two_audio, mf.interlaced_mpeg2, mf.mp4_cover, mf.hevc_10bit_hdr, mf.ts_joined, mf.ts_size_change]


@pytest.mark.parametrize("make", COMPLETE, ids=lambda f: f.__name__)
def test_complete_files_pass_the_length_check(tmp_path, make):
    check_length(probe(make(tmp_path)))


@pytest.mark.parametrize("path", shared_media_files(".mp4", ".mkv", ".webm", ".mpg"), ids=lambda p: p.name)
def test_complete_shared_media_pass_the_length_check(path):
    check_length(probe(path))
