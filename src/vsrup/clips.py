"""Clips: which frames are sampled together, and how overlapping results are cross-faded.

The plan is a pure function of the frame sequence and the options, built greedily as frames
arrive so it can stream:

- A *segment* is a run of frames without a scene cut (or a change of frame size). Nothing
  temporal crosses a segment boundary: no clip, no flow, no blending.
- Inside a segment starting at ``a``, clips start at ``a, a + stride, a + 2 stride, ...`` with
  ``stride = clip_len - overlap``; each holds ``clip_len`` frames, except the last of a segment,
  which ends at the segment's end (it may be shorter, never empty of new frames).
- Where clip A = [a0, a1) and the next clip B = [b0, b1) overlap, frame j in [b0, a1) is
  ``(1 - w) A_j + w B_j`` with ``w = (j - b0 + 1) / (a1 - b0 + 1)``: a linear cross-fade.

A clip's plan never depends on where a run starts or stops, so a video rendered whole and a
video rendered in pieces (each piece sampling the clips its frames touch) give the same frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

THUMB = 32  # scene-cut thumbnails are THUMB x THUMB: small motions vanish, layout changes remain
BINS = 16  # histogram bins per channel for the colour-distribution half of the cut score


class Indexed(Protocol):
    index: int
    image: np.ndarray  # (h, w, 3) float32 in [0, 1]


@dataclass(frozen=True)
class Clip:
    frames: tuple  # the Indexed items, consecutive indices

    @property
    def start(self) -> int:
        return self.frames[0].index

    @property
    def stop(self) -> int:
        return self.frames[-1].index + 1

    @property
    def indices(self) -> list[int]:
        return [f.index for f in self.frames]

    def images(self) -> np.ndarray:
        return np.stack([f.image for f in self.frames])  # (T, h, w, 3)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Area-average ``image`` (h, w, 3) down to (THUMB, THUMB, 3); sides shorter than THUMB stay as they are."""
    h, w, c = image.shape
    ty, tx = min(THUMB, h), min(THUMB, w)
    rows = np.linspace(0, h, ty + 1).astype(int)
    cols = np.linspace(0, w, tx + 1).astype(int)
    summed = np.add.reduceat(np.add.reduceat(image, rows[:-1], axis=0), cols[:-1], axis=1)  # (ty, tx, 3)
    counts = np.diff(rows)[:, None, None] * np.diff(cols)[None, :, None]
    return summed / counts


def signature(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the cut score compares: a thumbnail (layout) and per-channel histograms (colours)."""
    hist = np.stack([np.histogram(image[..., c], bins=BINS, range=(0.0, 1.0))[0] for c in range(3)]) / image[..., 0].size  # (3, BINS)
    return thumbnail(image), hist


def cut_score(prev: np.ndarray, cur: np.ndarray) -> float:
    """How much ``cur`` looks like a new shot after ``prev``, in [0, 1].

    A cut changes both the layout (mean absolute thumbnail difference) and the colour
    distribution (half the L1 distance of the histograms); a pan or a moving object changes
    mostly the layout, so the score is the smaller of the two.
    """
    return score(signature(prev), signature(cur))


def score(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    layout = float(np.abs(a[0] - b[0]).mean())
    colours = float(np.abs(a[1] - b[1]).sum(axis=1).mean() / 2)
    return min(layout, colours)


def plan(frames: Iterable[Indexed], clip_len: int, overlap: int, scene_threshold: float) -> Iterator[Clip]:
    """Group consecutive frames into clips (see the module docstring). ``scene_threshold`` 0 never cuts."""
    if clip_len < 1 or not 0 <= overlap < clip_len:
        raise ValueError("need clip_len >= 1 and 0 <= overlap < clip_len")
    stride = clip_len - overlap
    window: list[Indexed] = []  # frames of the segment from the next clip's start on
    fresh = True  # no clip of this segment emitted yet
    prev_sig = None
    for frame in frames:
        sig = signature(frame.image) if scene_threshold > 0 else None
        if window and (frame.image.shape != window[-1].image.shape or (
            scene_threshold > 0 and score(prev_sig, sig) > scene_threshold
        )):
            if fresh or len(window) > overlap:
                yield Clip(tuple(window))
            window, fresh = [], True
        prev_sig = sig
        window.append(frame)
        if len(window) == clip_len:
            yield Clip(tuple(window))
            window, fresh = window[stride:], False
    if window and (fresh or len(window) > overlap):
        yield Clip(tuple(window))


def restarts(frames: Iterable[Indexed], every: int | None, scene_threshold: float) -> Iterator[tuple[Indexed, bool]]:
    """Each frame with whether a sequential model's state restarts there: the first frame, each cut
    (as ``plan`` finds them: a scene cut or a change of frame size), and every ``every`` frames of a
    shot counted from its first frame (None: only at cuts). A pure function of the frames, like the plan."""
    prev_sig, prev_shape, since = None, None, 0
    for frame in frames:
        sig = signature(frame.image) if scene_threshold > 0 else None
        cut = prev_shape is None or frame.image.shape != prev_shape or (
            scene_threshold > 0 and score(prev_sig, sig) > scene_threshold
        )
        since = 0 if cut else since + 1
        yield frame, cut or (every is not None and since % every == 0)
        prev_sig, prev_shape = sig, frame.image.shape


class CrossFade:
    """Blend the results of consecutive clips; hands out each output frame exactly once, in order.

    Only the last ``overlap`` frames of a clip are held back: the plan never starts the next
    clip earlier than that.
    """

    def __init__(self, overlap: int):
        self.overlap = overlap
        self.held: dict[int, np.ndarray] = {}  # index -> the previous clip's output for its tail

    def push(self, clip: Clip, outputs: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Take a clip's outputs (T, H, W, 3), which it blends in place; return the (index, frame) pairs now final."""
        ready = [(i, self.held.pop(i)) for i in sorted(self.held) if i < clip.start]  # a cut: nothing to blend
        span = max(self.held, default=clip.start - 1) - clip.start + 2  # overlap length + 1
        keep_from = clip.stop - self.overlap
        for k, index in enumerate(clip.indices):
            frame = outputs[k]  # (H, W, 3)
            if index in self.held:
                w = (index - clip.start + 1) / span
                held = self.held.pop(index)  # (H, W, 3)
                frame -= held  # in place, (1 - w) held + w frame: no new 4x-size arrays (docs/benchmarks.md, bench_host)
                frame *= w
                frame += held
            if index < keep_from:
                ready.append((index, frame))
            else:
                self.held[index] = frame
        return ready

    def flush(self) -> list[tuple[int, np.ndarray]]:
        ready = sorted(self.held.items())
        self.held = {}
        return ready


def last_restart(frames: Iterable[Indexed], first: int, every: int | None, scene_threshold: float) -> int:
    """The index of the last restart point at or before frame ``first`` (reads the frames up to it): where a
    sequential model must start for its frame ``first`` to be the whole run's."""
    start = 0
    for frame, restart in restarts(frames, every, scene_threshold):
        if frame.index > first:
            break
        if restart:
            start = frame.index
        if frame.index == first:
            break
    return start
