"""Seconds per output frame of the real pipeline, split by stage, with counted FLOPs (issues 6, 10; not a test).

    python benchmarks/bench_pipeline.py --size 32x32 --frames 4 --steps 2                  # CPU, < 1 min
    python benchmarks/bench_pipeline.py --model stablevsr --size 32x32 --frames 4 --steps 2
    python benchmarks/bench_pipeline.py --model stream-diffvsr --size 32x32 --frames 4 --against sd-x4   # both at their defaults
    python benchmarks/bench_pipeline.py --device cuda --dtype bf16 --size 480x854 --frames 16 --steps 20 --guidance 1
    python benchmarks/bench_pipeline.py --flops-only --size 480x854 --steps 20 --guidance 1   # FLOP counts, no run
    python benchmarks/bench_pipeline.py --model mgld-vsr --flops-only --size 480x854   # MGLD-VSR: FLOP counts only (no timed run yet)

What runs. The full-size networks of ``--model`` (``vsrup.models.configs.build_random_components``: the
real UNet, ControlNet, VAE and text-encoder configs, random weights) are built once, untimed. Then
``vsrup.pipeline.upscale`` runs on a generated H.264 + AAC video (``bench_memory.make_video``): probe,
writer set-up, model construction (prompt encoding with the full-size text encoder), decode, clip
planning, flow (``FlowWorker``), the sampler with tiles (and for sd-x4 CFG and the motion-guidance
hook; for StableVSR the frame-wise bidirectional loop with its ControlNet and per-step decodes; for
Stream-DiffVSR the causal loop, its ControlNet and its tiny temporal encoder and decoder), tiled VAE decode, colour fix, cross-fade, encode and mux. Only the weight *loading* is replaced:
``models.loading.load_network`` returns the in-memory networks (placed channels-last by the library's
own ``to_device``) instead of reading safetensors, and ``hub.resolve`` returns a temporary folder
holding a tokenizer and the scheduler configs. Disk reads of the weights are therefore not in the
timings; everything after them is. The tokenizer is tests/tiny_sd.py's tiny byte-level BPE: prompts
tokenize differently from the real vocabulary, but every prompt is padded to 77 tokens, so the text
encoder's work is the same.

Stages (main thread, exclusive: a stage's time excludes stages nested in it), by wrapping, from here,
the functions and networks the pipeline calls:
  decode        media.probe.probe and every next() of media.decode.decode_frames
  flow          the main thread's wait in Future.result() for FlowWorker's flow
  text_encoder  models.loading.encode_prompts (tokenizer load, weights to device, 1 or 2 forward passes)
  unet          every call of the UNet (one call per tile batch)
  controlnet    every call of the ControlNet (StableVSR)
  guidance      the step hook returned by sd_x4.temporal_hook (motion guidance / propagation)
  vae           every decode_tiled call (one per window, or per neighbour estimate: every tile and pass of its frames);
                Stream-DiffVSR: every tiny decode and every encode of the warped previous output
  color_fix     color.color_fix
  encode        media.encode.VideoWriter.__init__ (trial mux), .write, .close
  idle          wall time minus all of the above: clip planning, tile stacking and blending, scheduler
                steps, noise draws, CFG combination, warps, cross-fade, float<->numpy copies, Python
Flow runs in a worker thread; its busy time is reported separately (flow_worker_busy_s). On CUDA
every GPU stage synchronises on entry and exit, so its time is its own.

FLOPs are counted, not estimated: every network call's input shape is recorded, and each distinct
shape is counted once with torch.utils.flop_counter.FlopCounterMode on meta-device copies of the
same networks (1 MAC = 2 FLOP), then multiplied by the calls made. The text encoder likewise.
Achieved TFLOP/s = counted FLOPs / the stage's measured seconds.

Peak memory: CUDA torch.cuda.max_memory_allocated over the timed run; on the CPU the process's
VmHWM over the timed run (reset through /proc/self/clear_refs just before it; weights included).
matmul_tflops (one square matmul) and conv_tflops (one 3x3 512-channel conv) are measured here, in the
run's dtype, on the run's device and thread count, right after the run; floor_s_per_frame = counted
FLOPs per frame / the faster of the two.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("decode", "flow", "text_encoder", "unet", "controlnet", "guidance", "vae", "color_fix", "encode", "idle")
COMPUTE = ("unet", "controlnet", "vae", "text_encoder")
MODELS = ("sd-x4", "stablevsr", "stream-diffvsr", "mgld-vsr", "upscale-a-video")  # overhead_fraction: the share of wall time outside these
FLOPS_ONLY = ("mgld-vsr",)  # families counted with --flops-only but not yet instrumented for a timed run


# --- stage timing -----------------------------------------------------------------------------


class Stages:
    """Exclusive wall-clock time per stage on the main thread; GPU stages synchronise on entry and exit."""

    def __init__(self, device):
        import torch

        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.stack: list[list] = []  # [name, seconds spent in nested stages]
        self.main = threading.get_ident()
        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        self.flow_busy = 0.0
        self.lock = threading.Lock()
        self.first_start: dict[str, float] = {}  # stage -> perf_counter at its first entry
        self.last_end: dict[str, float] = {}  # stage -> perf_counter at its last exit

    def active(self, name: str) -> bool:
        return any(frame[0] == name for frame in self.stack)

    @contextlib.contextmanager
    def __call__(self, name: str, gpu: bool = False):
        if threading.get_ident() != self.main:  # only the main thread's critical path is split
            yield
            return
        if gpu:
            self.sync()
        start = time.perf_counter()
        self.first_start.setdefault(name, start)
        self.stack.append([name, 0.0])
        try:
            yield
        finally:
            if gpu:
                self.sync()
            self.last_end[name] = time.perf_counter()
            elapsed = self.last_end[name] - start
            _, nested = self.stack.pop()
            self.seconds[name] += elapsed - nested
            self.calls[name] += 1
            if self.stack:
                self.stack[-1][1] += elapsed


class TimedFuture:
    """A FlowWorker future whose result() wait counts as the main thread's flow stage."""

    def __init__(self, future, stages: Stages):
        self.future, self.stages = future, stages

    def result(self, timeout=None):
        with self.stages("flow"):
            return self.future.result(timeout)

    def __getattr__(self, name):
        return getattr(self.future, name)


