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
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from vsrup import __version__
from vsrup.config import (
    AUDIO_MODES,
    COLOR_FIXES,
    DEINTERLACE_MODES,
    DTYPES,
    FLOW_METHODS,
    SCALES,
    SCHEDULERS,
    EncodeConfig,
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
    rich_markup_mode=None,
)

E, S = EncodeConfig(), SampleConfig()
D = UpscaleConfig()
MODEL = "Model (see `--model`)"
ENC = "Encoding"
SAMPLER = "Diffusion sampler"
TEMPORAL = "Temporal consistency"
OUT = "Output and batch behaviour"


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


def choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=name)
    return value


# ---------------------------------------------------------------- rendering events

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits at


def one_line(text: str) -> str:
    """Line breaks escaped (a file name may hold them): every message stays one line."""
    return "".join(repr(c)[1:-1] if c in LINE_BREAKS else c for c in text)


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
        self.stdout_open = True  # False once a --log-json reader has gone (`| head -1`)

    def __call__(self, event: Event) -> None:
        with self.lock:  # decoding and encoding threads report too
            self.render(event)

    def render(self, event: Event) -> None:
        if self.log_json:
            record = {"event": event.kind, "path": event.path, "message": event.message, "done": event.done, "total": event.total}
            self.json_line({**record, **event.data, "time": round(time.time(), 3)})
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
        elif event.kind == "progress" and self.progress is not None:
            fps = event.done / max(time.monotonic() - self.started, 1e-9)
            self.progress.update(self.task, completed=event.done, total=event.total, fps=f"{fps:.2f} fps")
        elif event.kind == "done":
            self.stop()
            self.job = None
            self.line(f"vsrup: wrote {event.message} ({event.done} frames in {event.data.get('seconds', 0):.1f} s)")

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
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.stop()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(Path(event.path).name, total=event.total, fps="")
        self.task_name = event.path
        self.job = event
        self.started = time.monotonic()

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

    def summary(self, results) -> None:
        """The batch's counts; not with --quiet (errors only: each failure already had its error line)."""
        if len(results) < 2 or (self.quiet and not self.log_json):
            return
        counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
        if self.log_json:
            self.json_line({"event": "summary", **counts, "failed_inputs": [str(r.job.source) for r in results if r.status == "failed"]})
            return
        self.err.print(f"vsrup: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed", markup=False, highlight=False)
        for r in results:
            if r.status == "failed":
                self.err.print(one_line(f"  failed: {r.job.source}: exit {r.error.exit_code}"), markup=False, highlight=False)


# ---------------------------------------------------------------- commands


