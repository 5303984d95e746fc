"""The Stable Diffusion x4 upscaler family: its configs as data, loading, and ``DiffusionUpscaler``.

``DiffusionUpscaler`` loads a diffusers-layout folder (a Hub snapshot or a local folder), encodes the
prompts once, then upscales clips with the loop in ``vsrup.sampling.loop``. With tiling, motion
guidance, propagation and colour fix off, frame i equals diffusers'
``StableDiffusionUpscalePipeline(prompt, image=frame_i, ..., generator=Generator().manual_seed(seed + i))``
(tests/test_sampler.py measures it).

The configs below are those of ``stabilityai/stable-diffusion-x4-upscaler``. Sources: the field list and
values in reference/seeds.md §4 and perf.md §3 (which checked them against the original
``x4-upscaling.yaml`` and Upscale-A-Video's copy of ``unet/config.json``), and the parameter counts they
reproduce (UNet 473.4 M, VAE 55.3 M, text encoder 340.4 M = 1.36 GB in fp32; tests/test_models.py).
Values marked ``# unsure`` are diffusers defaults or recalled from the repo's config.json files, and
change no parameter count; the benchmark only needs shapes and compute to match.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import time
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from vsrup.color import bicubic_upscale, color_fix
from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.device import is_half, job_seconds, resolve_device, resolve_dtype, vae_dtype
from vsrup.errors import ModelError, UsageError
from vsrup.events import Emit, Event, ignore
from vsrup.flow import FlowWorker
from vsrup.memory import OomRetry, free_memory, plan_memory
from vsrup.models import hub
from vsrup.sampling.loop import StepHook, TextEmbeddings, UNetDenoiser, sample_clip
from vsrup.sampling.schedulers import SCHEDULERS, build_scheduler
from vsrup.sampling.temporal import edited_steps, temporal_hook
from vsrup.sampling.tiles import tiled
from vsrup.sampling.vae_decode import decode_tiled

MAX_NOISE_LEVEL = 350  # model_index.json "max_noise_level"; the pipeline raises above it
SCALE = 4  # VAE: 3 levels -> 2 downsamples; the latent grid is the low-resolution grid

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=128,  # unsure (128 or 64): metadata only, does not change the network
    in_channels=7,  # 4 latent + 3 noise-augmented low-resolution RGB
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(256, 512, 512, 1024),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    only_cross_attention=(True, True, True, False),  # levels 1-3: attn1 is cross-attention too
    attention_head_dim=8,  # read by diffusers as 8 heads (64 / 64 / 128 dims per head)
    cross_attention_dim=1024,
    use_linear_projection=True,
    num_class_embeds=1000,  # the noise level 0..350 enters as a class label
    norm_num_groups=32,  # unsure: diffusers default, as in every SD UNet
    norm_eps=1e-5,  # unsure: diffusers default
    act_fn="silu",  # unsure: diffusers default
    flip_sin_to_cos=True,  # unsure: diffusers default, as in SD 2
    freq_shift=0,  # unsure: diffusers default, as in SD 2
    downsample_padding=1,  # unsure: diffusers default
    mid_block_scale_factor=1,  # unsure: diffusers default
)

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512),  # 3 levels: factor-4 latent
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=2,
    norm_num_groups=32,  # unsure: diffusers default
    act_fn="silu",  # unsure: diffusers default
    sample_size=256,  # unsure: metadata only
    scaling_factor=0.08333,
)

TEXT_ENCODER_CONFIG: dict[str, Any] = dict(  # OpenCLIP ViT-H/14 text tower, last of 24 layers cut (SD 2 style)
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",  # unsure: SD 2's text_encoder/config.json has "gelu" (OpenCLIP), not quick_gelu
    projection_dim=512,  # unsure: the projection is not used by the pipeline
    layer_norm_eps=1e-5,
)

TOKENIZER_FACTS = dict(  # CLIPTokenizer files (vocab.json, merges.txt) cannot be rebuilt from numbers
    model_max_length=77,
    vocab_size=49408,
    pad_token="!",  # unsure: SD 2 tokenizers pad with "!" (OpenCLIP pads with id 0), not <|endoftext|>
)

SCHEDULER_CONFIG: dict[str, Any] = dict(  # scheduler/scheduler_config.json (DDIMScheduler)
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    # timestep_spacing is absent from the file, so DDIM's default "leading" applies
)

LOW_RES_SCHEDULER_CONFIG: dict[str, Any] = dict(  # low_res_scheduler/scheduler_config.json (DDPMScheduler)
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="scaled_linear",
    clip_sample=True,  # unsure: irrelevant, add_noise never clips
    variance_type="fixed_small",  # unsure: irrelevant, add_noise never uses it
    # prediction_type: "epsilon" (the default); irrelevant for add_noise
)


def build_random_components(device: str | torch.device = "meta", dtype: torch.dtype = torch.float32) -> dict:
    """Full-size random-weight networks and the schedulers, from the configs above.

    ``device="meta"`` allocates nothing (parameter counts, shapes); a real device allocates and
    initialises there (the benchmark: timing does not need real weights). No tokenizer: its files
    cannot be rebuilt from the facts above; benchmarks feed token ids directly.
    """
    with torch.device(device):
        unet = UNet2DConditionModel(**UNET_CONFIG).to(dtype)
        vae = AutoencoderKL(**VAE_CONFIG).to(vae_dtype(dtype))
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG)).to(dtype)
    return dict(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        low_res_scheduler=DDPMScheduler(**LOW_RES_SCHEDULER_CONFIG),
    )


def check_sample_config(sample: SampleConfig) -> None:
    """The sampler options this model cannot run with (UsageError, before anything loads)."""
    if not 0 <= sample.noise_level <= MAX_NOISE_LEVEL:
        raise UsageError(f"--noise-level must be between 0 and {MAX_NOISE_LEVEL}, got {sample.noise_level}")
    if sample.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {sample.steps}")
    if sample.scheduler not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {sample.scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")


def weights_variant(folder: Path, subfolder: str, half: bool) -> str | None:
    """Which weight file of ``folder/subfolder`` to load: ``"fp16"`` for the fp16 variant, None for the plain one."""
    files = [f"{subfolder}/{p.name}" for p in (folder / subfolder).iterdir()]
    return hub.variant_of(hub.pick_weights(files, subfolder, half))


def embed_prompts(
    folder: Path, sample: SampleConfig, device: torch.device, dtype: torch.dtype, emit: Emit
) -> TextEmbeddings:
    """Run the text encoder once for the job's prompt (and negative prompt when guided); it is freed on return."""
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(
        folder, subfolder="text_encoder", variant=weights_variant(folder, "text_encoder", is_half(dtype))
    )
    text_encoder = text_encoder.to(device, dtype).eval()

    def encode(text: str, what: str) -> torch.Tensor:
        ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        if len(tokenizer(text).input_ids) > tokenizer.model_max_length:
            emit(Event("warning", message=f"the {what} is longer than {tokenizer.model_max_length} tokens; the rest is ignored"))
        return text_encoder(ids.to(device))[0]  # (1, 77, D)

    with torch.no_grad():
        cond = encode(sample.prompt, "prompt")
        uncond = encode(sample.negative_prompt or "", "negative prompt") if sample.guidance > 1.0 else None
    del text_encoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return TextEmbeddings(cond=cond, uncond=uncond)


