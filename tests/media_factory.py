"""Small synthetic media, made with PyAV, for the media tests and the end-to-end tests.

Every generator writes into ``directory`` and returns the path. Frames are 64x48 (unless a size is
asked for), a few dozen at most, so each file takes a fraction of a second to make. The picture is
a moving colour gradient, so encoders have something real to compress and a frame can be told
from its neighbours.

Subtitles: PyAV has no public way to build subtitle *events* for every codec, so subtitle packets
are muxed directly with ``add_mux_stream``: subrip and webvtt payloads are the cue text, mov_text
is a 2-byte big-endian length followed by the text. That is what those muxers store, and FFmpeg
decodes them back. Bitmap subtitles (PGS, DVD) cannot be made this way; none of our fixtures has
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

av.logging.set_level(av.logging.ERROR)

SIZE = (64, 48)


@dataclass(frozen=True)
class Audio:
    """One audio track to add: codec, language, title, start offset (seconds), sample rate, channels."""

    codec: str = "aac"
    language: str | None = None
    title: str | None = None
    start: float = 0.0
    rate: int = 48000
    channels: int = 2


@dataclass(frozen=True)
class Subtitle:
    """One text subtitle track: codec (mov_text|subrip|webvtt), language and cues (start s, end s, text)."""

    codec: str
    language: str | None = None
    cues: tuple[tuple[float, float, str], ...] = ((0.1, 0.5, "hello"), (0.6, 0.9, "world"))


def picture(index: int, width: int, height: int) -> np.ndarray:
    """(h, w, 3) uint8 RGB: a gradient that moves 2 px per frame, with a frame-dependent blue."""
    x = (np.arange(width)[None, :] + 2 * index) % width
    y = np.arange(height)[:, None]
    r = (255 * x / max(width - 1, 1)).astype(np.uint8).repeat(height, 0)
    g = (255 * y / max(height - 1, 1)).astype(np.uint8).repeat(width, 1)
    b = np.full((height, width), (37 * index) % 256, np.uint8)
    return np.stack([r, g, b], axis=-1)


def make_video(
    path: Path,
    *,
    frames: int = 12,
    size: tuple[int, int] = SIZE,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rate: Fraction = Fraction(25),
    time_base: Fraction | None = None,
    pts: list[int] | None = None,
    audio: tuple[Audio, ...] = (),
    subtitles: tuple[Subtitle, ...] = (),
    rotation: int = 0,
    sar: Fraction | None = None,
    color: tuple[int, int, int, int] | None = None,
    interlaced: bool = False,
    cover: str | None = None,
    attachment: tuple[str, str, bytes] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """The general generator; the named ones below call it.

    ``pts`` gives every frame's timestamp in ``time_base`` (default 1/rate, frames 0..n-1).
    ``color`` is (primaries, trc, colorspace, range) as FFmpeg numbers. ``cover`` is "png" or
    "mjpeg" (cover art; Matroska gets it as an image attachment, as FFmpeg writes it).
    ``attachment`` is (filename, mimetype, data), Matroska only.
    """
    path = Path(path)
    width, height = size
    time_base = time_base or 1 / Fraction(rate)
    pts = pts if pts is not None else list(range(frames))
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=rate, options=_quiet(codec, options))
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = time_base
        if sar:
            video.codec_context.sample_aspect_ratio = sar
        if color:
            cc = video.codec_context
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = color
        if interlaced:
            video.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        if rotation:
            video.set_display_rotation(rotation)
        tracks = [_add_audio(out, spec) for spec in audio]
        subs = [_add_subtitle(out, spec) for spec in subtitles]
        if cover:
            _add_cover(out, cover)
        if attachment:
            out.add_attachment(*attachment)
        duration = float((pts[-1] + (pts[-1] - pts[0]) / max(len(pts) - 1, 1)) * time_base) if pts else 0
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(picture(i, width, height), format="rgb24")
            frame = frame.reformat(format=pix_fmt, **_swscale_colour(color))
            frame.pts, frame.time_base = t, time_base
            if color:
                frame.color_range = color[3]
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for spec, stream in zip(audio, tracks):
            _write_audio(out, stream, spec, duration)
        for spec, stream in zip(subtitles, subs):
            _write_subtitle(out, stream, spec)
    return path


def _swscale_colour(color) -> dict:
    """swscale arguments that make the pixels match the tags (swscale numbers its matrices its own way)."""
    if not color:
        return {}
    sws_matrix = {1: 1, 5: 5, 6: 5, 9: 9}.get(color[2], 5)
    return {"dst_colorspace": sws_matrix, "dst_color_range": color[3] or 1, "src_color_range": 2}


def _quiet(codec: str, options: dict[str, str] | None) -> dict[str, str]:
    options = dict(options or {})
    if codec in ("libx264", "libx265"):
        options.setdefault("preset", "ultrafast")
    if codec == "libx265":
        options.setdefault("x265-params", "log-level=error")
    if codec == "libvpx-vp9":
        options.setdefault("deadline", "realtime")
        options.setdefault("cpu-used", "8")
    return options


def _add_audio(out, spec: Audio):
    stream = out.add_stream(spec.codec, rate=spec.rate)
    stream.layout = f"{spec.channels}c"  # FFmpeg: the default layout for that many channels
    stream.codec_context.time_base = Fraction(1, spec.rate)
    if spec.language:
        stream.metadata["language"] = spec.language
    if spec.title:
        stream.metadata["title"] = spec.title
    return stream


def _write_audio(out, stream, spec: Audio, duration: float) -> None:
    """A 440 Hz tone from ``spec.start`` to the end of the video, in 1024-sample frames."""
    rate = spec.rate
    total = int((duration - spec.start) * rate)
    start = round(spec.start * rate)
    fmt = stream.codec_context.format.name
    for offset in range(0, total, 1024):
        n = min(1024, total - offset)
        t = (np.arange(n) + offset) / rate
        tone = 0.3 * np.sin(2 * np.pi * 440 * t)
        frame = av.AudioFrame.from_ndarray(_samples(tone, spec.channels, fmt), format=fmt, layout=stream.layout.name)
        frame.sample_rate, frame.pts, frame.time_base = rate, start + offset, Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _samples(tone: np.ndarray, channels: int, fmt: str) -> np.ndarray:
    data = np.repeat(tone[None, :], channels, axis=0)  # (channels, n)
    if fmt.startswith("s16"):
        data = (data * 32767).astype(np.int16)
    elif fmt.startswith("s32"):
        data = (data * 2**31 - 1).astype(np.int32)
    else:
        data = data.astype(np.float32)
    if not fmt.endswith("p"):  # packed: one row of interleaved samples
        data = data.T.reshape(1, -1)
    return data


def _add_subtitle(out, spec: Subtitle):
    stream = out.add_mux_stream(spec.codec, time_base=Fraction(1, 1000))
    if spec.language:
        stream.metadata["language"] = spec.language
    return stream


def _write_subtitle(out, stream, spec: Subtitle) -> None:
    for start, end, text in spec.cues:
        payload = text.encode()
        if spec.codec == "mov_text":
            payload = len(payload).to_bytes(2, "big") + payload
        packet = av.Packet(payload)
        packet.stream = stream
        packet.time_base = Fraction(1, 1000)
        packet.pts = packet.dts = round(start * 1000)
        packet.duration = round((end - start) * 1000)
        out.mux(packet)


def image_bytes(codec: str, size: tuple[int, int] = (16, 16)) -> bytes:
    """One encoded still (png or mjpeg), for cover art."""
    width, height = size
    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height, cc.time_base = width, height, Fraction(1, 25)
    cc.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
    frame = av.VideoFrame.from_ndarray(picture(3, width, height), format="rgb24").reformat(format=cc.pix_fmt)
    packets = cc.encode(frame) + cc.encode(None)
    return bytes(packets[0])


def _add_cover(out, codec: str) -> None:
    data = image_bytes(codec)
    if out.format.name == "matroska":
        ext = "png" if codec == "png" else "jpg"
        out.add_attachment(f"cover.{ext}", "image/png" if codec == "png" else "image/jpeg", data)
        return
    stream = out.add_mux_stream(codec, width=16, height=16)
    stream.disposition = av.stream.Disposition.attached_pic
    packet = av.Packet(data)
    packet.stream = stream
    out.mux(packet)


# --- named fixtures ------------------------------------------------------------------------------


def mp4_aac(directory: Path) -> Path:
    """H.264 + AAC (English) in MP4, 12 frames at 25 fps."""
    return make_video(Path(directory) / "aac.mp4", audio=(Audio("aac", language="eng"),))


def mkv_opus_subrip(directory: Path) -> Path:
    """H.264 + Opus (French, titled) + SubRip (French) in Matroska."""
    return make_video(
        Path(directory) / "opus_srt.mkv",
        audio=(Audio("libopus", language="fra", title="Commentaire"),),
        subtitles=(Subtitle("subrip", language="fra"),),
    )


def mkv_webvtt(directory: Path) -> Path:
    """H.264 + WebVTT subtitles (German) in Matroska."""
    return make_video(Path(directory) / "webvtt.mkv", subtitles=(Subtitle("webvtt", language="ger"),))


def mp4_mov_text(directory: Path) -> Path:
    """H.264 + AAC + mov_text subtitles (English) in MP4."""
    return make_video(
        Path(directory) / "mov_text.mp4", audio=(Audio("aac"),), subtitles=(Subtitle("mov_text", language="eng"),)
    )


def mov_pcm(directory: Path) -> Path:
    """H.264 + 16-bit PCM (stereo, 44.1 kHz) in QuickTime."""
    return make_video(Path(directory) / "pcm.mov", audio=(Audio("pcm_s16le", rate=44100),))


def mkv_pcm(directory: Path) -> Path:
    """H.264 + 16-bit PCM in Matroska (MP4 refuses this PCM as is: the copy must fall back)."""
    return make_video(Path(directory) / "pcm.mkv", audio=(Audio("pcm_s16le", rate=44100),))


def mkv_two_audio(directory: Path) -> Path:
    """H.264 + AC-3 (English, "Main") + AAC (Spanish, "Commentary") in Matroska."""
    return make_video(
        Path(directory) / "two_audio.mkv",
        audio=(Audio("ac3", language="eng", title="Main"), Audio("aac", language="spa", title="Commentary")),
    )


def webm_vp9_opus(directory: Path) -> Path:
    """VP9 + Opus in WebM."""
    return make_video(Path(directory) / "vp9.webm", codec="libvpx-vp9", audio=(Audio("libopus"),))


def mp4_rotated(directory: Path, degrees: int = 90) -> Path:
    """H.264 in MP4 with a display matrix rotating by ``degrees`` (phone video)."""
    return make_video(Path(directory) / f"rotated{degrees}.mp4", rotation=degrees, audio=(Audio("aac"),))


def mp4_sar(directory: Path) -> Path:
    """Anamorphic H.264: sample aspect ratio 32:27 (NTSC 16:9)."""
    return make_video(Path(directory) / "sar.mp4", sar=Fraction(32, 27))


def mp4_vfr(directory: Path) -> Path:
    """Variable frame rate: 15 frames whose durations alternate 2002/3003 ticks of 1/30000, + AAC."""
    pts = [0]
    for i in range(14):
        pts.append(pts[-1] + (2002 if i % 2 else 3003))
    return make_video(
        Path(directory) / "vfr.mp4", pts=pts, time_base=Fraction(1, 30000), rate=Fraction(30000, 1001), audio=(Audio("aac"),)
    )


def mkv_vfr(directory: Path) -> Path:
    """Variable frame rate in Matroska (1/1000 time base): gaps of 40, 40, 120 and 20 ms."""
    pts = [0, 40, 80, 200, 220, 260, 300, 420, 440, 480]
    return make_video(Path(directory) / "vfr.mkv", pts=pts, time_base=Fraction(1, 1000), audio=(Audio("libopus"),))


def mp4_start_offset(directory: Path) -> Path:
    """Video that starts at 1.5 s with audio starting at 1.2 s (MPEG-TS-like offsets) in MP4."""
    return make_video(
        Path(directory) / "offset.mp4",
        pts=[round(1.5 * 25) + i for i in range(12)],
        audio=(Audio("aac", start=1.2),),
    )


def mkv_start_offset(directory: Path) -> Path:
    """Matroska whose video starts at 2.0 s and AC-3 audio at 1.9 s."""
    return make_video(
        Path(directory) / "offset.mkv",
        pts=[50 + i for i in range(12)],
        audio=(Audio("ac3", start=1.9),),
    )


MASTERING_DISPLAY = (34000, 16000, 13250, 34500, 7500, 3000, 15635, 16450, 10000000, 1)  # P3-D65, 1000 / 0.0001 cd/m2
CONTENT_LIGHT = (1000, 400)  # MaxCLL, MaxFALL


def hevc_hdr10_mastering(directory: Path) -> Path:
    """HEVC Main 10 HDR10 in Matroska with static metadata SEI: MASTERING_DISPLAY and CONTENT_LIGHT above."""
    r, g, b, white = (MASTERING_DISPLAY[i : i + 2] for i in range(0, 8, 2))
    display = f"G({g[0]},{g[1]})B({b[0]},{b[1]})R({r[0]},{r[1]})WP({white[0]},{white[1]})L({MASTERING_DISPLAY[8]},{MASTERING_DISPLAY[9]})"
    params = f"log-level=error:master-display={display}:max-cll={CONTENT_LIGHT[0]},{CONTENT_LIGHT[1]}"
    return make_video(Path(directory) / "hdr10_mastering.mkv", codec="libx265", pix_fmt="yuv420p10le", color=(9, 16, 9, 1),
                      frames=4, options={"x265-params": params})


def hevc_10bit_hdr(directory: Path) -> Path:
    """HEVC Main 10 (yuv420p10le) in MP4 tagged HDR10: BT.2020 primaries, PQ, BT.2020 matrix, limited range."""
    return make_video(Path(directory) / "hdr10.mp4", codec="libx265", pix_fmt="yuv420p10le", color=(9, 16, 9, 1))


def h264_full_range(directory: Path) -> Path:
    """H.264 tagged BT.709 full range (yuv420p with color_range = jpeg)."""
    return make_video(Path(directory) / "full_range.mp4", color=(1, 1, 1, 2))


def yuv422_mkv(directory: Path) -> Path:
    """H.264 High 4:2:2 in Matroska."""
    return make_video(Path(directory) / "yuv422.mkv", pix_fmt="yuv422p")


def odd_size(directory: Path) -> Path:
    """33x25 4:4:4 H.264 (odd both ways; x3 gives odd output sizes)."""
    return make_video(Path(directory) / "odd.mkv", size=(33, 25), pix_fmt="yuv444p")


def interlaced_mpeg2(directory: Path) -> Path:
    """MPEG-2 coded as interlaced (ildct/ilme) in Matroska, with MP2 audio; decoders flag every frame."""
    return make_video(
        Path(directory) / "interlaced.mkv", codec="mpeg2video", size=(64, 48), interlaced=True, audio=(Audio("mp2"),)
    )


def mp4_cover(directory: Path, codec: str = "png") -> Path:
    """H.264 + AAC in MP4 with cover art (``codec`` png or mjpeg) as an attached picture."""
    return make_video(Path(directory) / f"cover_{codec}.mp4", audio=(Audio("aac"),), cover=codec)


def mkv_cover_attachment(directory: Path) -> Path:
    """Matroska with a JPEG cover (an image attachment, read back as cover art) and a text attachment."""
    return make_video(
        Path(directory) / "attach.mkv",
        audio=(Audio("aac"),),
        cover="mjpeg",
        attachment=("notes.txt", "text/plain", b"fonts and notes travel with the file\n"),
    )


def long_mkv(directory: Path, frames: int = 30) -> Path:
    """A 30-frame (1.2 s) H.264 + AAC Matroska, long enough to truncate meaningfully."""
    return make_video(Path(directory) / "long.mkv", frames=frames, audio=(Audio("aac"),))


def truncated(directory: Path, fraction: float = 0.5, frames: int = 30) -> Path:
    """``long_mkv`` cut to ``fraction`` of its bytes: decodes without any error, but ends early."""
    source = long_mkv(Path(directory), frames)
    data = source.read_bytes()
    path = Path(directory) / "truncated.mkv"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def corrupt(directory: Path) -> Path:
    """``long_mkv`` with its middle third overwritten by noise: per-packet decode errors."""
    source = long_mkv(Path(directory))
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(0)
    lo, hi = len(data) // 3, 2 * len(data) // 3
    data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    path = Path(directory) / "corrupt.mkv"
    path.write_bytes(bytes(data))
    return path


def moov_at_end_truncated(directory: Path) -> Path:
    """An MP4 (index written last) cut in half: the index is gone, nothing opens."""
    mp4 = make_video(Path(directory) / "full.mp4", frames=30)
    data = mp4.read_bytes()
    path = Path(directory) / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


def faststart_truncated(directory: Path, frames: int = 30) -> Path:
    """An MP4 with its index first (movflags=faststart, as web video is) cut in half: it opens, and its
    index promises samples past the end of the file."""
    source = make_video(Path(directory) / "index_last.mp4", frames=frames)
    whole = Path(directory) / "faststart.mp4"
    with av.open(str(source)) as src, av.open(str(whole), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    path = Path(directory) / "faststart_cut.mp4"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return path


def audio_only(directory: Path) -> Path:
    """An M4A: AAC audio and no video stream."""
    path = Path(directory) / "audio.m4a"
    with av.open(str(path), "w") as out:
        stream = _add_audio(out, Audio("aac"))
        _write_audio(out, stream, Audio("aac"), 0.5)
    return path


def empty_file(directory: Path) -> Path:
    """A zero-byte .mp4."""
    path = Path(directory) / "empty.mp4"
    path.write_bytes(b"")
    return path


def text_file(directory: Path) -> Path:
    """A text file named like a video."""
    path = Path(directory) / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    return path



# --- real-world look-alikes (tests/test_real_world.py) -------------------------------------------


def ts_joined(directory: Path) -> Path:
    """Two H.264 + AC-3 MPEG-TS recordings joined byte for byte (``cat a.ts b.ts``): the second starts
    at 2.0 s, after the first ran 10.0-11.0 s, so every stream's timestamps jump back once."""
    directory = Path(directory)
    first = make_video(
        directory / "part1.ts", frames=25, time_base=Fraction(1, 90000), pts=[900000 + 3600 * i for i in range(25)],
        audio=(Audio("ac3", start=10.0),),
    )
    second = make_video(
        directory / "part2.ts", frames=25, time_base=Fraction(1, 90000), pts=[180000 + 3600 * i for i in range(25)],
        audio=(Audio("ac3", start=2.0),),
    )
    path = directory / "joined.ts"
    path.write_bytes(first.read_bytes() + second.read_bytes())
    return path