class Timed:
    """A network as the library sees it, whose calls are timed as one stage (the VAE: see ``decode_tiled`` below).

    Attributes (config, device, dtype, submodules, ``compile``) are the network's own, so the library
    loads, places and compiles it as usual; only the calls pass through here. Input shapes are recorded
    for the FLOP count.
    """

    def __init__(self, network, name: str, stages: Stages, record: dict):
        self.__dict__.update(inner=network, name=name, stages=stages, record=record)

    def __getattr__(self, attribute):
        return getattr(self.inner, attribute)

    def __call__(self, x, t, encoder_hidden_states, **kwargs):
        control = kwargs.get("controlnet_cond")
        self.record[self.name].append((tuple(x.shape), tuple(encoder_hidden_states.shape), None if control is None else tuple(control.shape)))
        with self.stages(self.name, gpu=True):
            return self.inner(x, t, encoder_hidden_states=encoder_hidden_states, **kwargs)



@contextlib.contextmanager
def instrumented(stages: Stages, record: dict, injected: dict, folder: Path, family: str):
    """Patch the loader (inject in-memory networks) and wrap the pipeline's stage functions."""
    import vsrup.color as color_mod
    import vsrup.flow as flow_mod
    import vsrup.media.decode as decode_mod
    import vsrup.media.encode as encode_mod
    import vsrup.media.probe as probe_mod
    import vsrup.models.hub as hub_mod
    import vsrup.models.loading as loading_mod
    import vsrup.models.sd_x4 as sd
    import vsrup.models.stablevsr as svsr
    import vsrup.models.stream_diffvsr as stream

    family_mod = {"stablevsr": svsr, "stream-diffvsr": stream}.get(family, sd)
    tiny = family == "stream-diffvsr"
    orig = dict(
        encode=loading_mod.encode_prompts, hook=sd.temporal_hook, to_device=loading_mod.to_device,
        decode_tiled=None if tiny else family_mod.decode_tiled, tiny_decode=stream.decode, tiny_features=stream.previous_features,
        color_fix=color_mod.color_fix, estimate_flow=flow_mod.estimate_flow, submit=flow_mod.FlowWorker.submit,
        decode=decode_mod.decode_frames, probe=probe_mod.probe, w_init=encode_mod.VideoWriter.__init__,
        w_write=encode_mod.VideoWriter.write, w_close=encode_mod.VideoWriter.close,
    )

    # Injection: the loader returns the in-memory networks (no safetensors read), placed as it places them.
    def load_network(cls, folder_, subfolder, stem, dtype, device):
        network = injected[subfolder]
        if subfolder == "text_encoder":
            return network.to(device).eval()
        if tiny and subfolder == "vae":  # its layers are run by sampling/tiny_decode: timed there, below
            return orig["to_device"](network, device)
        return Timed(orig["to_device"](network, device), {"unet": "unet", "controlnet": "controlnet", "vae": "vae"}[subfolder], stages, record)

    # Timing wrappers.
    def encode_prompts(folder_, texts, device, dtype, emit):
        with stages("text_encoder", gpu=True):
            out = orig["encode"](folder_, texts, device, dtype, emit)
        record["text_encoder"].append(len(texts))
        if device.type != "cpu":  # the library frees its copy; ours goes back to the host, untimed
            injected["text_encoder"].to("cpu")
            import torch

            torch.cuda.empty_cache()
        return out

    def decode_tiled(vae, latents, *, tile, overlap, frame_statistics=True):
        record["vae"].append((tuple(latents.shape), tile, overlap, frame_statistics))
        with stages("vae", gpu=True):
            return orig["decode_tiled"](vae, latents, tile=tile, overlap=overlap, frame_statistics=frame_statistics)

    def tiny_decode(tae, latents, previous, tile):
        record["vae"].append((tuple(latents.shape), "decode", previous is not None, tile))
        with stages("vae", gpu=True):
            return orig["tiny_decode"](tae, latents, previous, tile)

    def tiny_features(tae, image, tile):
        record["vae"].append((tuple(image.shape), "features", True, tile))
        with stages("vae", gpu=True):
            return orig["tiny_features"](tae, image, tile)

    def temporal_hook(*args, **kwargs):
        hook = orig["hook"](*args, **kwargs)
        if hook is None:
            return None

        def timed(step):
            with stages("guidance", gpu=True):
                return hook(step)

        return timed

    def color_fix(*args, **kwargs):
        with stages("color_fix", gpu=True):
            return orig["color_fix"](*args, **kwargs)

    def estimate_flow(*args, **kwargs):
        start = time.perf_counter()
        try:
            return orig["estimate_flow"](*args, **kwargs)
        finally:
            with stages.lock:
                stages.flow_busy += time.perf_counter() - start

    def submit(self, frames):
        return TimedFuture(orig["submit"](self, frames), stages)

    def decode_frames(*args, **kwargs):
        frames = orig["decode"](*args, **kwargs)
        try:
            while True:
                with stages("decode"):
                    try:
                        frame = next(frames)
                    except StopIteration:
                        return
                yield frame
        finally:
            frames.close()

    def probe(*args, **kwargs):
        with stages("decode"):
            return orig["probe"](*args, **kwargs)

    def writer_init(self, *args, **kwargs):
        with stages("encode"):
            return orig["w_init"](self, *args, **kwargs)

    def writer_write(self, *args, **kwargs):
        with stages("encode"):
            return orig["w_write"](self, *args, **kwargs)

    def writer_close(self, *args, **kwargs):
        with stages("encode"):
            return orig["w_close"](self, *args, **kwargs)

    patches = [
        mock.patch.object(hub_mod, "resolve", lambda *a, **k: folder),
        mock.patch.object(family_mod, "load_network", load_network),
        mock.patch.object(loading_mod, "load_network", load_network),
        mock.patch.object(family_mod, "encode_prompts", encode_prompts),
        *((mock.patch.object(family_mod, "decode", tiny_decode), mock.patch.object(family_mod, "previous_features", tiny_features)) if tiny
          else (mock.patch.object(family_mod, "decode_tiled", decode_tiled),)),
        mock.patch.object(sd, "temporal_hook", temporal_hook),
        mock.patch.object(color_mod, "color_fix", color_fix),
        mock.patch.object(flow_mod, "estimate_flow", estimate_flow),
        mock.patch.object(flow_mod.FlowWorker, "submit", submit),
        mock.patch.object(decode_mod, "decode_frames", decode_frames),
        mock.patch.object(probe_mod, "probe", probe),
        mock.patch.object(encode_mod.VideoWriter, "__init__", writer_init),
        mock.patch.object(encode_mod.VideoWriter, "write", writer_write),
        mock.patch.object(encode_mod.VideoWriter, "close", writer_close),
    ]
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


