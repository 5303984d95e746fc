"""One UNet call and one VAE tile decode of the full-size x4 networks: layout x compile, against the FLOP floor.

    python benchmarks/bench_networks.py --tile 32 --batch 2                                # CPU, ~1 min
    python benchmarks/bench_networks.py --device cuda --dtype bf16 --tile 128 --batch 16 --compile --json

The pipeline benchmark (bench_pipeline.py) says where a job's time goes; this one says how fast the
two networks run on one tile shape, and what the library's fast path buys: each network is timed in
the default contiguous layout and in channels-last (what ``models.loading.to_device`` uses), and with
``--compile`` also compiled the way the library's ``--compile`` does it. Random full-size weights
(``build_random_components``), the dtype's VAE rule (fp16 -> fp32 VAE), one ``torch.no_grad`` call
per timing, CUDA synchronised around each. Per variant: best and median of ``--reps`` calls after
``--warmup`` calls, counted FLOPs (``FlopCounterMode`` on meta copies, as in bench_pipeline), achieved
TFLOP/s, and that as a fraction of this device's measured matmul throughput in the same dtype (MFU;
on this CPU oneDNN's convolutions outrun MKL's matmul, so it can exceed 1 there; conv_tflops is printed),
plus the largest difference from the contiguous eager output (the variants must agree).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--dtype", default="auto", help="auto|fp32|fp16|bf16 (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--tile", type=int, default=128, help="UNet and VAE tile side, latent px (the VAE tile decodes to 4x)")
    p.add_argument("--batch", type=int, default=None, help="tiles per UNet call (default 16 on CUDA, 1 on the CPU)")
    p.add_argument("--reps", type=int, default=None, help="timed calls per variant (default 10 on CUDA, 3 on the CPU)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant first (compilation happens here)")
    p.add_argument("--compile", action="store_true", help="also time the compiled networks")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_pipeline import FlopCounter, _commit, conv_tflops, matmul_tflops, quiet
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from vsrup.device import resolve_device, resolve_dtype
    from vsrup.models.configs import build_random_components

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    cuda = device.type == "cuda"
    batch = args.batch or (16 if cuda else 1)
    reps = args.reps or (10 if cuda else 3)
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)

    torch.manual_seed(0)
    with quiet():
        nets = build_random_components("cpu", dtype)
    unet, vae = nets["unet"].to(device), nets["vae"].to(device)
    generator = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(batch, 7, args.tile, args.tile, generator=generator).to(device, dtype)  # (N, 7, t, t)
    text = torch.randn(batch, 77, 1024, generator=generator).to(device, dtype)  # (N, 77, D)
    levels = torch.full((batch,), 20, dtype=torch.long, device=device)  # (N,)
    t = torch.tensor(500, device=device)
    z = torch.randn(1, 4, args.tile, args.tile, generator=generator).to(device, vae.dtype)  # (1, 4, t, t)
    calls = {
        "unet": (unet, lambda: unet(x, t, encoder_hidden_states=text, class_labels=levels, return_dict=False)[0]),
        "vae": (vae, lambda: vae.decode(z).sample),
    }
    counter = FlopCounter()
    flops = {"unet": counter.unet_call(tuple(x.shape), tuple(text.shape)), "vae": counter.vae_call(tuple(z.shape))}
    peak = matmul_tflops(device, dtype)

    variants = [("contiguous", False), ("channels_last", False)]
    if args.compile:
        variants += [("channels_last", True)]
    rows, reference = [], {}
    for layout, compiled in variants:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        for name, (net, call) in calls.items():
            net.to(memory_format=fmt)
            if compiled:
                (net if name == "unet" else net.decoder).compile()
            times = []
            with torch.no_grad():
                started = time.perf_counter()
                for _ in range(args.warmup):
                    out = call()
                sync()
                warmup_s = time.perf_counter() - started
                for _ in range(reps):
                    sync()
                    start = time.perf_counter()
                    out = call()
                    sync()
                    times.append(time.perf_counter() - start)
            out = out.float().cpu()
            reference.setdefault(name, out)
            best = min(times)
            rows.append({
                "network": name, "layout": layout, "compiled": compiled, "shape": list((x if name == "unet" else z).shape),
                "best_s": best, "median_s": statistics.median(times), "warmup_s": warmup_s,
                "flops": flops[name], "tflops": flops[name] / best / 1e12, "mfu": flops[name] / best / 1e12 / peak,
                "max_abs_diff": (out - reference[name]).abs().max().item(),
            })
            if compiled:
                torch._dynamo.reset()

    result = {
        "rows": rows, "matmul_tflops": peak, "conv_tflops": conv_tflops(device, dtype),
        "settings": {
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
            "dtype": str(dtype).removeprefix("torch."), "tile": args.tile, "batch": batch, "reps": reps,
            "warmup": args.warmup, "threads": torch.get_num_threads(),
        },
        "commit": _commit(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['settings']}  matmul {peak:.3f}, conv {result['conv_tflops']:.3f} TFLOP/s")
        for r in rows:
            print(f"  {r['network']:<5}{r['layout']:<14}{'compiled' if r['compiled'] else 'eager':<9}"
                  f"best {r['best_s'] * 1e3:9.2f} ms  median {r['median_s'] * 1e3:9.2f} ms  "
                  f"{r['tflops']:7.3f} TFLOP/s  MFU {r['mfu']:.2f}  diff {r['max_abs_diff']:.1e}")
    return result


if __name__ == "__main__":
    main()
