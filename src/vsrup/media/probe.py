"""Probe a video file: the main video stream, every other stream, and what decoding needs to know.

`probe` opens the file once, reads the container header, demuxes the first video packets (to tell
constant from variable frame rate) and decodes the first frames (rotation and interlacing live
on decoded frames, not in the header).
"""

from __future__ import annotations

import re
import struct
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from vsrup.errors import InputDataError

PROBE_PACKETS = 60  # video packets read to tell CFR from VFR
PROBE_FRAMES = 3  # frames decoded for rotation and interlacing

# (Kr, Kb) of the Y'CbCr matrices we convert with, by FFmpeg AVColorSpace value.
MATRICES = {
    1: (0.2126, 0.0722),  # bt709
    4: (0.30, 0.11),  # fcc
    5: (0.299, 0.114),  # bt470bg (BT.601 625)
    6: (0.299, 0.114),  # smpte170m (BT.601 525)
    7: (0.212, 0.087),  # smpte240m
    9: (0.2627, 0.0593),  # bt2020 non-constant luminance
    10: (0.2627, 0.0593),  # bt2020 constant luminance, approximated as NCL
}
SPC_UNSPECIFIED = 2
RANGE_MPEG, RANGE_JPEG = 1, 2


def quiet_ffmpeg() -> None:
    """FFmpeg's own messages stay out of the terminal; its last error still reaches exception text."""
    av.logging.set_level(av.logging.ERROR)


@dataclass(frozen=True)
class VideoInfo:
    index: int  # stream index of the main video (cover art excluded)
    codec: str
    width: int  # coded size, before rotation
    height: int
    pix_fmt: str
    bit_depth: int
    time_base: Fraction
    rate: Fraction | None  # nominal frame rate; the timeline is the pts, never this
    variable_rate: bool | None  # None when too few packets to tell
    start_time: float | None  # seconds
    rotation: int  # degrees counter-clockwise from the display matrix
    sar: Fraction | None
    color_primaries: int  # FFmpeg AVColorPrimaries / AVColorTransferCharacteristic / AVColorSpace /
    color_trc: int  # AVColorRange numbers: they go back into the encoder unchanged
    colorspace: int
    color_range: int
    interlaced: bool | None
    frames: int | None  # None when the container does not say
    duration: float | None  # seconds of video, when the container says
    chroma_subsampling: tuple[int, int] = (1, 1)  # log2 (horizontal, vertical); (0, 0) for 4:4:4 and RGB
    is_rgb: bool = False  # planar or packed RGB (no Y'CbCr matrix)
    field_order: int = 0  # FFmpeg AVFieldOrder: 0 unknown, 1 progressive, 2+ interlaced orders
    mastering_display: tuple[int, ...] | None = None  # HDR10: R, G, B, white (x, y) in 1/50000; max, min luminance in 1/10000 cd/m2
    content_light: tuple[int, int] | None = None  # HDR10: MaxCLL, MaxFALL in cd/m2

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown to the viewer: swapped for a quarter turn."""
        return (self.height, self.width) if self.rotation % 180 == 90 else (self.width, self.height)

    @property
    def matrix(self) -> int:
        """The AVColorSpace used for Y'CbCr <-> RGB: the tagged one, or a guess when untagged.

        Untagged video is BT.709 when HD (width >= 1280 or height > 576) and BT.601 otherwise, the
        rule mpv and VLC play it with.
        """
        if self.colorspace in MATRICES:
            return self.colorspace
        return 1 if self.width >= 1280 or self.height > 576 else 6

    @property
    def full_range(self) -> bool:
        """Untagged Y'CbCr is limited (TV) range, except the yuvj* formats."""
        return self.color_range == RANGE_JPEG or self.pix_fmt.startswith("yuvj")


