"""Decode the main video stream into RGB float frames, one at a time.

Three stages, each a generator, so memory does not grow with the length of the video:
demux + decode (catching damage per packet) -> optional bwdif deinterlace -> pts repair and
Y'CbCr -> RGB conversion in numpy with the stream's own matrix, range and bit depth.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from vsrup.errors import InputDataError, UsageError, VsrupError
from vsrup.events import Emit, Event, ignore
from vsrup.media.probe import MATRICES, MediaInfo, VideoInfo, open_input

DEINTERLACE_MODES = ("auto", "on", "off")
TRUNCATION_TOLERANCE = 0.02  # fraction of the video's duration allowed to be missing at the end
LENGTH_FORMATS = ("matroska", "mov", "avi")  # containers whose header says how long the video is (TS and PS only estimate it)
TAIL_SECONDS = 1.0  # the up-front truncation check reads the packets of this last stretch


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based, in decode (= presentation) order
    pts: int  # in info.video.time_base; strictly increasing
    image: np.ndarray  # (h, w, 3) float32 RGB in [0, 1]


def decode_frames(
    info: MediaInfo, *, deinterlace: str = "auto", allow_partial: bool = False, emit: Emit = ignore, skip_before: int = 0
) -> Iterator[Frame]:
    """Yield every frame of the main video, or those from index ``skip_before`` on (the ones before are decoded,
    for their indices and timestamps, but not converted). InputDataError for damaged input unless ``allow_partial``."""
    if deinterlace not in DEINTERLACE_MODES:
        raise UsageError(f"--deinterlace must be one of {', '.join(DEINTERLACE_MODES)}, not {deinterlace!r}")
    video = info.video
    path = str(info.path)
    with open_input(info.path) as container:
        stream = container.streams[video.index]
        frames = _decoded(container, stream, video, allow_partial, path, emit)
        if has_alpha(stream, video):
            emit(Event("warning", path=path, message="the video has an alpha channel; the output is opaque (alpha is discarded)"))
        if deinterlace == "on" or (deinterlace == "auto" and video.interlaced):
            emit(Event("info", path=path, message="deinterlacing with bwdif (one frame out per frame in)"))
            frames = _bwdif(frames, stream, every_frame=deinterlace == "on")
        index = -1
        repaired = 0
        last_pts: int | None = None
        step = expected_step(video)
        try:
            for index, frame in enumerate(frames):
                pts = frame.pts
                if last_pts is None:
                    if pts is None:
                        pts = round(video.start_time / video.time_base) if video.start_time else 0
                elif pts is None:
                    pts = last_pts + step
                elif pts <= last_pts:
                    pts = last_pts + 1
                repaired += pts != frame.pts
                last_pts = pts
                if index >= skip_before:
                    yield Frame(index, pts, to_rgb(frame, video))
        except MemoryError:  # av.error.MemoryError (FFmpeg's ENOMEM) is one too: not damage in the file
            at = f" at frame {index + 1}" if index >= 0 else ""
            raise VsrupError(f"{path}: out of memory while decoding{at}; close other programs or lower --clip-len") from None
        if index < 0:
            raise InputDataError(f"{path}: no video frame could be decoded")
        if repaired:
            emit(Event("warning", path=path, message=f"repaired {repaired} missing or out-of-order frame timestamps"))


def has_alpha(stream, video: VideoInfo) -> bool:
    """Alpha in the decoded pixels, or VP8/VP9 alpha that FFmpeg's native decoder does not return."""
    return stream.metadata.get("alpha_mode") == "1" or any(c.is_alpha for c in av.VideoFormat(video.pix_fmt).components)


def expected_step(video: VideoInfo) -> int:
    """Ticks of ``video.time_base`` between two frames at the nominal rate (at least 1)."""
    if not video.rate:
        return 1
    return max(1, round(1 / (video.rate * video.time_base)))