def load_networks(folder: Path, device: torch.device, dtype: torch.dtype) -> tuple:
    """(UNet, VAE upcast for fp16, the sampling scheduler's config, the low-res noise scheduler) from ``folder``."""
    half = is_half(dtype)
    unet = UNet2DConditionModel.from_pretrained(
        folder, subfolder="unet", torch_dtype=dtype, variant=weights_variant(folder, "unet", half)
    )
    vae = AutoencoderKL.from_pretrained(
        folder, subfolder="vae", torch_dtype=vae_dtype(dtype), variant=weights_variant(folder, "vae", half)
    )
    scheduler_config = DDIMScheduler.load_config(folder, subfolder="scheduler")
    low_res_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="low_res_scheduler")
    return to_device(unet, device), to_device(vae, device), scheduler_config, low_res_scheduler


def to_device(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` on ``device`` for inference, its weights channels-last on CUDA and the CPU.

    Channels-last (NHWC) is the layout cuDNN's and oneDNN's convolution kernels prefer; on the CPU it
    measured as fast or faster for both networks (docs/benchmarks.md). MPS keeps the default, untested.
    """
    layout = torch.channels_last if device.type in ("cuda", "cpu") else torch.preserve_format
    return network.to(device, memory_format=layout).eval()


def compile_networks(unet, vae) -> None:
    """``--compile``: torch.compile the UNet and the VAE decoder in place, on their first calls.

    Each input shape compiles once: tiles all have the memory plan's shape, and a call with fewer
    tiles (a step's last group, a short last clip) recompiles once, after which PyTorch treats the
    batch size as dynamic.
    """
    unet.compile()
    vae.decoder.compile()


@contextmanager
def compile_errors() -> Iterator[None]:
    """A failed torch.compile (no C++ compiler, an unsupported op) becomes one line saying how to go on."""
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as error:
        cause = getattr(error, "inner_exception", None) or error  # a backend's failure wraps the real one
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        raise ModelError(f"--compile failed: {lines[0] if lines else type(error).__name__}; run without --compile") from None


class DiffusionUpscaler:
    """The x4 upscaler as an ``Upscaler``: (T, h, w, 3) in [0, 1] -> (T, 4h, 4w, 3), frame i seeded ``seed + i``."""

    scale = SCALE

    def __init__(self, config: UpscaleConfig, emit: Emit = ignore):
        from vsrup.models.registry import model_source

        self.sample, self.emit = config.sample, emit
        check_sample_config(self.sample)
        temporal = self.sample.motion_guidance > 0 or bool(self.sample.propagation_steps)
        self.flows = FlowWorker(self.sample.flow) if temporal else None  # checks --flow before anything loads
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        source = model_source(config.model)
        folder = hub.resolve(source, config.revision, is_half(self.dtype), emit)
        named = config.model if source == config.model else f"{config.model} ({source})"
        emit(Event("info", message=f"model {named} from {folder}, on {self.device} in {str(self.dtype).removeprefix('torch.')}"))
        try:
            with quiet_libraries():
                # 1. Prompts first: the text encoder never shares the device with the UNet.
                self.text = embed_prompts(folder, self.sample, self.device, self.dtype, emit)
                # 2. The networks and the schedulers.
                self.unet, self.vae, self.scheduler_config, self.low_res_scheduler = load_networks(
                    folder, self.device, self.dtype
                )
        except (OSError, ValueError, KeyError) as error:  # corrupt or mismatched files
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(f"cannot load {source} from {folder}: {first_line}") from None
        if self.unet.config.in_channels != 7 or 2 ** (len(self.vae.config.block_out_channels) - 1) != SCALE:
            raise ModelError(f"{source} is not an x4 upscaler (UNet in_channels 7, VAE factor 4)")
        # 3. --compile, off by default: no faster on the CPU, unmeasured on GPUs (docs/benchmarks.md).
        if self.sample.compile:
            compile_networks(self.unet, self.vae)
            emit(Event("info", message="--compile: the UNet and the VAE decoder compile on their first calls"))
        self.job: tuple[int, int, int] | None = None  # (frames, h, w) of the job, from ``expect``
        self.warned = False
        self.retries: dict[tuple[int, int, int], OomRetry] = {}  # (h, w, T) -> the memory plan in force
        self.pending: dict[tuple[int, ...], Future] = {}  # clip indices -> its flow, being estimated

    def prefetch(self, frames: np.ndarray, indices: Sequence[int]) -> None:
        """Start estimating a coming clip's flow in the background; the pipeline calls it one clip ahead."""
        if self.flows is not None and len(indices) > 1:
            self.pending[tuple(indices)] = self.flows.submit(frames)

    def upscale(self, frames: np.ndarray, indices: Sequence[int], hook: StepHook | None = None) -> np.ndarray:
        """(T, h, w, 3) float32 in [0, 1] -> (T, 4h, 4w, 3) float32 in [0, 1].

        ``hook`` replaces the temporal hook (flow-based propagation and motion guidance) for the clip.
        """
        s = self.sample
        t_frames, height, width, _ = frames.shape
        # 1. RGB [0, 1] -> [-1, 1] in float32, then the compute dtype (diffusers' VaeImageProcessor order).
        rgb = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).permute(0, 3, 1, 2)  # (T, 3, h, w)
        low_res = (2.0 * rgb - 1.0).to(self.device, self.dtype)  # (T, 3, h, w)
        # 2. The clip's flow (usually estimated while the previous clip sampled) steers each step.
        if hook is None and self.flows is not None and t_frames > 1:
            future = self.pending.pop(tuple(indices), None) or self.flows.submit(frames)
            hook = temporal_hook(future.result().to(self.device), s)
        retry = self.memory_plan(height, width, t_frames)

        def sample(plan) -> torch.Tensor:
            # One CPU generator per frame, seeded by its index in the input; a fresh scheduler: a retry starts over.
            generators = [torch.Generator("cpu").manual_seed(s.seed + int(i)) for i in indices]
            denoiser = TiledDenoiser(UNetDenoiser(self.unet), plan)
            if self.device.type == "cpu" and self.job is not None and not self.warned:
                denoiser = FirstCallTimer(denoiser, self.warn_slow)  # the CPU warning, from a real step
            return sample_clip(
                denoiser, build_scheduler(s.scheduler, self.scheduler_config, edited_steps(s) if hook is not None else ()),
                self.low_res_scheduler, low_res, self.text, generators, steps=s.steps, guidance=s.guidance,
                noise_level=s.noise_level, latent_channels=self.unet.config.out_channels, hook=hook,
            )  # (T, 4, h, w)

        with torch.no_grad(), compile_errors():
            # 3. Sample the clip's latents together, in tiles.
            latents = retry.run(sample, "unet")  # (T, 4, h, w)
            # 4. Decode in tiles, [-1, 1] -> [0, 1].
            images = retry.run(lambda p: decode_tiled(self.vae, latents, tile=p.vae_tile, overlap=p.vae_overlap), "vae")
            images = (images.float() / 2 + 0.5).permute(0, 2, 3, 1)  # (T, 4h, 4w, 3)
            # 5. Colours from the input (low frequencies or statistics), detail from the model.
            if s.color_fix != "none":
                lr = rgb.permute(0, 2, 3, 1).to(images.device)  # (T, h, w, 3)
                reference = bicubic_upscale(lr, SCALE * height, SCALE * width)  # (T, 4h, 4w, 3)
                images = color_fix(images, reference, s.color_fix)  # (T, 4h, 4w, 3)
        return images.clamp(0, 1).cpu().numpy()  # (T, 4h, 4w, 3)

    def memory_plan(self, height: int, width: int, t_frames: int) -> OomRetry:
        """The tile and batch plan for clips of this shape, made once and logged; shrunk for good on OOM."""
        key = (height, width, t_frames)
        if key not in self.retries:
            s = self.sample
            plan = plan_memory(
                free_memory(self.device), height, width, samples=t_frames * (2 if s.guidance > 1.0 else 1),
                tile=s.tile, overlap=s.tile_overlap, batch=s.batch, dtype_bytes=torch.finfo(self.dtype).bits // 8,
            )
            self.emit(Event("info", message=f"memory plan for {t_frames} frame(s) of {width}x{height}: {plan.describe()}"))
            self.retries[key] = OomRetry(plan, on_shrink=lambda message: self.emit(Event("warning", message=message)))
        return self.retries[key]

    def expect(self, n_frames: int, height: int, width: int) -> None:
        """The job's size: on the CPU, the first UNet call of the job is timed and the job's time estimated."""
        self.job = (n_frames, height, width)

    def warn_slow(self, seconds: float, samples: int, height: int, width: int) -> None:
        """One ``warning`` event with the job's estimated time, from the measured first UNet call."""
        self.warned = True
        n_frames, job_h, job_w = self.job
        rate = seconds / (samples * height * width)  # seconds per latent pixel per UNet evaluation
        s = self.sample
        total = job_seconds(rate, n_frames, job_h, job_w, s.steps, s.guidance > 1.0)
        self.emit(Event(
            "warning",
            message=f"running on the CPU: about {_duration(total)} for {n_frames} frame(s) of {job_w}x{job_h} "
            f"({s.steps} steps{', CFG' if s.guidance > 1.0 else ''}; from the first UNet step)",
            data={"estimate_seconds": round(total, 1)},
        ))


class FirstCallTimer:
    """A denoiser whose first call is timed and reported as ``report(seconds, samples, h, w)``."""

    def __init__(self, inner, report):
        self.inner, self.report = inner, report

    def __call__(self, x, t, text, noise_level):  # x (B, 7, h, w)
        started = time.perf_counter()
        out = self.inner(x, t, text, noise_level)  # (B, 4, h, w)
        if self.report is not None:
            self.report(time.perf_counter() - started, x.shape[0], x.shape[2], x.shape[3])
            self.report = None
        return out


class TiledDenoiser:
    """The UNet run tile by tile under a memory plan; tiles' outputs are blended into one prediction."""

    def __init__(self, inner: UNetDenoiser, plan):
        self.inner, self.plan = inner, plan

    def __call__(self, x, t, text, noise_level):  # x (B, 7, h, w), text (B, 77, D), noise_level (B,)
        def run(tiles, rows):  # tiles (N, 7, th, tw), rows (N,) their samples
            return self.inner(tiles, t, text[rows], noise_level[rows])  # (N, 4, th, tw)

        return tiled(run, x, tile=self.plan.tile, overlap=self.plan.overlap, batch=self.plan.batch)  # (B, 4, h, w)


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence diffusers' and transformers' loggers and loading bars for the block (the library never prints)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _, _ in saved:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
