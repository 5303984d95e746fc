"""`vsrup eval`: how temporally consistent an upscaled video is (and, given ground truth, how faithful).

Notation. O_t is output frame t (H, W, 3), I_t input frame t (h, w, 3), G_t reference frame t
(H, W, 3), all RGB in [0, 1]; s = W / w = H / h, a whole number. For each pair (t, t+1) of input
frames, vsrup's own flow (flow.estimate_flow, DIS unless --flow raft) gives f_t = f_{t→t+1} and the
occlusion mask of frame t (flow.occlusion, MGLD's forward-backward check); on the output grid:

    f_t  = flow.upscale_flow(f_t, s)                                   (1, 2, H, W), output pixels
    M_t  = 1 - max(nearest_s(occ_t), leaves_frame(f_t))                (1, 1, H, W), 1 = counted
    W(x, f)(p) = x(p + f(p))                                           flow.warp, bilinear

so W(O_{t+1}, f_t) is frame t+1 brought back onto frame t, and M_t keeps the pixels visible in both.

    warping error  E_t = sum_p M_t(p) ||O_t(p) - W(O_{t+1}, f_t)(p)||^2 / sum_p M_t(p)
                   (squared Euclidean norm over R, G, B: Lai et al. 2018's E_warp)
    flicker        D_t = L(O_t - B_t),  B_t = color.bicubic_upscale(I_t) to H x W,
                   L = color.low_frequencies (5 dilated 3x3 binomial blurs, radii 1..16 px)
                   F_t = sum_p M_t(p) mean_c |D_t(p, c) - W(D_{t+1}, f_t)(p, c)| / sum_p M_t(p)
                   the change, after motion compensation, of the output's low-frequency departure
                   from its input: colour pumping the upscaler added (a fade or a flicker in the
                   input itself cancels; a steady cast does not count).
    PSNR           10 log10(1 / mean_{p,c} (O_t - G_t)^2)
    SSIM           Wang et al. 2004 per channel (Gaussian window sigma 1.5, 11 taps, K1 0.01,
                   K2 0.03, L 1, population (co)variances), the SSIM map averaged over the pixels
                   5 px or more from the border and over R, G, B
    tOF            mean_p ||phi(O_t, O_{t+1})(p) - phi(G_t, G_{t+1})(p)||_2, phi the same flow
                   estimator run on the output grid: how far the output's motion strays from the
                   reference's (TecoGAN's tOF, with the end-point distance), output pixels

Video values: the mean over pairs (E, F, tOF) or frames (PSNR, SSIM). A pair across a scene cut
(clips.cut_score of the input frames above --scene-threshold) or with no counted pixel has no
temporal value (None) and is left out of the means, as is an infinite PSNR (identical frames).

Alignment: the rules of the rest of vsrup. Output frame i is input frame i (input frame START + i
with --frames START:END, as `vsrup upscale --frames` writes them), with its timestamp;
the files must hold the same number of frames (InputDataError, exit 65, otherwise) and every
output (and reference) frame's time, counted from the file's first frame, must be the input
frame's within one tick of the coarser time base (and under half a frame). A constant shift of
the whole timeline is allowed: Matroska moves every stream by the audio's priming.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import takewhile
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vsrup.clips import cut_score
from vsrup.color import bicubic_upscale, low_frequencies
from vsrup.errors import InputDataError, UsageError
from vsrup.events import Emit, Event, ignore
from vsrup.flow import estimate_flow, leaves_frame, require, upscale_flow, warp

SCHEMA = "vsrup-eval/1"
SSIM_SIGMA = 1.5  # Wang et al. 2004
SSIM_RADIUS = 5  # int(3.5 sigma + 0.5): an 11-tap window, as scikit-image's gaussian_weights=True
SSIM_K1, SSIM_K2 = 0.01, 0.03


# ---------------------------------------------------------------- the measures, on tensors


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float32 -> (1, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


def output_grid(flow_lr: torch.Tensor, occ_lr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A pair's input-grid flow (1, 2, h, w) and occlusion (1, 1, h, w) on the output grid: (f, M)."""
    f = upscale_flow(flow_lr, scale)  # (1, 2, H, W) output pixels
    occ = F.interpolate(occ_lr, scale_factor=scale, mode="nearest") if scale > 1 else occ_lr  # (1, 1, H, W)
    visible = 1.0 - torch.maximum(occ, leaves_frame(f).float())  # (1, 1, H, W)
    return f, visible


