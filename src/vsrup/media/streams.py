"""Plan and carry every non-video stream of the input into the output.

Each input stream gets one Route: packet copy when a trial mux into an in-memory container of the
output format accepts it, else a transcode (audio) or a text conversion (subtitles), else a
warning and nothing. Cover art and attachments are written once, at the start. Nothing is dropped
without an event saying so.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av

from vsrup.config import EncodeConfig
from vsrup.events import Emit, Event
from vsrup.media.probe import is_cover

SAMPLE_PACKETS = 400  # packets read at the start to find a few of each stream for the trial mux
TEXT_SUBTITLES = ("mov_text", "subrip", "srt", "webvtt", "ass", "ssa", "text")
STATS_TAGS = ("duration", "encoder", "number_of_frames", "number_of_bytes", "bps", "_statistics_")


@dataclass
class Route:
    """How packets of one input stream reach the output."""

    source: av.stream.Stream  # the input stream (in the side demuxer)
    out: av.stream.Stream | None  # None for cover art and attachments: written once, up front
    mode: str  # copy|audio|subtitle|cover|attachment
    once: list[av.Packet] = field(default_factory=list)  # cover art: muxed right after the header

    def packets(self, packet: av.Packet) -> Iterator[av.Packet]:
        """Output packets for one input packet (already in the output stream)."""
        if self.mode == "copy":
            if _is_mov_text_gap(packet):
                return  # the mp4/mov muxer writes its own gap samples; copying these doubles every gap
            packet.stream = self.out
            yield packet
        elif self.mode == "audio":
            for frame in self.source.decode(packet):
                yield from self._encoded(frame)
        elif self.mode == "subtitle":
            yield from self._converted(packet)

    def flush(self) -> Iterator[av.Packet]:
        if self.mode == "audio":
            for frame in self.source.decode(None):
                yield from self._encoded(frame)
            yield from self._encoded(None)

    def _encoded(self, frame) -> Iterator[av.Packet]:
        for packet in self.out.encode(frame):
            if packet.size:  # skip the empty packets some encoders return when flushed
                yield packet

    def _converted(self, packet: av.Packet) -> Iterator[av.Packet]:
        """Text subtitles through FFmpeg's own decoder (to ASS events) and the target encoder."""
        subs = self.source.codec_context.decode2(packet)
        if subs is None or packet.pts is None:
            return
        for rect in subs:
            text = getattr(rect, "ass", None)
            if not text:
                continue
            event = av.subtitles.subtitle.SubtitleSet.create(
                _dialogue(text), 0, packet.duration or 0, pts=packet.pts
            )
            out = self.out.codec_context.encode_subtitle(event)
            out.time_base = packet.time_base
            out.stream = self.out
            yield out


def _is_mov_text_gap(packet: av.Packet) -> bool:
    """An empty mov_text sample (text length 0): MP4's way of saying "no subtitle from here"."""
    return packet.stream.codec_context.name == "mov_text" and bytes(packet) == b"\x00\x00"


def _dialogue(ass_line: bytes) -> bytes:
    """The decoder gives "ReadOrder,Layer,Style,..."; the encoders take the same line without "Dialogue: "."""
    return ass_line[len(b"Dialogue: ") :] if ass_line.startswith(b"Dialogue: ") else ass_line


def copy_metadata(src: av.stream.Stream, dst: av.stream.Stream) -> None:
    """Language, title, handler names and the like; not the statistics the old muxer wrote."""
    for key, value in src.metadata.items():
        if not key.lower().startswith(STATS_TAGS):
            dst.metadata[key] = value
    title = src.metadata.get("title")
    if title and dst.container.format.name in ("mp4", "mov"):
        dst.metadata["handler_name"] = title  # MP4 has no track title; its hdlr name is where players look
    dst.disposition = src.disposition


def sample_packets(path: str, indexes: set[int]) -> dict[int, list[av.Packet]]:
    """A few packets of each stream in ``indexes`` from the start of the file (own demuxer)."""
    found: dict[int, list[av.Packet]] = {i: [] for i in indexes}
    with av.open(path) as container:
        for n, packet in enumerate(container.demux()):
            if n >= SAMPLE_PACKETS or all(len(v) >= 3 for v in found.values()):
                break
            bucket = found.get(packet.stream.index)
            if bucket is not None and packet.size and len(bucket) < 3:
                bucket.append(packet)
    return found


