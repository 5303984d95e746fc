"""The Stable Diffusion x4 upscaler family: its files, its sampler defaults, and the loaded model.

``SDx4`` loads a diffusers-layout folder (a Hub snapshot or a local folder), encodes the prompts
once, then samples windows with the loop in ``vsrup.sampling.sd_x4``. With tiling, motion guidance,
propagation and colour fix off, frame i equals diffusers'
``StableDiffusionUpscalePipeline(prompt, image=frame_i, ..., generator=Generator().manual_seed(seed + i))``
(tests/test_sampler.py measures it). The full-size configs are in ``models/configs.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.device import vae_dtype
from vsrup.errors import ModelError, UsageError
from vsrup.events import Emit, Event, ignore
from vsrup.memory import Cost, MemoryPlan, stage
from vsrup.models import ModelInfo, Progress, Window, hub
from vsrup.models.configs import VAE_DECODE_IN_UNET_EVALS
from vsrup.models.loading import compile_errors, compile_networks, encode_prompts, load_network, loading, placement
from vsrup.sampling.noise import generators
from vsrup.sampling.schedulers import SCHEDULERS, build_scheduler
from vsrup.sampling.sd_x4 import StepHook, TextEmbeddings, UNetDenoiser, augment, sample_clip
from vsrup.sampling.temporal import edited_steps, temporal_hook
from vsrup.sampling.tiles import tiled
from vsrup.sampling.vae_decode import decode_tiled, vae_factor

FILES = hub.Layout(
    what="an SD x4 upscaler",
    configs=(
        "model_index.json",
        "scheduler/scheduler_config.json",
        "low_res_scheduler/scheduler_config.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
    ),
    folders=("tokenizer",),
    weights={"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"},
)
PIPELINE_CLASSES = ("StableDiffusionUpscalePipeline",)  # model_index.json "_class_name" of this family's folders

MAX_NOISE_LEVEL = 350  # model_index.json "max_noise_level"; the pipeline raises above it
SCALE = 4  # VAE: 3 levels -> 2 downsamples; the latent grid is the low-resolution grid

# Upscale-A-Video, the published video system on this backbone, samples the x4 upscaler with 30 DDIM
# steps, CFG 6 and its two prompts; we start from its settings. Noise level 20 is diffusers' and the model card's.
DEFAULTS = dict(
    steps=30,
    guidance=6.0,  # classifier-free guidance scale; <= 1 disables it and halves the UNet cost
    prompt="best quality, extremely detailed",  # Upscale-A-Video's a_prompt
    negative_prompt="blur, worst quality",  # Upscale-A-Video's n_prompt
    noise_level=20,
    scheduler="ddim",  # the model's own (scheduler/scheduler_config.json of the Hub repo)
    motion_guidance=0.75,  # per tenth of the schedule: halves the warping error of a real pan at 10 and 30 steps (bench_temporal)
    guidance_window=(0.0, 0.9),  # the last tenth is left to the model's own detail (a choice, not a measurement)
    propagation_steps=(),  # Upscale-A-Video's default: none
)


def settle(sample: SampleConfig, defaults: dict = DEFAULTS, max_noise_level: int = MAX_NOISE_LEVEL, model: str = "") -> SampleConfig:
    """``sample`` with this family's defaults for what the user left unset; UsageError for values it cannot run.
    A relative of the x4 (upscale-a-video) passes its own defaults, noise range and ``--model`` name."""
    sample = sample.with_defaults(defaults)
    if not 0 <= sample.noise_level <= max_noise_level:
        raise UsageError(f"--noise-level must be between 0 and {max_noise_level}{f' for --model {model}' if model else ''}, got {sample.noise_level}")
    if sample.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {sample.steps}")
    if sample.scheduler not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {sample.scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
    if any(not 0 <= i < sample.steps for i in sample.propagation_steps):
        raise UsageError(f"--propagation-steps are loop indices 0..{sample.steps - 1}, got {list(sample.propagation_steps)}")
    return sample


def load_networks(folder: Path, device: torch.device, dtype: torch.dtype) -> tuple:
    """(UNet, VAE upcast for fp16, the sampling scheduler's config, the low-res noise scheduler) from ``folder``."""
    unet = load_network(UNet2DConditionModel, folder, "unet", FILES.weights["unet"], dtype, device)
    vae = load_network(AutoencoderKL, folder, "vae", FILES.weights["vae"], vae_dtype(dtype), device)
    scheduler_config = DDIMScheduler.load_config(folder, subfolder="scheduler")
    low_res_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="low_res_scheduler")
    return unet, vae, scheduler_config, low_res_scheduler