def _decoded(container, stream, video: VideoInfo, allow_partial: bool, path: str, emit: Emit) -> Iterator[av.VideoFrame]:
    """Decode in a demux loop, with timestamp discontinuities and one-frame pts spikes repaired."""
    step = expected_step(video)
    timeline = _Timeline(step, max(DISCONTINUITY_STEPS * step, round(DISCONTINUITY_SECONDS / video.time_base)))
    last_time = None  # seconds: end of the last decoded frame (on the repaired timeline)
    frames = _first_size(_raw_decoded(container, stream, video, allow_partial, path, emit), video, path, emit)
    for frame in _spikes_removed(frames, step):
        if frame.pts is not None:
            frame.pts = timeline.place(frame.pts)
            last_time = float((frame.pts + step) * video.time_base)
        yield frame
    if timeline.jumps:
        emit(Event("warning", path=path, message=f"{timeline.jumps} backward timestamp jump(s) (joined or wrapped recording); "
                   "the rest of the video was placed after what came before"))
    _check_complete(video, last_time, allow_partial, path, emit)


DISCONTINUITY_STEPS = 4  # a pts going back by more than this many frame steps (and at least
DISCONTINUITY_SECONDS = 0.5  # this long) is a discontinuity, not a decoder that reorders late


class _Timeline:
    """Backward jumps past ``threshold`` ticks (two recordings joined, TS discontinuities) shift the rest
    of the video to continue right after the last frame, as FFmpeg does for formats with discontinuities.
    Smaller steps back are left to the per-frame repair (last + 1 tick)."""

    def __init__(self, step: int, threshold: int):
        self.step, self.threshold = step, threshold
        self.offset = 0
        self.last: int | None = None
        self.jumps = 0

    def place(self, pts: int) -> int:
        pts += self.offset
        if self.last is not None and pts < self.last - self.threshold:
            self.offset += self.last + self.step - pts
            pts = self.last + self.step
            self.jumps += 1
        self.last = pts if self.last is None else max(self.last, pts)
        return pts


