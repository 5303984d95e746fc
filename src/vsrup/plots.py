"""Pictures of `vsrup eval`: the per-frame profiles (matplotlib, the optional extra `vsrup[plot]`,
imported only here and only when a plot is asked for) and temporal slices (Pillow, always there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vsrup.errors import UsageError

GAP = 4  # white pixels between the slices of several videos


def require_matplotlib() -> None:
    """UsageError now, before the long work, when --plot cannot be drawn here."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'vsrup[plot]' (or pip install matplotlib)")


def profiles(document: dict, path: Path) -> None:
    """Plot the per-pair and per-frame values of an eval --json ``document`` into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none is touched
    import matplotlib.pyplot as plt

    outputs = document["outputs"]
    panels = [("warping_error", "pairs", "warping error E_warp"), ("flicker", "pairs", "low-frequency flicker F")]
    if document["reference"] is not None:
        panels += [("psnr", "frames", "PSNR (dB)"), ("ssim", "frames", "SSIM"), ("tof", "pairs", "tOF (px)")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 1.9 * len(panels) + 0.4), sharex=True, squeeze=False)
    for ax, (name, where, title) in zip(axes[:, 0], panels):
        for out in outputs:
            values = [np.nan if v is None else v for v in out[where][name]]
            xs = np.arange(len(values)) + (0.5 if where == "pairs" else 0.0)  # pair k sits between frames k and k+1
            ax.plot(xs, values, marker=".", linewidth=1.2, label=Path(out["path"]).name)
        for k in document["cuts"]:
            ax.axvline(k + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_ylabel(title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("frame (a pair's value sits between its two frames; dotted: scene cut)", fontsize=8)
    fig.suptitle(f"vsrup eval: {Path(document['input']).name}, {document['frames']} frames, x{document['scale']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def slice_image(lines: list[list[np.ndarray]], axis: str) -> np.ndarray:
    """Temporal profiles side by side: for each video its line of every frame, (H, 3) or (W, 3) each.

    ``x``: frame t is column t of an (H, T) picture, videos left to right; ``y``: frame t is row t of
    a (T, W) picture, videos top to bottom. White gaps of GAP px between videos. -> (rows, cols, 3) uint8.
    """
    pictures = [np.stack(frames, axis=1 if axis == "x" else 0) for frames in lines]  # each (H, T, 3) or (T, W, 3)
    along = 1 if axis == "x" else 0
    gap_shape = list(pictures[0].shape)
    gap_shape[along] = GAP
    gap = np.ones(gap_shape, np.float32)  # white
    parts = [p for picture in pictures for p in (picture, gap)][:-1]
    joined = np.concatenate(parts, axis=along)  # (rows, cols, 3) float in [0, 1]
    return (np.clip(joined, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(image: np.ndarray, path: Path) -> None:
    """(rows, cols, 3) uint8 -> a PNG file at ``path`` (Pillow)."""
    from PIL import Image

    Image.fromarray(image, "RGB").save(path, format="PNG")
