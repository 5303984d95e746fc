"""How fast each default encoder writes upscaled frames, at its default settings.

    python benchmarks/bench_encoders.py --sizes 1920x1080,3840x2160 --frames 24 --json

For each encoder vsrup picks by default (libx264 for 8-bit input, libx265 above 8 bits, libvpx-vp9 for
8-bit WebM, libsvtav1 for WebM above 8 bits) and each output size: ``--frames`` frames written through
``media.encode.VideoWriter`` with the default ``EncodeConfig`` (so exactly the options a job gets,
media/encode.py ``encoder_options``), flush and close included. The frames are a moving gradient with
noise, prepared before the clock starts; ``write_fps`` includes vsrup's RGB -> Y'CbCr conversion
(``from_rgb``, which runs in the same encode thread in a job), ``convert_s_per_frame`` is that
conversion alone (best of three). ``--threads`` pins the encoder's threads (0: FFmpeg's choice, the
default); ``cpus`` says how many the machine had. ``--encoder-opt KEY=VALUE`` (repeatable) times other
settings, as vsrup's own option would apply them.

An encoder is the bottleneck of a GPU job when it writes fewer frames per second than the GPU makes:
sd-x4 at 480x854 -> 1920x3416 makes at most about 0.26 frame/s on an 800 TFLOP/s GPU (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 talks at encoder init (the tiny source below is written without vsrup)

from vsrup.config import EncodeConfig  # noqa: E402
from vsrup.media.encode import VideoWriter, encoder_options, from_rgb  # noqa: E402
from vsrup.media.probe import probe  # noqa: E402

DEFAULTS = (("libx264", ".mp4", 8), ("libx265", ".mp4", 10), ("libvpx-vp9", ".webm", 8), ("libsvtav1", ".webm", 10))


def source(directory: Path, suffix: str, depth: int) -> Path:
    """A tiny input of the bit depth that makes vsrup choose the encoder: its MediaInfo drives the writer."""
    path = directory / f"src{depth}{suffix}"
    codec, pix_fmt = ("libx264", "yuv420p") if depth == 8 else ("libx265", "yuv420p10le")
    if suffix == ".webm":
        codec = "libvpx-vp9" if depth == 8 else "libsvtav1"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options={"x265-params": "log-level=none"} if codec == "libx265" else {})
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        for i in range(4):  # x265 leaves the dts of encodes under 3 frames unset (media/encode.py X265_UNSET_DTS_FRAMES)
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100 + i, np.uint8), format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def pictures(n: int, width: int, height: int) -> list[np.ndarray]:
    """``n`` (H, W, 3) float32 frames: a gradient moving 6 px a frame, with noise (encoders work for it)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for i in range(n):
        base = ((xx + 6 * i) % 256)[..., None] * np.array([1.0, 0.6, 0.3], np.float32) + (yy % 64)[..., None]
        out.append(np.clip((base + rng.normal(0, 8, (height, width, 3)).astype(np.float32)) / 255, 0, 1))
    return out


def measure(codec: str, suffix: str, depth: int, size: tuple[int, int], n: int, threads: int, options: tuple, directory: Path) -> dict:
    info = probe(source(directory, suffix, depth))
    config = EncodeConfig(threads=threads, audio="none", options=options)
    frames = pictures(n, *size)
    started = time.perf_counter()
    with VideoWriter(directory / f"out{suffix}", info, config, size) as writer:
        assert writer._video.codec_context.name == codec, writer._video.codec_context.name
        for i, image in enumerate(frames):
            writer.write(image, i * round(1 / 25 / info.video.time_base))
    seconds = time.perf_counter() - started
    convert = []
    for image in frames[:3]:  # best of three: the first call also pays for fresh memory
        started = time.perf_counter()
        from_rgb(image, writer._pix_fmt, info.video)
        convert.append(time.perf_counter() - started)
    convert = min(convert)
    return {
        "encoder": codec, "container": suffix, "size": f"{size[0]}x{size[1]}", "pix_fmt": writer._pix_fmt, "frames": n,
        "seconds": round(seconds, 4), "write_fps": round(n / seconds, 3), "convert_s_per_frame": round(convert, 3),
        "options": encoder_options(codec, config, size, lambda text: None),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1920x1080,3840x2160")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--encoders", default=",".join(c for c, _, _ in DEFAULTS))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--encoder-opt", "-e", action="append", default=[], metavar="KEY=VALUE", help="as vsrup's: to time other settings")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    wanted = args.encoders.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for codec, suffix, depth in DEFAULTS:
            if codec not in wanted:
                continue
            for size in sizes:
                options = tuple(tuple(text.split("=", 1)) for text in args.encoder_opt)
                row = measure(codec, suffix, depth, size, args.frames, args.threads, options, Path(tmp))
                rows.append(row)
                if not args.json:
                    print(f"{codec:11s} {row['size']:>9s} {row['pix_fmt']:12s} {row['write_fps']:6.2f} frames/s "
                          f"(conversion {row['convert_s_per_frame']:.3f} s/frame)  {row['options']}", flush=True)
    result = {"cpus": os.cpu_count(), "threads": args.threads, "rows": rows}
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
