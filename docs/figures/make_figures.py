"""Make the pictures of docs/eval.md from public media (../shared/media) and vsrup's own code.

    python docs/figures/make_figures.py [--media DIR] [--out DIR] [--only NAME ...]

Figures (NAME.png in --out, default docs/figures):
  tiles      the tile plan (sampling/tiles.plan) over a real frame, and one tile's blend weight
  crossfade  the cross-fade weights of every clip (clips.plan + clips.CrossFade, run on one-hot frames)
  flow       flow and occlusion (flow.estimate_flow) of a real pair of frames (countdown 15, 16)
  eval       `vsrup eval` of a lanczos and a bicubic x4 run against the ground truth:
             eval_profiles.png (--plot) and eval_slice.png (--slice); the commands are printed

The input of `eval` is the film countdown (ffmpegpython_in1.mp4, frames 0-95) area-downscaled x4;
its original frames are the reference. Neither run is a diffusion model: no picture here says
anything about the quality of vsrup's diffusion models. A figure whose media file is missing is
skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vsrup.clips import CrossFade, plan  # noqa: E402
from vsrup.color import bicubic_upscale  # noqa: E402
from vsrup.config import EncodeConfig, SampleConfig  # noqa: E402
from vsrup.flow import estimate_flow, warp  # noqa: E402
from vsrup.media.decode import decode_frames  # noqa: E402
from vsrup.media.encode import VideoWriter  # noqa: E402
from vsrup.media.probe import probe  # noqa: E402
from vsrup.sampling import tiles  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MEDIA = REPO.parent / "shared" / "media"
COUNTDOWN = "ffmpegpython_in1.mp4"  # 320x240, 29.97 fps, film countdown with grain (Apache-2.0, ffmpeg-python)
EVAL_FRAMES = 96
EVAL_CUTS = 0.2  # the digit changes (pairs 24, 49, 74) score 0.27-0.30 on the input, under the default 0.3: they are cuts
FLOW_PAIR = 15  # the sweep turns between these frames, the digit stays (cut score 0.04)
SLICE_X = 160  # output column through the countdown's centre
DPI = 100


def frames_of(path: Path, indices: range) -> list:
    """The decoded frames (media.decode.Frame) of ``path`` with these indices, as vsrup reads them."""
    wanted, out = set(indices), []
    for frame in decode_frames(probe(path)):
        if frame.index in wanted:
            out.append(frame)
        if frame.index >= max(indices):
            break
    return out


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def figure_tiles(media: Path, out: Path) -> None:
    """A 240x320 latent (the countdown frame at input size) tiled 128 with overlap 32: 3 x 3 tiles."""
    frame = frames_of(media / COUNTDOWN, range(30, 31))[0].image  # (240, 320, 3)
    h, w = frame.shape[:2]
    size, overlap = 128, 32  # the default tile and overlap (docs/tiling.md)
    plan_ = tiles.plan(1, h, w, size, overlap)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.imshow(frame)
    colours = plt.cm.tab10(np.arange(len(plan_)) % 10)
    for k, (t, c) in enumerate(zip(plan_, colours)):
        inset = 1.5 * (k % 3)  # tiles share edges; a small inset keeps every outline visible
        left.add_patch(plt.Rectangle((t.x.start - 0.5 + inset, t.y.start - 0.5 + inset), t.x.size - 2 * inset, t.y.size - 2 * inset,
                                     fill=False, edgecolor=c, linewidth=1.6))
    left.set_title(f"tiles.plan(1, {h}, {w}, tile={size}, overlap={overlap}): {len(plan_)} tiles", fontsize=8)
    centre = plan_[len(plan_) // 2]
    weight = np.zeros((h, w))
    weight[centre.y.start : centre.y.end, centre.x.start : centre.x.end] = np.outer(tiles.profile(centre.y).numpy(), tiles.profile(centre.x).numpy())
    shown = right.imshow(weight, cmap="magma", vmin=0, vmax=1)
    right.set_title("blend weight of the centre tile (cosine ramps in its overlaps)", fontsize=8)
    fig.colorbar(shown, ax=right, fraction=0.035)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    save(fig, out / "tiles.png")


def figure_crossfade(out: Path) -> None:
    """Clips of the defaults (8 frames, overlap 2) over 30 frames, with a scene cut before frame 19."""
    s = SampleConfig()
    n, cut = 30, 19

    class Item:
        def __init__(self, index):
            self.index = index
            self.image = np.full((4, 4, 3), 0.2 if index < cut else 0.9, np.float32)  # a cut the plan sees

    clips = list(plan([Item(i) for i in range(n)], s.clip_len, s.clip_overlap, s.scene_threshold))
    fade = CrossFade(s.clip_overlap)
    weights = np.zeros((n, len(clips)))
    for c, clip in enumerate(clips):
        onehot = np.zeros((len(clip.frames), 1, 1, len(clips)), np.float32)  # (T, 1, 1, clips): clip c's "output"
        onehot[..., c] = 1.0
        for index, blended in fade.push(clip, onehot):
            weights[index] = blended[0, 0]
    for index, blended in fade.flush():
        weights[index] = blended[0, 0]
    if not np.allclose(weights.sum(axis=1), 1.0):  # what the title says, checked on the numbers drawn
        raise SystemExit(f"cross-fade weights do not sum to 1: {weights.sum(axis=1)}")
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for c, clip in enumerate(clips):
        ax.plot(range(n), np.where(weights[:, c] > 0, weights[:, c], np.nan), marker="o", markersize=3,
                label=f"clip {clip.start}-{clip.stop - 1}")
    ax.axvline(cut - 0.5, color="grey", linestyle=":")
    ax.text(cut - 0.4, 0.5, "scene cut", fontsize=7, color="grey")
    ax.set_xlabel("output frame", fontsize=8)
    ax.set_ylabel("weight", fontsize=8)
    ax.set_title(f"clips.plan + CrossFade: --clip-len {s.clip_len}, --clip-overlap {s.clip_overlap}; the weights of every frame sum to 1", fontsize=8)
    ax.legend(fontsize=6, ncol=3, loc="lower left")
    ax.tick_params(labelsize=7)
    ax.set_ylim(-0.05, 1.05)
    fig.tight_layout()
    save(fig, out / "crossfade.png")


def flow_colours(flow: np.ndarray, top: float) -> np.ndarray:
    """(h, w, 2) flow -> (h, w, 3) RGB: hue = direction, saturation = length / top (the usual colour wheel)."""
    import cv2

    length = np.hypot(flow[..., 0], flow[..., 1])
    hsv = np.zeros(flow.shape[:2] + (3,), np.float32)
    hsv[..., 0] = (np.degrees(np.arctan2(flow[..., 1], flow[..., 0])) + 360) % 360  # OpenCV float hue: 0..360
    hsv[..., 1] = np.clip(length / top, 0, 1)
    hsv[..., 2] = 1.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def figure_flow(media: Path, out: Path) -> None:
    """Countdown frames 15 and 16: the sweep turns, the film weaves, the grain changes."""
    a, b = (f.image for f in frames_of(media / COUNTDOWN, range(FLOW_PAIR, FLOW_PAIR + 2)))  # (240, 320, 3) each
    flow = estimate_flow(np.stack([a, b]))
    f = flow.i_to_next[0].permute(1, 2, 0).numpy()  # (240, 320, 2) f_{k→k+1}
    occ = flow.occ_i[0, 0].numpy()  # (240, 320)
    back = warp(torch.from_numpy(b).permute(2, 0, 1)[None], flow.i_to_next)[0].permute(1, 2, 0).numpy()  # (240, 320, 3) frame k+1 on k
    top = max(float(np.percentile(np.hypot(f[..., 0], f[..., 1]), 99.5)), 1.0)
    panels = [
        (a, f"frame {FLOW_PAIR}"),
        (flow_colours(f, top), f"flow f {FLOW_PAIR}→{FLOW_PAIR + 1} (hue: direction, saturation: length, full at {top:.1f} px)"),
        (occ, f"occlusion of frame {FLOW_PAIR} (white: {occ.mean():.1%} of pixels)"),
        (np.abs(a - back).mean(axis=2), f"|frame {FLOW_PAIR} - warp(frame {FLOW_PAIR + 1}, f)| (black: matched)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(8, 6.2))
    for ax, (image, title) in zip(axes.flat, panels):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    save(fig, out / "flow.png")


def write_lossless(path: Path, frames: list[np.ndarray], rate: Fraction) -> None:
    """RGB H.264 at qp 0, frame i at pts i: nothing lost between the script and vsrup's decoder."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=rate, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "rgb24"
        stream.codec_context.time_base = 1 / rate
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def vsrup(*args) -> None:
    command = [sys.executable, "-m", "vsrup", *map(str, args)]
    print("$ vsrup " + " ".join(map(str, args)))
    subprocess.run(command, check=True)