def masked_mean(values: torch.Tensor, visible: torch.Tensor) -> float | None:
    """sum_p M(p) v(p) / sum_p M(p) for values (1, 1, H, W); None when no pixel counts."""
    count = float(visible.sum())
    return float((values * visible).sum()) / count if count > 0 else None


def warping_error(o_t: torch.Tensor, o_next: torch.Tensor, f: torch.Tensor, visible: torch.Tensor) -> float | None:
    """E_t for frames (1, 3, H, W), flow f_{t→t+1} (1, 2, H, W) and mask M_t (1, 1, H, W)."""
    gap = o_t - warp(o_next, f)  # (1, 3, H, W)
    return masked_mean(gap.square().sum(dim=1, keepdim=True), visible)  # (1, 1, H, W) ||.||^2 over RGB


def departure(o: torch.Tensor, lowres: torch.Tensor) -> torch.Tensor:
    """D = L(O - bicubic(I)): output (1, 3, H, W), input frame (1, 3, h, w) -> (1, 3, H, W)."""
    base = bicubic_upscale(lowres.permute(0, 2, 3, 1), o.shape[2], o.shape[3]).permute(0, 3, 1, 2)  # (1, 3, H, W)
    return low_frequencies(o - base)  # (1, 3, H, W)


def flicker(d_t: torch.Tensor, d_next: torch.Tensor, f: torch.Tensor, visible: torch.Tensor) -> float | None:
    """F_t from the departures D_t, D_{t+1} (1, 3, H, W) of two consecutive output frames."""
    change = (d_t - warp(d_next, f)).abs().mean(dim=1, keepdim=True)  # (1, 1, H, W) mean over RGB
    return masked_mean(change, visible)


def psnr(o: torch.Tensor, g: torch.Tensor) -> float | None:
    """PSNR in dB of (1, 3, H, W) frames in [0, 1]; None when they are identical (infinite)."""
    mse = float((o.double() - g.double()).square().mean())
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else None


def _gaussian_taps() -> np.ndarray:
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)  # (11,)
    taps = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)  # (11,)
    return taps / taps.sum()


