"""The lanczos preview against ffmpeg's own Lanczos scaler, on the same clip and the same encoder settings.

    python benchmarks/bench_lanczos.py --size 640x360 --frames 96 --scale 2 --reps 3 --json

Both runs read one generated H.264 + AAC clip (``bench_memory.make_video``) and write libx264 at its
defaults (preset medium, crf 23) with the audio copied:

    ffmpeg -i clip.mp4 -vf scale=W:H:flags=lanczos -c:v libx264 -pix_fmt yuv420p -c:a copy out.mp4
    vsrup upscale clip.mp4 out.mp4 --model lanczos --scale S

each as a fresh process (start-up included: it is what a user waits for), ``--reps`` times, the median
wall time reported, and their ratio. ``resize_ms_per_frame`` is vsrup's resampler alone on one frame
of the clip's size (``vsrup.resize.lanczos_resize``, best of 5). Needs the ``ffmpeg`` binary on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_memory import make_video  # noqa: E402
from vsrup.resize import lanczos_resize  # noqa: E402


def wall(cmd: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360", help="input WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--scale", type=float, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("bench_lanczos needs the ffmpeg binary on PATH (apt-get install ffmpeg)")
    width, height = (int(v) for v in args.size.split("x"))
    out_w, out_h = round(width * args.scale), round(height * args.scale)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_video(clip, args.frames, width, height)
        ff_cmd = [ffmpeg, "-v", "error", "-y", "-i", str(clip), "-vf", f"scale={out_w}:{out_h}:flags=lanczos",
                  "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "copy", str(Path(tmp) / "ff.mp4")]
        vs_cmd = [sys.executable, "-m", "vsrup", "upscale", str(clip), str(Path(tmp) / "vs.mp4"), "--model", "lanczos",
                  "--scale", f"{args.scale:g}", "--overwrite", "--quiet"]
        ff, vs = [], []
        for _ in range(args.reps):  # interleaved, so a busy moment of the machine hits both
            ff.append(wall(ff_cmd))
            vs.append(wall(vs_cmd, env))
        frame = np.random.default_rng(0).random((1, height, width, 3), dtype=np.float32)
        lanczos_resize(frame, out_h, out_w)  # the thread pool starts
        resize = []
        for _ in range(5):
            started = time.perf_counter()
            lanczos_resize(frame, out_h, out_w)
            resize.append(time.perf_counter() - started)
    result = {
        "input": f"{width}x{height}", "output": f"{out_w}x{out_h}", "frames": args.frames, "cpus": os.cpu_count(),
        "ffmpeg_s": round(statistics.median(ff), 2), "vsrup_s": round(statistics.median(vs), 2),
        "ratio": round(statistics.median(vs) / statistics.median(ff), 2),
        "ffmpeg_runs_s": [round(t, 2) for t in ff], "vsrup_runs_s": [round(t, 2) for t in vs],
        "resize_ms_per_frame": round(1000 * min(resize), 1),
    }
    print(json.dumps(result) if args.json else
          f"{result['input']} -> {result['output']}, {args.frames} frames: ffmpeg {result['ffmpeg_s']} s, vsrup {result['vsrup_s']} s "
          f"(x{result['ratio']}); vsrup's resize {result['resize_ms_per_frame']} ms/frame")
    return result


if __name__ == "__main__":
    main()