def figure_eval(media: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rate = probe(media / COUNTDOWN).video.rate
        truth = [f.image for f in frames_of(media / COUNTDOWN, range(EVAL_FRAMES))]  # (240, 320, 3) each
        small = [im.reshape(60, 4, 80, 4, 3).mean(axis=(1, 3)) for im in truth]  # (60, 80, 3): x4 area-downscale
        write_lossless(work / "gt.mkv", truth, rate)
        write_lossless(work / "in.mkv", small, rate)
        vsrup("upscale", work / "in.mkv", work / "lanczos.mkv", "--model", "lanczos", "--scale", "4", "--quiet")
        info = probe(work / "in.mkv")  # the bicubic run, encoded as vsrup encodes the lanczos one
        with VideoWriter(work / "bicubic.mkv", info, EncodeConfig(), (320, 240)) as writer:
            for frame in decode_frames(info):
                writer.write(np.clip(bicubic_upscale(frame.image[None], 240, 320)[0], 0, 1), frame.pts)
        print("(bicubic.mkv: color.bicubic_upscale of every input frame, written by media.encode.VideoWriter)")
        vsrup("eval", work / "lanczos.mkv", work / "bicubic.mkv", "--input", work / "in.mkv", "--reference", work / "gt.mkv",
              "--scene-threshold", EVAL_CUTS, "--plot", out / "eval_profiles.png", "--slice", f"x={SLICE_X}", "--slice-out", out / "eval_slice.png", "--overwrite")
    for name in ("eval_profiles.png", "eval_slice.png"):
        print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", type=Path, default=MEDIA, help="folder holding the public media files (default ../shared/media)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--only", nargs="*", choices=("tiles", "crossfade", "flow", "eval"), default=None)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    needs = {"tiles": COUNTDOWN, "crossfade": None, "flow": COUNTDOWN, "eval": COUNTDOWN}
    makers = {"tiles": figure_tiles, "crossfade": lambda media, out: figure_crossfade(out), "flow": figure_flow, "eval": figure_eval}
    for name in args.only or needs:
        if needs[name] is not None and not (args.media / needs[name]).is_file():
            print(f"skip {name}: {args.media / needs[name]} is not there")
            continue
        makers[name](args.media, args.out)


if __name__ == "__main__":
    main()
