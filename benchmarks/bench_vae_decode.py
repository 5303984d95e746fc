"""Tiled VAE decode against the untiled one: error, time and memory, random weights (CPU, minutes).

    python benchmarks/bench_vae_decode.py [--model tiny|x4] [--size 90x160] [--tiles 128,32] [--json]
    python benchmarks/bench_vae_decode.py --model x4 --size 64x96 --tiles 32 --memory

Models: ``tiny`` is tests/tiny_sd.py's VAE (the pipeline tests' model: block_out (8, 16, 16), 8 groups,
factor 4); ``x4`` is the real x4 upscaler VAE config (vsrup.models.sd_x4.VAE_CONFIG) with random
weights. Input: standard-normal latents in the sampler's scaled space (seed 1), one frame. Rows:

- alone: every tile decoded by ``vae.decode`` on its own (its own GroupNorm statistics), blended
  with tiles.py's weights: what vae_decode.py did before the frame statistics
- shared: ``decode_tiled`` (frame GroupNorm statistics, attention in overlapping windows)

Error against one untiled ``vae.decode``: 8-bit levels of the [0, 1] image (x / 2 + 0.5, clamped,
rounded) and the raw absolute error. ``--memory`` runs each row in a fresh process and reports its
peak RSS above the model (VmHWM, reset before the decode). Tile overlap is tile / 4, as memory.py plans.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SCALING = 0.08333


def build_vae(model: str):
    if model == "x4":
        from diffusers import AutoencoderKL

        from vsrup.models.configs import VAE_CONFIG

        torch.manual_seed(0)
        return AutoencoderKL(**VAE_CONFIG).eval()
    from tiny_sd import build_tiny_components

    with tempfile.TemporaryDirectory() as tmp:
        return build_tiny_components(Path(tmp) / "tiny")["vae"].eval()


def decode(vae, latents: torch.Tensor, mode: str, tile: int) -> torch.Tensor:
    """(1, 4, h, w) scaled latents -> (1, 3, fh, fw) pixels by ``mode``: whole, alone or shared."""
    from vsrup.sampling.tiles import tiled
    from vsrup.sampling.vae_decode import decode_tiled

    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    with torch.no_grad():
        if mode == "whole":
            return vae.decode(latents / SCALING).sample
        if mode == "alone":
            return tiled(lambda t, rows: vae.decode(t).sample, latents / SCALING, tile=tile, overlap=tile // 4, batch=1, scale=factor)
        return decode_tiled(vae, latents, tile=tile, overlap=tile // 4)


def levels(x: torch.Tensor) -> torch.Tensor:
    return ((x / 2 + 0.5).clamp(0, 1) * 255).round()


def peak_rss(model: str, size: tuple[int, int], mode: str, tile: int) -> int:
    """Peak RSS in bytes of one decode above the process's state after building the model, in a fresh process."""
    code = (
        "import sys, torch; sys.path.insert(0, 'benchmarks'); import bench_vae_decode as b; from pathlib import Path;"
        f"torch.set_num_threads(1); vae = b.build_vae({model!r}); z = b.latents({size!r}); b.decode(vae, z[:, :, :8, :8], 'whole', 0);"
        "Path('/proc/self/clear_refs').write_text('5'); base = b.status('VmRSS');"
        f"b.decode(vae, z, {mode!r}, {tile}); print(b.status('VmHWM') - base)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return int(out.stdout.split()[-1])


def status(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024


def latents(size: tuple[int, int]) -> torch.Tensor:
    return torch.randn(1, 4, *size, generator=torch.Generator().manual_seed(1))  # (1, 4, h, w)


def measure(model: str, size: tuple[int, int], tiles: list[int], memory: bool) -> dict:
    vae = build_vae(model)
    z = latents(size)
    started = time.perf_counter()
    full = decode(vae, z, "whole", 0)  # (1, 3, fh, fw)
    rows = [{"mode": "whole", "tile": 0, "seconds": round(time.perf_counter() - started, 2)}]
    for tile in tiles:
        for mode in ("alone", "shared"):
            started = time.perf_counter()
            out = decode(vae, z, mode, tile)  # (1, 3, fh, fw)
            seconds = time.perf_counter() - started
            steps = (levels(out) - levels(full)).abs()
            err = (out - full).abs()
            rows.append({
                "mode": mode, "tile": tile, "seconds": round(seconds, 2),
                "levels_max": int(steps.max()), "levels_mean": float(steps.mean()),
                "abs_mean": float(err.mean()), "abs_max": float(err.max()),
            })
    if memory:
        for row in rows:
            row["peak_rss_mib"] = round(peak_rss(model, size, row["mode"], row["tile"]) / 2**20, 1)
    return {"model": model, "size": list(size), "output_range": [float(full.min()), float(full.max())], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "x4"), default="tiny")
    parser.add_argument("--size", default="90x160", help="latent HxW")
    parser.add_argument("--tiles", default="128,32")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.size.split("x"))
    result = measure(args.model, size, [int(t) for t in args.tiles.split(",")], args.memory)
    if args.json:
        print(json.dumps(result))
        return
    lo, hi = result["output_range"]
    print(f"{args.model} VAE, latent {size[0]}x{size[1]}, output range {lo:.2f}..{hi:.2f}")
    for r in result["rows"]:
        err = f"levels max {r['levels_max']:3d} mean {r['levels_mean']:.3f}  abs mean {r['abs_mean']:.2e} max {r['abs_max']:.2e}" if "abs_max" in r else " " * 62
        mem = f"  peak {r['peak_rss_mib']:7.1f} MiB" if "peak_rss_mib" in r else ""
        print(f"  {r['mode']:6s} tile {r['tile']:3d}  {err}  {r['seconds']:6.2f} s{mem}")


if __name__ == "__main__":
    main()
