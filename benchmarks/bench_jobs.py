"""What a resumable job costs beside a plain run: time, and the disk its lossless units take.

    python benchmarks/bench_jobs.py ../shared/media/autoeditor_example.mp4 --scale 1.5 --frames 120 --json

Runs the same upscale twice through ``pipeline.upscale``: once plain (streamed to the output) and once
as a job (``--resumable --keep-work``, units of ``--unit-len`` frames), with the model given (default
``lanczos``, whose own work is small, so the job's extra work shows). Reports wall seconds of both, the
job's planning pass and assembly (from its stage events), the units' bytes per frame against the raw
frame in the encoder's pixel format, and whether the two outputs are byte-identical (they must be).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from vsrup.config import EncodeConfig, JobConfig, UpscaleConfig
from vsrup.pipeline import upscale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=120, help="the first N frames")
    parser.add_argument("--model", default="lanczos")
    parser.add_argument("--unit-len", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2, help="encoder threads, pinned for both runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        base = UpscaleConfig(model=args.model, scale=args.scale, frames=(0, args.frames), encode=EncodeConfig(threads=args.threads))
        started = time.perf_counter()
        (plain,) = upscale([args.input], scratch / f"plain{args.input.suffix}", base)
        plain_s = time.perf_counter() - started
        stamps: dict[str, float] = {}

        def emit(event):
            if event.kind == "stage":
                stamps.setdefault(event.data.get("stage"), time.perf_counter())
            if event.kind == "done":
                stamps["done"] = time.perf_counter()

        job = UpscaleConfig(**{**base.__dict__, "job": JobConfig(unit_len=args.unit_len, keep_work=True)})
        started = time.perf_counter()
        (result,) = upscale([args.input], scratch / f"job{args.input.suffix}", job, emit=emit)
        job_s = time.perf_counter() - started
        assert plain.status == result.status == "done", (plain.error, result.error)
        work = scratch / f"job{args.input.suffix}.vsrup-work"
        manifest = json.loads((work / "manifest.json").read_text())
        units = sorted(work.glob("unit_*.nut"))
        unit_bytes = sum(p.stat().st_size for p in units)
        import av

        from vsrup.media.probe import probe

        video = probe(args.input).video
        width, height = base.output_size(video.width, video.height)
        raw = sum(p.buffer_size for p in av.VideoFrame(width, height, manifest["plan"]["pix_fmt"]).planes)
        identical = (scratch / f"plain{args.input.suffix}").read_bytes() == (scratch / f"job{args.input.suffix}").read_bytes()
    report = {
        "input": str(args.input), "model": args.model, "output": f"{width}x{height}", "pix_fmt": manifest["plan"]["pix_fmt"],
        "frames": result.frames, "units": len(units), "cpus": os.cpu_count(),
        "plain_s": round(plain_s, 2), "job_s": round(job_s, 2), "job_over_plain": round(job_s / plain_s, 3),
        "plan_s": round(stamps["sample"] - stamps["plan"], 2),  # the decoding pass, until the first unit samples
        "assemble_s": round(stamps["done"] - stamps["assemble"], 2),
        "unit_bytes_per_frame": round(unit_bytes / result.frames), "raw_bytes_per_frame": raw,
        "unit_over_raw": round(unit_bytes / result.frames / raw, 3), "byte_identical": identical,
    }
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
