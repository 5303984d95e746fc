"""Temporal consistency of the output on a pan, with a tiny random x4 model (CPU, seconds).

    python benchmarks/bench_temporal.py [--json]
    python benchmarks/bench_temporal.py --schedulers [--steps 10] [--strength 0.5] [--json]

A textured picture moves one low-resolution pixel per frame (so four output pixels); the warping
error is the mean absolute difference between each output frame and its neighbour shifted by that
known motion (interior pixels), detail the mean absolute Laplacian of the output. Rows:

- off: --motion-guidance 0
- guidance on x0 (the default placement) and on x_t (the alternative argued against in
  sampling/guidance.py), at the default strength and window (30 steps, the default)
- propagation added at every third step
- clips of 6 with overlap 2: consecutive-frame difference (motion compensated) across clip
  boundaries over the mean inside clips

``--schedulers``: on a real panned sequence instead (a film-countdown frame with its grain,
/work/shared/media/ffmpegpython_in1.mp4, halved to 120x160 and panned under a 32x48 window, one
pixel per frame), every offered scheduler, --motion-guidance 0 against ``--strength``: the warping
error and detail of the guided run over the unguided run's.

Random weights say nothing about image quality; they do show what the mechanisms do to the frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_sd import build_tiny_components  # noqa: E402

from vsrup.clips import plan  # noqa: E402
from vsrup.config import SampleConfig, UpscaleConfig  # noqa: E402
from vsrup.flow import estimate_flow  # noqa: E402
from vsrup.models import sd_x4  # noqa: E402
from vsrup.pipeline import in_span, upscale_frames  # noqa: E402
from vsrup.sampling.temporal import temporal_hook  # noqa: E402

REAL_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "media" / "ffmpegpython_in1.mp4"  # film countdown with grain (docs/temporal.md)
SHIFT = 4  # output pixels per frame (one low-resolution pixel, x4)
MARGIN = 8  # output pixels left out at every border


@dataclass(frozen=True)
class Frame:
    index: int
    image: np.ndarray


def pan(n: int = 12, h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3): a 2x2-blocky random texture moving right by one pixel per frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((h // 2 + 2, (w + n) // 2 + 2, 3), dtype=np.float32)
    texture = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:h, : w + n]
    return np.stack([texture[:, n - i : n - i + w] for i in range(n)])


def real_pan(n: int = 12, h: int = 32, w: int = 48, video: Path = REAL_VIDEO) -> np.ndarray:
    """(n, h, w, 3): a real frame (frame 30, area-halved) moving right by one pixel per frame under a window."""
    import av
    import cv2

    with av.open(str(video)) as container:
        frame = next(f for i, f in enumerate(container.decode(video=0)) if i == 30).to_ndarray(format="rgb24")
    half = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    y, x = (half.shape[0] - h) // 2, (half.shape[1] - w - n) // 2  # the centre: the digit, circles, grain
    texture = half[y : y + h, x : x + w + n].astype(np.float32) / 255  # (h, w + n, 3)
    return np.stack([texture[:, n - i : n - i + w] for i in range(n)])


def differences(out: np.ndarray) -> np.ndarray:
    """Per consecutive pair, mean |out[i+1](x) - out[i](x - SHIFT)| over interior pixels: (n-1,)."""
    a = out[1:, MARGIN:-MARGIN, MARGIN + SHIFT : -MARGIN]
    b = out[:-1, MARGIN:-MARGIN, MARGIN : -MARGIN - SHIFT]
    return np.abs(a - b).mean(axis=(1, 2, 3))


def detail(out: np.ndarray) -> float:
    lap = 4 * out[:, 1:-1, 1:-1] - out[:, :-2, 1:-1] - out[:, 2:, 1:-1] - out[:, 1:-1, :-2] - out[:, 1:-1, 2:]
    return float(np.abs(lap).mean())


class GuideLatents(sd_x4.Model):
    """The alternative placement: motion guidance on x_t rather than on the predicted x0."""

    def sample(self, window, plan, progress, hook=None):
        hook = temporal_hook(estimate_flow(window.frames), self.settings, target="latents")
        return super().sample(window, plan, progress, hook=hook)


def render(folder: Path, frames: np.ndarray, model=sd_x4.Model, **sample) -> np.ndarray:
    config = UpscaleConfig(model=str(folder), device="cpu", sample=SampleConfig(**sample))
    upscaler = model(str(folder), config)
    pairs = upscale_frames([Frame(i, f) for i, f in enumerate(frames)], upscaler, config, in_span(0, None))
    return np.stack([image for _, image in pairs])  # (n, 4h, 4w, 3)


def measure(folder: Path) -> dict:
    frames = pan()
    rows = {}
    cases = {
        "off": dict(motion_guidance=0.0),
        "guidance on x0 (default)": {},
        "guidance on x_t": dict(model=GuideLatents),
        "guidance on x0 + propagation every 3rd step": dict(propagation_steps=tuple(range(0, sd_x4.DEFAULTS["steps"], 3))),
    }
    for name, options in cases.items():
        started = time.perf_counter()
        out = render(folder, frames, **options)
        rows[name] = {"warping_error": float(differences(out).mean()), "detail": detail(out), "seconds": round(time.perf_counter() - started, 2)}
    clip_len, overlap = 6, 2
    out = render(folder, frames, clip_len=clip_len, clip_overlap=overlap)
    diffs = differences(out)  # pair k = frames k, k+1
    starts = [c.start for c in plan([Frame(i, f) for i, f in enumerate(frames)], clip_len, overlap, 0.0)][1:]
    # boundary pairs: every pair that touches a cross-fade, from the last frame before it to the first after it
    boundary = sorted({k for c in starts for k in range(c - 1, c + overlap)})
    inside = [k for k in range(len(diffs)) if k not in boundary]
    one_clip = differences(render(folder, frames, clip_len=len(frames)))  # the same pairs, no clip boundary at all
    return {"rows": rows, "clip_boundary": {
        "clip_len": clip_len, "overlap": overlap, "boundary_pairs": boundary,
        "ratio": float(diffs[boundary].mean() / diffs[inside].mean()),  # the issue's measure
        "ratio_without_clips": float(one_clip[boundary].mean() / one_clip[inside].mean()),  # what the sequence ends alone give
        "ratio_to_one_clip": float(diffs[boundary].mean() / one_clip[boundary].mean()),  # like for like
    }}


def schedulers(folder: Path, steps: int, strength: float) -> dict:
    """Per offered scheduler, on the real pan: the guided run's warping error and detail over the unguided run's."""
    from vsrup.sampling.schedulers import SCHEDULERS

    frames = real_pan()
    rows = {}
    for name in SCHEDULERS:
        off = render(folder, frames, scheduler=name, steps=steps, motion_guidance=0.0)
        on = render(folder, frames, scheduler=name, steps=steps, motion_guidance=strength)
        rows[name] = {
            "warping_error_off": float(differences(off).mean()), "warping_error": float(differences(on).mean()),
            "detail_off": detail(off), "detail": detail(on),
        }
        rows[name]["ratio"] = rows[name]["warping_error"] / rows[name]["warping_error_off"]
        rows[name]["detail_ratio"] = rows[name]["detail"] / rows[name]["detail_off"]
    return {"steps": steps, "strength": strength, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--schedulers", action="store_true", help="the per-scheduler table on the real pan")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--strength", type=float, default=sd_x4.DEFAULTS["motion_guidance"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tiny"
        build_tiny_components(folder)
        result = schedulers(folder, args.steps, args.strength) if args.schedulers else measure(folder)
    if args.json:
        print(json.dumps(result))
        return
    if args.schedulers:
        print(f"real pan, {result['steps']} steps, --motion-guidance {result['strength']} against 0")
        for name, row in result["rows"].items():
            print(f"  {name:9s} warping error {row['warping_error']:.4f} / {row['warping_error_off']:.4f} = {row['ratio']:.2f}x"
                  f"  detail {row['detail_ratio']:.2f}x")
        return
    off = result["rows"]["off"]
    for name, row in result["rows"].items():
        print(f"{name:45s} warping error {row['warping_error']:.4f} ({row['warping_error'] / off['warping_error']:.2f}x off)"
              f"  detail {row['detail']:.4f} ({row['detail'] / off['detail']:.2f}x)  {row['seconds']:.1f} s")
    cb = result["clip_boundary"]
    print(f"clips of {cb['clip_len']}, overlap {cb['overlap']}: boundary / inside difference = {cb['ratio']:.3f} (pairs {cb['boundary_pairs']});"
          f" the same pairs in one clip: {cb['ratio_without_clips']:.3f}; boundary pairs vs one clip: {cb['ratio_to_one_clip']:.3f}")


if __name__ == "__main__":
    main()
