"""Units: where a job's frame span is cut, how one unit is rendered losslessly, and how it is read back.

A unit [lo, hi) starts at a clip start (clip models), a restart point (sequential models) or the
job's first frame. Its frames are the whole run's because a frame's result depends only on the clips
that hold it (``clips`` module doc) or on the frames since the last restart: the unit decodes from
``decode_from``, the start of the first clip that holds frame lo (the clip before it, whose tail is
cross-faded into lo's) or the restart point before lo, and writes only [lo, hi).

Frames are stored as the encoder will take them (``from_rgb`` in the output's pixel format), in
FFV1 inside NUT (which keeps the input's time base exactly), with a CRC-32 of each frame's samples.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from vsrup.clips import plan, restarts
from vsrup.config import UpscaleConfig
from vsrup.errors import InputDataError, UsageError
from vsrup.events import Emit, ignore
from vsrup.jobs.manifest import WorkDir, write_json
from vsrup.outputs import fsync

FFV1 = {"level": "3", "slicecrc": "1", "context": "1"}  # FFV1 version 3, its own per-slice CRCs, the larger context model


@dataclass(frozen=True)
class Unit:
    id: int
    lo: int  # first frame written
    hi: int  # one past the last
    decode_from: int  # first frame its work reads: the start of the first clip holding lo, or the restart point before lo

    def row(self) -> dict:
        return {"id": self.id, "lo": self.lo, "hi": self.hi, "decode_from": self.decode_from}


class CorruptUnit(Exception):
    """A unit's file does not hold the frames its record says (a CRC, count or format differs)."""

    def __init__(self, unit: int, why: str):
        super().__init__(f"unit {unit}: {why}")
        self.unit = unit


def plan_units(frames, *, first: int, stop: int | None, unit_len: int, kind: str, clip_len: int, overlap: int,
               every: int | None, scene_threshold: float) -> tuple[list[Unit], int]:
    """(units, frames read) from one pass over the decoded frames (as ``pipeline.upscale_frames`` would group them),
    which stops at the first clip (or restart point) at or past ``stop``."""
    spans: list[tuple[int, int]] = []  # (start, stop) of each clip, or of each run between restart points
    count = 0  # frames read: all of them, or up to the first clip (restart point) at or past ``stop``
    if kind == "sequential":
        start = None
        for frame, restart in restarts(frames, every, scene_threshold):
            if stop is not None and frame.index >= stop:
                break
            if restart and start is not None:
                spans.append((start, frame.index))
            start = frame.index if restart else start
            count = frame.index + 1
        if start is not None:
            spans.append((start, count))
    else:
        for clip in plan(frames, clip_len, overlap, scene_threshold if clip_len > 1 else 0.0):
            if stop is not None and clip.start >= stop:
                break
            spans.append((clip.start, clip.stop))
            count = clip.stop
    end = count if stop is None else min(stop, count)
    if first >= end:
        raise UsageError(f"--frames starts at {first} but the input has {count} frames")
    starts = [s for s, _ in spans if first < s < end]
    cuts, lo = [], first
    for s in starts:
        if s - lo >= unit_len:
            cuts.append(s)
            lo = s
    bounds = [first] + cuts + [end]
    units = []
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        holding = [s for s, e in spans if s < hi and e > lo]
        decode_from = min(holding) if kind != "sequential" else max(s for s, e in spans if s <= lo)
        units.append(Unit(k, lo, hi, decode_from))
    return units, count


def frame_samples(frame) -> np.ndarray:
    """A frame's samples without row padding: what its CRC covers and what ``rebuilt`` takes."""
    return frame.to_ndarray()


def crc(samples: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(samples).data)


def rebuilt(samples: np.ndarray, pix_fmt: str, video):
    """A fresh encoder-ready frame holding ``samples``, tagged as ``media.encode.from_rgb`` tags its frames."""
    import av

    from vsrup.media.encode import RANGE_JPEG, RANGE_MPEG

    frame = av.VideoFrame.from_ndarray(samples, format=pix_fmt)
    if not frame.format.is_rgb:
        frame.color_range = RANGE_JPEG if video.full_range else RANGE_MPEG
        frame.colorspace = video.matrix
    return frame