def ts_mpeg2_damaged(directory: Path, flips: int = 300, seed: int = 1) -> Path:
    """MPEG-2 + AC-3 in MPEG-TS (video from 1.4 s) with ``flips`` random bytes overwritten. The MPEG-2
    decoder conceals the damage (frames flagged corrupt, no exception), and damaged PES headers give
    single frames wild timestamps."""
    source = make_video(
        Path(directory) / "clean.ts", frames=25, codec="mpeg2video", pts=[35 + i for i in range(25)],
        audio=(Audio("ac3", language="eng", start=1.38),),
    )
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(2000, len(data) - 2000, flips):
        data[i] = int(rng.integers(0, 256))
    path = Path(directory) / "damaged.ts"
    path.write_bytes(bytes(data))
    return path


def ts_size_change(directory: Path) -> Path:
    """H.264 in MPEG-TS whose frame size changes mid-stream (a broadcast's SD ad in an HD show): 12 frames
    of 64x48, then 12 of 96x72 continuing the timeline (``cat a.ts b.ts``)."""
    directory = Path(directory)
    first = make_video(directory / "small.ts", frames=12, time_base=Fraction(1, 90000), pts=[3600 * i for i in range(12)])
    second = make_video(directory / "large.ts", frames=12, size=(96, 72), time_base=Fraction(1, 90000), pts=[3600 * (12 + i) for i in range(12)])
    path = directory / "size_change.ts"
    path.write_bytes(first.read_bytes() + second.read_bytes())
    return path