class Model:
    """The x4 upscaler as a clip model: (T, h, w, 3) in [0, 1] -> (T, 4h, 4w, 3), frame i seeded ``seed + i``."""

    def __init__(self, source: str, config: UpscaleConfig, emit: Emit = ignore):
        self.settings = s = settle(config.sample)
        self.device, self.dtype, folder = placement(source, FILES, config, emit)
        with loading(source, folder):
            # 1. Prompts first: the text encoder never shares the device with the UNet.
            prompts = [("prompt", s.prompt)] + ([("negative prompt", s.negative_prompt or "")] if s.guidance > 1.0 else [])
            embeddings = encode_prompts(folder, prompts, self.device, self.dtype, emit)
            self.text = TextEmbeddings(cond=embeddings[0], uncond=embeddings[1] if s.guidance > 1.0 else None)
            # 2. The networks and the schedulers.
            self.unet, self.vae, self.scheduler_config, self.low_res_scheduler = load_networks(folder, self.device, self.dtype)
        if self.unet.config.in_channels != 7 or vae_factor(self.vae) != SCALE:
            raise ModelError(f"{source} is not an x4 upscaler (UNet in_channels 7, VAE factor 4)")
        # 3. --compile, off by default: no faster on the CPU, unmeasured on GPUs (docs/benchmarks.md).
        if s.compile:
            compile_networks(self.unet, self.vae.decoder)
            emit(Event("info", message="--compile: the UNet and the VAE decoder compile on their first calls"))
        temporal = s.motion_guidance > 0 or bool(s.propagation_steps)
        cost = Cost(
            dtype_bytes=torch.finfo(self.dtype).bits // 8, vae_dtype_bytes=torch.finfo(vae_dtype(self.dtype)).bits // 8,
            rows_per_frame=2 if s.guidance > 1.0 else 1,
        )
        self.info = ModelInfo(name="sd-x4", scale=SCALE, kind="clip", flow=temporal, generative=True, cost=cost, device=str(self.device))

    def sample(self, window: Window, plan: MemoryPlan, progress: Progress, hook: StepHook | None = None) -> torch.Tensor:
        """(T, h, w, 3) float32 in [0, 1] -> (T, 4h, 4w, 3) float32, nominally [0, 1].

        ``hook`` replaces the temporal hook (flow-based propagation and motion guidance) for the window.
        """
        s = self.settings
        evals = s.steps * (2 if s.guidance > 1.0 else 1)
        work = evals + VAE_DECODE_IN_UNET_EVALS  # the window's work, in UNet evaluations per frame
        # 1. RGB [0, 1] -> [-1, 1] in float32, then the compute dtype (diffusers' VaeImageProcessor order).
        rgb = torch.from_numpy(np.ascontiguousarray(window.frames, dtype=np.float32)).permute(0, 3, 1, 2)  # (T, 3, h, w)
        low_res = (2.0 * rgb - 1.0).to(self.device, self.dtype)  # (T, 3, h, w)
        # 2. The window's flow steers each step.
        if hook is None and window.flow is not None:
            hook = temporal_hook(window.flow.to(self.device), s)
        with torch.no_grad(), compile_errors():
            # 3. Noise-augment the input, then sample the window's latents together, in tiles.
            gens = generators(s.seed, window.indices)
            image, levels = augment(self.low_res_scheduler, low_res, gens, s.noise_level)  # (T, 3, h, w), (T,)
            latents = sample_clip(
                TiledDenoiser(UNetDenoiser(self.unet), plan),
                build_scheduler(s.scheduler, self.scheduler_config, edited_steps(s) if hook is not None else ()),
                image, levels, self.text, gens, steps=s.steps, guidance=s.guidance,
                latent_channels=self.unet.config.out_channels, hook=hook,
                progress=lambda i: progress((i + 1) * evals / s.steps / work),
            )  # (T, 4, h, w)
            # 4. Decode in tiles, [-1, 1] -> [0, 1].
            with stage("vae"):
                images = decode_tiled(self.vae, latents, tile=plan.vae_tile, overlap=plan.vae_overlap, frame_statistics=plan.vae_frame_stats)
            progress(1.0)
        images = images.float().mul_(0.5).add_(0.5)  # (T, 3, 4h, 4w) in place: [-1, 1] -> [0, 1]
        return images.permute(0, 2, 3, 1)  # (T, 4h, 4w, 3)


class TiledDenoiser:
    """The UNet run tile by tile under a memory plan; tiles' outputs are blended into one prediction."""

    def __init__(self, inner: UNetDenoiser, plan: MemoryPlan):
        self.inner, self.plan = inner, plan

    def __call__(self, x, t, text, noise_level):  # x (B, 7, h, w), text (B, 77, D), noise_level (B,)
        def run(tiles, rows):  # tiles (N, 7, th, tw), rows (N,) their samples
            return self.inner(tiles, t, text[rows], noise_level[rows])  # (N, 4, th, tw)

        return tiled(run, x, tile=self.plan.tile, overlap=self.plan.overlap, batch=self.plan.batch)  # (B, 4, h, w)