def trial_copy(format_name: str, template: av.stream.Stream, packets: list[av.Packet]) -> str | None:
    """None when ``format_name`` takes packet copies of ``template``; else FFmpeg's reason.

    Some refusals come from add_stream, others only when the header is written at the first mux
    (e.g. "opus only supported in MP4" for mov), so the trial writes the header and a few packets.
    Some muxers refuse nothing: MPEG-TS stores a codec it has no stream type for (mov_text, WebVTT,
    PCM) as private data, read back as an unknown data stream; MPEG-PS stores text subtitles as DVD
    bitmap ones. So the trial is read back too, and must hold the template's kind of stream (and,
    for subtitles, its codec: a few audio packets are not always enough to tell the codec again).
    """
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format=format_name) as trial:
            stream = trial.add_stream_from_template(template)
            trial.start_encoding()
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
                copy.time_base = packet.time_base
                copy.stream = stream
                trial.mux(copy)
    except (av.error.FFmpegError, ValueError) as e:
        return first_line(e)
    back = _read_back(buffer) if packets else None
    if back is None:
        return None
    kind, codec = template.type, template.codec_context.name
    if kind not in (k for k, _ in back):
        return f"{format_name} would store it as an unknown data stream"
    if kind == "subtitle" and (kind, codec) not in back:
        return f"{format_name} would store it as {next(c for k, c in back if k == kind)} subtitles"
    return None


def _read_back(buffer: io.BytesIO) -> list[tuple[str, str | None]] | None:
    """(kind, codec) of the streams a trial file reads back as; None when it cannot be read back."""
    buffer.seek(0)
    try:
        with av.open(buffer, "r") as back:
            return [(s.type, s.codec_context.name if s.codec_context else None) for s in back.streams]
    except (av.error.FFmpegError, ValueError):
        return None  # a few packets are not always enough to read a file back: the trial's answer stands