def _blur_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable Gaussian of (H, W, C) float64, kept only where the window fits: (H - 10, W - 10, C)."""
    r = SSIM_RADIUS
    blurred = cv2.sepFilter2D(x, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT)  # (H, W, C); the border is cropped
    return blurred[r:-r, r:-r]


def ssim(o: torch.Tensor, g: torch.Tensor) -> float | None:
    """SSIM of (1, 3, H, W) frames (see the module doc); None for frames under 11 px on a side.

    The map is kept only where the 11-tap window fits, which is the region scikit-image averages (it
    crops 5 px after filtering), so the padding never enters.
    """
    if min(o.shape[2:]) < 2 * SSIM_RADIUS + 1:
        return None
    x = o[0].permute(1, 2, 0).double().numpy()  # (H, W, 3)
    y = g[0].permute(1, 2, 0).double().numpy()  # (H, W, 3)
    taps = _gaussian_taps()
    mx, my = _blur_valid(x, taps), _blur_valid(y, taps)  # (H', W', 3) local means
    vx = _blur_valid(x * x, taps) - mx * mx  # (H', W', 3) local variances and covariance
    vy = _blur_valid(y * y, taps) - my * my
    cxy = _blur_valid(x * y, taps) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))  # (H', W', 3)
    return float(s.mean())


def flow_distance(f_out: torch.Tensor, f_ref: torch.Tensor) -> float:
    """tOF of a pair: mean end-point distance of two flows (1, 2, H, W), in pixels."""
    return float((f_out - f_ref).norm(dim=1).mean())


# ---------------------------------------------------------------- reading and aligning the files


@dataclass(frozen=True)
class Video:
    """One file taking part: its role (input, output, reference), what probe says, and its frames."""

    role: str
    path: Path
    info: object  # media.probe.MediaInfo
    span: tuple[int, int | None] | None = None  # only decoded frames [first, stop) (--frames; the input only)

    @property
    def size(self) -> tuple[int, int]:
        return self.info.video.width, self.info.video.height

    @property
    def tick(self) -> Fraction:
        return self.info.video.time_base

    @property
    def name(self) -> str:
        """The path, and the frames taking part when not all."""
        if self.span is None:
            return str(self.path)
        first, stop = self.span
        return f"{self.path} (--frames {first}:{'' if stop is None else stop})"

    @property
    def count(self) -> int | None:
        """Frames taking part, when the container states how many it holds."""
        n = self.info.video.frames
        if not n or self.span is None:
            return n
        first, stop = self.span
        return max(0, (n if stop is None else min(stop, n)) - first)

    def frames(self, emit: Emit) -> Iterator:
        from vsrup.media.decode import decode_frames

        frames = decode_frames(self.info, emit=emit)
        if self.span is None:
            return frames
        first, stop = self.span
        return (f for f in takewhile(lambda f: stop is None or f.index < stop, frames) if f.index >= first)


def open_video(role: str, path: Path, span: tuple[int, int | None] | None = None) -> Video:
    """Probe ``path`` and refuse a truncated file before the long work, as `vsrup upscale` does
    (which, given ``--frames A:B``, reads only up to B and so checks only what it reads)."""
    from vsrup.media.decode import check_length
    from vsrup.media.probe import probe

    info = probe(path)
    if span is None or span[1] is None:
        check_length(info)
    if span is not None and info.video.frames and span[0] >= info.video.frames:
        raise UsageError(f"--frames starts at {span[0]} but {path} has {info.video.frames} frames")
    return Video(role, Path(path), info, span)


def scale_of(source: Video, output: Video) -> int:
    """The whole factor s with output = s x input on both axes; InputDataError otherwise."""
    (w, h), (big_w, big_h) = source.size, output.size
    if big_w % w or big_h % h or big_w // w != big_h // h:
        raise InputDataError(f"{output.path}: {big_w}x{big_h} is not a whole multiple of the input's {w}x{h} "
                             "(an output of `vsrup upscale` is exactly scale x the input)")
    return big_w // w


def tolerance(a: Video, b: Video) -> Fraction:
    """Seconds two frame times may differ by: one tick of the coarser time base, under half a frame.

    A time rounded to the coarser base moves by at most half a tick, so a time counted from the first
    frame by at most one. Exact (Fractions): a gap of exactly one tick passes.
    """
    tol = max(a.tick, b.tick)
    rate = a.info.video.rate or b.info.video.rate
    return min(tol, 1 / (2 * rate)) if rate else tol


def check_counts(source: Video, others: Sequence[Video]) -> None:
    """Frame counts the containers state must agree (the rest is checked while decoding)."""
    n = source.count
    for other in others:
        m = other.count
        if n and m and n != m:
            raise InputDataError(f"{other.path}: {m} frames but the input {source.name} has {n}; "
                                 f"{other.role} frame i must be input frame i")


def lockstep(videos: Sequence[Video], emit: Emit) -> Iterator[list]:
    """The i-th frame of every video together; InputDataError when one ends before the others,
    or a frame's time (from its file's first frame) is not the input's (videos[0])."""
    source = videos[0]
    streams = [v.frames(emit) for v in videos]
    starts: list[Fraction] = []
    count = 0
    while True:
        frames = [next(s, None) for s in streams]
        if all(f is None for f in frames):
            return
        if any(f is None for f in frames):
            ended = [v for v, f in zip(videos, frames) if f is None]
            longer = [(v, s) for v, s, f in zip(videos, streams, frames) if f is not None]
            v, rest = longer[0]
            total = count + 1 + sum(1 for _ in rest)
            raise InputDataError(f"{ended[0].name}: {count} frames but {v.name} has {total}; "
                                 "the output, input and reference must hold the same frames")
        times = [f.pts * v.tick for v, f in zip(videos, frames)]  # Fractions of a second
        if not starts:
            starts = times
        for v, t, t0 in zip(videos[1:], times[1:], starts[1:]):
            gap = (t - t0) - (times[0] - starts[0])
            if abs(gap) > tolerance(source, v):
                raise InputDataError(f"{v.path}: frame {count} is at {float(t - t0):.4f} s from the first frame, the input's at "
                                     f"{float(times[0] - starts[0]):.4f} s; {v.role} frame i must be input frame i, with its timestamp")
        count += 1
        yield frames


