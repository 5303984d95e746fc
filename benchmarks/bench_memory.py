"""Peak RSS of `vsrup upscale` against video length, and against the documented host-memory formula.

    python benchmarks/bench_memory.py                       # 300 vs 3000 frames, 320x240, lanczos x2
    python benchmarks/bench_memory.py --model tiny --size 32x24 --extra "--steps 2"   # the diffusion path, tiny random x4 model
    python benchmarks/bench_memory.py --model tiny-stream --size 32x24 --scale 4     # the sequential path, tiny random Stream-DiffVSR
    python benchmarks/bench_memory.py --frames 24 --size 960x540 --scale 4              # the formula at 4K output

Each run is a fresh process; its peak RSS comes from wait4(). The target (issue 2): the long
video's peak within 1.25x of the short one's. Each run also reports the formula's prediction
(memory.host_bytes, docs/memory.md): the job's info event gives the frames' bytes and the resident
memory when it was computed (weights and libraries loaded); predicted = the two together.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_video(path: Path, n: int, width: int, height: int, fps: int = 25) -> None:
    """A moving gradient with noise, AAC audio alongside, so decode, remux and encode all work."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        yy, xx = np.mgrid[0:height, 0:width]
        samples_per_frame = 48000 // fps
        for i in range(n):
            base = ((xx + 3 * i) % 256)[..., None] * np.array([1.0, 0.6, 0.3]) + (yy % 64)[..., None]
            rgb = np.clip(base + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            t = (np.arange(samples_per_frame) + i * samples_per_frame) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, i * samples_per_frame, Fraction(1, 48000)
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())


def peak_rss(cmd: list[str]) -> tuple[int, float, int | None]:
    """(peak RSS, seconds, predicted peak) of one run with --log-json (the prediction from its host-memory event)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        log.seek(0)
        events = [json.loads(line) for line in log.read().decode().splitlines() if line.startswith("{")]
    memory = [e for e in events if "frames_bytes" in e]
    predicted = memory[0]["frames_bytes"] + memory[0]["resident_bytes"] if memory and memory[0].get("resident_bytes") else None
    return usage.ru_maxrss * 1024, time.monotonic() - started, predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--size", default="320x240", help="WxH of the input")
    parser.add_argument("--model", default="lanczos", help="lanczos, tiny or tiny-stream (a tiny random x4 or Stream-DiffVSR model built here), or any --model value")
    parser.add_argument("--scale", default="2")
    parser.add_argument("--extra", default="", help="more vsrup options, quoted")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model in ("tiny", "tiny-stream"):
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from tiny_sd import build_tiny_components
            from tiny_stream import build_tiny_stream

            build = build_tiny_components if model == "tiny" else build_tiny_stream
            model = str(Path(tmp) / model / "model")
            build(Path(model))
        for n in args.frames:
            src = Path(tmp) / f"in{n}.mp4"
            make_video(src, n, width, height)
            cmd = [sys.executable, "-m", "vsrup", "upscale", str(src), str(Path(tmp) / f"out{n}.mp4"), "--model", model,
                   "--scale", args.scale, "--log-json", *shlex.split(args.extra)]
            rss, seconds, predicted = peak_rss(cmd)
            rows.append({"frames": n, "peak_rss_bytes": rss, "predicted_peak_bytes": predicted, "seconds": round(seconds, 2), "fps": round(n / seconds, 1)})
    ratio = rows[-1]["peak_rss_bytes"] / rows[0]["peak_rss_bytes"]
    if args.json:
        print(json.dumps({"size": args.size, "model": args.model, "scale": args.scale, "rows": rows, "ratio": round(ratio, 3)}))
        return
    for r in rows:
        formula = f"formula {r['predicted_peak_bytes'] / 2**20:8.1f} MiB" if r["predicted_peak_bytes"] else "formula n/a"
        print(f"{r['frames']:>6} frames  peak RSS {r['peak_rss_bytes'] / 2**20:8.1f} MiB  {formula}  {r['seconds']:7.1f} s  {r['fps']:6.1f} fps")
    print(f"ratio longest/shortest: {ratio:.3f} (target <= 1.25)")


if __name__ == "__main__":
    main()
