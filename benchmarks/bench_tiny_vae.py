"""Stream-DiffVSR's tiny temporal autoencoder: peak activation memory and time per call, whole frame and tiled.

    python benchmarks/bench_tiny_vae.py                       # full-size config, random weights, fp32, CPU
    python benchmarks/bench_tiny_vae.py --sizes 64 128 --tile 32 --json

For each latent side S (the frame is S x S latent px, 4S x 4S output px) it runs, once warm and once
measured: the encoder's pooled features of a random previous output (``previous_features``) and the
guided decode with them (``decode``, the TPMs running), whole frame (tile 0) and in ``--tile`` tiles.
Peak memory: on the CPU the process's VmHWM over the call, reset through /proc/self/clear_refs just
before it, minus the resident memory then (the inputs and outputs are allocated before the reset,
so what is left is the call's own activations); on CUDA ``max_memory_allocated`` minus the memory
allocated before the call. The slope per latent px over the sizes is what ``memory.Cost.vae_per_px``
of models/stream_diffvsr.py must bound (its ``TINY_VAE_PER_PX``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_of(fn, device) -> tuple[int, float]:
    """(peak bytes above the memory in use when ``fn`` starts, seconds) of one call."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        base = status_bytes("VmRSS")
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = status_bytes("VmHWM")
    return peak - base, time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 192], help="latent sides S (frames S x S latent px)")
    p.add_argument("--tile", type=int, default=32, help="the tiled runs' tile, latent px (a multiple of 4)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch

    from vsrup.models.configs import STREAM_VAE_CONFIG
    from vsrup.models.temporal_tiny import TemporalAutoencoderTiny
    from vsrup.sampling.tiny_decode import decode, previous_features

    device = torch.device(args.device)
    torch.manual_seed(0)
    tae = TemporalAutoencoderTiny(**STREAM_VAE_CONFIG).to(device).eval()
    rows = []
    with torch.no_grad():
        for side in args.sizes:
            z = torch.randn(1, 4, side, side, device=device)  # (1, 4, S, S)
            image = torch.rand(1, 3, 4 * side, 4 * side, device=device) * 2 - 1  # (1, 3, 4S, 4S)
            for tile in (0, args.tile):
                previous = previous_features(tae, image, tile)  # warm, and the decode's input
                decode(tae, z, previous, tile)
                features_bytes, features_s = peak_of(lambda: previous_features(tae, image, tile), device)
                decode_bytes, decode_s = peak_of(lambda: decode(tae, z, previous, tile), device)
                rows.append({"latent": side, "tile": tile, "features_peak_bytes": features_bytes, "features_s": round(features_s, 3),
                             "decode_peak_bytes": decode_bytes, "decode_s": round(decode_s, 3),
                             "decode_bytes_per_latent_px": round(decode_bytes / side**2), "features_bytes_per_latent_px": round(features_bytes / side**2)})
    whole = [r for r in rows if r["tile"] == 0]
    slope = None
    if len(whole) > 1:
        (a, b) = whole[0], whole[-1]
        slope = (max(b["decode_peak_bytes"], b["features_peak_bytes"]) - max(a["decode_peak_bytes"], a["features_peak_bytes"])) / (b["latent"] ** 2 - a["latent"] ** 2)
    result = {"device": str(device), "threads": torch.get_num_threads(), "rows": rows, "whole_frame_slope_bytes_per_latent_px": slope}
    if args.json:
        print(json.dumps(result))
    else:
        for r in rows:
            print(f"latent {r['latent']:>4}  tile {r['tile']:>3}  features {r['features_peak_bytes'] / 2**20:8.1f} MiB {r['features_s']:7.3f} s"
                  f"   decode {r['decode_peak_bytes'] / 2**20:8.1f} MiB {r['decode_s']:7.3f} s  ({r['decode_bytes_per_latent_px']} B per latent px)")
        if slope is not None:
            print(f"whole frame: {slope:.0f} bytes per latent px (slope over the sizes)")
    return result


if __name__ == "__main__":
    main()
