"""Real-world look-alikes through the CLI, each checked independently with PyAV.

Each test is a regression test for a bug found by running vsrup on realistic media: joined MPEG-TS
recordings, damage that the MPEG-2 decoder conceals, Matroska default flags, mov_text gap samples and
SVT-AV1's own logging. `--model lanczos` keeps each run to a fraction of a second.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import av
import pytest

import media_factory as mf
from media_factory import Audio, Subtitle


def vsrup(*args):
    return subprocess.run([sys.executable, "-m", "vsrup", *map(str, args)], capture_output=True, text=True, timeout=300)


def video_times(path) -> list[float]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [float(f.pts * stream.time_base) for f in c.decode(stream)]


def packet_times(path, kind="audio") -> list[tuple[float, float]]:
    """(start, end) in seconds of every non-empty packet of the first ``kind`` stream."""
    with av.open(str(path)) as c:
        stream = getattr(c.streams, kind)[0]
        return [
            (float(p.pts * p.time_base), float((p.pts + p.duration) * p.time_base))
            for p in c.demux(stream)
            if p.size and p.pts is not None
        ]


def test_joined_ts_recordings_keep_every_frame_spaced_and_audio_in_step(tmp_path):
    """`cat a.ts b.ts`: was exit 65 ("looks truncated"), and with --allow-partial an internal error
    (the muxer refused the copied AC-3 going back in time) after squeezing 25 frames into 25 ticks."""
    src = mf.ts_joined(tmp_path)
    out = tmp_path / "out.mp4"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 0, result.stderr
    assert "jump" in result.stderr
    times = video_times(out)
    assert len(times) == 50
    steps = [b - a for a, b in zip(times, times[1:])]
    assert min(steps) == pytest.approx(0.04, abs=1e-3) and max(steps) == pytest.approx(0.04, abs=1e-3)
    assert times[0] == pytest.approx(10.0, abs=1e-3)
    audio = packet_times(out)
    starts = [a for a, _ in audio]
    assert starts == sorted(starts)
    # Audio covers the same span as the video. Each stream continues from its own end after the jump,
    # so the second part may be off by what the first part's audio overhangs its video (< 2 AC-3 frames).
    assert audio[0][0] == pytest.approx(times[0], abs=0.033)
    assert audio[-1][1] == pytest.approx(times[-1] + 0.04, abs=0.064)


def test_concealed_mpeg2_damage_is_an_input_error_and_partial_keeps_a_sane_timeline(tmp_path):
    """Damaged MPEG-2 in TS decodes without an exception: was exit 0 with no warning, and one frame's
    corrupt pts (~1073 s) pushed every later frame to 1073 s."""
    src = mf.ts_mpeg2_damaged(tmp_path)
    with av.open(str(src)) as c:
        assert any(f.is_corrupt for f in c.decode(c.streams.video[0])), "the fixture must really be damaged"
    out = tmp_path / "out.mkv"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 65
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2", "--allow-partial")
    assert result.returncode == 0, result.stderr
    assert "corrupt" in result.stderr or "damaged" in result.stderr
    times = video_times(out)
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[0] == pytest.approx(1.4, abs=0.01)
    assert times[-1] < 1.4 + 25 * 0.04 + 0.01  # nothing flung to a wild timestamp


def test_matroska_output_keeps_the_default_flag_of_the_video(tmp_path):
    """Every MKV output had FlagDefault 0 on its video track, even when the input's was 1."""
    src = mf.mp4_aac(tmp_path)
    out = tmp_path / "out.mkv"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 0, result.stderr
    with av.open(str(src)) as c:
        assert c.streams.video[0].disposition & av.stream.Disposition.default
    with av.open(str(out)) as c:
        assert c.streams.video[0].disposition & av.stream.Disposition.default


def test_mov_text_copy_keeps_the_samples_as_they_were(tmp_path):
    """MP4 -> MP4 with two mov_text tracks: the muxer added a zero-length gap sample before every cue."""
    src = mf.make_video(
        tmp_path / "subs.mp4", frames=25, audio=(Audio("aac", language="eng"),),
        subtitles=(Subtitle("mov_text", language="eng"), Subtitle("mov_text", language="spa")),
    )
    out = tmp_path / "out.mp4"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 0, result.stderr
    for index in (0, 1):
        with av.open(str(src)) as a, av.open(str(out)) as b:
            before = [(p.pts, p.duration, bytes(p)) for p in a.demux(a.streams.subtitles[index]) if p.size]
            after = [(p.pts, p.duration, bytes(p)) for p in b.demux(b.streams.subtitles[index]) if p.size]
        assert after == before


def test_10bit_webm_output_does_not_print_svt_av1_logs(tmp_path):
    """10-bit input to WebM uses libsvtav1, which printed a dozen `Svt[info]` lines to the terminal."""
    src = mf.make_video(tmp_path / "hdr.mkv", frames=3, codec="libx265", pix_fmt="yuv420p10le", color=(9, 16, 9, 1))
    out = tmp_path / "out.webm"
    result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "2")
    assert result.returncode == 0, result.stderr
    assert "Svt[" not in result.stderr
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
        assert frame.format.name == "yuv420p10le"
        assert (int(frame.color_primaries), int(frame.color_trc), int(frame.colorspace)) == (9, 16, 9)


def test_phone_video_rotation_vfr_and_audio_offset_survive_mkv_and_mp4(tmp_path):
    """iPhone-like: timescale 600, jittery ~30 fps, rotation 90/270, mono 44.1 kHz AAC."""
    deltas = [20, 20, 19, 21, 20, 40, 20, 20, 18, 22, 20, 20, 60, 20]
    pts = [0]
    for d in deltas:
        pts.append(pts[-1] + d)
    for rotation in (90, 270):
        src = mf.make_video(
            tmp_path / f"phone{rotation}.mp4", frames=len(pts), size=(64, 36), time_base=Fraction(1, 600),
            rate=Fraction(30), pts=pts, rotation=rotation, audio=(Audio("aac", language="eng", rate=44100, channels=1),),
        )
        for ext in ("mp4", "mkv"):
            out = tmp_path / f"out{rotation}.{ext}"
            result = vsrup("upscale", src, out, "-m", "lanczos", "-s", "3")
            assert result.returncode == 0, result.stderr
            with av.open(str(out)) as c:
                frames = list(c.decode(video=0))
                assert {f.rotation % 360 for f in frames} == {rotation}
                assert (frames[0].width, frames[0].height) == (192, 108)
            got = video_times(out)
            want = [p / 600 for p in pts]
            shift = got[0] - want[0]  # Matroska shifts every stream by the AAC priming, together
            assert [round(t - shift, 3) for t in got] == [round(t, 3) for t in want]
            audio_start = packet_times(out)[0][0]
            assert audio_start - got[0] == pytest.approx(packet_times(src)[0][0] - want[0], abs=0.002)