@dataclass(frozen=True)
class StreamInfo:
    index: int
    kind: str  # video|audio|subtitle|attachment|data
    codec: str | None
    language: str | None
    title: str | None
    attached_pic: bool  # cover art: a video stream holding one picture
    default: bool = False  # disposition flags that matter to players
    forced: bool = False
    channels: int | None = None  # audio only
    sample_rate: int | None = None
    layout: str | None = None
    filename: str | None = None  # attachments
    mimetype: str | None = None
    width: int | None = None  # video and cover art
    height: int | None = None
    start_time: float | None = None
    duration: float | None = None


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    format_name: str
    duration: float | None  # seconds, the container's
    video: VideoInfo
    streams: tuple[StreamInfo, ...]

    def to_dict(self) -> dict:
        """A JSON-able dict (fractions become "num/den" strings)."""
        return _jsonable(asdict(self))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, Path):
        return str(value)
    return value


def open_input(path: str | Path) -> av.container.InputContainer:
    """av.open for reading, with every failure turned into a one-line InputDataError."""
    quiet_ffmpeg()
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: no such file")
    if path.is_dir():
        raise InputDataError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InputDataError(f"{path}: empty file")
    try:
        return av.open(str(path), "r")
    except av.error.PermissionError:
        raise InputDataError(f"{path}: permission denied") from None
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as e:
        raise InputDataError(f"{path}: not a readable media file ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__


def is_cover(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def main_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The stream a viewer would watch: not cover art; default disposition first, then the largest."""
    candidates = [s for s in container.streams.video if not is_cover(s)]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda s: (
            bool(s.disposition & av.stream.Disposition.default),
            s.codec_context.width * s.codec_context.height,
            -s.index,
        ),
    )


def probe(path: str | Path) -> MediaInfo:
    """Describe ``path``. InputDataError when it is missing, unreadable, not media, or has no video."""
    path = Path(path)
    with open_input(path) as container:
        stream = main_video_stream(container)
        if stream is None:
            raise InputDataError(f"{path}: no video stream")
        variable_rate = _variable_rate(container, stream)
        first = _first_frames(container, stream)
        if not first:
            raise InputDataError(f"{path}: no decodable video frame")
        video = _video_info(stream, first, variable_rate, stream_duration(stream))
        streams = tuple(_stream_info(s) for s in container.streams)
        duration = container.duration / 1_000_000 if container.duration is not None else None
        return MediaInfo(path, container.format.name, duration, video, streams)


def _variable_rate(container, stream) -> bool | None:
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                pts.append(packet.pts)
            if len(pts) >= PROBE_PACKETS:
                break
    except av.error.FFmpegError:
        pass
    container.seek(0)  # a stream-less seek(0) rewinds to the file start, whatever the start time
    pts.sort()
    deltas = {b - a for a, b in zip(pts, pts[1:])}
    if len(pts) < 3:
        return None
    # A tick of jitter is rounding by the muxer (e.g. 1001/30000 in a 1/1000 time base), not VFR.
    return max(deltas) - min(deltas) > 1


def _first_frames(container, stream) -> list[av.VideoFrame]:
    frames: list[av.VideoFrame] = []
    try:
        for packet in container.demux(stream):
            try:
                frames.extend(stream.decode(packet))
            except av.error.InvalidDataError:
                continue
            if len(frames) >= PROBE_FRAMES:
                break
    except av.error.FFmpegError:
        pass
    return frames


def _video_info(stream, first: list[av.VideoFrame], variable_rate: bool | None, duration: float | None) -> VideoInfo:
    cc = stream.codec_context
    frame = first[0]
    fmt = frame.format
    tb = stream.time_base
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    start = stream.start_time * tb if stream.start_time is not None else None
    field_order = getattr(cc, "field_order", 0)  # PyAV >= 18.1; before it, interlace comes from the frames alone
    return VideoInfo(
        index=stream.index,
        codec=cc.name,
        width=frame.width,
        height=frame.height,
        pix_fmt=fmt.name,
        bit_depth=max(c.bits for c in fmt.components),
        time_base=tb,
        rate=Fraction(rate) if rate else None,
        variable_rate=variable_rate,
        start_time=float(start) if start is not None else None,
        rotation=int(frame.rotation) % 360,
        sar=_sar(stream),
        color_primaries=int(frame.color_primaries),
        color_trc=int(frame.color_trc),
        colorspace=int(frame.colorspace),
        color_range=int(frame.color_range),
        interlaced=any(f.interlaced_frame for f in first) or field_order > 1,
        frames=stream.frames or None,
        duration=duration,
        chroma_subsampling=_subsampling(fmt),
        is_rgb=fmt.is_rgb or fmt.has_palette,
        field_order=field_order,
        mastering_display=_mastering_display(frame),
        content_light=_content_light(frame),
    )


def _side_data(frame: av.VideoFrame, kind: str) -> bytes | None:
    """The bytes of the frame's side data of type ``kind`` (a PyAV ``sidedata.Type`` name), if any."""
    try:
        entries = list(frame.side_data)
    except ValueError:  # a side data type newer than PyAV's enum (FFmpeg 8 has some): PyAV lists none at all
        return None
    return next((bytes(sd) for sd in entries if sd.type.name == kind), None)


def _mastering_display(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The frame's AVMasteringDisplayMetadata, when it has both primaries and luminance.

    Layout: display_primaries[3][2] (R, G, B; x then y) and white_point[2], then min and max
    luminance, all AVRational (int32 num, den); then the has_primaries and has_luminance flags.
    """
    data = _side_data(frame, "MASTERING_DISPLAY_METADATA")
    if data is None or len(data) < 88:
        return None
    values = struct.unpack_from("<22i", data)
    if not (values[20] and values[21]) or any(den == 0 for den in values[1:20:2]):
        return None
    ratio = [Fraction(num, den) for num, den in zip(values[0:20:2], values[1:20:2])]  # 8 chromaticities, min, max
    chroma = tuple(round(r * 50000) for r in ratio[:8])
    return (*chroma, round(ratio[9] * 10000), round(ratio[8] * 10000))


def _content_light(frame: av.VideoFrame) -> tuple[int, int] | None:
    """The frame's AVContentLightMetadata: (MaxCLL, MaxFALL), two unsigned ints."""
    data = _side_data(frame, "CONTENT_LIGHT_LEVEL")
    return struct.unpack_from("<2I", data) if data is not None and len(data) >= 8 else None


def _sar(stream) -> Fraction | None:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar else None


def _subsampling(fmt: av.VideoFormat) -> tuple[int, int]:
    if fmt.is_rgb or fmt.has_palette or len(fmt.components) < 3:
        return (0, 0)
    # Measured on a large even size: the chroma of odd frames rounds up.
    return ((1024 // fmt.chroma_width(1024)).bit_length() - 1, (1024 // fmt.chroma_height(1024)).bit_length() - 1)


_MKV_DURATION = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def stream_duration(stream) -> float | None:
    """Seconds of this stream: its header duration, else from Matroska's per-track DURATION tag."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    match = _MKV_DURATION.match(stream.metadata.get("DURATION") or "")
    if match is None:
        return None
    h, m, s = match.groups()
    end = int(h) * 3600 + int(m) * 60 + float(s)  # the tag holds the track's end time, not its length
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    return end - start


def _stream_info(stream: av.stream.Stream) -> StreamInfo:
    kind = stream.type if stream.type in ("video", "audio", "subtitle", "attachment") else "data"
    cc = stream.codec_context
    meta = stream.metadata
    language = meta.get("language")
    audio = kind == "audio"
    video = kind == "video"
    tb = stream.time_base
    return StreamInfo(
        index=stream.index,
        kind=kind,
        codec=cc.name if cc is not None else None,
        language=None if language in (None, "", "und") else language,
        title=meta.get("title") or meta.get("TITLE"),
        attached_pic=is_cover(stream),
        default=bool(stream.disposition & av.stream.Disposition.default),
        forced=bool(stream.disposition & av.stream.Disposition.forced),
        channels=cc.channels if audio else None,
        sample_rate=cc.sample_rate if audio else None,
        layout=cc.layout.name if audio else None,
        filename=meta.get("filename"),
        mimetype=meta.get("mimetype"),
        width=cc.width if video else None,
        height=cc.height if video else None,
        start_time=float(stream.start_time * tb) if stream.start_time is not None and tb else None,
        duration=stream_duration(stream),
    )