def _spikes_removed(frames: Iterator[av.VideoFrame], step: int) -> Iterator[av.VideoFrame]:
    """One frame whose pts leaps ahead while its successor comes back (a damaged PES header) gets
    the pts it should have had; without this every later frame would be squeezed behind the leap."""
    last = held = None
    for frame in frames:
        if held is not None:
            p, n = held.pts, frame.pts
            if p is not None and n is not None and last is not None and last < n < p and p - n > step:
                held.pts = min(last + step, last + (n - last) // 2) if n - last > 1 else None
            last = held.pts if held.pts is not None else last
            yield held
        held = frame
    if held is not None:
        yield held


def _raw_decoded(container, stream, video: VideoInfo, allow_partial: bool, path: str, emit: Emit) -> Iterator[av.VideoFrame]:
    """Decode in a demux loop: a damaged packet costs that packet, not the rest of the file.

    Frames the decoder flags as corrupt (MPEG-2 and H.264 conceal damage instead of raising) are
    damage too: an error without ``allow_partial``, kept and counted with it.
    """
    damaged = corrupt = 0
    last_time = None  # seconds: end of the last decoded frame (for the error message)
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except MemoryError:
            raise
        except av.error.FFmpegError as e:  # the demuxer itself gave up: treat the rest as missing
            damaged += 1
            _damage(path, e, last_time, allow_partial)
            break
        try:
            decoded = stream.decode(packet)
        except av.error.InvalidDataError as e:
            damaged += 1
            _damage(path, e, last_time, allow_partial)
            continue
        for frame in decoded:
            if frame.is_corrupt:
                corrupt += 1
                _damage(path, ValueError("the decoder flagged a frame as corrupt"), last_time, allow_partial)
            if frame.pts is not None:
                last_time = float((frame.pts + expected_step(video)) * video.time_base)
            yield frame
    if damaged:
        emit(Event("warning", path=path, message=f"{damaged} damaged packet(s) skipped; the output is partial"))
    if corrupt:
        emit(Event("warning", path=path, message=f"{corrupt} frame(s) decoded from damaged data (errors concealed by the decoder)"))


def _first_size(frames: Iterator[av.VideoFrame], video: VideoInfo, path: str, emit: Emit) -> Iterator[av.VideoFrame]:
    """Frames of another size than the first (a broadcast that switches resolution) are resized to it:
    the first frame's size sets the output's. One warning per new size."""
    size = (video.width, video.height)
    seen = set()
    for index, frame in enumerate(frames):
        if (frame.width, frame.height) != size:
            if (frame.width, frame.height) not in seen:
                seen.add((frame.width, frame.height))
                emit(Event("warning", path=path, message=f"frame size changes from {size[0]}x{size[1]} to {frame.width}x{frame.height} "
                           f"at frame {index}; such frames are resized to {size[0]}x{size[1]}, the size of the first frame (and of the output)"))
            pts = frame.pts
            frame = frame.reformat(width=size[0], height=size[1], interpolation="LANCZOS")  # same pixel format: no matrix involved
            frame.pts = pts
        yield frame


def _damage(path: str, error: Exception, last_time: float | None, allow_partial: bool) -> None:
    if allow_partial:
        return
    where = f" after {last_time:.2f}s" if last_time is not None else ""
    reason = (getattr(error, "strerror", None) or str(error)).splitlines()[0]
    raise InputDataError(f"{path}: damaged video data{where} ({reason}); --allow-partial keeps what decodes")


def _check_complete(video: VideoInfo, last_time: float | None, allow_partial: bool, path: str, emit: Emit) -> None:
    """Truncation often raises nothing: compare where decoding ended with where the header says it ends."""
    message = _truncation(video, last_time)
    if message is None:
        return
    if not allow_partial:
        raise InputDataError(f"{path}: {message}; --allow-partial keeps what decodes")
    emit(Event("warning", path=path, message=message))


def _truncation(video: VideoInfo, last_time: float | None) -> str | None:
    """What is missing when the video ends at ``last_time`` (seconds) well before the header's end; else None."""
    if last_time is None or not video.duration:
        return None
    expected_end = (video.start_time or 0.0) + video.duration
    frame = float(1 / video.rate) if video.rate else 0.0
    if last_time >= expected_end - max(2 * frame, TRUNCATION_TOLERANCE * video.duration):
        return None
    return f"video ends at {last_time:.2f}s but the container says {expected_end:.2f}s: the file looks truncated"


def check_length(info: MediaInfo) -> None:
    """Find truncation before the long work, where the container says how long the video is.

    Matroska, MP4/MOV and AVI headers give the video's duration (and MP4 an index of every sample
    with its byte range): a sample indexed past the end of the file, or last packets that end well
    before the duration, mean a truncated file, InputDataError. MPEG-TS and PS only estimate their
    length; there, and when this cannot tell, truncation is found when decoding ends.
    """
    video = info.video
    if not video.duration or info.format_name.split(",")[0] not in LENGTH_FORMATS:
        return
    with open_input(info.path) as container:
        stream = container.streams[video.index]
        entries = stream.index_entries
        indexed = max((entries[i].pos + entries[i].size for i in range(len(entries))), default=0)
        if indexed > container.size:
            raise InputDataError(f"{info.path}: the index places video data up to byte {indexed} of a {container.size}-byte file: "
                                 "the file looks truncated; --allow-partial keeps what decodes")
        message = _truncation(video, _tail_end(container, stream, video))
    if message is not None:
        raise InputDataError(f"{info.path}: {message}; --allow-partial keeps what decodes")


def _tail_end(container, stream, video: VideoInfo) -> float | None:
    """Where the video's last packets end (seconds), read after a seek to just before the header's end."""
    expected_end = (video.start_time or 0.0) + video.duration
    end = None
    try:
        container.seek(max(0, int((expected_end - TAIL_SECONDS) / video.time_base)), stream=stream)
        for packet in container.demux(stream):
            if packet.pts is not None:
                t = float((packet.pts + (packet.duration or expected_step(video))) * video.time_base)
                end = t if end is None else max(end, t)
    except av.error.FFmpegError:
        pass  # a seek the format cannot do, or damage in the tail: what was read stands (decoding still checks the end)
    return end


def _bwdif(frames: Iterator[av.VideoFrame], stream, every_frame: bool) -> Iterator[av.VideoFrame]:
    """bwdif in send_frame mode: one progressive frame per input frame, each with its input's pts."""
    graph = av.filter.Graph()
    source = graph.add_buffer(template=stream)
    deint = graph.add("bwdif", f"mode=send_frame:parity=auto:deint={'all' if every_frame else 'interlaced'}")
    sink = graph.add("buffersink")
    source.link_to(deint)
    deint.link_to(sink)
    graph.configure()
    # bwdif halves the time base (it can also emit one frame per field), so its pts are not ours:
    # frames come out in the order they went in, and take back the pts they went in with.
    waiting: deque[int | None] = deque()
    for frame in frames:
        waiting.append(frame.pts)
        graph.push(frame)
        yield from _pull(graph, waiting)
    graph.push(None)  # bwdif holds one frame back; flush it
    yield from _pull(graph, waiting)


def _pull(graph, waiting: deque) -> Iterator[av.VideoFrame]:
    while True:
        try:
            frame = graph.pull()
        except (BlockingIOError, av.error.EOFError):
            return
        frame.pts = waiting.popleft()
        yield frame


# --- Y'CbCr -> RGB ---------------------------------------------------------------------------------

_CHROMA_NAMES = {(1, 1): "yuv420p", (1, 0): "yuv422p", (0, 0): "yuv444p", (0, 1): "yuv440p", (2, 0): "yuv411p"}


def planar_format(video: VideoInfo) -> str:
    """The planar layout we read pixels from: the input's chroma and depth, repacked if needed."""
    if video.is_rgb:
        return "rgb48le" if video.bit_depth > 8 else "rgb24"
    name = _CHROMA_NAMES.get(video.chroma_subsampling, "yuv444p") if _has_chroma(video) else "gray"
    if video.bit_depth > 8:
        name += f"{video.bit_depth}le"
    try:
        av.VideoFormat(name)
    except ValueError:
        return "yuv444p16le"
    return name


def _has_chroma(video: VideoInfo) -> bool:
    return not video.pix_fmt.startswith(("gray", "ya", "y16", "y8", "mono"))


def to_rgb(frame: av.VideoFrame, video: VideoInfo) -> np.ndarray:
    """(h, w, 3) float32 RGB in [0, 1], converted with the stream's matrix and range, not swscale's guess."""
    target = planar_format(video)
    if video.is_rgb:
        rgb = frame.to_ndarray(format=target, channel_last=True)  # a repack, no matrix involved
        return (rgb.astype(np.float32) / np.iinfo(rgb.dtype).max).astype(np.float32)
    name = frame.format.name
    if name != target and name.replace("yuvj", "yuv") != target:
        frame = frame.reformat(format=target)  # same family (nv12 -> yuv420p, p010 -> yuv420p10le): a repack
    depth = max(c.bits for c in frame.format.components)
    planes = [_plane(frame, i) for i in range(len(frame.planes))]
    h, w = frame.height, frame.width
    y, cb, cr = _normalise(planes, depth, video.full_range)
    if cb is None:
        return np.repeat(np.clip(y, 0, 1)[:, :, None], 3, axis=2)
    sx, sy = video.chroma_subsampling if target != "yuv444p16le" else (0, 0)
    cb = _upsample(_upsample(cb, 1, sx, w, centred=False), 0, sy, h, centred=True)  # MPEG-2/H.264 siting:
    cr = _upsample(_upsample(cr, 1, sx, w, centred=False), 0, sy, h, centred=True)  # left, vertically centred
    kr, kb = MATRICES[video.matrix]
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 1).astype(np.float32)  # (h, w, 3)


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    plane = frame.planes[i]
    dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
    rows = np.frombuffer(plane, dtype=dtype).reshape(plane.height, -1)  # (h, line_size / itemsize)
    return rows[:, : plane.width]