def check_pix_fmt(pix_fmt: str, video, size: tuple[int, int]) -> None:
    """A UsageError unless frames of ``pix_fmt`` survive the unit file unchanged (FFV1 takes them; samples round-trip)."""
    import av

    from vsrup.media.encode import from_rgb

    takes = {f.name for f in av.codec.Codec("ffv1", "w").video_formats or ()}
    ok = pix_fmt in takes
    if ok:
        w, h = size
        image = np.random.default_rng(0).random((min(h, 16) // 2 * 2 or 2, min(w, 16) // 2 * 2 or 2, 3), dtype=np.float32)
        try:
            samples = frame_samples(from_rgb(image, pix_fmt, video))
            ok = np.array_equal(frame_samples(rebuilt(samples, pix_fmt, video)), samples)
        except (ValueError, TypeError, av.error.FFmpegError):
            ok = False
    if not ok:
        raise UsageError(f"a resumable job cannot keep {pix_fmt} frames losslessly; choose --pix-fmt yuv420p, yuv444p, yuv420p10le or yuv444p10le")


def render_unit(unit: Unit, info, model, config: UpscaleConfig, work: WorkDir, *, pix_fmt: str, size: tuple[int, int],
                budget: int | None, emit: Emit = ignore, tracker=None) -> dict:
    """Render ``unit`` into its file and record it; returns the record. The model is loaded; nothing else is assumed."""
    import av

    from vsrup.media.decode import decode_frames
    from vsrup.media.encode import from_rgb
    from vsrup.pipeline import in_span, queue_depth, upscale_frames
    from vsrup.threads import Ahead

    started = time.monotonic()
    video = info.video
    partial, final = work.partial_file(unit.id), work.unit_file(unit.id)
    rows: list[list[int]] = []
    frames = decode_frames(info, deinterlace=config.deinterlace, allow_partial=config.allow_partial, skip_before=unit.decode_from)
    with closing(frames), av.open(str(partial), "w", format="nut") as out:
        stream = out.add_stream("ffv1", rate=video.rate or None, options=dict(FFV1))
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.codec_context.time_base = video.time_base
        with Ahead(frames, queue_depth(video.width * video.height), "vsrup-decode") as decoded:
            for frame, image in upscale_frames(decoded, model, config, in_span(unit.lo, unit.hi), unit.hi, total=unit.hi - unit.lo,
                                               start_at=unit.decode_from, emit=emit, tracker=tracker, budget=budget):
                encoded = from_rgb(image, pix_fmt, video)
                rows.append([frame.pts, crc(frame_samples(encoded))])
                encoded.pts, encoded.time_base = frame.pts, video.time_base
                out.mux(stream.encode(encoded))
                if tracker is not None:
                    tracker.frames(tracker.done + 1)
        out.mux(stream.encode(None))
    if len(rows) != unit.hi - unit.lo:
        partial.unlink(missing_ok=True)
        raise InputDataError(f"{info.path}: unit {unit.id} found {len(rows)} of the frames {unit.lo}:{unit.hi} the plan counted; "
                             "the input changed or decodes differently")
    fsync(partial)
    os.replace(partial, final)
    record = {**unit.row(), "file": final.name, "bytes": final.stat().st_size, "frames": rows,
              "seconds": round(time.monotonic() - started, 3), "env": None}
    return record


def save_record(work: WorkDir, record: dict) -> None:
    """Make a rendered unit count: its record, written atomically after its file is in place."""
    write_json(work.record_path(record["id"]), record)


def read_unit(work: WorkDir, record: dict, pix_fmt: str, video) -> Iterator[tuple[object, int]]:
    """(encoder-ready frame, input pts) of a done unit, each checked against its CRC; CorruptUnit otherwise."""
    import av

    rows = record["frames"]
    k = -1
    try:
        with av.open(str(work.unit_file(record["id"]))) as unit_file:
            for k, frame in enumerate(unit_file.decode(video=0)):
                if k >= len(rows):
                    raise CorruptUnit(record["id"], f"more frames than the {len(rows)} recorded")
                if frame.format.name != pix_fmt:
                    raise CorruptUnit(record["id"], f"frames in {frame.format.name}, the job's are {pix_fmt}")
                samples = frame_samples(frame)
                if crc(samples) != rows[k][1]:
                    raise CorruptUnit(record["id"], f"frame {record['lo'] + k} does not match its CRC-32")
                yield rebuilt(samples, pix_fmt, video), rows[k][0]
    except av.error.FFmpegError as e:
        raise CorruptUnit(record["id"], f"unreadable ({e})") from None
    if k + 1 != len(rows):
        raise CorruptUnit(record["id"], f"{k + 1} frames, {len(rows)} recorded")