ScaleOpt = Annotated[int, typer.Option("--scale", "-s", help="Upscaling factor: 2, 3 or 4. The output is exactly scale x input size.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="sd-x4 (default, stabilityai/stable-diffusion-x4-upscaler), stablevsr (claudiom4sir/StableVSR), a Hub repo id, a local diffusers folder, or lanczos (non-neural preview).", rich_help_panel=MODEL)]
RevisionOpt = Annotated[Optional[str], typer.Option(help="Hub revision to pin (branch, tag or commit).", rich_help_panel=MODEL)]
DeviceOpt = Annotated[str, typer.Option(help="auto|cpu|cuda|cuda:N|mps.", rich_help_panel=MODEL)]
DtypeOpt = Annotated[str, typer.Option(help="auto|fp32|fp16|bf16 (auto: bf16 on CUDA where supported, else fp16; fp32 on CPU).", rich_help_panel=MODEL)]
StepsOpt = Annotated[Optional[int], typer.Option(help="Denoising steps, 1..1000 [default: the model's; sd-x4 30, stablevsr 50].", rich_help_panel=SAMPLER)]
GuidanceOpt = Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale, 0..30; <= 1 disables it and halves the cost [sd-x4: 6.0; not for stablevsr].", rich_help_panel=SAMPLER)]
PromptOpt = Annotated[Optional[str], typer.Option(help="Text prompt [sd-x4: \"best quality, extremely detailed\"; not for stablevsr].", rich_help_panel=SAMPLER)]
NegOpt = Annotated[Optional[str], typer.Option(help="Negative prompt, used when --guidance > 1 [sd-x4: \"blur, worst quality\"].", rich_help_panel=SAMPLER)]
NoiseOpt = Annotated[Optional[int], typer.Option(help="Noise augmentation of the low-resolution input, 0..350 [sd-x4: 20; not for stablevsr].", rich_help_panel=SAMPLER)]
SchedOpt = Annotated[Optional[str], typer.Option(help=f"Scheduler: {', '.join(SCHEDULERS)} [sd-x4: ddim; stablevsr: ddpm only].", rich_help_panel=SAMPLER)]
SeedOpt = Annotated[int, typer.Option(help="Seed, 0..2^63-1; frame i uses seed + i.", rich_help_panel=SAMPLER)]
TileOpt = Annotated[str, typer.Option(help="Latent tile size: auto (from free memory), 0 (no tiling) or a size in latent pixels (a multiple of 8, at least 16).", rich_help_panel=SAMPLER)]
OverlapOpt = Annotated[Optional[int], typer.Option(help="Overlap of neighbouring tiles, latent pixels, 0..127 and below the tile [default: 32, a quarter of a smaller tile].", rich_help_panel=SAMPLER)]
BatchOpt = Annotated[Optional[int], typer.Option(help="Tiles per UNet call, 1..256 (default: from free memory).", rich_help_panel=SAMPLER)]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the networks: the first clip waits while they compile (minutes); needs a C++ compiler on the CPU.", rich_help_panel=MODEL)]
ColorOpt = Annotated[str, typer.Option(help=f"Match colours to the input: {', '.join(COLOR_FIXES)}.", rich_help_panel=TEMPORAL)]
FlowOpt = Annotated[str, typer.Option(help="Optical flow: dis (OpenCV) or raft (needs torchvision).", rich_help_panel=TEMPORAL)]
MotionOpt = Annotated[Optional[float], typer.Option(help="Motion guidance strength 0..1: the fraction of frame-to-frame flicker removed per tenth of the schedule (per step at --steps 10) between frames that see both neighbours; 0 disables; the default halves the warping error [sd-x4: 0.75; not for stablevsr].", rich_help_panel=TEMPORAL)]
WindowOpt = Annotated[Optional[str], typer.Option(help="Steps where motion guidance acts, as fractions of the schedule START:END [sd-x4: 0.0:0.9].", rich_help_panel=TEMPORAL)]
PropOpt = Annotated[Optional[str], typer.Option(help="Loop indices where latents are propagated along the flow, e.g. 24,26,28 [sd-x4: none].", rich_help_panel=TEMPORAL)]
ClipLenOpt = Annotated[int, typer.Option(help="Frames sampled together, 1..64.", rich_help_panel=TEMPORAL)]
ClipOverlapOpt = Annotated[int, typer.Option(help="Frames shared and cross-faded by neighbouring clips, below --clip-len.", rich_help_panel=TEMPORAL)]
SceneOpt = Annotated[float, typer.Option(help="Scene-cut threshold 0..1 (how much both layout and colours change between frames); 0 disables.", rich_help_panel=TEMPORAL)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.", rich_help_panel=OUT)]
SkipOpt = Annotated[bool, typer.Option("--skip-existing", help="Leave existing outputs alone (resume a batch).", rich_help_panel=OUT)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.", rich_help_panel=OUT)]
JsonLogOpt = Annotated[bool, typer.Option("--log-json", help="One JSON object per line on stdout: start, progress, info, warning, memory, done, skipped, error, summary.", rich_help_panel=OUT)]


# Accepted ranges (inclusive) of the numeric options; an option left unset (None: auto, or the model's default) is not checked.
RANGES = {
    "crf": (0, 63),  # x264 and x265 take 0..51, libvpx-vp9 and SVT-AV1 0..63; the encoder refuses the rest itself
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
}
TILE_MIN = 16  # latent px: the UNet halves a tile three times, so 16 leaves it 2 px at its coarsest level
TILE_MULTIPLE = 8  # and a multiple of 8 halves evenly (memory.smaller_tile keeps to it too)


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
    if o["scale"] not in SCALES:
        raise typer.BadParameter(f"{o['scale']} is not one of 2, 3, 4", param_hint="--scale")
    if o["skip_existing"] and o["overwrite"]:
        raise typer.BadParameter("--overwrite and --skip-existing contradict each other", param_hint="--skip-existing")
    for name, allowed in (("audio", AUDIO_MODES), ("deinterlace", DEINTERLACE_MODES), ("dtype", DTYPES),
                          ("scheduler", SCHEDULERS), ("color_fix", COLOR_FIXES), ("flow", FLOW_METHODS)):
        if o.get(name) is not None:
            choice(o[name], allowed, "--" + name.replace("_", "-"))
    window = parse_span(o["guidance_window"], "--guidance-window", float)
    if window is not None and (window[1] is None or not 0 <= window[0] < window[1] <= 1):
        raise typer.BadParameter("expected fractions 0 <= START < END <= 1", param_hint="--guidance-window")
    steps = parse_steps(o["propagation_steps"]) if o["propagation_steps"] is not None else None
    sample = {**o, "tile": parse_tile(o["tile"]), "propagation_steps": steps, "guidance_window": window}
    if o["tile_overlap"] is None:  # the config's default, which the memory plan shrinks to a quarter of a smaller tile
        del sample["tile_overlap"]
    encode = {f.name: o[f.name] for f in fields(EncodeConfig) if f.name in o}
    top = {f.name: o[f.name] for f in fields(UpscaleConfig) if f.name in o and f.name not in ("frames", "encode", "sample")}
    return UpscaleConfig(
        **top,
        frames=parse_span(o.get("frames"), "--frames"),
        encode=EncodeConfig(**encode),
        sample=SampleConfig(**{f.name: sample[f.name] for f in fields(SampleConfig) if f.name in sample}),
    )


@app.command(epilog=EXIT_CODES_HELP)
def upscale(
    paths: Annotated[list[str], typer.Argument(metavar="INPUT... OUTPUT", show_default=False, help="Input video(s) or a directory, then the output file (one input) or directory (several, or a trailing /).")],
    scale: ScaleOpt = D.scale,
    model: ModelOpt = D.model,
    revision: RevisionOpt = None,
    device: DeviceOpt = D.device,
    dtype: DtypeOpt = D.dtype,
    codec: Annotated[Optional[str], typer.Option(help="Video encoder (default libx264 for 8-bit input, libx265 for 10-bit).", rich_help_panel=ENC)] = None,
    crf: Annotated[Optional[int], typer.Option(help="Constant rate factor, 0..63 within the encoder's own range (encoder default when unset).", rich_help_panel=ENC)] = None,
    preset: Annotated[Optional[str], typer.Option(help="Encoder preset (encoder default when unset).", rich_help_panel=ENC)] = None,
    pix_fmt: Annotated[Optional[str], typer.Option(help="Output pixel format (default follows the input's bit depth).", rich_help_panel=ENC)] = None,
    audio: Annotated[str, typer.Option(help="copy (re-encode, with a warning, where the container refuses), aac or none.", rich_help_panel=ENC)] = E.audio,
    format: Annotated[Optional[str], typer.Option("--format", help="Output container extension for batch outputs, e.g. mkv (default: the input's).", rich_help_panel=ENC)] = None,
    frames: Annotated[Optional[str], typer.Option(help="Only frames START:END (0-based, END exclusive) of the input.", rich_help_panel=OUT)] = None,
    deinterlace: Annotated[str, typer.Option(help="auto (when the input is interlaced), on or off.", rich_help_panel=OUT)] = D.deinterlace,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Corrupt or truncated input: write what decodes, with a warning, instead of failing.", rich_help_panel=OUT)] = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
    quiet: QuietOpt = False,
    log_json: JsonLogOpt = False,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    prompt: PromptOpt = None,
    negative_prompt: NegOpt = None,
    noise_level: NoiseOpt = None,
    scheduler: SchedOpt = None,
    seed: SeedOpt = S.seed,
    tile: TileOpt = "auto",
    tile_overlap: OverlapOpt = None,
    batch: BatchOpt = None,
    compile: CompileOpt = False,
    color_fix: ColorOpt = S.color_fix,
    flow: FlowOpt = S.flow,
    motion_guidance: MotionOpt = None,
    guidance_window: WindowOpt = None,
    propagation_steps: PropOpt = None,
    clip_len: ClipLenOpt = S.clip_len,
    clip_overlap: ClipOverlapOpt = S.clip_overlap,
    scene_threshold: SceneOpt = S.scene_threshold,
) -> None:
    """Upscale one video to one output file, or several videos (or a directory) into an output directory."""
    if len(paths) < 2:
        raise typer.BadParameter("give at least one INPUT and the OUTPUT", param_hint="INPUT... OUTPUT")
    config = job_config(locals())
    from vsrup.pipeline import exit_code, upscale as run

    report = Reporter(quiet=quiet, log_json=log_json)
    with reporting(report):
        results = run([Path(p) for p in paths[:-1]], paths[-1], config, fmt=format, emit=report)  # the output as typed: a trailing / means a directory
    report.summary(results)
    raise typer.Exit(exit_code(results))


@app.command("frames", epilog=EXIT_CODES_HELP)
def frames_command(
    in_dir: Annotated[Path, typer.Argument(metavar="IN_DIR", readable=False, help="Folder of images (png, jpg, webp, tiff, bmp), natural-sorted, one sequence.")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", readable=False, help="Folder for the upscaled images (same names).")],
    scale: ScaleOpt = D.scale,
    model: ModelOpt = D.model,
    revision: RevisionOpt = None,
    device: DeviceOpt = D.device,
    dtype: DtypeOpt = D.dtype,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
    quiet: QuietOpt = False,
    log_json: JsonLogOpt = False,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    prompt: PromptOpt = None,
    negative_prompt: NegOpt = None,
    noise_level: NoiseOpt = None,
    scheduler: SchedOpt = None,
    seed: SeedOpt = S.seed,
    tile: TileOpt = "auto",
    tile_overlap: OverlapOpt = None,
    batch: BatchOpt = None,
    compile: CompileOpt = False,
    color_fix: ColorOpt = S.color_fix,
    flow: FlowOpt = S.flow,
    motion_guidance: MotionOpt = None,
    guidance_window: WindowOpt = None,
    propagation_steps: PropOpt = None,
    clip_len: ClipLenOpt = S.clip_len,
    clip_overlap: ClipOverlapOpt = S.clip_overlap,
    scene_threshold: SceneOpt = S.scene_threshold,
) -> None:
    """Upscale an image folder as one sequence; 16-bit depth, alpha and file names are kept."""
    config = job_config(locals())
    from vsrup.pipeline import exit_code, upscale_folder

    report = Reporter(quiet=quiet, log_json=log_json)
    with reporting(report):
        result = upscale_folder(in_dir, out_dir, config, emit=report)
    raise typer.Exit(exit_code([result]))


@app.command(epilog=EXIT_CODES_HELP)
def probe(
    path: Annotated[Path, typer.Argument(metavar="INPUT", readable=False, help="A video file.")],
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


@app.command(epilog=EXIT_CODES_HELP)
def download(
    model: Annotated[str, typer.Argument(help="Model to prefetch into the Hugging Face cache (sd-x4, stablevsr, or a repo id).")] = D.model,
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


class reporting:
    """Turn library errors into one line on stderr and the documented exit code."""

    def __init__(self, report: Reporter):
        self.report = report

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        self.report.stop()
        if kind is None:
            return False
        if issubclass(kind, KeyboardInterrupt):
            self.report(Event("error", message="interrupted"))
            raise typer.Exit(EXIT_SIGINT)
        if issubclass(kind, VsrupError):
            self.report(Event("error", message=str(error)))
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
            print(f"vsrup: error: {one_line(e.format_message())} (see --help)", file=sys.stderr)
            sys.exit(e.exit_code)
        if os.environ.get("VSRUP_DEBUG"):  # a bug: still one line, unless asked for the traceback
            raise
        print(f"vsrup: error: internal error: {type(e).__name__}: {one_line(str(e))} (VSRUP_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)
    finally:
        ignore_late_signals()
    sys.exit(code or 0)
