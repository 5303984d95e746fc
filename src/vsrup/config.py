"""Frozen job configuration. No torch import here: the CLI builds these before anything heavy loads.

Every default carries a comment saying where it comes from. The CLI's option defaults are read
from these classes so the two never disagree, and the CLI checks each numeric value's range
(``cli.RANGES``) before it builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

AUDIO_MODES = ("copy", "aac", "none")
DEINTERLACE_MODES = ("auto", "on", "off")
COLOR_FIXES = ("adain", "wavelet", "none")
FLOW_METHODS = ("dis", "raft")
SCHEDULERS = ("ddim", "ddpm", "dpm++ 2m", "unipc", "euler")
DEVICES_HELP = "auto|cpu|cuda|cuda:N|mps"
DTYPES = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class EncodeConfig:
    """How the upscaled video is written."""

    codec: str | None = None  # None: libx264 for 8-bit input, libx265 for >8-bit input
    crf: int | None = None  # None: the encoder's own default (x264/x265: 23/28)
    preset: str | None = None  # None: the encoder's own default ("medium" for x264/x265)
    pix_fmt: str | None = None  # None: follows the input (8-bit 4:2:0 in, 8-bit 4:2:0 out; 10-bit in, 10-bit out)
    audio: str = "copy"  # copy|aac|none; copy falls back to a re-encode, with a warning, where the container refuses
    threads: int = 0  # encoder threads; 0 lets FFmpeg choose. Pin it for bit-identical re-runs across machines
    options: tuple[tuple[str, str], ...] = ()  # --encoder-opt KEY=VALUE: FFmpeg AVOptions of the encoder, applied last (they win)
    faststart: bool = True  # mp4/mov: the index (moov) at the front, so web players start before the whole file arrives


@dataclass(frozen=True)
class SampleConfig:
    """The diffusion sampler, its tiles and its temporal mechanisms (ignored by `lanczos`).

    None means "the model's default": each family fills in its own (``DEFAULTS`` of models/sd_x4.py,
    models/stablevsr.py, models/stream_diffvsr.py) and refuses, with a usage error, options it has no use for when they are set.
    """

    # Sampler.
    steps: int | None = None  # sd-x4: 30 (Upscale-A-Video's); stablevsr: 50, stream-diffvsr: 4 (as published)
    guidance: float | None = None  # classifier-free guidance scale; <= 1 disables it. sd-x4: 6.0; stablevsr has none
    prompt: str | None = None  # sd-x4: Upscale-A-Video's "best quality, extremely detailed"; stablevsr: the empty prompt, fixed
    negative_prompt: str | None = None  # sd-x4: Upscale-A-Video's "blur, worst quality"
    noise_level: int | None = None  # low-res noise augmentation 0..350; sd-x4: 20 (diffusers' and the model card's)
    scheduler: str | None = None  # sd-x4: ddim (the repo's own); stablevsr: ddpm (as published)
    seed: int = 0  # frame i draws its noise from torch.Generator().manual_seed(seed + i)

    # Tiles (latent pixels; for the x4 models the latent grid is the low-resolution grid).
    tile: int | None = None  # None = auto from free memory (128, the training size, when it fits); 0 = no tiling
    tile_overlap: int = 32  # 25% of a 128 tile: seams blend out at 1.8x the untiled cost (50% would be 4x)
    batch: int | None = None  # tiles per UNet call; None = from free memory
    compile: bool = False  # torch.compile the networks; off: the first clip waits minutes for it, and no GPU has measured the gain yet

    # Temporal consistency.
    flow: str = "dis"  # dis (OpenCV, no weights) | raft (torchvision, optional)
    motion_guidance: float | None = None  # sd-x4: 0.75, the fraction of the flicker removed per tenth of the schedule (0 disables)
    guidance_window: tuple[float, float] | None = None  # sd-x4: (0.0, 0.9), the fractions of the schedule where motion guidance acts
    propagation_steps: tuple[int, ...] | None = None  # sd-x4: (), loop indices where latents are propagated along the flow (UAV)
    clip_len: int = 8  # frames sampled together; Upscale-A-Video's temporal window
    clip_overlap: int = 2  # frames shared (and cross-faded) by neighbouring clips; UAV's window stride is 6 of 8
    scene_threshold: float = 0.3  # a new shot where clips.cut_score exceeds this; 0 disables. Real clips score < 0.01; a film countdown 0.27-0.40 as its digit flips
    color_fix: str = "wavelet"  # adain|wavelet|none: low frequencies from the bicubic input, detail from the model (docs/temporal.md)

    def with_defaults(self, defaults: dict) -> SampleConfig:
        """This config with ``defaults`` (a model family's) for the options left unset (None)."""
        return replace(self, **{name: value for name, value in defaults.items() if getattr(self, name) is None})


@dataclass(frozen=True)
class JobConfig:
    """A resumable job (docs/jobs.md): units rendered losslessly into a work directory, then one final encode."""

    work_dir: str | None = None  # units and manifest here; None: "<output>.vsrup-work" beside each output
    unit_len: int = 960  # frames per unit at least (40 s at 24 fps), cut at the next clip start: what a crash can lose per worker
    shard: tuple[int, int] | None = None  # (i, n): render only units i, i + n, i + 2n, ... (0-based), and do not assemble
    ray: str | None = None  # Ray cluster address ("auto", "ray://host:10001"), or "local" to start one here
    workers: int | None = None  # Ray actors; None: one per GPU of the cluster (or one when it has none)
    restart: bool = False  # discard an existing work directory instead of resuming it
    accept_env_change: bool = False  # resume although the software or device changed (recorded; identity not promised)
    keep_work: bool = False  # keep the work directory after the output is committed


@dataclass(frozen=True)
class UpscaleConfig:
    """One `vsrup upscale` or `vsrup frames` job."""

    scale: float = 4  # output size / input size (1..8); the model's own x4 is resized to it (output_size)
    width: int | None = None  # output width in px; the height follows the aspect ratio unless given too
    height: int | None = None  # output height in px; likewise
    model: str = "sd-x4"  # short name (sd-x4, stablevsr, stream-diffvsr, lanczos), Hub repo id, or a local folder
    revision: str | None = None  # Hub revision to pin (branch, tag or commit)
    device: str = "auto"  # auto|cpu|cuda|cuda:N|mps
    dtype: str = "auto"  # auto: bf16 on CUDA where supported, else fp16; fp32 on CPU
    frames: tuple[int, int | None] | None = None  # [start, end) in decoded-frame indices; None = all
    times: tuple[float, float | None] | None = None  # [start, end) in seconds from the first frame (--start/--end/--duration); None = all
    deinterlace: str = "auto"  # auto: deinterlace when the decoder flags interlaced frames
    allow_partial: bool = False  # corrupt or truncated input: write what decoded, with a warning, instead of failing
    overwrite: bool = False  # replace an existing output
    skip_existing: bool = False  # leave an existing output alone and report it as skipped
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    job: JobConfig | None = None  # None: one streaming pass; else a resumable job (--resumable, --work-dir, --shard, --ray)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The output's (width, height) for an input of ``width`` x ``height``.

        An integer scale is exact (odd sizes are kept: the encoder takes 4:4:4 for them); a fractional
        scale, and a side that follows the other's aspect ratio, round to even numbers, as 4:2:0 needs.
        """
        if self.width and self.height:
            return self.width, self.height
        if self.width:
            return self.width, even(self.width * height / width)
        if self.height:
            return even(self.height * width / height), self.height
        if float(self.scale).is_integer():
            return width * int(self.scale), height * int(self.scale)
        return even(width * self.scale), even(height * self.scale)


def even(x: float) -> int:
    """The even number nearest ``x``, at least 2."""
    return max(2, 2 * round(x / 2))