# --- model folder, FLOPs, throughput ----------------------------------------------------------


def write_model_folder(folder: Path, components: dict) -> None:
    """What the loader still reads from disk: the tokenizer and the scheduler configs."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from tiny_sd import write_tiny_clip_tokenizer_files
    finally:
        sys.path.remove(str(ROOT / "tests"))
    from transformers import CLIPTokenizer

    source = folder / "tokenizer-src"
    write_tiny_clip_tokenizer_files(source)
    tokenizer = CLIPTokenizer(vocab=str(source / "vocab.json"), merges=str(source / "merges.txt"), pad_token="!")
    tokenizer.model_max_length = 77
    tokenizer.save_pretrained(folder / "tokenizer")
    for name in ("scheduler", "low_res_scheduler"):
        if name in components:
            components[name].save_pretrained(folder / name)


class FlopCounter:
    """FLOPs of one call of each network at a given input shape, counted on meta-device copies."""

    def __init__(self, family: str = "sd-x4"):
        from vsrup.models.configs import build_random_components

        with quiet():
            self.meta = build_random_components("meta", family=family)
        self.cache: dict = {}

    def _count(self, key, fn) -> int:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        if key not in self.cache:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                fn()
            self.cache[key] = counter.get_total_flops()
        return self.cache[key]

    def unet_call(self, x_shape, text_shape, control_shape=None, frames: int = 1) -> int:
        """The UNet on (N, 7, h, w); the ControlNet's residuals it adds are a few additions, left out.
        ``frames``: Upscale-A-Video's video UNet on N rows, videos of that many frames."""
        import torch

        unet = self.meta["unet"]
        video = {"frames": frames} if frames > 1 else {}

        def run():
            x = torch.empty(x_shape, device="meta")  # (N, 7, h, w)
            text = torch.empty(text_shape, device="meta")  # (N, 77, D)
            labels = torch.zeros(x_shape[0], dtype=torch.long, device="meta") if unet.config.num_class_embeds else None  # (N,)
            unet(x, torch.tensor(999, device="meta"), encoder_hidden_states=text, class_labels=labels, return_dict=False, **video)

        return self._count(("unet", x_shape, text_shape, frames), run)

    def video_vae_call(self, z_shape, tile: int = 0, overlap: int = 0) -> int:
        """Upscale-A-Video's video VAE decoding a (T, 4, h, w) window in its chunks of frames, in tiles of ``tile``."""
        import torch

        from vsrup.memory import MemoryPlan
        from vsrup.sampling.upscale_a_video import decode_window

        def run():
            z, lr = torch.empty(z_shape, device="meta"), torch.empty(z_shape[0], 3, *z_shape[2:], device="meta")
            decode_window(self.meta["vae"], z, lr, MemoryPlan(tuple(z_shape[2:]), 0, 0, 1, tile, overlap))

        return self._count(("video_vae", z_shape, tile, overlap), run)

    def controlnet_call(self, x_shape, text_shape, control_shape) -> int:
        import torch

        def run():
            x = torch.empty(x_shape, device="meta")  # (N, 7, h, w)
            text = torch.empty(text_shape, device="meta")  # (N, 77, D)
            control = torch.empty(control_shape, device="meta")  # (N, 3, 4h, 4w)
            self.meta["controlnet"](x, torch.tensor(999, device="meta"), encoder_hidden_states=text, controlnet_cond=control, return_dict=False)

        return self._count(("controlnet", x_shape, text_shape, control_shape), run)

    def vae_call(self, z_shape, tile: int = 0, overlap: int = 0, frame_statistics: bool = True) -> int:
        """FLOPs of decode_tiled on a (B, 4, h, w) latent; tile 0: the untiled vae.decode."""
        import torch

        from vsrup.sampling.vae_decode import decode_tiled

        def run():
            z = torch.empty(z_shape, device="meta")  # (B, 4, h, w)
            decode_tiled(self.meta["vae"], z, tile=tile, overlap=overlap, frame_statistics=frame_statistics)

        return self._count(("vae", z_shape, tile, overlap, frame_statistics), run)

    def tiny_call(self, shape, what: str, guided: bool, tile: int) -> int:
        """FLOPs of Stream-DiffVSR's tiny decoder on (B, 4, h, w) latents ("decode"; ``guided``: its TPMs run,
        with their passes over the tiles) or of its encoder's features of a (B, 3, 4h, 4w) image ("features")."""
        import torch

        from vsrup.sampling.tiny_decode import decode, previous_features

        tae = self.meta["vae"]
        b, _, h, w = shape
        # the previous frame's features are an input of a guided decode: made here, outside the count
        previous = previous_features(tae, torch.empty(b, 3, 4 * h, 4 * w, device="meta"), 0) if what == "decode" and guided else None

        def run():
            if what == "features":
                previous_features(tae, torch.empty(shape, device="meta"), tile)
            else:
                decode(tae, torch.empty(shape, device="meta"), previous, tile)

        return self._count(("tiny", shape, what, guided, tile), run)

    def text_call(self) -> int:
        import torch

        return self._count(("text",), lambda: self.meta["text_encoder"](torch.zeros(1, 77, dtype=torch.long, device="meta")))