def _normalise(planes, depth: int, full_range: bool):
    """Code values -> luma in [0, 1] and chroma in [-0.5, 0.5]."""
    top = (1 << depth) - 1
    mid = 1 << (depth - 1)
    step = 1 << (depth - 8)
    luma = planes[0].astype(np.float32)
    y = luma / top if full_range else (luma - 16 * step) / (219 * step)
    if len(planes) < 3:
        return y, None, None
    span = top if full_range else 224 * step
    cb, cr = ((p.astype(np.float32) - mid) / span for p in planes[1:3])
    return y, cb, cr


def _upsample(c: np.ndarray, axis: int, log2: int, n: int, centred: bool) -> np.ndarray:
    """Linear interpolation of subsampled chroma back to ``n`` samples along ``axis``."""
    if log2 == 0:
        return c
    factor = 1 << log2
    pos = np.arange(n, dtype=np.float32) / factor
    if centred:
        pos = (np.arange(n, dtype=np.float32) + 0.5) / factor - 0.5
    size = c.shape[axis]
    pos = np.clip(pos, 0, size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, size - 1)
    t = pos - lo
    shape = [1, 1]
    shape[axis] = n
    t = t.reshape(shape)
    return np.take(c, lo, axis=axis) * (1 - t) + np.take(c, hi, axis=axis) * t