# ---------------------------------------------------------------- the evaluation


@dataclass
class Run:
    """The measures of one output: per pair (t, t+1) and per frame; None where a value does not exist."""

    path: Path
    warping_error: list = field(default_factory=list)  # per pair
    flicker: list = field(default_factory=list)  # per pair
    tof: list = field(default_factory=list)  # per pair, with a reference
    psnr: list = field(default_factory=list)  # per frame, with a reference
    ssim: list = field(default_factory=list)  # per frame, with a reference
    profile: list = field(default_factory=list)  # the --slice line of every frame, (H, 3) or (W, 3) float32


@dataclass
class Evaluation:
    source: Path
    reference: Path | None
    first: int  # the input's first frame taking part (--frames START)
    flow: str
    scene_threshold: float
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    scale: int
    runs: list[Run]
    times: list = field(default_factory=list)  # seconds of each input frame
    cuts: list = field(default_factory=list)  # pairs k = (k, k+1) across a scene cut
    visible: list = field(default_factory=list)  # per pair, the fraction of output pixels counted (M_t)
    reference_profile: list = field(default_factory=list)  # the --slice line of each reference frame

    def summary(self, run: Run) -> dict:
        return {name: _mean(getattr(run, name)) for name in ("warping_error", "flicker", "psnr", "ssim", "tof")}

    def to_dict(self) -> dict:
        """The --json document (docs/eval.md describes its schema)."""
        with_ref = self.reference is not None
        return {
            "schema": SCHEMA,
            "input": str(self.source),
            "reference": str(self.reference) if with_ref else None,
            "flow": self.flow,
            "scene_threshold": self.scene_threshold,
            "frames": len(self.times),
            "first_frame": self.first,
            "input_size": list(self.input_size),
            "output_size": list(self.output_size),
            "scale": self.scale,
            "times": self.times,
            "cuts": self.cuts,
            "visible": self.visible,
            "outputs": [
                {
                    "path": str(run.path),
                    "summary": {k: v for k, v in self.summary(run).items() if with_ref or k not in ("psnr", "ssim", "tof")},
                    "pairs": {"warping_error": run.warping_error, "flicker": run.flicker, **({"tof": run.tof} if with_ref else {})},
                    **({"frames": {"psnr": run.psnr, "ssim": run.ssim}} if with_ref else {}),
                }
                for run in self.runs
            ],
        }


def _mean(values: list) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def parse_slice(text: str) -> tuple[str, int]:
    """'x=N' (column N over time) or 'y=N' (row N over time) -> ('x', N)."""
    axis, _, number = text.partition("=")
    if axis not in ("x", "y") or not number.isdigit():
        raise UsageError(f"--slice: expected x=N or y=N (output pixels), got {text!r}")
    return axis, int(number)


def _line(image: np.ndarray, at: tuple[str, int]) -> np.ndarray:
    axis, n = at
    return (image[:, n] if axis == "x" else image[n]).copy()  # (H, 3) or (W, 3)