def matmul_tflops(device, dtype, n: int | None = None, reps: int = 5) -> float:
    """Best-of-``reps`` throughput of one n x n x n matmul in ``dtype`` on ``device`` (TFLOP/s)."""
    import torch

    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def conv_tflops(device, dtype, reps: int = 5) -> float:
    """Best-of-``reps`` throughput of a 3x3 conv, 512 -> 512 channels on a 64 x 64 map (the VAE's widest), TFLOP/s.

    The CPU's convolutions (oneDNN) can beat its fp32 matmul (MKL), so the floor uses the faster of the two.
    """
    import torch

    batch = 8 if device.type == "cuda" else 1
    x = torch.randn(batch, 512, 64, 64, device=device, dtype=dtype)
    conv = torch.nn.Conv2d(512, 512, 3, padding=1, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    best = float("inf")
    with torch.no_grad():
        conv(x)
        sync()
        for _ in range(reps):
            start = time.perf_counter()
            conv(x)
            sync()
            best = min(best, time.perf_counter() - start)
    return 2 * batch * 512 * 512 * 9 * 64 * 64 / best / 1e12


@contextlib.contextmanager
def quiet():
    """diffusers/transformers warn about dtype casts of random models; not interesting here."""
    import diffusers.utils.logging as dl
    import transformers.utils.logging as tl

    levels = dl.get_verbosity(), tl.get_verbosity()
    dl.set_verbosity_error()
    tl.set_verbosity_error()
    try:
        yield
    finally:
        dl.set_verbosity(levels[0])
        tl.set_verbosity(levels[1])


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- the run ----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sd-x4", choices=MODELS, help="the family whose full-size networks run")
    p.add_argument("--against", choices=MODELS, default=None,
                   help="then run this model too, at its own defaults, on the same input and settings; report the s/frame ratio")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--dtype", default="auto", help="auto|fp32|fp16|bf16 (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--size", default="32x32", help="input HxW (= latent size; the output is 4x)")
    p.add_argument("--frames", type=int, default=4, help="frames of the generated input video")
    p.add_argument("--steps", type=int, default=None, help="default: the model's (sd-x4 30, stablevsr 50, stream-diffvsr 4)")
    p.add_argument("--guidance", type=float, default=None, help="sd-x4 only: CFG scale; default: the model's (6.0); <= 1 disables CFG")
    p.add_argument("--motion-guidance", type=float, default=None, help="sd-x4 only: default: the model's (0.5); 0 disables the hook and the flow")
    p.add_argument("--tile", type=int, default=None, help="UNet tile in latent px; default auto (the memory plan), 0 = untiled")
    p.add_argument("--clip-len", type=int, default=None, help="default: the library's (8)")
    p.add_argument("--compile", action="store_true", help="the library's --compile: torch.compile the networks (warm-up runs compile)")
    p.add_argument("--warmup", type=int, default=None, help="untimed full runs first (default: 1 on CUDA or with --compile, else 0)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--flops-only", action="store_true", help="print counted FLOPs per frame at --size (tiled and untiled; --tile sets the tile, default 128); no run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def sample_options(args):
    """The job's SampleConfig: the model's defaults but for what the arguments set."""
    from vsrup.config import SampleConfig

    x4_only = {"guidance": args.guidance, "motion_guidance": args.motion_guidance} if args.model == "sd-x4" else {}
    if args.model != "sd-x4" and (args.guidance is not None or args.motion_guidance is not None):
        raise SystemExit("--guidance and --motion-guidance are sd-x4 options")
    chosen = dict(steps=args.steps, tile=args.tile, compile=args.compile, **x4_only)
    if args.clip_len:
        chosen.update(clip_len=args.clip_len, clip_overlap=min(SampleConfig.clip_overlap, args.clip_len - 1))
    return SampleConfig(**{k: v for k, v in chosen.items() if v is not None})


def flops_only(args, height: int, width: int) -> dict:
    """Counted FLOPs per frame at --size, the networks untiled and in the auto plan's tiles (128, overlap 32),
    the VAE decode tiled as the plan decodes it (128, overlap 32, the frame's statistics), the text encoder;
    and the floor at 800 TFLOP/s.

    sd-x4: steps x (1 or 2 with CFG) UNet calls and one decode per frame. StableVSR: per step and frame one
    UNet call and, for all but the first frame a pass visits, a ControlNet call and a high-resolution decode
    of the neighbour's estimate ((T - 1) / T of a frame in a window of T = --clip-len, default 8), then one decode.
    """
    from vsrup.config import SampleConfig, UpscaleConfig
    from vsrup.models.registry import choose
    from vsrup.sampling.tiles import plan

    sample = choose(args.model).settle(UpscaleConfig(sample=sample_options(args))).sample
    counter = FlopCounter(args.model)
    tile = args.tile if args.tile is not None else 128
    overlap = min(SampleConfig().tile_overlap, tile // 4) if tile else 0
    n_tiles = len(plan(1, height, width, tile, overlap)) if tile else 1
    side = (min(tile, height), min(tile, width)) if tile else (height, width)
    text = (1, 77, 1024)
    unet_whole = counter.unet_call((1, 7, height, width), text)
    unet_tiled = n_tiles * counter.unet_call((1, 7, *side), text)
    px = height * width
    result = {
        "model": args.model, "size": f"{height}x{width}", "steps": sample.steps, "tile": tile, "overlap": overlap, "tiles": n_tiles,
        "unet_flops_untiled": unet_whole, "unet_mflop_per_px_untiled": unet_whole / px / 1e6, "unet_flops_tiled": unet_tiled,
        "text_encoder_flops_per_prompt": counter.text_call(),
    }
    if args.model == "upscale-a-video":
        return result | video_flops(counter, sample, height, width, tile, overlap, n_tiles, side, text)
    if args.model != "stream-diffvsr":  # the x4 VAE's decode (Stream-DiffVSR's tiny one is counted below)
        vae_whole = counter.vae_call((1, 4, height, width))
        vae_tiled = counter.vae_call((1, 4, height, width), tile, min(SampleConfig().tile_overlap, tile // 4)) if tile else vae_whole
        result.update(vae_flops_untiled=vae_whole, vae_mflop_per_px_untiled=vae_whole / px / 1e6, vae_flops_tiled=vae_tiled)
    if args.model == "stream-diffvsr":
        # A frame after the first of its shot: every step a UNet and a ControlNet call on the warped previous output,
        # whose features the tiny encoder makes; then the tiny decoder with its TPMs (the whole frame: the plan's first choice).
        control_whole = counter.controlnet_call((1, 7, height, width), text, (1, 3, 4 * height, 4 * width))
        control_tiled = n_tiles * counter.controlnet_call((1, 7, *side), text, (1, 3, 4 * side[0], 4 * side[1]))
        tiny = counter.tiny_call((1, 3, 4 * height, 4 * width), "features", True, 0) + counter.tiny_call((1, 4, height, width), "decode", True, 0)
        per_frame = {"untiled": sample.steps * (unet_whole + control_whole) + tiny, "tiled": sample.steps * (unet_tiled + control_tiled) + tiny}
        result.update(controlnet_flops_untiled=control_whole, controlnet_flops_tiled=control_tiled, tiny_vae_flops=tiny,
                      tiny_vae_mflop_per_px=tiny / px / 1e6)
    elif args.model == "stablevsr":
        t_frames = sample.clip_len
        guided = (t_frames - 1) / t_frames  # frames of a pass that get the ControlNet and a decode
        control_whole = counter.controlnet_call((1, 7, height, width), text, (1, 3, 4 * height, 4 * width))
        control_tiled = n_tiles * counter.controlnet_call((1, 7, *side), text, (1, 3, 4 * side[0], 4 * side[1]))
        per_frame = {
            "untiled": sample.steps * (unet_whole + guided * (control_whole + vae_tiled)) + vae_tiled,
            "tiled": sample.steps * (unet_tiled + guided * (control_tiled + vae_tiled)) + vae_tiled,
        }
        result.update(window=t_frames, controlnet_flops_untiled=control_whole, controlnet_flops_tiled=control_tiled,
                      controlnet_mflop_per_px_untiled=control_whole / px / 1e6)
    else:
        cfg = 2 if sample.guidance > 1.0 else 1
        per_frame = {"untiled": sample.steps * cfg * unet_whole + vae_tiled, "tiled": sample.steps * cfg * unet_tiled + vae_tiled}
        result.update(cfg=cfg == 2)
    result.update({
        "frame_flops_unet_untiled": per_frame["untiled"], "frame_flops_unet_tiled": per_frame["tiled"],
        "floor_s_per_frame_at_800_tflops_unet_untiled": per_frame["untiled"] / 800e12,
        "floor_s_per_frame_at_800_tflops_unet_tiled": per_frame["tiled"] / 800e12,
    })
    return result


def mgld_flops(args, height: int, width: int) -> dict:
    """MGLD-VSR's counted FLOPs per output frame for an input of ``height`` x ``width``, at full size, as the sampler runs:
    the input upsampled by s = max(512 / short side, 4) and padded to 32; per step and per 64-latent tile (overlap 32),
    the struct encoder and the UNet on a 5-frame clip (a fifth of it per frame); the SD VAE's encoder once; the video
    VAE's encoder levels 1-2 (the CFW features) and its temporal decoder once; the text encoder once per job."""
    import torch

    from vsrup.config import UpscaleConfig
    from vsrup.models import mgld_vsr
    from vsrup.models.registry import choose
    from vsrup.sampling import mgld
    from vsrup.sampling.tiles import plan

    sample = choose("mgld-vsr").settle(UpscaleConfig(sample=sample_options(args))).sample
    with quiet():
        nets = mgld_vsr.build_random_networks("meta")
    counter = FlopCounter.__new__(FlopCounter)
    counter.cache = {}
    s = mgld.upsample_factor(height, width)
    up = [-(-int(n * s) // mgld.PAD) * mgld.PAD for n in (height, width)]  # padded upsampled size
    latent = (up[0] // 8, up[1] // 8)
    tiles = plan(1, *latent, mgld.TILE, mgld.OVERLAP)
    side = (tiles[0].y.size, tiles[0].x.size)
    frames = mgld_vsr.FRAMES
    meta = lambda *shape: torch.empty(shape, device="meta")  # noqa: E731
    t = torch.tensor(999, device="meta")
    struct = counter._count("struct", lambda: nets["struct"](meta(frames, 4, *side), t)) / frames
    features = nets["struct"](meta(frames, 4, *side), t)
    unet = counter._count("unet", lambda: nets["unet"](meta(frames, 4, *side), t, meta(1, 77, 1024), features, frames)) / frames
    encode = counter._count("encode", lambda: nets["vae"].encode(meta(1, 3, *up)))
    cfw = counter._count("cfw", lambda: nets["video"].features(meta(1, 3, *up)))
    decode = counter._count("decode", lambda: nets["video"].decode_clip(meta(frames, 4, *latent), nets["video"].features(meta(frames, 3, *up)), 1.0, frames)) / frames
    text = counter._count("text", lambda: nets["text"](torch.zeros(1, 77, dtype=torch.long, device="meta")))
    per_step = len(tiles) * (unet + struct)
    frame = sample.steps * per_step + encode + cfw + decode
    return {
        "model": "mgld-vsr", "size": f"{height}x{width}", "steps": sample.steps, "upsampled": f"{up[0]}x{up[1]}", "latent": f"{latent[0]}x{latent[1]}",
        "tile": mgld.TILE, "overlap": mgld.OVERLAP, "tiles": len(tiles), "window": frames,
        "unet_flops_per_tile_frame": unet, "struct_flops_per_tile_frame": struct,
        "unet_mflop_per_latent_px": unet / (side[0] * side[1]) / 1e6, "vae_encode_flops": encode, "cfw_features_flops": cfw,
        "video_decode_flops": decode, "video_decode_mflop_per_latent_px": decode / (latent[0] * latent[1]) / 1e6,
        "text_encoder_flops_per_prompt": text, "frame_flops": frame, "floor_s_per_frame_at_800_tflops": frame / 800e12,
    }


def video_flops(counter, sample, height, width, tile, overlap, n_tiles, side, text) -> dict:
    """Upscale-A-Video per frame: a window of 8 frames per UNet call (every tile with all 8), steps x (1 or 2 with
    CFG) calls; the video VAE decoding the window in chunks of 3 frames, tiled at ``tile`` with each tile's own
    statistics. Windows overlap by 2 of 8 (--clip-overlap), so a video costs 8/6 of this per output frame."""
    from vsrup.models.upscale_a_video import WINDOW

    window = WINDOW
    unet_whole = counter.unet_call((window, 7, height, width), (window, *text[1:]), frames=window) / window
    unet_tiled = n_tiles * counter.unet_call((window, 7, *side), (window, *text[1:]), frames=window) / window
    vae_whole = counter.video_vae_call((window, 4, height, width)) / window
    vae_tiled = counter.video_vae_call((window, 4, height, width), tile, overlap) / window if tile else vae_whole
    cfg = 2 if sample.guidance > 1.0 else 1
    per_frame = {"untiled": sample.steps * cfg * unet_whole + vae_tiled, "tiled": sample.steps * cfg * unet_tiled + vae_tiled}
    px = height * width
    return {
        "window": window, "cfg": cfg == 2,
        "unet_flops_untiled": unet_whole, "unet_mflop_per_px_untiled": unet_whole / px / 1e6, "unet_flops_tiled": unet_tiled,
        "vae_flops_untiled": vae_whole, "vae_mflop_per_px_untiled": vae_whole / px / 1e6, "vae_flops_tiled": vae_tiled,
        "frame_flops_unet_untiled": per_frame["untiled"], "frame_flops_unet_tiled": per_frame["tiled"],
        "floor_s_per_frame_at_800_tflops_unet_untiled": per_frame["untiled"] / 800e12,
        "floor_s_per_frame_at_800_tflops_unet_tiled": per_frame["tiled"] / 800e12,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    height, width = map(int, args.size.lower().split("x"))
    if args.model in FLOPS_ONLY and not args.flops_only:
        raise SystemExit(f"--model {args.model}: only --flops-only is implemented (its timed run is not instrumented yet)")
    if args.flops_only:
        result = mgld_flops(args, height, width) if args.model == "mgld-vsr" else flops_only(args, height, width)
        print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
        return result
    if args.model == "upscale-a-video":
        raise SystemExit("--model upscale-a-video: --flops-only only (the timed run injects diffusers-layout networks; this family loads pickles)")

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_memory import make_video
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from vsrup.config import UpscaleConfig
    from vsrup.device import resolve_device, resolve_dtype
    from vsrup.models.configs import build_random_components
    from vsrup.models.registry import choose
    from vsrup.pipeline import upscale

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    warmup = args.warmup if args.warmup is not None else int(device.type == "cuda" or args.compile)

    # 1. Full-size random networks (untimed), the input video, the model folder.
    started = time.perf_counter()
    torch.manual_seed(0)
    with quiet():
        components = build_random_components("cpu", dtype, family=args.model)
    from vsrup.models.loading import to_device

    # Placed as the library's loader places them (channels-last on the device): part of loading, not of the timed
    # run, in which the loader's own to_device then finds them in place.
    injected = {name: to_device(components[name], device) for name in ("unet", "controlnet", "vae") if name in components}
    injected["text_encoder"] = components["text_encoder"]
    build_s = time.perf_counter() - started

    dtype_name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    sample = choose(args.model).settle(UpscaleConfig(sample=sample_options(args))).sample

    with tempfile.TemporaryDirectory(prefix="vsrup-bench-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "model"
        write_model_folder(folder, components)
        source = tmp / "input.mp4"
        make_video(source, args.frames, width, height)
        config = UpscaleConfig(scale=4, model=args.model, device=str(device), dtype=dtype_name, overwrite=True, sample=sample)

        def run(events: list):
            stages, record = Stages(device), defaultdict(list)
            with instrumented(stages, record, injected, folder, args.model), quiet():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                results = upscale([source], tmp / "output.mp4", config, emit=events.append)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                wall = time.perf_counter() - start
            failed = [r for r in results if r.status != "done"]
            if failed:
                raise SystemExit(f"the pipeline failed: {failed[0].error}")
            return wall, results[0].frames, stages, record, start

        for _ in range(warmup):
            run([])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss_reset = _reset_peak_rss()
        events: list = []
        wall, frames, stages, record, run_start = run(events)
        peak_rss = _status_bytes("VmHWM") if rss_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss

    # 2. FLOPs of the calls made, counted per distinct shape.
    counter = FlopCounter(args.model)
    unet_flops = sum(counter.unet_call(*call) for call in record["unet"])
    controlnet_flops = sum(counter.controlnet_call(*call) for call in record["controlnet"])
    vae_flops = sum((counter.tiny_call if args.model == "stream-diffvsr" else counter.vae_call)(*call) for call in record["vae"])
    text_flops = sum(record["text_encoder"]) * counter.text_call()
    matmul, conv = matmul_tflops(device, dtype), conv_tflops(device, dtype)
    peak = max(matmul, conv)

    seconds = {name: stages.seconds.get(name, 0.0) for name in STAGES if name != "idle"}
    seconds["idle"] = wall - sum(seconds.values())
    compute = sum(seconds[name] for name in COMPUTE)
    # Per-video fixed costs vs per-frame overhead: the steady window runs from the first UNet call to the last
    # VAE call; before it, probe, output set-up, model set-up, prompts, the first clip's decode and flow; after
    # it, the last clip's colour fix, cross-fade and the encoder's drain and close.
    steady_start, steady_end = stages.first_start["unet"], stages.last_end["vae"]
    steady_compute = seconds["unet"] + seconds["controlnet"] + seconds["vae"]
    total_flops = unet_flops + controlnet_flops + vae_flops + text_flops

    def rate(flops, s):
        return flops / s / 1e12 if s > 0 else None

    plan_lines = [e.message for e in events if e.kind == "info" and e.message.startswith("memory plan")]
    result = {
        "model": args.model,
        "s_per_frame": wall / frames,
        "wall_s": wall,
        "frames": frames,
        "stages": {k: round(v, 4) for k, v in seconds.items()},
        "stage_calls": dict(stages.calls),
        "flow_worker_busy_s": round(stages.flow_busy, 4),
        "overhead_fraction": 1 - compute / wall,
        "startup_s": steady_start - run_start,
        "drain_s": run_start + wall - steady_end,
        "steady_overhead_fraction": 1 - steady_compute / (steady_end - steady_start),
        "unet_tflops": rate(unet_flops, seconds["unet"]),
        "controlnet_tflops": rate(controlnet_flops, seconds["controlnet"]),
        "vae_tflops": rate(vae_flops, seconds["vae"]),
        "text_encoder_tflops": rate(text_flops, seconds["text_encoder"]),
        "unet_flops": unet_flops,
        "controlnet_flops": controlnet_flops,
        "vae_flops": vae_flops,
        "text_encoder_flops": text_flops,
        "flops_per_frame": total_flops / frames,
        "unet_calls": Counter(f"{call[0]}" for call in record["unet"]),
        "vae_calls": Counter(f"{call[0]}" for call in record["vae"]),
        "unet_mflop_per_latent_px_per_sample": unet_flops / sum(c[0][0] * c[0][2] * c[0][3] for c in record["unet"]) / 1e6 if record["unet"] else None,
        "matmul_tflops": matmul,
        "conv_tflops": conv,
        "floor_s_per_frame": total_flops / frames / (peak * 1e12),
        "peak_mem_bytes": peak_mem,
        "peak_rss_bytes": peak_rss,
        "settings": {
            "model": args.model, "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": dtype_name, "size": f"{height}x{width}", "frames": args.frames, "steps": sample.steps,
            "guidance": sample.guidance, "motion_guidance": sample.motion_guidance, "tile": sample.tile,
            "clip_len": sample.clip_len, "compile": sample.compile, "warmup": warmup, "threads": torch.get_num_threads(),
            "memory_plan": plan_lines,
        },
        "build_s": round(build_s, 1),
        "load_average": os.getloadavg()[0],
        "commit": _commit(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
    }
    if args.against:
        same = ["--device", str(device), "--dtype", dtype_name, "--size", args.size, "--frames", str(args.frames)]
        same += [*(["--threads", str(args.threads)] if args.threads else []), *(["--tile", str(args.tile)] if args.tile is not None else [])]
        with contextlib.redirect_stdout(sys.stderr):
            other = main(["--model", args.against, *same])
        result["against"] = {k: other[k] for k in ("model", "s_per_frame", "flops_per_frame", "floor_s_per_frame", "load_average")}
        result["against"]["steps"] = other["settings"]["steps"]
        result["against"]["guidance"] = other["settings"]["guidance"]
        result["s_per_frame_ratio"] = other["s_per_frame"] / result["s_per_frame"]  # how many times faster this model is
        result["flops_per_frame_ratio"] = other["flops_per_frame"] / result["flops_per_frame"]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: {result['s_per_frame']:.3f} s/frame ({frames} frames in {wall:.2f} s), overhead fraction {result['overhead_fraction']:.3f} "
              f"({result['startup_s']:.2f} s startup, steady {result['steady_overhead_fraction']:.3f}, {result['drain_s']:.2f} s drain)")
        for name, s in seconds.items():
            print(f"  {name:<13}{s:9.3f} s  {100 * s / wall:5.1f}%")
        print(f"  flow worker busy {stages.flow_busy:.3f} s (off the main thread)")
        for name, flops, s in (("UNet", unet_flops, seconds["unet"]), ("CNet", controlnet_flops, seconds["controlnet"]),
                               ("VAE", vae_flops, seconds["vae"]), ("text", text_flops, seconds["text_encoder"])):
            print(f"  {name:<5}{flops / 1e12:9.3f} TFLOP counted  {rate(flops, s) or 0:8.3f} TFLOP/s")
        print(f"  {total_flops / frames / 1e12:.3f} TFLOP per frame; matmul {matmul:.3f}, conv {conv:.3f} TFLOP/s "
              f"-> FLOP floor {result['floor_s_per_frame']:.3f} s/frame")
        print(f"  peak memory {peak_mem / 2**30:.2f} GiB, peak RSS {peak_rss / 2**30:.2f} GiB; {plan_lines}")
        if args.against:
            a = result["against"]
            print(f"  against {a['model']} ({a['steps']} steps, guidance {a['guidance']}): {a['s_per_frame']:.3f} s/frame, "
                  f"{a['flops_per_frame'] / 1e12:.3f} TFLOP/frame: this model is {result['s_per_frame_ratio']:.1f}x faster, "
                  f"{result['flops_per_frame_ratio']:.1f}x fewer FLOPs")
    return result


if __name__ == "__main__":
    main()
