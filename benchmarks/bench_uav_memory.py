"""Peak memory of Upscale-A-Video's VAE decode at full size, random weights, fp32, CPU (not a test): memory.Cost's VAE inputs.

    for n in 32 48 64; do MALLOC_MMAP_THRESHOLD_=65536 PYTHONPATH=src python benchmarks/bench_uav_memory.py decode $n; done
    for n in 16 32; do MALLOC_MMAP_THRESHOLD_=65536 PYTHONPATH=src python benchmarks/bench_uav_memory.py states $n; done

decode  the video VAE (configs.UAV_VAE_VIDEO_CONFIG) decoding one chunk of 3 frames of n x n latent px with the LR
        condition, as the tiled decode calls it on a tile (VideoAutoencoderKL.decode_frames, frames=3)
states  the pass-by-pass decode of a chunk (sampling/upscale_a_video.decode_chunk) of 3 frames of n x (2n) latent px
        at tile n / 2: its peak, above one tile's call, is the chunk's frame-sized states (strips and statistics),
        reported per latent px of the frame (the plan's vae_state_bytes(h * w) for a chunk)

bench_mgld_memory.py's method: each size in a fresh process, an 8 x 8 warm-up takes the one-time allocations, the
peak is reset (echo 5 > /proc/self/clear_refs), and the peak resident set (VmHWM) above the resident set at that
point is the call's; the inputs are built before the reset. Run with MALLOC_MMAP_THRESHOLD_=65536 so that glibc
returns the freed pages of earlier passes (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench_mgld_memory import peak_mib  # the same measurement (this folder is on sys.path when run as a script)

FRAMES = 3  # sampling/upscale_a_video.DECODE_FRAMES


def video_vae():
    from vsrup.models.configs import UAV_VAE_VIDEO_CONFIG
    from vsrup.models.upscale_a_video import vae_from_config

    return vae_from_config(UAV_VAE_VIDEO_CONFIG, video=True).eval()


def chunk(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(FRAMES, 4, h, w), torch.rand(FRAMES, 3, h, w) * 2 - 1  # unscaled latents, LR in [-1, 1]


def decode_call(n: int) -> float:
    vae = video_vae()
    decode = lambda z, lr: vae.decode_frames(z, lr, frames=FRAMES)  # noqa: E731  one tile's call in decode_window
    with torch.no_grad():
        decode(*chunk(8, 8))
    return peak_mib(decode, chunk(n, n))


def states(n: int) -> dict:
    from vsrup.sampling.upscale_a_video import decode_chunk

    vae = video_vae()
    tile = n // 2
    decode = lambda z, lr: decode_chunk(vae, z, lr, tile, tile // 4)  # noqa: E731
    with torch.no_grad():
        decode(*chunk(8, 16))
    return {"tiled_peak_mib": peak_mib(decode, chunk(n, 2 * n)), "latent_px": 2 * n * n, "tile": tile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("decode", "states"))
    parser.add_argument("size", type=int, help="latent px (the tile's side, or the chunk's height)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    result: dict = {"what": args.what, "size": args.size}
    if args.what == "decode":
        result["peak_mib"] = decode_call(args.size)
    else:
        result.update(states(args.size))
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