def evaluate(
    outputs: Sequence[Path],
    source: Path,
    reference: Path | None = None,
    *,
    flow: str = "dis",
    scene_threshold: float = 0.3,
    slice_at: tuple[str, int] | None = None,
    frames: tuple[int, int | None] | None = None,
    emit: Emit = ignore,
) -> Evaluation:
    """Measure every output of ``source`` (one flow per input pair serves them all); see the module doc.

    ``frames`` (START, END or None): the outputs hold only these input frames (`vsrup upscale --frames`).
    """
    require(flow)
    source_video = open_video("input", Path(source), frames)
    runs_videos = [open_video("output", Path(p)) for p in outputs]
    ref_video = open_video("reference", Path(reference)) if reference is not None else None
    size = runs_videos[0].size
    for v in runs_videos[1:] + ([ref_video] if ref_video else []):
        if v.size != size:
            raise InputDataError(f"{v.path}: {v.size[0]}x{v.size[1]} but {runs_videos[0].path} is {size[0]}x{size[1]}; "
                                 "the outputs and the reference must be the same size")
    scale = scale_of(source_video, runs_videos[0])
    if slice_at is not None and slice_at[1] >= size[0 if slice_at[0] == "x" else 1]:
        raise UsageError(f"--slice {slice_at[0]}={slice_at[1]} is outside the {size[0]}x{size[1]} output")
    others = runs_videos + ([ref_video] if ref_video else [])
    check_counts(source_video, others)
    result = Evaluation(Path(source), Path(reference) if reference else None, frames[0] if frames else 0, flow, scene_threshold,
                        source_video.size, size, scale, [Run(Path(p)) for p in outputs])
    total = source_video.count
    emit(Event("start", path=str(outputs[0]), message="eval", total=total))
    prev = None  # (input frame, [output tensors], [departures], reference tensor)
    for index, frames in enumerate(lockstep([source_video, *others], emit)):
        lowres = frames[0].image  # (h, w, 3)
        result.times.append(float(frames[0].pts * source_video.tick))
        outs = [to_tensor(f.image) for f in frames[1 : 1 + len(outputs)]]  # each (1, 3, H, W)
        ref = to_tensor(frames[-1].image) if ref_video else None  # (1, 3, H, W)
        departures = [departure(o, to_tensor(lowres)) for o in outs]  # each (1, 3, H, W)
        for run, o, f in zip(result.runs, outs, frames[1:]):
            if ref is not None:
                run.psnr.append(psnr(o, ref))
                run.ssim.append(ssim(o, ref))
            if slice_at is not None:
                run.profile.append(_line(f.image, slice_at))
        if ref is not None and slice_at is not None:
            result.reference_profile.append(_line(frames[-1].image, slice_at))
        if prev is not None:
            _pair(result, index - 1, prev, (lowres, outs, departures, ref), scale, flow, scene_threshold)
        prev = (lowres, outs, departures, ref)
        emit(Event("progress", path=str(outputs[0]), done=index + 1, total=total))
    if not result.times:  # only with --frames: decoding without it fails on a video of no frame
        raise InputDataError(f"{source}: no frames in the range {frames[0]}:{'' if frames[1] is None else frames[1]}")
    return result


def _pair(result: Evaluation, k: int, a, b, scale: int, method: str, scene_threshold: float) -> None:
    """The temporal measures of pair k = (k, k+1), for every output: a and b are the frames' state."""
    lr_a, outs_a, dep_a, ref_a = a
    lr_b, outs_b, dep_b, ref_b = b
    cut = scene_threshold > 0 and cut_score(lr_a, lr_b) > scene_threshold
    if cut:
        result.cuts.append(k)
        result.visible.append(0.0)
        for run in result.runs:
            run.warping_error.append(None)
            run.flicker.append(None)
            if ref_a is not None:
                run.tof.append(None)
        return
    pair = estimate_flow(np.stack([lr_a, lr_b]), method)
    f, visible = output_grid(pair.i_to_next, pair.occ_i, scale)  # (1, 2, H, W), (1, 1, H, W)
    result.visible.append(float(visible.mean()))
    ref_flow = _flow_on(ref_a, ref_b, method) if ref_a is not None else None  # (1, 2, H, W)
    for run, oa, ob, da, db in zip(result.runs, outs_a, outs_b, dep_a, dep_b):
        run.warping_error.append(warping_error(oa, ob, f, visible))
        run.flicker.append(flicker(da, db, f, visible))
        if ref_flow is not None:
            run.tof.append(flow_distance(_flow_on(oa, ob, method), ref_flow))


def _flow_on(a: torch.Tensor, b: torch.Tensor, method: str) -> torch.Tensor:
    """f_{a→b} of two (1, 3, H, W) frames on their own grid: (1, 2, H, W)."""
    frames = torch.cat((a, b)).permute(0, 2, 3, 1).numpy()  # (2, H, W, 3)
    return estimate_flow(frames, method).i_to_next
