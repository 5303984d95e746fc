"""Encode upscaled RGB frames and remux every other stream of the input beside them.

All streams share the input's timeline: each video frame keeps its input pts (the encoder's time
base is the input stream's), copied packets keep theirs, and nothing is rebased. Everything the
output container can refuse is tried in ``__init__``, before the long work starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsrup.config import EncodeConfig
from vsrup.errors import InputDataError, OutputError, UsageError
from vsrup.events import Emit, Event, ignore
from vsrup.media.decode import DISCONTINUITY_SECONDS, expected_step
from vsrup.media.probe import MATRICES, RANGE_JPEG, RANGE_MPEG, MediaInfo, VideoInfo, open_input, quiet_ffmpeg
from vsrup.media.streams import Route, first_line, plan_routes

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
PRESETS = {"libx264": X264_PRESETS, "libx265": X264_PRESETS}  # encoders whose own `preset` takes these names
CRF_RANGES = {"libx264": (0, 51), "libx265": (0, 51)}  # 8-bit scale; their AVOptions say -1..FLT_MAX. Others: their AVOption's range
VPX_DEFAULT_CRF = 31  # libvpx-vp9 constant quality; Google's VOD guide uses 31-33 for 1080p
VPX_DEFAULT_PRESET = "fast"  # -> deadline good, cpu-used 4 (vpx_speed), row-mt, tile columns: 3x FFmpeg's own VP9 defaults at 1080p (docs/benchmarks.md)
VPX_MIN_TILE_WIDTH = 256  # px: VP9 tiles are at least this wide, so tile-columns (log2) follows the width
VPX_MAX_TILE_COLUMNS = 6  # log2: 64 columns, libvpx's limit
_CHROMA_NAMES = {(1, 1): "yuv420p", (1, 0): "yuv422p", (0, 0): "yuv444p", (0, 1): "yuv440p"}
FASTSTART_SUFFIXES = (".mp4", ".m4v", ".mov")  # the ISO-BMFF muxers, which take movflags
X265_UNSET_DTS_FRAMES = 2  # encodes this short get garbage dts from libx265 (see VideoWriter.close)


def default_codec(format_name: str, bit_depth: int) -> str:
    """libx264 for 8-bit, libx265 above; WebM holds only VP8/VP9/AV1: libvpx-vp9, or libsvtav1 above 8-bit."""
    if format_name == "webm":
        return "libvpx-vp9" if bit_depth <= 8 else "libsvtav1"
    return "libx264" if bit_depth <= 8 else "libx265"


def encoder_options(codec: str, config: EncodeConfig, size: tuple[int, int], warn) -> dict[str, str]:
    """The encoder's AVOptions from --crf, --preset and --encoder-opt, checked against the encoder before any work.

    A value the encoder cannot take is a UsageError naming the option; --encoder-opt comes last and wins.
    """
    private = {o.name: o for o in av.codec.CodecContext.create(codec, "w").supported_options.private}
    options = {}
    if config.crf is not None:
        if codec in CRF_RANGES or "crf" in private:
            low, high = CRF_RANGES.get(codec) or (max(0, int(private["crf"].min)), int(private["crf"].max))
            if not low <= config.crf <= high:
                raise UsageError(f"--crf {config.crf} is outside {codec}'s range {low}..{high}")
            options["crf"] = str(config.crf)
        else:
            raise UsageError(f"--crf: {codec} has no constant rate factor; pass its own rate control with --encoder-opt (b=8M, ...)")
    preset = config.preset
    if codec.startswith("libvpx"):
        # libvpx's own default is a low fixed bitrate; constant quality needs crf with the bitrate cap off.
        options.setdefault("crf", str(VPX_DEFAULT_CRF))
        options["b"] = "0"
        if preset is not None and preset not in X264_PRESETS:
            raise UsageError(f"--preset {preset}: {codec} takes the x264 names ({', '.join(X264_PRESETS)}), mapped onto its cpu-used and deadline")
        options.update(vpx_speed(preset or VPX_DEFAULT_PRESET, size[0]))
    elif preset is not None and codec in PRESETS:
        if preset not in PRESETS[codec]:
            raise UsageError(f"--preset {preset} is not one of {codec}'s presets: {', '.join(PRESETS[codec])}")
        options["preset"] = preset
    elif preset is not None and "preset" in private and private["preset"].type.name == "INT":  # libsvtav1: numbered presets
        low, high = int(private["preset"].min), int(private["preset"].max)
        if not (preset.lstrip("-").isdigit() and low <= int(preset) <= high):
            raise UsageError(f"--preset {preset}: {codec} takes a number {low}..{high} (lower is slower and better)")
        options["preset"] = preset
    elif preset is not None:
        warn(f"{codec} has no presets; --preset ignored")
    options.update(config.options)
    return options


def has_avx512() -> bool:
    """Whether this CPU has the AVX-512 set x264 uses (Linux: /proc/cpuinfo; elsewhere unknown, taken as no).

    x264's AVX-512 code gives run-to-run different streams for the same frames when a frame's width is
    not a multiple of 64 (measured: 96x64 gave 3 different files in 5 runs, 128x64 one file, equal to
    the C code's): it reads past the rows it is given. Its asm is bit-exact otherwise, so vsrup caps x264 at
    AVX2 on such CPUs (``asm=AVX2``, the AVX2 level and all below): the same frames then give the same file
    on every run and every x86 machine, at the cost of x264's AVX-512 speed-up.
    """
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "").split()
    except OSError:
        return False
    return {"avx512f", "avx512bw", "avx512vl"} <= set(flags)


def vpx_speed(preset: str, width: int) -> dict[str, str]:
    """libvpx's speed from an x264 preset name: cpu-used 8 (ultrafast) .. 0 (placebo), realtime for the three fastest;
    row multithreading on, and as many tile columns as the width allows (each encodes in its own thread)."""
    speed = min(X264_PRESETS.index(preset), 8)  # ultrafast 0 ... veryslow and placebo 8
    columns = max(0, min(VPX_MAX_TILE_COLUMNS, (width // VPX_MIN_TILE_WIDTH).bit_length() - 1))  # log2 of the tiles that fit
    return {"cpu-used": str(8 - speed), "deadline": "realtime" if speed < 3 else "good", "row-mt": "1", "tile-columns": str(columns)}


def choose_pix_fmt(codec: str, video: VideoInfo, size: tuple[int, int]) -> tuple[str, str | None]:
    """(pix_fmt, note): the input's chroma and depth where the encoder has them; 4:4:4 for odd sizes."""
    supported = {f.name for f in av.codec.Codec(codec, "w").video_formats or ()}
    chroma = video.chroma_subsampling
    note = None
    w, h = size
    if w % (1 << chroma[0]) or h % (1 << chroma[1]):
        note = f"odd output size {w}x{h}: encoded as 4:4:4 so the exact size is kept (some hardware players cannot play 4:4:4)"
        chroma = (0, 0)
    gray = video.pix_fmt.startswith(("gray", "ya", "y16", "mono"))
    families = (["gray"] if gray else []) + [_CHROMA_NAMES.get(chroma, "yuv444p"), "yuv444p"]
    depths = sorted({8, 10, 12, 16}, key=lambda d: (d < video.bit_depth, abs(d - video.bit_depth)))
    for family in families:
        for depth in depths:
            name = family if depth == 8 else f"{family}{depth}le"
            if name in supported:
                if depth < video.bit_depth:
                    note = (note + "; " if note else "") + f"{codec} has no {video.bit_depth}-bit {family}: {depth}-bit"
                return name, note
    raise UsageError(f"{codec} cannot encode a planar YUV format; choose another --codec")


class VideoWriter:
    """Write frames to ``path`` (a temporary name ending in the real extension) with all other streams."""

    def __init__(
        self,
        path: str | Path,
        info: MediaInfo,
        config: EncodeConfig,
        size: tuple[int, int],
        *,
        trim: bool = False,
        emit: Emit = ignore,
    ):
        quiet_ffmpeg()
        self.path = Path(path)
        self.info = info
        self.config = config
        self.size = size
        self.trim = trim
        self.emit = emit
        self.frames_written = 0
        self._file = None  # the file the muxer writes through: ours, so that write errors are ours too
        self._output = None
        self._source = None
        self._closed = False
        self._first_time: Fraction | None = None  # seconds of the first written frame
        self._last_pts: int | None = None
        self._pending: av.Packet | None = None  # next side packet, read ahead by one
        self._side = None
        self._shifts: dict[int, tuple[int, Fraction | None]] = {}  # input stream -> (pts offset, end so far)
        self._jumps: set[int] = set()  # input streams shifted past a backward jump
        self._side_dts: dict[int, Fraction] = {}  # output stream -> last muxed dts (seconds)
        self._dropped: dict[int, int] = {}  # output stream -> packets dropped for a dts going back
        try:
            with _output_errors(self.path):
                try:
                    self._open()
                except av.error.FFmpegError as e:
                    if isinstance(e, OSError):
                        raise
                    raise UsageError(f"{self.path}: the output cannot be set up ({first_line(e)})") from None
        except BaseException:
            self.abort()
            raise

    # --- setup -----------------------------------------------------------------------------------

    def _open(self) -> None:
        info, video = self.info, self.info.video
        self._file = open(self.path, "wb")
        try:
            # The format from the name's extension; mp4/mov with the index (moov) moved to the front at the end.
            # bitexact: no random IDs or dates in the container (Matroska's segment and track UIDs and DateUTC
            # differed on every run), so the same frames give the same file.
            faststart = self.config.faststart and self.path.suffix.lower() in FASTSTART_SUFFIXES
            options = {"fflags": "+bitexact", **({"movflags": "+faststart"} if faststart else {})}
            self._output = av.open(self._file, "w", options=options)
        except ValueError:
            raise UsageError(f"{self.path}: cannot tell the output format from the extension") from None
        self._source = open_input(info.path)
        self._video = self._add_video(video)
        self._routes = plan_routes(
            self._output, self._source, video.index, self.config, str(info.path), self.emit
        )
        self._output.metadata.update(
            {k: v for k, v in self._source.metadata.items() if k.lower() not in ("encoder", "duration")}
        )
        if self._source.chapters():
            self._output.set_chapters(self._source.chapters())
        # Write the header now: refusals that only show at the first mux surface before any frame work. The
        # encoders open here: what they print (x265 writes to stderr itself) becomes part of our one error line.
        try:
            with encoder_messages() as messages:
                self._output.start_encoding()
        except av.error.FFmpegError as e:
            logged = getattr(e, "log", None)  # (level, name, message): FFmpeg's last error line, x264's among them
            said = messages[-1] if messages else logged[2].strip() if logged else None
            if isinstance(e, OSError) or not said:
                raise
            raise UsageError(f"{self._video.codec_context.name} refused its settings: {said}") from None
        # What the encoder did not take, FFmpeg ignores silently (the container's own options are in this dict too).
        unused = [key for key, _ in self.config.options if key in self._video.codec_context.options]
        if unused:
            raise UsageError(f"--encoder-opt {unused[0]}: {self._video.codec_context.name} has no such option")
        for route in self._routes:
            self._output.mux(route.once)
        carried = [r.source for r in self._routes if r.mode != "cover"]
        for stream in self._source.streams:
            if stream not in carried:
                stream.discard = av.stream.Discard.all
        self._side = self._source.demux(*carried) if carried else iter(())

    def _add_video(self, video: VideoInfo) -> av.video.stream.VideoStream:
        config = self.config
        codec = config.codec or default_codec(self._output.format.name, video.bit_depth)
        try:
            encoder = av.codec.Codec(codec, "w")
        except av.codec.codec.UnknownCodecError:
            raise UsageError(f"unknown video encoder {codec!r} (FFmpeg's encoder names: libx264, libx265, libsvtav1, libvpx-vp9, ...)") from None
        if encoder.type != "video":
            raise UsageError(f"{codec} is an {encoder.type} encoder; --codec takes a video encoder (libx264, libx265, libsvtav1, libvpx-vp9, ...)")
        if config.pix_fmt:
            pix_fmt, note = config.pix_fmt, None
            takes = [f.name for f in encoder.video_formats or ()]
            if takes and pix_fmt not in takes:  # FFmpeg would only say "Invalid argument"
                raise UsageError(f"{codec} cannot encode pixel format {pix_fmt}; it takes {', '.join(takes)}")
        else:
            pix_fmt, note = choose_pix_fmt(codec, video, self.size)
        if note:
            self.emit(Event("warning", path=str(self.info.path), message=note))
        options = encoder_options(codec, config, self.size, lambda text: self.emit(Event("warning", path=str(self.info.path), message=text)))
        hdr = hdr_params(codec, video)
        params = (["log-level=error"] if codec == "libx265" else []) + hdr  # x265 prints to stderr itself otherwise
        params += ["asm=AVX2"] if codec == "libx264" and has_avx512() else []
        key = f"{codec.removeprefix('lib')}-params"  # x264-params, x265-params, svtav1-params
        params += [options.pop(key)] if key in options else []  # the user's own (--encoder-opt) last: they win
        if params:
            options[key] = ":".join(params)
        if codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs to stderr itself (read at encoder init); 1 = errors
        if (video.mastering_display or video.content_light) and not hdr:
            self.emit(Event("warning", path=str(self.info.path), message=f"{codec} cannot carry the input's HDR10 mastering display and light levels; they are dropped (libx264, libx265 and libsvtav1 keep them)"))
        try:
            stream = self._output.add_stream(codec, rate=video.rate or None, options=options)
        except ValueError as e:
            raise UsageError(f"{self.path.suffix} output cannot hold {codec} video ({e}); choose another extension or --codec") from None
        except av.error.FFmpegError as e:
            raise UsageError(f"unknown video encoder {codec!r} ({e})") from None
        stream.width, stream.height = self.size
        stream.pix_fmt = pix_fmt
        cc = stream.codec_context
        cc.time_base = video.time_base  # frames keep the input pts: the timeline is never rebuilt
        cc.thread_count = config.threads
        if video.sar:
            cc.sample_aspect_ratio = video.sar  # a uniform scale keeps the sample aspect ratio
        cc.color_primaries = video.color_primaries
        cc.color_trc = video.color_trc
        cc.colorspace = video.matrix  # tagged explicitly: the matrix the pixels were converted with
        cc.color_range = RANGE_JPEG if video.full_range else RANGE_MPEG
        if video.rotation:
            stream.set_display_rotation(video.rotation)
        source = self._source.streams[video.index]
        for key in ("language", "title", "handler_name"):
            if key in source.metadata:
                stream.metadata[key] = source.metadata[key]
        # Matroska writes FlagDefault from the disposition: without this, a default video track comes out non-default.
        stream.disposition = source.disposition & ~av.stream.Disposition.attached_pic
        self._pix_fmt = pix_fmt
        return stream

    @property
    def picture_bytes(self) -> float:
        """Bytes per pixel of one picture in the encoder's pixel format (1.5 for 8-bit 4:2:0), for the host memory estimate."""
        return sum(plane.buffer_size for plane in av.VideoFrame(64, 64, self._pix_fmt).planes) / 64**2

    # --- writing ---------------------------------------------------------------------------------

    @property
    def pix_fmt(self) -> str:
        """The pixel format the encoder takes; ``write_frame`` wants frames in it."""
        return self._pix_fmt

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode one (H, W, 3) float32 RGB frame at ``pts`` (the input frame's, in video.time_base)."""
        w, h = self.size
        if image.shape != (h, w, 3):
            raise ValueError(f"frame of shape {image.shape}, the writer was opened for {(h, w, 3)}")
        with _output_errors(self.path):
            frame = from_rgb(image, self._pix_fmt, self.info.video)
        self.write_frame(frame, pts)

    def write_frame(self, frame: av.VideoFrame, pts: int) -> None:
        """Encode one frame already in ``pix_fmt`` (``from_rgb``'s, or a job's unit read back) at ``pts``."""
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"pts {pts} after {self._last_pts}: timestamps must increase")
        tb = self.info.video.time_base
        with _output_errors(self.path):
            frame.pts = pts
            frame.time_base = tb
            if self._first_time is None:
                self._first_time = pts * tb
            self._mux(self._video.encode(frame))
            self._last_pts = pts
            self.frames_written += 1
            self._carry(until=pts * tb)

    def close(self) -> None:
        """Flush the encoder, mux the rest of the other streams, write the trailer."""
        if self._closed:
            return
        try:
            with _output_errors(self.path):
                if self.frames_written == 0:
                    raise InputDataError(f"{self.info.path}: no video frames were written")
                flushed = self._video.encode(None)
                if self._video.codec_context.name == "libx265" and self.frames_written <= X265_UNSET_DTS_FRAMES:
                    # x265 sets the offset between its pts and dts (Encoder::m_bframeDelayTime) only when
                    # its third frame arrives, and never initialises it: a shorter encode gets dts = pts
                    # minus whatever that memory held, which muxers refuse ("pts/dts pair unsupported").
                    # Encodes that short are not reordered: their dts is their pts.
                    for packet in flushed:
                        packet.dts = packet.pts
                self._mux(flushed)
                end = None
                if self.trim:
                    end = (self._last_pts + expected_step(self.info.video)) * self.info.video.time_base
                self._carry(until=end)
                for route in self._routes:
                    self._mux_side(route.flush())
                for index in sorted(self._jumps):
                    self._warn(f"stream {index}: timestamps jump back (joined recording); placed after what came before, like the video")
                for index, count in sorted(self._dropped.items()):
                    self._warn(f"output stream {index}: {count} packet(s) with out-of-order timestamps dropped")
                self._output.close()
                self._file.close()  # flushes what the muxer wrote last; the commit fsyncs it
                self._source.close()
                self._closed = True
        finally:
            if not self._closed:
                self.abort()

    def _mux(self, packets) -> None:
        for packet in packets:
            if packet.size:  # encoders flush with empty packets; muxers reject them
                self._output.mux(packet)

    def _carry(self, until: Fraction | None) -> None:
        """Mux side packets that start before ``until`` (seconds; None = all), read lazily."""
        while True:
            packet = self._pending or self._next_side_packet()
            self._pending = None
            if packet is None:
                return
            if not packet.size:
                continue
            start = _time(packet)
            if until is not None and start is not None and start >= until:
                self._pending = packet
                return
            if self.trim and start is not None and self._first_time is not None:
                end = start + (packet.duration or 0) * packet.time_base
                if end <= self._first_time:
                    continue  # wholly before the first written frame
            route = self._route_of(packet)
            if route is None:
                continue
            try:
                self._mux_side(route.packets(packet))
            except av.error.InvalidDataError:  # a damaged audio/subtitle packet in a transcoded stream
                self._warn(f"a damaged packet of stream {packet.stream.index} was skipped")

    def _rejoin(self, packet: av.Packet) -> None:
        """Shift a side stream past a backward timestamp jump, as the video is shifted (decode._Timeline).

        Two recordings joined, or a TS discontinuity: the packets after the jump continue right
        after the end of the stream's last packet, so the streams stay on one timeline.
        """
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None:
            return
        index = packet.stream.index
        offset, last_end = self._shifts.get(index, (0, None))
        tb = packet.time_base
        if last_end is not None and (ts + offset) * tb < last_end - DISCONTINUITY_SECONDS:
            offset = round(last_end / tb) - ts
            self._jumps.add(index)
        if offset:
            if packet.pts is not None:
                packet.pts += offset
            if packet.dts is not None:
                packet.dts += offset
        end = (ts + offset + (packet.duration or 0)) * tb
        self._shifts[index] = (offset, end if last_end is None else max(last_end, end))

    def _mux_side(self, packets) -> None:
        """Mux packets of the other streams; one whose dts does not increase is dropped and counted
        (the muxer would refuse it and end the whole job)."""
        for packet in packets:
            if not packet.size:
                continue
            dts = packet.dts if packet.dts is not None else packet.pts
            index = packet.stream.index
            if dts is not None and packet.time_base is not None:
                t = dts * packet.time_base
                last = self._side_dts.get(index)
                if last is not None and (t < last or (t == last and packet.stream.type != "subtitle")):
                    self._dropped[index] = self._dropped.get(index, 0) + 1
                    continue
                self._side_dts[index] = t
            self._output.mux(packet)

    def _next_side_packet(self) -> av.Packet | None:
        """The next packet of the other streams; damage there ends them early, with a warning."""
        try:
            packet = next(self._side, None)
            if packet is not None and packet.size:
                self._rejoin(packet)  # once per packet: a packet read ahead comes back through _pending
            return packet
        except av.error.FFmpegError as e:
            if isinstance(e, OSError) and not isinstance(e, av.error.InvalidDataError):
                raise
            self._warn(f"the other streams end early at damaged data ({first_line(e)})")
            self._side = iter(())
            return None

    def _warn(self, message: str) -> None:
        self.emit(Event("warning", path=str(self.info.path), message=message))

    def _route_of(self, packet) -> Route | None:
        for route in self._routes:
            if route.source.index == packet.stream.index:
                return route
        return None

    # --- context manager and cleanup -------------------------------------------------------------

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Release both containers after a failure; the file is left for the caller to delete."""
        self._closed = True
        for container in (self._output, self._file, self._source):
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()


def _time(packet) -> Fraction | None:
    ts = packet.pts if packet.pts is not None else packet.dts
    return ts * packet.time_base if ts is not None else None


@contextlib.contextmanager
def encoder_messages():
    """Collect what encoders say while they open, as a list of lines, instead of letting it reach the terminal.

    FFmpeg's own log (x264 speaks through it) stays quiet (``quiet_ffmpeg``; PyAV keeps its last error in
    the exception); x265 and SVT-AV1 write to file descriptor 2 themselves, so it points at a temporary
    file meanwhile (briefly: encoders open in well under a second, and nothing else of ours writes then).
    """
    messages: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield messages
            finally:
                os.dup2(saved, 2)
                held.seek(0)
                messages += [clean_encoder_line(line) for line in held.read().decode(errors="replace").splitlines() if line.strip()]
    finally:
        os.close(saved)


def clean_encoder_line(line: str) -> str:
    """'x265 [error]: bad option' -> 'bad option'."""
    line = line.strip()
    return line.split("]:", 1)[1].strip() if line.split(" ", 1)[0].isidentifier() and "]:" in line else line


@contextlib.contextmanager
def _output_errors(path: Path):
    """Disk full, permission denied and friends become one-line OutputErrors (exit 74)."""
    try:
        yield
    except (OSError, av.error.PyAVCallbackError) as e:  # av.error.OSError and av.error.PermissionError are OSError subclasses
        # A failed write of our file object reaches us through FFmpeg as a PyAVCallbackError, the OSError as its context.
        error = e.__context__ if isinstance(e, av.error.PyAVCallbackError) else e
        if not isinstance(error, OSError):
            raise
        reason = error.strerror or errno.errorcode.get(error.errno or 0) or str(error)
        raise OutputError(f"{path}: cannot write output: {reason.splitlines()[0]}") from None


# --- RGB -> Y'CbCr -------------------------------------------------------------------------------


HDR_KEYS = {  # encoder -> its parameter names for mastering display and light level, and whether it takes decimals
    "libx264": ("mastering-display", "cll", False),
    "libx265": ("master-display", "max-cll", False),
    "libsvtav1": ("mastering-display", "content-light", True),
}


def hdr_params(codec: str, video: VideoInfo) -> list[str]:
    """The input's HDR10 static metadata as ``key=value`` parameters of ``codec``; [] when none or not supported.

    x264 and x265 take chromaticities in 1/50000 and luminance in 1/10000 cd/m2, as probed; SVT-AV1
    takes the same values as decimals. All order the primaries G, B, R.
    """
    if codec not in HDR_KEYS:
        return []
    display_key, light_key, decimal = HDR_KEYS[codec]
    params = []
    if video.mastering_display:
        r, g, b, white = (video.mastering_display[i : i + 2] for i in range(0, 8, 2))
        high, low = video.mastering_display[8:]
        if decimal:
            xy = lambda p: f"{p[0] / 50000:.5f},{p[1] / 50000:.5f}"  # noqa: E731
            luminance = f"{high / 10000:.4f},{low / 10000:.4f}"
        else:
            xy = lambda p: f"{p[0]},{p[1]}"  # noqa: E731
            luminance = f"{high},{low}"
        params.append(f"{display_key}=G({xy(g)})B({xy(b)})R({xy(r)})WP({xy(white)})L({luminance})")
    if video.content_light:
        params.append(f"{light_key}={video.content_light[0]},{video.content_light[1]}")
    return params


def from_rgb(image: np.ndarray, pix_fmt: str, video: VideoInfo) -> av.VideoFrame:
    """An encoder-ready frame in ``pix_fmt``, quantised with rounding and clipping.

    The matrix and range are the input's (``video.matrix`` / ``video.full_range``), so a decode ->
    encode round trip is colour-neutral. Chroma is subsampled with MPEG-2/H.264 siting: a [1, 2, 1]
    filter centred on even columns, the mean of row pairs.
    """
    fmt = av.VideoFormat(pix_fmt)
    h, w = image.shape[:2]
    depth = max(c.bits for c in fmt.components)
    top = (1 << depth) - 1
    if fmt.is_rgb:
        packed = "rgb48le" if depth > 8 else "rgb24"
        peak = np.iinfo(np.uint16 if depth > 8 else np.uint8).max
        codes = np.clip(np.rint(image * peak), 0, peak)  # both ends: a model's overshoot must saturate, not wrap
        frame = av.VideoFrame.from_ndarray(codes.astype(np.uint16 if depth > 8 else np.uint8), format=packed)
        return frame.reformat(format=pix_fmt)  # a repack, no matrix involved
    kr, kb = MATRICES[video.matrix]
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    y = kr * r + (1 - kr - kb) * g + kb * b  # (H, W)
    step = 1 << (depth - 8)
    planes = [np.clip(np.rint(y * top if video.full_range else 16 * step + 219 * step * y), 0, top)]
    if len(fmt.components) >= 3:
        cb = (b - y) / (2 * (1 - kb))
        cr = (r - y) / (2 * (1 - kr))
        sx = (w // fmt.chroma_width(w)).bit_length() - 1 if fmt.chroma_width(w) else 0
        sy = (h // fmt.chroma_height(h)).bit_length() - 1 if fmt.chroma_height(h) else 0
        span = top if video.full_range else 224 * step
        for c in (cb, cr):
            c = _subsample_rows(_subsample_columns(c, sx), sy)
            planes.append(np.clip(np.rint((1 << (depth - 1)) + span * c), 0, top))
    frame = av.VideoFrame(w, h, pix_fmt)
    dtype = np.uint16 if depth > 8 else np.uint8
    for plane, values in zip(frame.planes, planes):
        buffer = np.zeros((plane.height, plane.line_size // np.dtype(dtype).itemsize), dtype=dtype)
        buffer[:, : plane.width] = values
        plane.update(buffer)
    frame.color_range = RANGE_JPEG if video.full_range else RANGE_MPEG
    frame.colorspace = video.matrix
    return frame


def _subsample_columns(c: np.ndarray, log2: int) -> np.ndarray:
    for _ in range(log2):
        padded = np.pad(c, ((0, 0), (1, 1)), mode="edge")  # (H, W + 2)
        c = (padded[:, 0:-2:2] + 2 * padded[:, 1:-1:2] + padded[:, 2::2]) / 4  # co-sited with even columns
    return c


def _subsample_rows(c: np.ndarray, log2: int) -> np.ndarray:
    for _ in range(log2):
        if c.shape[0] % 2:
            c = np.pad(c, ((0, 1), (0, 0)), mode="edge")
        c = (c[0::2] + c[1::2]) / 2  # centred between row pairs
    return c
