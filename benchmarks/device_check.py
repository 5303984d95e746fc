"""The whole job on an accelerator against the same job on the CPU: does the device path run, and agree?

    python benchmarks/device_check.py --device cuda --json          # first thing on a lent GPU
    python benchmarks/device_check.py --device cpu                  # the same check, CPU against itself

Not a test and not a timing: the tests run on the CPU only, so this is where code paths that exist
only on a GPU (dtype casts, device placement, the caching allocator, the memory plan from real free
memory) first run. It builds the tiny random x4 model of tests/tiny_sd.py (the real diffusers
classes) in a temporary folder, makes a 12-frame H.264 + AAC video, and runs ``vsrup.pipeline.upscale``
with the library's defaults (tiles, motion guidance, clips and cross-fades, colour fix) at 2 steps:
once on ``--device`` in its default dtype, once on the CPU in fp32, into lossless FFV1. Both outputs
are decoded to 8-bit RGB and compared pixel by pixel. bf16 rounds differently from fp32 and the difference grows over
the steps, so the levels are reported, not judged; a failure or a wrong frame count is an error. Then the
device's run again as a resumable job in units of 4 frames (docs/jobs.md): ``job_identical`` says whether
its file is byte-identical to the device's plain run (on the CPU it is, tests/test_jobs.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (N, H, W, 3) uint8


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="the device to check: cuda, cuda:N, mps or cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    for folder in ("benchmarks", "tests"):
        sys.path.insert(0, str(ROOT / folder))
    try:
        from bench_memory import make_video
        from tiny_sd import build_tiny_components
    finally:
        del sys.path[:2]
    from vsrup.config import EncodeConfig, JobConfig, SampleConfig, UpscaleConfig
    from vsrup.pipeline import upscale

    with tempfile.TemporaryDirectory(prefix="vsrup-device-check-") as tmp:
        tmp = Path(tmp)
        model = tmp / "model"
        build_tiny_components(model)
        source = tmp / "input.mp4"
        make_video(source, 12, 48, 32)
        runs = {}
        for name, device, dtype in (("device", args.device, "auto"), ("cpu", "cpu", "fp32")):
            events: list = []
            # Lossless FFV1: the comparison sees the pipeline's frames, not a lossy encoder's.
            config = UpscaleConfig(model=str(model), device=device, dtype=dtype, overwrite=True, sample=SampleConfig(steps=2), encode=EncodeConfig(codec="ffv1"))
            started = time.perf_counter()
            results = upscale([source], tmp / f"{name}.mkv", config, emit=events.append)
            seconds = time.perf_counter() - started
            if results[0].status != "done":
                raise SystemExit(f"the job failed on {device}: {results[0].error}")
            model_line = next((e.message for e in events if e.kind == "info" and e.message.startswith("model ")), "")
            runs[name] = dict(frames=decoded(tmp / f"{name}.mkv"), seconds=seconds, model=model_line)
        job = UpscaleConfig(model=str(model), device=args.device, overwrite=True, sample=SampleConfig(steps=2),
                            encode=EncodeConfig(codec="ffv1"), job=JobConfig(unit_len=4))
        results = upscale([source], tmp / "job.mkv", job)
        if results[0].status != "done":
            raise SystemExit(f"the resumable job failed on {args.device}: {results[0].error}")
        job_identical = (tmp / "job.mkv").read_bytes() == (tmp / "device.mkv").read_bytes()
        on_device, on_cpu = runs["device"]["frames"], runs["cpu"]["frames"]
        if on_device.shape != on_cpu.shape:
            raise SystemExit(f"the outputs differ in shape: {on_device.shape} on {args.device}, {on_cpu.shape} on the CPU")
        diff = np.abs(on_device.astype(np.int16) - on_cpu.astype(np.int16))  # (N, H, W, 3) levels

    result = {
        "device": args.device,
        "model_line": runs["device"]["model"],
        "frames": int(on_device.shape[0]),
        "size": list(on_device.shape[1:3]),
        "mean_abs_levels": float(diff.mean()),
        "max_abs_levels": int(diff.max()),
        "device_seconds": round(runs["device"]["seconds"], 2),
        "cpu_seconds": round(runs["cpu"]["seconds"], 2),
        "job_identical": job_identical,
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