def first_line(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def plan_routes(
    output: av.container.OutputContainer,
    source: av.container.InputContainer,
    video_index: int,
    config: EncodeConfig,
    path: str,
    emit: Emit,
) -> list[Route]:
    """Add an output stream (or a planned up-front write) for every input stream but the main video."""
    others = [s for s in source.streams if s.index != video_index]
    samples = sample_packets(path, {s.index for s in others})
    routes: list[Route] = []

    def warn(stream, message):
        emit(Event("warning", path=path, message=f"stream {stream.index} ({_describe(stream)}): {message}"))

    for stream in others:
        if stream.type == "video" and is_cover(stream):
            route = _plan_cover(output, stream, samples[stream.index], warn)
        elif stream.type == "video":
            warn(stream, "a second video stream is not upscaled and was dropped")
            route = None
        elif stream.type == "audio":
            route = _plan_audio(output, stream, samples[stream.index], config, warn, emit, path)
        elif stream.type == "subtitle":
            route = _plan_subtitle(output, stream, samples[stream.index], warn)
        elif stream.type == "attachment":
            route = _plan_attachment(output, stream, warn)
        else:
            warn(stream, "data streams are not carried over; dropped")
            route = None
        if route is not None:
            routes.append(route)
    return routes


def _describe(stream) -> str:
    codec = stream.codec_context.name if stream.codec_context is not None else stream.type
    language = stream.metadata.get("language")
    return f"{stream.type} {codec}" + (f", {language}" if language and language != "und" else "")


def _plan_audio(output, stream, samples, config, warn, emit, path) -> Route | None:
    fmt = output.format.name
    if config.audio == "none":
        emit(Event("info", path=path, message=f"stream {stream.index} ({_describe(stream)}): dropped (--audio none)"))
        return None
    if config.audio == "copy":
        refusal = trial_copy(fmt, stream, samples)
        if refusal is None:
            out = output.add_stream_from_template(stream)
            copy_metadata(stream, out)
            return Route(stream, out, "copy")
        codec = _fallback_audio_codec(output)
        warn(stream, f"{fmt} cannot hold it as is ({refusal}); re-encoded to {codec}")
    else:
        codec = "aac" if "aac" in _codecs(output) else _fallback_audio_codec(output)
        if codec != "aac":
            warn(stream, f"{fmt} cannot hold AAC; re-encoded to {codec}")
    if codec is None:
        warn(stream, f"{fmt} accepts no audio codec we can encode; dropped")
        return None
    return Route(stream, _add_audio_encoder(output, stream, codec), "audio")


def _codecs(output) -> set[str]:
    return output.supported_codecs


def _fallback_audio_codec(output) -> str | None:
    """AAC for mp4/mov and most others, Opus for Matroska/WebM, else the format's default audio codec."""
    supported = _codecs(output)
    preferred = ("libopus", "aac") if output.format.name in ("matroska", "webm") else ("aac", "libopus")
    for codec in preferred:
        if codec in supported:
            return codec
    default = output.default_audio_codec
    return default if default and default != "none" and default in supported else None


def _add_audio_encoder(output, stream, codec: str) -> av.audio.stream.AudioStream:
    cc = stream.codec_context
    rates = av.codec.Codec(codec, "w").audio_rates
    rate = cc.sample_rate if not rates or cc.sample_rate in rates else 48000
    out = output.add_stream(codec, rate=rate)
    channels = min(cc.channels or 2, 8)
    # Unknown layouts ("2 channels" from a WAV-style PCM track) get the default layout of their count.
    out.layout = cc.layout if cc.layout.name and "channels" not in cc.layout.name else f"{channels}c"
    out.codec_context.time_base = Fraction(1, rate)
    copy_metadata(stream, out)
    return out


def _plan_subtitle(output, stream, samples, warn) -> Route | None:
    fmt = output.format.name
    refusal = trial_copy(fmt, stream, samples)
    if refusal is None:
        out = output.add_stream_from_template(stream)
        copy_metadata(stream, out)
        return Route(stream, out, "copy")
    name = stream.codec_context.name
    target = _subtitle_target(output)
    if name not in TEXT_SUBTITLES or target is None:
        warn(stream, f"{fmt} cannot hold {name} subtitles ({refusal}) and they cannot be converted; dropped")
        return None
    stream.codec_context.open(strict=False)  # the decoder builds the ASS header the encoder needs
    out = output.add_stream(target)
    out.codec_context.subtitle_header = stream.codec_context.subtitle_header
    out.codec_context.time_base = stream.time_base
    copy_metadata(stream, out)
    warn(stream, f"{fmt} cannot hold {name} subtitles; converted to {target} (styling may be simplified)")
    return Route(stream, out, "subtitle")


def _subtitle_target(output) -> str | None:
    supported = _codecs(output)
    for codec in ("mov_text", "subrip", "webvtt", "ass"):
        if codec in supported:
            return codec
    return None


def _plan_cover(output, stream, samples, warn) -> Route | None:
    fmt = output.format.name
    if not samples:
        warn(stream, "cover art has no picture data; dropped")
        return None
    codec = stream.codec_context.name
    data = bytes(samples[0])
    if fmt == "matroska":
        # Matroska keeps pictures as attachments; FFmpeg reads image attachments back as cover art.
        ext = {"mjpeg": "jpg", "png": "png"}.get(codec, codec)
        name = stream.metadata.get("filename") or f"cover.{ext}"
        mimetype = stream.metadata.get("mimetype") or f"image/{'jpeg' if ext == 'jpg' else ext}"
        output.add_attachment(name, mimetype, data)
        return None
    refusal = trial_copy(fmt, stream, samples[:1])
    if refusal is not None:
        warn(stream, f"{fmt} cannot hold {codec} cover art ({refusal}); dropped")
        return None
    out = output.add_stream_from_template(stream)
    copy_metadata(stream, out)
    packet = av.Packet(data)
    packet.stream = out
    return Route(stream, out, "cover", once=[packet])


def _plan_attachment(output, stream, warn) -> Route | None:
    if output.format.name != "matroska":
        warn(stream, f"{output.format.name} cannot hold attachments ({stream.name or 'unnamed'}); dropped")
        return None
    output.add_attachment(stream.name or f"attachment{stream.index}", stream.mimetype or "application/octet-stream", stream.data)
    return None
