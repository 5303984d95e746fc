"""Peak memory and time of a x4 run on one frame, tiled and untiled (not a test).

    PYTHONPATH=src python benchmarks/bench_tiles.py [--steps 3] [--json out.json]
    for n in 32 48 64; do PYTHONPATH=src python benchmarks/bench_tiles.py --calibrate $n; done  # memory.py

Every configuration runs in a fresh subprocess. A tiny UNet2DConditionModel (7 input channels,
noise-level class embeddings, cross-attention) runs ``--steps`` evaluations through ``tiled`` (or
whole), then a tiny AutoencoderKL (factor 4, mid-block attention) decodes through
``decode_tiled`` (or whole). Random weights: this measures memory and time, not quality.

Peak memory: on CUDA torch.cuda.max_memory_allocated; on CPU the process's VmHWM (peak resident
set, /proc/self/status) after the models and inputs are built, with the peak reset there
(echo 5 > /proc/self/clear_refs) so only the run counts. "net" subtracts the frame-sized buffers
every method allocates during the run (UNet input, prediction and pixel accumulators, the image);
latents and the low-res input exist before the peak is reset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SIZES = (64, 128, 256)  # input (= latent) side in pixels
UNET_TILE, UNET_OVERLAP, UNET_BATCH = 64, 16, 1  # batch 1: memory then depends on the tile alone
VAE_TILE, VAE_OVERLAP = 32, 8
WHOLE_VAE_MAX = 128  # whole-frame decode above this is not run: math attention would need 8 * (256^2)^2 B = 32 GiB


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def tiny_models(device):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=7,  # 4 latent + 3 low-res RGB
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),  # attention at 1/4 res only
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        attention_head_dim=32,
        cross_attention_dim=32,
        num_class_embeds=1000,  # noise level as class label
        norm_num_groups=32,
    ).to(device).eval()
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        scaling_factor=0.08333,
    ).to(device).eval()
    return unet, vae


def run_one(size: int, tiling: bool, steps: int, device: str) -> dict:
    import torch

    from vsrup.sampling.tiles import plan, tiled
    from vsrup.sampling.vae_decode import decode_tiled

    torch.set_num_threads(1)  # one thread: steadier timings on a shared machine (no OpenMP spin under load)
    unet, vae = tiny_models(device)
    torch.manual_seed(1)
    latents = torch.randn(1, 4, size, size, device=device)  # (1, 4, h, w)
    low_res = torch.rand(1, 3, size, size, device=device) * 2 - 1  # (1, 3, h, w)
    prompt = torch.randn(1, 77, 32, device=device)  # (1, 77, D) per-sample text embeddings
    noise_level = torch.tensor([20], device=device)  # (1,)

    def predict(tiles, rows):  # (N, 7, th, tw) -> (N, 4, th, tw)
        return unet(tiles, 500, encoder_hidden_states=prompt[rows], class_labels=noise_level[rows]).sample

    # Frame-sized fp32 buffers allocated during the run: x (7), prediction + weight sum (4 + 1), new
    # latents (4); pixel accumulator + weight sum + image (3 + 1 + 3) at 16 px per latent px.
    with torch.no_grad():  # warm-up at the shape timed: oneDNN builds its kernels on the first call per shape
        side = min(size, UNET_TILE) if tiling else size
        predict(torch.zeros(1, 7, side, side, device=device), torch.zeros(1, dtype=torch.long, device=device))
    frame_bytes = 4 * size * size * (7 + 4 + 1 + 4 + 16 * (3 + 1 + 3))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak()
        base = _rss_bytes("VmRSS")
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for _ in range(steps):
            x = torch.cat([latents, low_res], dim=1)  # (1, 7, h, w)
            if tiling:
                v = tiled(predict, x, tile=UNET_TILE, overlap=UNET_OVERLAP, batch=UNET_BATCH)  # (1, 4, h, w)
            else:
                v = predict(x, torch.zeros(1, dtype=torch.long, device=device))  # (1, 4, h, w)
            latents = latents - 0.05 * v  # (1, 4, h, w); a stand-in for the scheduler step
        unet_s, unet_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
        decoded = tiling or size <= WHOLE_VAE_MAX
        if decoded:
            tile = VAE_TILE if tiling else 0
            decode_tiled(vae, latents * 0.01, tile=tile, overlap=VAE_OVERLAP)  # (1, 3, 4h, 4w), timed
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss_bytes("VmHWM") - base
    tiles = len(plan(1, size, size, UNET_TILE, UNET_OVERLAP)) if tiling else 1
    covered = tiles * min(size, UNET_TILE) ** 2 if tiling else size * size
    return {
        "size": size,
        "tiled": tiling,
        "unet_tiles": tiles,
        "covered_px": covered,
        "unet_s": round(unet_s, 3),
        "unet_cpu_s": round(unet_cpu_s, 3),  # CPU seconds of this process: steadier than wall time on a shared machine
        "total_s": round(time.perf_counter() - start, 3),
        "peak_mib": round(peak / 2**20, 1),
        "net_mib": round((peak - frame_bytes) / 2**20, 1),
        "vae": "tiled" if tiling else ("whole" if decoded else "not run"),
    }


def calibrate(size: int) -> dict:
    """Peak bytes per latent pixel of the real-config x4 UNet and VAE decoder at one size, fp32, CPU.

    Run once per size in a fresh process: an 8x8 warm-up first takes the one-time allocations,
    then the peak is reset, so glibc's reuse of freed pages does not hide a later peak.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.set_num_threads(2)
    unet = UNet2DConditionModel(  # stabilityai/stable-diffusion-x4-upscaler unet/config.json (perf.md section 3)
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(256, 512, 512, 1024),
        layers_per_block=2,
        attention_head_dim=8,
        cross_attention_dim=1024,
        num_class_embeds=1000,
        only_cross_attention=(True, True, True, False),
        use_linear_projection=True,
    ).eval()
    vae = AutoencoderKL(  # the x4 VAE: block_out (128, 256, 512), 4 latent channels
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(128, 256, 512),
        layers_per_block=2,
        latent_channels=4,
        scaling_factor=0.08333,
    ).eval()
    emb = torch.randn(1, 77, 1024)  # (1, 77, 1024)
    label = torch.tensor([20])  # (1,)
    result = {"size": size}
    with torch.no_grad():
        for name, call in (
            ("unet", lambda n: unet(torch.randn(1, 7, n, n), 500, encoder_hidden_states=emb, class_labels=label)),
            ("vae", lambda n: vae.decode(torch.randn(1, 4, n, n))),
        ):
            call(8)
            _reset_peak()
            base = _rss_bytes("VmRSS")
            call(size)
            result[f"{name}_peak_mib"] = round((_rss_bytes("VmHWM") - base) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", help="write the table as JSON here")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--calibrate", type=int, metavar="SIZE", help="peak MiB of the real-config UNet and VAE")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "TILED"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.calibrate:
        print(json.dumps(calibrate(args.calibrate)))
        return
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), args.one[1] == "1", args.steps, args.device)))
        return
    rows = []
    for size in SIZES:
        for tiling in (False, True):
            cmd = [sys.executable, __file__, "--one", str(size), str(int(tiling)), "--steps", str(args.steps)]
            done = subprocess.run(cmd + ["--device", args.device], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    head = f"{'input':>9} {'mode':>6} {'tiles':>5} {'covered px':>10} {'UNet s':>7} {'UNet cpu s':>10} {'total s':>7} {'peak MiB':>8} {'net MiB':>8} VAE"
    print(head)
    for r in rows:
        mode = "tiled" if r["tiled"] else "whole"
        print(
            f"{r['size']:>4}x{r['size']:<4} {mode:>6} {r['unet_tiles']:>5} {r['covered_px']:>10} "
            f"{r['unet_s']:>7.2f} {r['unet_cpu_s']:>10.2f} {r['total_s']:>7.2f} {r['peak_mib']:>8.1f} {r['net_mib']:>8.1f} {r['vae']}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"steps": args.steps, "device": args.device, "rows": rows}, out, indent=1)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
