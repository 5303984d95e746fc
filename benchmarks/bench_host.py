"""Does the host keep an accelerator busy at real sizes? The pipeline with the GPU's work replaced by a wait.

    python benchmarks/bench_host.py --size 480x854 --frames 24 --accelerator-s 1.5 --json
    python benchmarks/bench_host.py --size 480x854 --frames 24 --accelerator-s 0.36 --kind sequential --json   # the fast mode

A diffusion job on a GPU is the GPU's time plus whatever the host adds on the main thread while the
GPU waits: decoding, scene-cut scoring, flow, cross-fades, float conversions, colour conversion and
encoding of 4x frames. bench_pipeline measures that split with the real networks, which at 480x854
needs a GPU; this script measures the host's share at real frame sizes on any machine.

What runs: ``vsrup.pipeline.upscale`` on a generated H.264 + AAC video (``bench_memory.make_video``)
at ``--size``, with the model replaced by ``Accelerator``, which behaves like the x4 model on a GPU
as seen from the host: it asks for flow, which the pipeline estimates in its ``FlowWorker`` one clip
ahead, then waits ``--accelerator-s`` per frame of the clip (the main thread of a
real job waits the same way, in a CUDA synchronisation with the GIL released), then hands back the
4x frames as float32 (a nearest-neighbour x4 of the input, computed outside the timed wait: it
stands in for the device-to-host copy of the output: one broadcast write, about memcpy speed). Everything else is the real pipeline: the
decode thread, clip planning with scene-cut scores, cross-fades, the encode thread (RGB -> YUV,
libx264 or libx265, audio copy) and the atomic output.

Reported: wall time, the accelerator's share of it (``busy_fraction``; 1 - busy_fraction is the
overhead the GPU would see), split into three: ``startup_s`` before the first clip reaches the
accelerator (probe, output set-up, decoding the first clip, its flow), ``steady_overhead`` from
then until the last clip comes back (what the host adds while the accelerator has work), and
``drain_s`` after it (cross-fading the last clip, the encoder's look-ahead flush, closing the
file); the first and last are paid once per video. ``copy_s`` is the stand-in's own time writing
its outputs into fresh host memory (the device-to-host copy's host side; page faults dominate it on
a VM), and ``steady_overhead_without_copy`` the steady overhead without it. Seconds per frame;
the main thread's own CPU time per frame (``time.thread_time``, excluding waits); the process's
CPU time per frame (all threads: decode, flow, encode).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class Accelerator:
    """Stands in for a diffusion model on a GPU: it gets flow as the real one does, then waits.

    Not generative as the pipeline sees it: the colour fix of a real job runs on the GPU, so the stand-in
    leaves it out rather than charge the host for it.
    """

    def __init__(self, seconds_per_frame: float, kind: str = "clip"):
        import torch

        from vsrup.models import ModelInfo

        self.info = ModelInfo(name="accelerator", scale=4, kind=kind, flow=True, generative=False, cost=None)
        self.device = torch.device("cpu")
        self.seconds = seconds_per_frame
        self.busy = 0.0
        self.copy_s = 0.0  # main-thread time writing the outputs into fresh host memory
        self.started = 0.0  # perf_counter when the first clip's wait began
        self.finished = 0.0  # perf_counter when the last clip came back

    def sample(self, window, plan, progress):
        import torch

        frames = window.frames
        wait = self.seconds * len(window.indices)
        self.started = self.started or time.perf_counter()
        time.sleep(wait)  # the GPU's work on the clip
        self.busy += wait
        t, h, w, c = frames.shape
        copy_start = time.perf_counter()
        out = np.empty((t, h, 4, w, 4, c), np.float32)  # the host buffer of the copy
        out[...] = frames[:, :, None, :, None, :]  # nearest x4 in one pass, at about memcpy speed
        self.finished = time.perf_counter()
        self.copy_s += self.finished - copy_start
        return torch.from_numpy(out.reshape(t, h * 4, w * 4, c))  # (T, 4h, 4w, 3)

    def step(self, window, state, plan, progress):
        """As a causal model (``--kind sequential``): one frame, its pair's flow when it has a state; the state
        (the previous output) stays on the GPU, so only a token crosses here."""
        if state is not None and window.flow is None:
            raise AssertionError("a frame after the first of its shot gets its pair's flow")
        return self.sample(window, plan, progress), True


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="480x854", help="input HxW; the output is 4x")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--accelerator-s", type=float, default=1.5, help="seconds of accelerator work per sampled frame (clips overlap, so an output frame costs clip_len / (clip_len - overlap) of it)")
    p.add_argument("--clip-len", type=int, default=None, help="default: the library's (8)")
    p.add_argument("--kind", choices=("clip", "sequential"), default="clip",
                   help="clip: like sd-x4 (overlapping clips, flow a clip ahead); sequential: like stream-diffvsr (a frame at a time, the next pair's flow ahead)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    height, width = map(int, args.size.lower().split("x"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_memory import make_video
        from bench_pipeline import _commit
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import vsrup.models.registry as registry
    from vsrup.config import SampleConfig, UpscaleConfig
    from vsrup.pipeline import upscale

    defaults = SampleConfig()
    config = UpscaleConfig(scale=4, overwrite=True, sample=SampleConfig(clip_len=args.clip_len or defaults.clip_len))
    accelerator = Accelerator(args.accelerator_s, args.kind)
    with tempfile.TemporaryDirectory(prefix="vsrup-bench-host-") as tmp:
        source, target = Path(tmp) / "input.mp4", Path(tmp) / "output.mp4"
        make_video(source, args.frames, width, height)
        with mock.patch.object(registry.Choice, "load", lambda self, config, emit: accelerator):
            thread0, cpu0 = time.thread_time(), time.process_time()
            start = time.perf_counter()
            results = upscale([source], target, config)
            wall = time.perf_counter() - start
            main_cpu, process_cpu = time.thread_time() - thread0, time.process_time() - cpu0
        if results[0].status != "done":
            raise SystemExit(f"the pipeline failed: {results[0].error}")
        frames, output_bytes = results[0].frames, target.stat().st_size

    result = {
        "wall_s": wall,
        "frames": frames,
        "s_per_frame": wall / frames,
        "accelerator_s": accelerator.busy,
        "busy_fraction": accelerator.busy / wall,
        "overhead_fraction": 1 - accelerator.busy / wall,
        "startup_s": accelerator.started - start,
        "steady_overhead": 1 - accelerator.busy / (accelerator.finished - accelerator.started),
        "drain_s": start + wall - accelerator.finished,
        "copy_s": accelerator.copy_s,
        "steady_overhead_without_copy": 1 - accelerator.busy / (accelerator.finished - accelerator.started - accelerator.copy_s),
        "main_thread_cpu_s_per_frame": main_cpu / frames,
        "process_cpu_s_per_frame": process_cpu / frames,
        "output_bytes": output_bytes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "settings": {"size": f"{height}x{width}", "kind": args.kind, "accelerator_s_per_frame": args.accelerator_s, "clip_len": config.sample.clip_len,
                     "clip_overlap": config.sample.clip_overlap, "cpus": os.cpu_count()},
        "load_average": os.getloadavg()[0],
        "commit": _commit(),
        "date": datetime.date.today().isoformat(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{frames} frames of {width}x{height} -> x4 in {wall:.1f} s ({result['s_per_frame']:.2f} s/frame); "
              f"accelerator busy {result['busy_fraction']:.3f}, overhead {result['overhead_fraction']:.3f} "
              f"({result['startup_s']:.1f} s startup, steady {result['steady_overhead']:.3f}, {result['drain_s']:.1f} s drain); "
              f"main thread {result['main_thread_cpu_s_per_frame']:.3f} s CPU/frame, process {result['process_cpu_s_per_frame']:.3f}")
    return result


if __name__ == "__main__":
    main()
