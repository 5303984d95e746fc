"""Peak memory of MGLD-VSR's device calls at full size, random weights, fp32, CPU (not a test): memory.Cost's inputs.

    for n in 32 48 64; do PYTHONPATH=src python benchmarks/bench_mgld_memory.py unet $n; done
    for n in 16 24 32; do PYTHONPATH=src python benchmarks/bench_mgld_memory.py decode $n; done
    PYTHONPATH=src python benchmarks/bench_mgld_memory.py states 32   # the exact tiled decode's clip states
    for w in encode features encode-tiled features-tiled encode-blended; do PYTHONPATH=src python benchmarks/bench_mgld_memory.py $w 64; done

unet    the struct encoder and the UNet on one tile of n x n latent px of a 5-frame clip (one TiledEps call's work)
decode  the CFW features and CFWAutoencoder.decode_clip of a 5-frame clip of n x n latent px (one blended decode tile)
states  the pass-by-pass decode (sampling/mgld_decode.decode_exact) of a 5-frame n x (2n) latent at tile n / 2:
        its peak above the untiled-by-tile activations is the clip's states, reported per latent px of the clip
encode, features, encode-tiled, features-tiled, encode-blended
        one upsampled frame of 8n x 8n px through the SD VAE's encoder (its posterior) or the video VAE's features,
        whole or pass by pass at tile n / 4 (mgld_decode.encode_frame, frame_features), or the encode in blended
        tiles of n / 4 overlapping by n / 16, each cut with its 16-px halo (mgld_decode.encode_blended; run it with
        MALLOC_MMAP_THRESHOLD_=65536, else glibc's heap keeps the freed pages of its 25 cuts: docs/benchmarks.md)

Each size runs in a fresh process (bench_tiles.py --calibrate's method): an 8 x 8 warm-up takes the one-time
allocations, the peak is reset (echo 5 > /proc/self/clear_refs), and the peak resident set (VmHWM) above the
resident set at that point is the call's. The inputs are built before the reset.
"""

from __future__ import annotations

import argparse
import json

import torch

FRAMES = 5


def rss(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_mib(call, inputs) -> float:
    """Peak MiB of call(*inputs) above the resident set once the inputs exist."""
    reset_peak()
    base = rss("VmRSS")
    with torch.no_grad():
        call(*inputs)
    return round((rss("VmHWM") - base) / 2**20, 1)


def unet_call(n: int) -> float:
    from vsrup.models.mgld_vsr import STRUCT_CONFIG, TEXT_CONFIG, UNET_CONFIG
    from vsrup.models.mgld_unet import MGLDUNet, StructEncoder

    unet, struct = MGLDUNet(**UNET_CONFIG).eval(), StructEncoder(**STRUCT_CONFIG).eval()
    text = torch.randn(1, 77, TEXT_CONFIG["hidden_size"])  # (1, 77, 1024)
    t = torch.tensor([500])

    def call(z, lr):  # (T, 4, n, n) twice
        return unet(z, t, text, struct(lr, t), FRAMES)

    with torch.no_grad():
        call(torch.randn(FRAMES, 4, 8, 8), torch.randn(FRAMES, 4, 8, 8))
    return peak_mib(call, (torch.randn(FRAMES, 4, n, n), torch.randn(FRAMES, 4, n, n)))


def clip_inputs(video, h: int, w: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    z = torch.randn(FRAMES, 4, h, w)  # (T, 4, h, w)
    with torch.no_grad():
        features = video.features(torch.randn(FRAMES, 3, 8 * h, 8 * w))  # (T, 256, 4h, 4w), (T, 512, 2h, 2w)
    return z, features


def decode_call(n: int) -> float:
    from vsrup.models.mgld_vae import CFWAutoencoder
    from vsrup.models.mgld_vsr import VAE_CONFIG

    video = CFWAutoencoder(**VAE_CONFIG).eval()
    decode = lambda z, up: video.decode_clip(z, video.features(up), 1.0, FRAMES)  # noqa: E731  a blended tile's work
    inputs = lambda k: (torch.randn(FRAMES, 4, k, k), torch.randn(FRAMES, 3, 8 * k, 8 * k))  # noqa: E731
    with torch.no_grad():
        decode(*inputs(8))
    return peak_mib(decode, inputs(n))


def states(n: int) -> dict:
    from vsrup.models.mgld_vae import CFWAutoencoder
    from vsrup.models.mgld_vsr import VAE_CONFIG
    from vsrup.sampling.mgld_decode import decode_exact

    video = CFWAutoencoder(**VAE_CONFIG).eval()
    tile = n // 2
    decode = torch.no_grad()(lambda z, features: decode_exact(video, z, features, 1.0, tile))
    decode(*clip_inputs(video, 8, 16))
    z, features = clip_inputs(video, n, 2 * n)
    peak = peak_mib(decode, (z, features))
    return {"tiled_peak_mib": peak, "latent_px": 2 * n * n, "tile": tile}


def encoder_call(what: str, n: int) -> float:
    """One of the five encoder calls on one upsampled frame of 8n x 8n px (tiled: pass by pass at tile n / 4)."""
    from diffusers import AutoencoderKL

    from vsrup.models.mgld_vae import CFWAutoencoder
    from vsrup.models.mgld_vsr import VAE_CONFIG
    from vsrup.sampling.mgld_decode import encode_blended, encode_frame, frame_features

    encoder, video = AutoencoderKL(**VAE_CONFIG).eval(), CFWAutoencoder(**VAE_CONFIG).eval()
    tile = n // 4
    call = {
        "encode": lambda x: encoder.encode(x).latent_dist.mean, "features": video.features,
        "encode-tiled": lambda x: encode_frame(encoder, x, tile), "features-tiled": lambda x: frame_features(video, x, tile),
        "encode-blended": lambda x: encode_blended(encoder, x, tile, max(1, n // 16)),
    }[what]
    with torch.no_grad():
        call(torch.randn(1, 3, 64, 64))
    return peak_mib(call, (torch.randn(1, 3, 8 * n, 8 * n),))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("unet", "decode", "states", "encode", "features", "encode-tiled", "features-tiled", "encode-blended"))
    parser.add_argument("size", type=int, help="latent px (the tile's side)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result: dict = {"what": args.what, "size": args.size}
    if args.what == "unet":
        result["peak_mib"] = unet_call(args.size)
    elif args.what == "decode":
        result["peak_mib"] = decode_call(args.size)
    elif args.what == "states":
        result.update(states(args.size))
    else:
        result["peak_mib"] = encoder_call(args.what, args.size)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
