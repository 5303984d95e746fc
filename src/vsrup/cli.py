"""The command line: Typer options -> a frozen UpscaleConfig -> one library call.

Importing this module must not import torch (the CLI answers --help and usage errors at once).
Exit codes: 0 success, 1 runtime error, 2 usage error, 65 bad input data, 74 output I/O error,
130 SIGINT, 143 SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from datetime import timedelta
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Literal, Optional, get_args

import typer
from typer.core import TyperArgument, TyperCommand

from vsrup import __version__
from vsrup.config import (
    AUDIO_MODES,
    COLOR_FIXES,
    DEINTERLACE_MODES,
    DTYPES,
    FLOW_METHODS,
    SCHEDULERS,
    EncodeConfig,
    JobConfig,
    SampleConfig,
    UpscaleConfig,
)
from vsrup.errors import EXIT_SIGINT, EXIT_USAGE, VsrupError
from vsrup.events import Event

EXIT_CODES_HELP = "Exit codes: 0 ok, 1 runtime error, 2 usage error, 65 bad input data, 74 output I/O error, 130 SIGINT, 143 SIGTERM."

app = typer.Typer(
    name="vsrup",
    help=f"Video super-resolution with flow-guided latent diffusion. {EXIT_CODES_HELP}",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # renders the option groups (rich_help_panel); help texts hold no [brackets]
)

E, S, J = EncodeConfig(), SampleConfig(), JobConfig()
D = UpscaleConfig()


# ---------------------------------------------------------------- parsing helpers


def parse_span(text: str | None, name: str, kind=int):
    """'A:B' -> (A, B); 'A:' -> (A, None) for frame spans."""
    if text is None:
        return None
    try:
        a, b = text.split(":")
        first = kind(a) if a else kind(0)
        second = kind(b) if b else None
    except ValueError:
        raise typer.BadParameter(f"expected START:END, got {text!r}", param_hint=name) from None
    if first < 0 or (second is not None and second <= first):
        raise typer.BadParameter(f"need 0 <= START < END, got {text!r}", param_hint=name)
    return first, second


def parse_tile(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise typer.BadParameter(f"expected 'auto' or a number of latent pixels, got {text!r}", param_hint="--tile")
    return int(text)


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated step indices, got {text!r}", param_hint="--propagation-steps") from None


# ---------------------------------------------------------------- rendering events

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits at


def one_line(text: str) -> str:
    """Line breaks escaped (a file name may hold them): every message stays one line."""
    return "".join(repr(c)[1:-1] if c in LINE_BREAKS else c for c in text)


class Rate:
    """Work per second over the last ``WINDOW`` seconds: progress comes in bursts (a clip's frames
    microseconds apart), so a rate between two events says nothing; work over time does."""

    WINDOW = 30.0  # seconds of history: several diffusion steps, and still quick to follow a change
    SETTLE = 1.0  # no rate from less than this much time

    def __init__(self, clock=None):
        self.clock = clock or time.monotonic
        self.samples: deque[tuple[float, float]] = deque()  # (time, work done)

    def add(self, work: float) -> None:
        now = self.clock()
        self.samples.append((now, work))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.WINDOW:
            self.samples.popleft()

    def per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, w0), (t1, w1) = self.samples[0], self.samples[-1]
        return (w1 - w0) / (t1 - t0) if t1 - t0 >= self.SETTLE and w1 > w0 else None

    def eta(self, work: float, work_total: float | None) -> float | None:
        """Seconds left for ``work_total``, at the current rate; None while unknown."""
        rate = self.per_second()
        return None if rate is None or work_total is None else max(0.0, work_total - work) / rate


def record(event: Event, job: str | None = None) -> dict:
    """One event as its --log-json object (docs/cli.md): every event of a kind has the same fields.

    ``input`` is the input the event is about: the running job's (``job``) for the model's own events.
    """
    out = {"event": event.kind, "time": round(time.time(), 3), "input": event.path or job, "message": event.message}
    if event.kind == "start":
        out.update(total=event.total)
    elif event.kind == "progress":
        out.update(done=event.done, total=event.total)
    elif event.kind == "stage":
        out.update(clip=None, clips=None, frames=None)
    elif event.kind == "done":
        out.update(frames=event.done)
    elif event.kind == "unit":
        out.update(worker=None, seconds=None)
    elif event.kind == "download":  # the hub names the file in ``message``
        out.update(message=f"downloading {event.message}", file=event.message, done_bytes=event.done, total_bytes=event.total)
    return {**out, **event.data}


class Reporter:
    """Renders library events: Rich progress on stderr, or JSON lines on stdout with --log-json."""

    def __init__(self, *, quiet: bool = False, log_json: bool = False):
        from rich.console import Console

        self.quiet, self.log_json = quiet, log_json
        self.lock = threading.RLock()
        self.err = Console(stderr=True)
        self.progress = None
        self.task = None
        self.task_name = None
        self.job: Event | None = None  # the running job's start event
        self.rate = Rate()
        self.stage = ""  # what the job is doing, for the bar
        self.clip_start = (0.0, 1)  # work done when the current clip began, and its frames
        self.stdout_open = True  # False once a --log-json reader has gone (`| head -1`)

    def __call__(self, event: Event) -> None:
        with self.lock:  # decoding and encoding threads report too
            self.render(event)

    def render(self, event: Event) -> None:
        if event.kind == "stage" and event.data.get("stage") == "sample" and not self.rate.samples:
            self.rate.add(0.0)  # the clock of the rate starts with the work, not with the model's loading
        if event.kind == "progress":
            self.rate.add(event.data.get("work") or float(event.done))
        elif event.kind == "start":
            self.job, self.rate, self.stage = event, Rate(), ""
        elif event.kind in ("done", "error") and self.job is not None and event.path == self.job.path:
            self.job = None  # the job is over: later events (the next input's checks) are not its
        if self.log_json:
            extra = {"fps": self.fps(event), "eta_seconds": self.eta(event)} if event.kind == "progress" else {}
            self.json_line({**record(event, self.job.path if self.job else None), **extra})
        if event.kind == "error":  # on stderr under --log-json too: a reader may have gone, a person may look
            self.stop()
            self.err.print(f"vsrup: error: {one_line(event.message)}", markup=False, highlight=False, soft_wrap=True)
        elif self.log_json:
            return
        elif event.kind == "warning" and not self.quiet:
            self.line(f"vsrup: warning: {event.path}: {event.message}" if event.path else f"vsrup: warning: {event.message}")
        elif self.quiet:
            return
        elif event.kind in ("info", "skipped"):
            self.line(f"vsrup: {event.kind}: {event.path}: {event.message}" if event.path else f"vsrup: {event.message}")
        elif event.kind == "start" and self.err.is_terminal:  # a progress bar only where someone watches
            self.start(event)
        elif event.kind == "download" and self.err.is_terminal:
            self.download(event)
        elif event.kind == "unit" and event.data.get("state") in ("resumed", "retry"):
            self.line(f"vsrup: {event.path}: {event.message}")
        elif event.kind == "unit" and event.data.get("state") == "start":
            self.stage = event.message
            self.refresh(event)
        elif event.kind == "stage":
            self.stage = event.message
            if event.data.get("stage") == "sample":
                self.clip_start = (self.rate.samples[-1][1] if self.rate.samples else 0.0, event.data.get("frames") or 1)
            self.refresh(event)
        elif event.kind == "progress" and self.progress is not None:
            self.refresh(event)
        elif event.kind == "done":
            self.stop()
            self.line(f"vsrup: wrote {event.data.get('output', '')} ({event.done} frames in {event.data.get('seconds', 0):.1f} s)")

    def fps(self, event: Event) -> float | None:
        """Output frames per second: the work rate, less the frames that overlapping clips sample twice."""
        rate = self.rate.per_second()
        if rate is None:
            return None
        work_total = event.data.get("work_total")
        return round(rate * (event.total / work_total if event.total and work_total else 1.0), 3)

    def eta(self, event: Event) -> float | None:
        work_total = event.data.get("work_total") or event.total
        left = self.rate.eta(event.data.get("work", float(event.done)), work_total)
        return None if left is None else round(left, 1)

    def refresh(self, event: Event) -> None:
        """The bar: frames written (an estimated total with ~), the stage (with the clip's share done), fps, ETA."""
        if self.progress is None:
            return
        stage = self.stage
        if event.kind == "progress":
            estimated = "~" if event.data.get("total_estimated") else ""
            fps, eta = self.fps(event), self.eta(event)
            start, frames = self.clip_start
            if stage.startswith("sampling clip") and "work" in event.data:
                stage += f" {min(1.0, max(0.0, (event.data['work'] - start) / frames)):.0%}"
            self.progress.update(
                self.task, completed=event.done, total=event.total,
                count=f"{event.done}/{estimated}{event.total}" if event.total else f"{event.done}",
                fps="" if fps is None else f"{fps:.2f} fps",
                eta="-:--:--" if eta is None else str(timedelta(seconds=round(eta))),
            )
        self.progress.update(self.task, stage=stage)

    def line(self, text: str) -> None:
        (self.progress.console if self.progress else self.err).print(one_line(text), markup=False, highlight=False, soft_wrap=True)

    def json_line(self, record: dict) -> None:
        """One JSON object on stdout. A reader that closed it stops the reporting, not the job."""
        if not self.stdout_open:
            return
        try:
            print(json.dumps(record), flush=True)
        except BrokenPipeError:
            self.stdout_open = False
            # What is still buffered would fail again when Python flushes stdout at exit, with a message on stderr.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def start(self, event: Event) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.stop()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[stage]}"),
            TextColumn("{task.fields[fps]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.err,
            transient=True,
        )
        self.progress.start()
        estimated = "~" if event.data.get("total_estimated") else ""
        self.task = self.progress.add_task(
            Path(event.path).name, total=event.total, count=f"0/{estimated}{event.total}" if event.total else "0",
            stage=self.stage, fps="", eta="-:--:--",
        )
        self.task_name = event.path
        self.job = event

    def download(self, event: Event) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        if self.progress is None or self.task_name != event.message:
            self.stop()
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=self.err, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(event.message.rsplit("/", 1)[-1], total=event.total)
            self.task_name = event.message
        self.progress.update(self.task, completed=event.done, total=event.total)
        if event.total and event.done >= event.total:
            self.stop()
            if self.job is not None:  # back to the job's bar (the model loads after the job starts)
                self.start(self.job)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def summary(self, results, seconds: float) -> None:
        """The batch's counts; not with --quiet (errors only: each failure already had its error line)."""
        if len(results) < 2 or (self.quiet and not self.log_json):
            return
        from vsrup.pipeline import exit_code

        counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
        text = f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
        failed = [r for r in results if r.status == "failed"]
        if self.log_json:
            self.json_line({
                "event": "summary", "time": round(time.time(), 3), "input": None, "message": text, **counts,
                "failed_inputs": [{"input": str(r.job.source), "exit_code": r.error.exit_code} for r in failed],
                "seconds": round(seconds, 3), "exit_code": exit_code(results),
            })
            return
        self.err.print(f"vsrup: {text}", markup=False, highlight=False)
        for r in failed:
            self.err.print(one_line(f"  failed: {r.job.source}: exit {r.error.exit_code}"), markup=False, highlight=False)


# ---------------------------------------------------------------- commands

IO, MODEL, TEMPORAL, TILES, ENC, BATCH, JOBS = (
    "Input and output", "Model and sampling", "Temporal consistency", "Tiles and memory", "Encoding", "Batch and logging",
    "Resumable jobs (docs/jobs.md)",
)

# Accepted ranges (inclusive) of the numeric options; an option left unset (None: auto, or the model's default) is not checked.
RANGES = {
    "scale": (1.0, 8.0),  # beyond the model's own x4 the rest is Lanczos: 8 keeps that honest, and memory in reach
    "width": (16, 16384), "height": (16, 16384),  # 16384: H.264 level 6.2's widest, and FFmpeg's encoders' limit
    "crf": (0, 63),  # x264 and x265 take 0..51, libvpx-vp9 and SVT-AV1 0..63; media/encode.py checks each encoder's own
    "threads": (0, 256),  # encoder threads; 0 lets FFmpeg choose
    "steps": (1, 1000),  # the schedulers' 1000 training timesteps: more cannot be spaced
    "guidance": (0.0, 30.0),  # classifier-free guidance; SD pipelines use 4..10: a generous bound, not a measurement
    "noise_level": (0, 350),  # the x4 upscaler's max_noise_level
    "seed": (0, 2**63 - 1),  # frame i uses seed + i, which must stay a 64-bit seed for any frame count
    "batch": (1, 256),  # tiles per UNet call; auto stops at memory.MAX_BATCH (16), this leaves room to measure more
    "tile_overlap": (0, 127),  # below the tile (checked below): 127 is the most the largest auto tile (128) can take
    "motion_guidance": (0.0, 1.0),  # a fraction
    "clip_len": (1, 64),  # frames held and sampled together: 8x Upscale-A-Video's window, host memory grows with it
    "clip_overlap": (0, 63),  # below --clip-len (checked below)
    "scene_threshold": (0.0, 1.0),  # clips.cut_score is a fraction
    "unit_len": (1, 10**7),  # frames per job unit; a unit is cut at the next clip start past this
    "workers": (1, 4096),  # Ray actors
}
TILE_MIN = 16  # latent px: the UNet halves a tile three times, so 16 leaves it 2 px at its coarsest level
TILE_MULTIPLE = 8  # and a multiple of 8 halves evenly (memory.smaller_tile keeps to it too)


def ranged(name: str, *decls: str, **option):
    """typer.Option with the RANGES bounds shown in --help (check_ranges also refuses NaN, which compares false)."""
    low, high = RANGES[name]
    return typer.Option(*decls, min=low, max=high, **option)


def choices(kind) -> str:
    """A Literal's values as a metavar: copy|aac|none."""
    return "|".join(get_args(kind))


Audio = Literal["copy", "aac", "none"]
Deinterlace = Literal["auto", "on", "off"]
Dtype = Literal["auto", "fp32", "fp16", "bf16"]
Scheduler = Literal["ddim", "ddpm", "dpm++ 2m", "unipc", "euler"]
ColorFix = Literal["wavelet", "adain", "none"]
FlowMethod = Literal["dis", "raft"]
assert {get_args(t) for t in (Audio, Deinterlace, Dtype, Scheduler, FlowMethod)} == {AUDIO_MODES, DEINTERLACE_MODES, DTYPES, SCHEDULERS, FLOW_METHODS}
assert set(get_args(ColorFix)) == set(COLOR_FIXES)

ScaleOpt = Annotated[Optional[float], ranged("scale", "--scale", "-s", metavar="X", help="Output size as a factor of the input's, e.g. 2 or 3.5; sizes from a fraction are rounded to even numbers. Made from the model's own x4, resized with antialiased Lanczos. Default 4.", rich_help_panel=IO)]
WidthOpt = Annotated[Optional[int], ranged("width", metavar="PX", help="Output width in pixels; the height follows the aspect ratio (rounded to even) unless --height is given too.", rich_help_panel=IO)]
HeightOpt = Annotated[Optional[int], ranged("height", metavar="PX", help="Output height in pixels; the width follows the aspect ratio (rounded to even) unless --width is given too.", rich_help_panel=IO)]
ModelOpt = Annotated[str, typer.Option("--model", "-m", metavar="NAME", help="sd-x4 (Stability AI's x4 upscaler), stablevsr (StableVSR, ECCV 2024), stream-diffvsr (fast mode), mgld-vsr (MGLD-VSR, ECCV 2024) and upscale-a-video (Upscale-A-Video, CVPR 2024), both S-Lab licence: non-commercial use only; lanczos (non-neural preview), a Hub repo id (owner/name) or a local diffusers folder (or Upscale-A-Video's official folder).", rich_help_panel=MODEL)]
RevisionOpt = Annotated[Optional[str], typer.Option(metavar="REV", help="Hub revision to pin (branch, tag or commit).", rich_help_panel=MODEL)]
DeviceOpt = Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=MODEL)]
DtypeOpt = Annotated[Dtype, typer.Option(metavar=choices(Dtype), help="auto: bf16 on CUDA where supported, else fp16; fp32 on CPU.", rich_help_panel=MODEL)]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the networks: the first clip waits while they compile (minutes); needs a C++ compiler on the CPU.", rich_help_panel=MODEL)]
StepsOpt = Annotated[Optional[int], ranged("steps", metavar="N", help="Denoising steps (sd-x4: 30, stablevsr: 50, stream-diffvsr: 4, mgld-vsr: 50).", rich_help_panel=MODEL)]
GuidanceOpt = Annotated[Optional[float], ranged("guidance", metavar="X", help="Classifier-free guidance scale; <= 1 disables it and halves the cost (sd-x4: 6.0; not for stablevsr or stream-diffvsr).", rich_help_panel=MODEL)]
PromptOpt = Annotated[Optional[str], typer.Option(metavar="TEXT", help="Text prompt (sd-x4: \"best quality, extremely detailed\"; not for stablevsr or stream-diffvsr).", rich_help_panel=MODEL)]
NegOpt = Annotated[Optional[str], typer.Option(metavar="TEXT", help="Negative prompt, used when --guidance > 1 (sd-x4: \"blur, worst quality\").", rich_help_panel=MODEL)]
NoiseOpt = Annotated[Optional[int], ranged("noise_level", metavar="N", help="Noise augmentation of the low-resolution input (sd-x4: 20, upscale-a-video: 120; not for stablevsr or stream-diffvsr).", rich_help_panel=MODEL)]
SchedOpt = Annotated[Optional[Scheduler], typer.Option(metavar=choices(Scheduler), help="Scheduler (sd-x4: ddim; stablevsr: ddpm only; stream-diffvsr: ddim only).", rich_help_panel=MODEL)]
SeedOpt = Annotated[int, typer.Option(metavar="N", help="Seed, 0..2^63-1; frame i uses seed + i.", rich_help_panel=MODEL)]
ColorOpt = Annotated[ColorFix, typer.Option(metavar=choices(ColorFix), help="Match colours to the input: wavelet (low frequencies from the input), adain (mean and std), none.", rich_help_panel=MODEL)]
FlowOpt = Annotated[FlowMethod, typer.Option(metavar=choices(FlowMethod), help="Optical flow: dis (OpenCV) or raft (needs torchvision).", rich_help_panel=TEMPORAL)]
MotionOpt = Annotated[Optional[float], ranged("motion_guidance", metavar="X", help="Motion guidance: the fraction of frame-to-frame flicker removed per tenth of the schedule; 0 disables (sd-x4: 0.75; not for stablevsr or stream-diffvsr).", rich_help_panel=TEMPORAL)]
WindowOpt = Annotated[Optional[str], typer.Option(metavar="START:END", help="Where motion guidance acts, as fractions of the schedule (sd-x4: 0.0:0.9).", rich_help_panel=TEMPORAL)]
PropOpt = Annotated[Optional[str], typer.Option(metavar="I,J,...", help="Loop indices where latents are propagated along the flow, e.g. 24,26,28 (sd-x4: none).", rich_help_panel=TEMPORAL)]
ClipLenOpt = Annotated[int, ranged("clip_len", metavar="N", help="Frames sampled together.", rich_help_panel=TEMPORAL)]
ClipOverlapOpt = Annotated[int, ranged("clip_overlap", metavar="N", help="Frames shared and cross-faded by neighbouring clips, below --clip-len.", rich_help_panel=TEMPORAL)]
SceneOpt = Annotated[float, ranged("scene_threshold", metavar="X", help="Scene-cut threshold (how much layout and colours change between frames); 0 disables.", rich_help_panel=TEMPORAL)]
TileOpt = Annotated[str, typer.Option(metavar="auto|0|N", help="Latent tile size: auto (from free memory), 0 (no tiling) or N latent pixels (a multiple of 8, at least 16).", rich_help_panel=TILES)]
OverlapOpt = Annotated[Optional[int], ranged("tile_overlap", metavar="N", help="Overlap of neighbouring tiles in latent pixels, below the tile (default 32, a quarter of a smaller tile).", rich_help_panel=TILES)]
BatchOpt = Annotated[Optional[int], ranged("batch", metavar="N", help="Tiles per UNet call (default: from free memory).", rich_help_panel=TILES)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.", rich_help_panel=BATCH)]
SkipOpt = Annotated[bool, typer.Option("--skip-existing", help="Leave existing outputs alone (resume a batch).", rich_help_panel=BATCH)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.", rich_help_panel=BATCH)]
JsonLogOpt = Annotated[bool, typer.Option("--log-json", help="One JSON object per line on stdout (schema: docs/cli.md).", rich_help_panel=BATCH)]
CodecOpt = Annotated[Optional[str], typer.Option(metavar="NAME", help="Video encoder: libx264 (default for 8-bit), libx265 (default above 8-bit), libvpx-vp9 (default for WebM), libsvtav1, or any FFmpeg video encoder.", rich_help_panel=ENC)]
CrfOpt = Annotated[Optional[int], ranged("crf", metavar="N", help="Constant rate factor within the encoder's range: x264/x265 0..51, VP9 and SVT-AV1 0..63 (encoder default when unset; VP9: 31).", rich_help_panel=ENC)]
PresetOpt = Annotated[Optional[str], typer.Option(metavar="NAME", help="Speed preset: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo (x264, x265; VP9 maps them onto cpu-used, default fast) or 0..13 (SVT-AV1).", rich_help_panel=ENC)]
PixFmtOpt = Annotated[Optional[str], typer.Option(metavar="FMT", help="Output pixel format, e.g. yuv420p, yuv420p10le, yuv444p (default: the input's depth and chroma).", rich_help_panel=ENC)]
EncoderOpt = Annotated[Optional[list[str]], typer.Option("--encoder-opt", "-e", metavar="KEY=VALUE", help="An FFmpeg option of the encoder, repeatable: tune=film, profile=high, level=4.1, maxrate=8M, bufsize=16M, x264-params=..., applied last.", rich_help_panel=ENC)]
ThreadsOpt = Annotated[int, ranged("threads", metavar="N", help="Encoder threads; 0 lets FFmpeg choose. Pin it for bit-identical re-runs across machines.", rich_help_panel=ENC)]
NoFaststartOpt = Annotated[bool, typer.Option("--no-faststart", help="mp4/mov: leave the index at the end (by default it goes to the front, so web players start at once).", rich_help_panel=ENC)]
AudioOpt = Annotated[Audio, typer.Option(metavar=choices(Audio), help="copy (re-encoded, with a warning, where the container refuses), aac or none.", rich_help_panel=ENC)]
ResumableOpt = Annotated[bool, typer.Option("--resumable", help="Run as a resumable job: units are kept losslessly in OUTPUT.vsrup-work/ and the same command continues after a crash; the output is encoded once at the end.", rich_help_panel=JOBS)]
WorkDirOpt = Annotated[Optional[Path], typer.Option(metavar="DIR", readable=False, help="The job's work directory (implies --resumable); shared storage for --shard and --ray. A batch gets a folder per output in it.", rich_help_panel=JOBS)]
UnitLenOpt = Annotated[int, ranged("unit_len", metavar="N", help="Frames per unit at least (cut at the next clip start): the most a crash loses per worker.", rich_help_panel=JOBS)]
ShardOpt = Annotated[Optional[str], typer.Option(metavar="I/N", help="Render only shard I of N (0-based; units I, I+N, ...) into the shared --work-dir, e.g. from a SLURM job array; then run `vsrup assemble DIR`.", rich_help_panel=JOBS)]
RayOpt = Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Render the units on Ray actors, one GPU each: auto (the running cluster), ray://HOST:PORT, or local (start Ray here). Needs pip install 'vsrup\\[ray]'.", rich_help_panel=JOBS)]
WorkersOpt = Annotated[Optional[int], ranged("workers", metavar="N", help="Ray actors (default: one per GPU of the cluster, or one); implies --ray local when --ray is not given.", rich_help_panel=JOBS)]
RestartOpt = Annotated[bool, typer.Option("--restart", help="Discard the job's work directory and start over.", rich_help_panel=JOBS)]
AcceptEnvOpt = Annotated[bool, typer.Option("--accept-env-change", help="Resume although the software or device changed (recorded; the output may then differ from an uninterrupted run's).", rich_help_panel=JOBS)]
KeepWorkOpt = Annotated[bool, typer.Option("--keep-work", help="Keep the work directory after the output is written.", rich_help_panel=JOBS)]
FormatOpt = Annotated[Optional[str], typer.Option("--format", metavar="EXT", help="Output container for a directory of outputs, e.g. mkv (default: each input's).", rich_help_panel=IO)]
FramesOpt = Annotated[Optional[str], typer.Option(metavar="START:END", help="Only these frames (0-based, END exclusive).", rich_help_panel=IO)]
StartOpt = Annotated[Optional[str], typer.Option(metavar="TIME", help="Start at this time, in seconds or HH:MM:SS.ms (ffmpeg -ss).", rich_help_panel=IO)]
EndOpt = Annotated[Optional[str], typer.Option(metavar="TIME", help="Stop before this time (ffmpeg -to).", rich_help_panel=IO)]
DurationOpt = Annotated[Optional[str], typer.Option(metavar="TIME", help="Stop after this long (ffmpeg -t).", rich_help_panel=IO)]
DeinterlaceOpt = Annotated[Deinterlace, typer.Option(metavar=choices(Deinterlace), help="auto: when the decoder flags interlaced frames.", rich_help_panel=IO)]
PartialOpt = Annotated[bool, typer.Option("--allow-partial", help="Corrupt or truncated input: write what decodes, with a warning, instead of failing.", rich_help_panel=IO)]


class Command(TyperCommand):
    """Usage lines as people write them (INPUT... OUTPUT), without type labels beside the arguments."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.get_params(ctx) else []
        return pieces + [p.metavar or p.name.upper() for p in self.get_params(ctx) if isinstance(p, TyperArgument)]

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if isinstance(p, TyperArgument):
                p.display_type_rich = lambda ctx: None
        return params


def check_ranges(o: dict) -> None:
    """Every numeric option within its finite range (NaN fails every comparison, so it never passes)."""
    for name, (low, high) in RANGES.items():
        value = o.get(name)
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(f"{value} is outside {low}..{high}", param_hint="--" + name.replace("_", "-"))
    tile = parse_tile(o["tile"])
    if tile and (tile < TILE_MIN or tile % TILE_MULTIPLE):
        raise typer.BadParameter(f"{tile} latent px: need 0 (untiled) or a multiple of {TILE_MULTIPLE}, at least {TILE_MIN}", param_hint="--tile")
    if tile and o["tile_overlap"] is not None and o["tile_overlap"] >= tile:
        raise typer.BadParameter(f"{o['tile_overlap']} is not below the tile ({tile})", param_hint="--tile-overlap")
    if o["clip_overlap"] >= o["clip_len"]:
        raise typer.BadParameter(f"{o['clip_overlap']} is not below --clip-len ({o['clip_len']})", param_hint="--clip-overlap")
    steps = parse_steps(o["propagation_steps"]) if o["propagation_steps"] is not None else ()
    if any(i < 0 or (o["steps"] is not None and i >= o["steps"]) for i in steps):
        raise typer.BadParameter(f"loop indices are 0..steps-1, got {o['propagation_steps']}", param_hint="--propagation-steps")


def job_config(o: dict) -> UpscaleConfig:
    """Check the options of `upscale` or `frames` (``o``: the command's parameters) and freeze them."""
    check_ranges(o)
    if o["scale"] is not None and (o["width"] or o["height"]):
        raise typer.BadParameter("give a scale or a size (--width/--height), not both", param_hint="--scale")
    if o["skip_existing"] and o["overwrite"]:
        raise typer.BadParameter("--overwrite and --skip-existing contradict each other", param_hint="--skip-existing")
    window = parse_span(o["guidance_window"], "--guidance-window", float)
    if window is not None and (window[1] is None or not 0 <= window[0] < window[1] <= 1):
        raise typer.BadParameter("expected fractions 0 <= START < END <= 1", param_hint="--guidance-window")
    steps = parse_steps(o["propagation_steps"]) if o["propagation_steps"] is not None else None
    sample = {**o, "tile": parse_tile(o["tile"]), "propagation_steps": steps, "guidance_window": window}
    if o["tile_overlap"] is None:  # the config's default, which the memory plan shrinks to a quarter of a smaller tile
        del sample["tile_overlap"]
    encode = {f.name: o[f.name] for f in fields(EncodeConfig) if f.name in o}
    encode["options"] = tuple(parse_encoder_opt(text) for text in o.get("encoder_opt") or ())
    if "no_faststart" in o:
        encode["faststart"] = not o["no_faststart"]
    top = {f.name: o[f.name] for f in fields(UpscaleConfig) if f.name in o and f.name not in ("frames", "times", "encode", "sample", "scale", "job")}
    if o["scale"] is not None:
        top["scale"] = o["scale"]
    return UpscaleConfig(
        **top,
        frames=parse_span(o.get("frames"), "--frames"),
        times=time_span(o),
        encode=EncodeConfig(**encode),
        sample=SampleConfig(**{f.name: sample[f.name] for f in fields(SampleConfig) if f.name in sample}),
        job=job_options(o),
    )


def job_options(o: dict) -> JobConfig | None:
    """The resumable-job options, or None for a plain streaming run (none of them given)."""
    wanted = o.get("resumable") or o.get("work_dir") or o.get("shard") or o.get("ray") or o.get("workers")
    if not wanted:
        for name in ("restart", "accept_env_change", "keep_work"):
            if o.get(name):
                raise typer.BadParameter("applies to resumable jobs: add --resumable (or --work-dir, --shard, --ray)", param_hint="--" + name.replace("_", "-"))
        return None
    shard = None
    if o.get("shard"):
        i, sep, n = o["shard"].partition("/")
        if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
            raise typer.BadParameter(f"expected I/N with 0 <= I < N, got {o['shard']!r}", param_hint="--shard")
        shard = (int(i), int(n))
        if o.get("ray") or o.get("workers"):
            raise typer.BadParameter("a shard runs its units here; give --shard or --ray/--workers, not both", param_hint="--shard")
    ray = o.get("ray") or ("local" if o.get("workers") else None)
    return JobConfig(work_dir=str(o["work_dir"]) if o.get("work_dir") else None, unit_len=o.get("unit_len", J.unit_len), shard=shard,
                     ray=ray, workers=o.get("workers"), restart=o.get("restart", False), accept_env_change=o.get("accept_env_change", False),
                     keep_work=o.get("keep_work", False))


def parse_encoder_opt(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="--encoder-opt")
    return key.strip().lstrip("-"), value


def parse_time(text: str, name: str) -> float:
    """Seconds from '12.5', '1:02.5' or '01:02:03.250' (ffmpeg's time syntax, without units)."""
    try:
        parts = [float(p) for p in text.split(":")]
        if len(parts) > 3 or any(p < 0 or p != p or p == float("inf") for p in parts) or any(p >= 60 for p in parts[1:]):
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"expected seconds or [HH:]MM:SS[.ms], got {text!r}", param_hint=name) from None
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def time_span(o: dict) -> tuple[float, float | None] | None:
    """--start/--end/--duration as [start, end) seconds from the input's first frame; None when none is given."""
    start, end, length = (o.get(k) for k in ("start", "end", "duration"))
    if start is None and end is None and length is None:
        return None
    if o.get("frames") is not None:
        raise typer.BadParameter("give frames or times (--start/--end/--duration), not both", param_hint="--frames")
    if end is not None and length is not None:
        raise typer.BadParameter("give --end or --duration, not both", param_hint="--duration")
    first = parse_time(start, "--start") if start is not None else 0.0
    stop = parse_time(end, "--end") if end is not None else first + parse_time(length, "--duration") if length is not None else None
    if stop is not None and stop <= first:
        raise typer.BadParameter(f"the span {first:g} s to {stop:g} s is empty", param_hint="--end" if end is not None else "--duration")
    return first, stop


@app.command(cls=Command, epilog=EXIT_CODES_HELP)
def upscale(
    paths: Annotated[list[str], typer.Argument(metavar="INPUT... OUTPUT", show_default=False, help="Input video(s) or a directory, then the output file (one input) or directory (several, or a trailing /).")],
    scale: ScaleOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    frames: FramesOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    duration: DurationOpt = None,
    format: FormatOpt = None,
    deinterlace: DeinterlaceOpt = D.deinterlace,
    allow_partial: PartialOpt = False,
    model: ModelOpt = D.model,
    revision: RevisionOpt = None,
    device: DeviceOpt = D.device,
    dtype: DtypeOpt = D.dtype,
    compile: CompileOpt = False,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    prompt: PromptOpt = None,
    negative_prompt: NegOpt = None,
    noise_level: NoiseOpt = None,
    scheduler: SchedOpt = None,
    seed: SeedOpt = S.seed,
    color_fix: ColorOpt = S.color_fix,
    flow: FlowOpt = S.flow,
    motion_guidance: MotionOpt = None,
    guidance_window: WindowOpt = None,
    propagation_steps: PropOpt = None,
    clip_len: ClipLenOpt = S.clip_len,
    clip_overlap: ClipOverlapOpt = S.clip_overlap,
    scene_threshold: SceneOpt = S.scene_threshold,
    tile: TileOpt = "auto",
    tile_overlap: OverlapOpt = None,
    batch: BatchOpt = None,
    codec: CodecOpt = None,
    crf: CrfOpt = None,
    preset: PresetOpt = None,
    pix_fmt: PixFmtOpt = None,
    encoder_opt: EncoderOpt = None,
    threads: ThreadsOpt = E.threads,
    no_faststart: NoFaststartOpt = not E.faststart,
    audio: AudioOpt = E.audio,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
    quiet: QuietOpt = False,
    log_json: JsonLogOpt = False,
    resumable: ResumableOpt = False,
    work_dir: WorkDirOpt = None,
    unit_len: UnitLenOpt = J.unit_len,
    shard: ShardOpt = None,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
    restart: RestartOpt = False,
    accept_env_change: AcceptEnvOpt = False,
    keep_work: KeepWorkOpt = False,
) -> None:
    """Upscale one video to one output file, or several videos (or a directory) into an output directory."""
    if len(paths) < 2:
        raise typer.BadParameter("give at least one INPUT and the OUTPUT", param_hint="INPUT... OUTPUT")
    config = job_config(locals())
    from vsrup.pipeline import exit_code, upscale as run

    report = Reporter(quiet=quiet, log_json=log_json)
    started = time.monotonic()
    with reporting(report):
        results = run([Path(p) for p in paths[:-1]], paths[-1], config, fmt=format, emit=report)  # the output as typed: a trailing / means a directory
    report.summary(results, time.monotonic() - started)
    raise typer.Exit(exit_code(results))


@app.command("frames", cls=Command, epilog=EXIT_CODES_HELP)
def frames_command(
    in_dir: Annotated[Path, typer.Argument(metavar="IN_DIR", readable=False, show_default=False, help="Folder of images (png, jpg, webp, tiff, bmp), natural-sorted, one sequence.")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", readable=False, show_default=False, help="Folder for the upscaled images (same names).")],
    scale: ScaleOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    model: ModelOpt = D.model,
    revision: RevisionOpt = None,
    device: DeviceOpt = D.device,
    dtype: DtypeOpt = D.dtype,
    compile: CompileOpt = False,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    prompt: PromptOpt = None,
    negative_prompt: NegOpt = None,
    noise_level: NoiseOpt = None,
    scheduler: SchedOpt = None,
    seed: SeedOpt = S.seed,
    color_fix: ColorOpt = S.color_fix,
    flow: FlowOpt = S.flow,
    motion_guidance: MotionOpt = None,
    guidance_window: WindowOpt = None,
    propagation_steps: PropOpt = None,
    clip_len: ClipLenOpt = S.clip_len,
    clip_overlap: ClipOverlapOpt = S.clip_overlap,
    scene_threshold: SceneOpt = S.scene_threshold,
    tile: TileOpt = "auto",
    tile_overlap: OverlapOpt = None,
    batch: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
    quiet: QuietOpt = False,
    log_json: JsonLogOpt = False,
) -> None:
    """Upscale an image folder as one sequence; 16-bit depth, alpha and file names are kept."""
    config = job_config(locals())
    from vsrup.pipeline import exit_code, upscale_folder

    report = Reporter(quiet=quiet, log_json=log_json)
    with reporting(report):
        result = upscale_folder(in_dir, out_dir, config, emit=report)
    raise typer.Exit(exit_code([result]))


@app.command(cls=Command, epilog=EXIT_CODES_HELP)
def probe(
    path: Annotated[Path, typer.Argument(metavar="INPUT", readable=False, show_default=False, help="A video file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show streams, codecs, frame rate (and whether it varies), rotation, colour tags, duration and frame count."""
    from vsrup.media.probe import probe as run_probe

    report = Reporter()
    with reporting(report):
        info = run_probe(path)
    data = info.to_dict()
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    video = data["video"]
    console.print(f"[bold]{path}[/bold]  {data.get('format_name')}  duration {data.get('duration')} s", highlight=False)
    main = Table("property", "value", title="main video", title_justify="left")
    for key, value in video.items():
        main.add_row(key, str(value))
    console.print(main)
    streams = Table("#", "kind", "codec", "language", "details", title="streams", title_justify="left")
    for s in data["streams"]:
        extra = {k: v for k, v in s.items() if k not in ("index", "kind", "codec", "language") and v not in (None, False, "")}
        streams.add_row(str(s["index"]), s["kind"], str(s.get("codec")), str(s.get("language") or ""), ", ".join(f"{k}={v}" for k, v in extra.items()))
    console.print(streams)


@app.command(cls=Command, epilog=EXIT_CODES_HELP)
def assemble(
    work_dir: Annotated[Path, typer.Argument(metavar="WORK_DIR", readable=False, show_default=False, help="The work directory of a job whose units are all done (by `upscale --shard I/N` runs).")],
    overwrite: OverwriteOpt = False,
    keep_work: KeepWorkOpt = False,
    quiet: QuietOpt = False,
    log_json: JsonLogOpt = False,
) -> None:
    """Encode a sharded job's output once from its units (nothing is rendered); lists the missing units, if any."""
    from vsrup.jobs.driver import assemble_work_dir

    report = Reporter(quiet=quiet, log_json=log_json)
    with reporting(report):
        frames = assemble_work_dir(work_dir, overwrite=overwrite, keep_work=keep_work, emit=report)
    report(Event("info", message=f"assembled {frames} frames from {work_dir}"))


@app.command(cls=Command, epilog=EXIT_CODES_HELP)
def download(
    model: Annotated[str, typer.Argument(metavar="[MODEL]", help="Model to prefetch into the Hugging Face cache: sd-x4, stablevsr, stream-diffvsr, upscale-a-video (non-commercial weights), or a repo id.")] = D.model,
    revision: RevisionOpt = None,
) -> None:
    """Fetch a model's weights now, for machines that will run offline (honours HF_HOME, HF_HUB_CACHE, HF_TOKEN)."""
    from vsrup.models.hub import download as fetch
    from vsrup.models.registry import repo_for

    report = Reporter()
    with reporting(report):
        repo, choice = repo_for(model)
        path = fetch(repo, choice.module.FILES, revision, report)
    print(path)


@app.command("eval", cls=Command, epilog=EXIT_CODES_HELP)
def eval_command(
    outputs: Annotated[list[Path], typer.Argument(metavar="OUTPUT...", readable=False, show_default=False, help="Upscaled video(s) of INPUT, the same size; several are measured along one flow, to compare runs or models.")],
    source: Annotated[Path, typer.Option("--input", "-i", readable=False, help="The video the outputs were made from: its flow and occlusion are the motion measured against.")],
    reference: Annotated[Optional[Path], typer.Option(readable=False, help="Ground truth at the outputs' size: adds PSNR, SSIM and tOF.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every value as JSON (schema vsrup-eval/1, docs/eval.md) instead of a table.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG of the per-frame profiles (needs matplotlib: pip install 'vsrup\\[plot]').")] = None,
    slice_at: Annotated[Optional[str], typer.Option("--slice", help="x=N (output column N) or y=N (row N) of every frame, side by side in time: the temporal profile VSR papers show flicker with; written to --slice-out.")] = None,
    slice_out: Annotated[Optional[Path], typer.Option(help="PNG file for --slice (the reference's profile first, then each output's).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing --plot and --slice-out files.")] = False,
    frames: Annotated[Optional[str], typer.Option(help="The outputs hold only input frames START:END (0-based, END exclusive), as `upscale --frames` writes them.")] = None,
    flow: FlowOpt = S.flow,
    scene_threshold: Annotated[float, typer.Option(help="Scene-cut threshold 0..1 (as for upscale): pairs across a cut are left out; 0 disables.")] = S.scene_threshold,
) -> None:
    """Measure the temporal consistency of upscaled videos (and their fidelity, with --reference).

    \b
    Flow f_t and occlusion of each input pair (t, t+1) come from vsrup's flow
    (--flow), upscaled to the output grid; M_t = 1 where frame t's pixel is
    visible in frame t+1 and stays inside it; W(x, f)(p) = x(p + f(p)), bilinear.
    warping error  E_t = sum_p M_t ||O_t - W(O_t+1, f_t)||^2 / sum_p M_t
                   (squared norm over RGB in [0, 1]: E_warp)
    flicker        F_t = sum_p M_t mean_c |D_t - W(D_t+1, f_t)| / sum_p M_t,
                   D_t = L(O_t - bicubic(I_t)), L the colour fix's low-pass
                   (5 dilated 3x3 binomial blurs, 1..16 px): low-frequency
                   brightness and colour pumping added to the input
    PSNR, SSIM     per frame against --reference, RGB; SSIM: Gaussian window
                   sigma 1.5 (11 taps), K1 0.01, K2 0.03, map mean over R, G, B
    tOF            mean_p ||flow(O_t, O_t+1) - flow(G_t, G_t+1)||, output px
    Video values are means over pairs (E, F, tOF) and frames (PSNR, SSIM);
    pairs across a scene cut are left out. Frame i of every file must be input
    frame i (START + i with --frames): the same frame count and timestamps (a
    constant shift allowed), else exit 65.
    """
    from vsrup.outputs import atomic_output

    if not 0.0 <= scene_threshold <= 1.0:  # NaN fails every comparison, so it never passes
        raise typer.BadParameter(f"{scene_threshold} is outside 0.0..1.0", param_hint="--scene-threshold")
    if (slice_at is None) != (slice_out is None):
        raise typer.BadParameter("--slice and --slice-out go together", param_hint="--slice-out" if slice_at else "--slice")
    videos = {p.resolve() for p in (*outputs, source, *([reference] if reference else []))}
    for target, name in ((plot, "--plot"), (slice_out, "--slice-out")):
        if target is not None and target.resolve() in videos:
            raise typer.BadParameter(f"{target} is one of the videos measured; vsrup never modifies its input", param_hint=name)
        if target is not None and target.exists() and not overwrite:
            raise typer.BadParameter(f"{target} exists; pass --overwrite to replace it", param_hint=name)
    from vsrup.evaluate import evaluate, parse_slice
    from vsrup.plots import profiles, require_matplotlib, slice_image, write_png

    at = parse_slice(slice_at) if slice_at is not None else None
    span = parse_span(frames, "--frames")
    if plot is not None:
        require_matplotlib()
    report = Reporter()
    with reporting(report):
        result = evaluate(outputs, source, reference, flow=flow, scene_threshold=scene_threshold, slice_at=at, frames=span, emit=report)
        document = result.to_dict()
        if plot is not None:
            with atomic_output(plot, overwrite=overwrite) as partial:
                profiles(document, partial)
        if at is not None:
            lines = ([result.reference_profile] if result.reference_profile else []) + [run.profile for run in result.runs]
            with atomic_output(slice_out, overwrite=overwrite) as partial:
                write_png(slice_image(lines, at[0]), partial)
    if as_json:
        print(json.dumps(document, indent=2))
        return
    print_evaluation(document)


def print_evaluation(document: dict) -> None:
    """The eval table on stdout: one row per output, the video values."""
    (w, h), (big_w, big_h) = document["input_size"], document["output_size"]
    cuts = len(document["cuts"])
    print(f"{document['input']}: {document['frames']} frames, {w}x{h} -> {big_w}x{big_h} (x{document['scale']}), "
          f"flow {document['flow']}, {cuts} scene cut{'' if cuts == 1 else 's'}")
    columns = [("warping_error", "E_warp", "{:.3e}"), ("flicker", "flicker", "{:.3e}")]
    if document["reference"] is not None:
        columns += [("psnr", "PSNR dB", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("tof", "tOF px", "{:.3f}")]
    names = [out["path"] for out in document["outputs"]]
    width = max(len("output"), *(len(n) for n in names))
    print("  ".join(["output".ljust(width)] + [label.rjust(10) for _, label, _ in columns]))
    for name, out in zip(names, document["outputs"]):
        cells = [("-" if out["summary"][key] is None else fmt.format(out["summary"][key])).rjust(10) for key, _, fmt in columns]
        print("  ".join([one_line(name).ljust(width)] + cells))


class reporting:
    """Turn library errors into one line on stderr and the documented exit code."""

    def __init__(self, report: Reporter):
        self.report = report

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        with self.report.lock:  # not while another thread draws the bar
            self.report.stop()
        if kind is None:
            return False
        if issubclass(kind, KeyboardInterrupt):
            self.report(Event("error", message="interrupted", data={"exit_code": EXIT_SIGINT}))
            raise typer.Exit(EXIT_SIGINT)
        if issubclass(kind, VsrupError):
            self.report(Event("error", message=str(error), data={"exit_code": error.exit_code}))
            raise typer.Exit(error.exit_code)
        return False


def version_callback(value: bool) -> None:
    if value:
        print(f"vsrup {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Video super-resolution with flow-guided latent diffusion."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line per error, documented exit codes, never a traceback for bad input."""
    import logging

    from vsrup.outputs import ignore_late_signals, install_signal_handlers

    install_signal_handlers()
    # FFmpeg's messages reach Python logging as "libav"; its last error is already in the exception text.
    if not os.environ.get("VSRUP_DEBUG"):
        logging.getLogger("libav").setLevel(logging.CRITICAL + 1)
    try:
        code = app(args=argv, prog_name="vsrup", standalone_mode=False)
    except typer.Abort:
        print("vsrup: error: interrupted", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    except VsrupError as e:
        print(f"vsrup: error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `vsrup`: the help, as a usage error
            print(e.format_message(), file=sys.stderr)
            sys.exit(EXIT_USAGE)
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # a usage error from (Typer's) click
            message = f"{one_line(e.format_message()).replace('Value error, ', '')} (see --help)"  # Typer's validation says "Value error, "
            if "--log-json" in (sys.argv[1:] if argv is None else argv):  # scripts read every error from stdout
                print(json.dumps({"event": "error", "time": round(time.time(), 3), "input": None, "message": message, "exit_code": e.exit_code}))
            print(f"vsrup: error: {message}", file=sys.stderr)
            sys.exit(e.exit_code)
        if os.environ.get("VSRUP_DEBUG"):  # a bug: still one line, unless asked for the traceback
            raise
        print(f"vsrup: error: internal error: {type(e).__name__}: {one_line(str(e))} (VSRUP_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)
    finally:
        ignore_late_signals()
    sys.exit(code or 0)
