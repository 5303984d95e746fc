"""Stream-DiffVSR (Shiu et al., 2025; Hub ``Jamichsu/Stream-DiffVSR``): a 4-step causal model, one frame at a time.

The x4 upscaler's UNet distilled to 4 DDIM steps, a ControlNet fed the previous frame's output
warped onto the current frame (every step), and a tiny temporal autoencoder whose decoder blocks
mix in the encoder's features of that same warped output. A sequential model: what it carries from
frame to frame is the previous high-resolution output (one frame), reset at restart points.

Stock classes for ``UNet2DConditionModel`` (no class embedding, no class labels), ``ControlNetModel``
and ``CLIPTextModel``/``CLIPTokenizer``; the repo's scheduler config read as the ``DDIMScheduler`` it
names ("trailing": t = 999, 749, 499, 249); the VAE is vsrup's ``TemporalAutoencoderTiny``
(``models/temporal_tiny.py``), built from the repo's ``vae/config.json`` and its safetensors weights.
``model_index.json`` names a custom pipeline and a VAE class of no library; vsrup never reads it for
loading and never runs code from the repo. The loop is ``vsrup.sampling.stream``; the differences
from the published code are in docs/models/stream-diffvsr.md.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from diffusers import ControlNetModel, DDIMScheduler, UNet2DConditionModel

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.device import vae_dtype
from vsrup.errors import ModelError
from vsrup.events import Emit, Event, ignore
from vsrup.flow import upscale_flow, warp
from vsrup.memory import Cost, MemoryPlan, stage
from vsrup.models import ModelInfo, Progress, Window, settle_fixed
from vsrup.models.configs import CONTROLNET_IN_UNET_EVALS
from vsrup.models.loading import compile_errors, compile_networks, encode_prompts, load_network, loading, placement
from vsrup.models import stablevsr
from vsrup.models.stablevsr import CONTROLNET_RESIDUAL_BYTES, SCALE, check_networks, controlled_denoiser
from vsrup.models.temporal_tiny import TemporalAutoencoderTiny
from vsrup.sampling.noise import generators
from vsrup.sampling.stream import sample_frame
from vsrup.sampling.tiny_decode import HALO, decode, previous_features

FILES = replace(stablevsr.FILES, what="Stream-DiffVSR")  # the same subfolders and files as StableVSR's repo (nextmodels.md §2.1)
PIPELINE_CLASSES = ("StreamDiffVSRPipeline",)  # model_index.json "_class_name" (nextmodels.md §2.2)

DEFAULTS = dict(steps=4, scheduler="ddim")  # inference.py: 4 steps of the repo's DDIMScheduler, eta 0
# The tiny encoder's and decoder's activations, fp32 bytes per latent px they compute (16 output px of 64 channels,
# about 5 live at the full-resolution level; tiles compute their halo too): 22-31 KB measured whole-frame and tiled
# by benchmarks/bench_tiny_vae.py (docs/benchmarks.md); the constant bounds them. The whole frame is tried first:
# the tiled decode is exact but recomputes (docs/models/stream-diffvsr.md), so tiles only cost time.
TINY_VAE_PER_PX = 32_000
TINY_VAE_FIXED = 16 * 2**20
TINY_VAE_TILES = (0, 256, 128, 64, 32)
TINY_VAE_IN_UNET_EVALS = 0.12  # the encoder's features or the decoder: ~8 MFLOP per latent px each (15.9 counted together,
# bench_pipeline --model stream-diffvsr --flops-only) against the UNet's 69.9 MFLOP

REFUSED = {  # options of other models that Stream-DiffVSR has no use for, and why
    "guidance": "it samples without classifier-free guidance",
    "prompt": "it samples with the empty prompt it was trained with",
    "negative_prompt": "it samples without classifier-free guidance",
    "noise_level": "its low-resolution input is not noise-augmented",
    "motion_guidance": "its temporal guidance is the warped previous output, through its ControlNet and decoder",
    "guidance_window": "its temporal guidance is the warped previous output, through its ControlNet and decoder",
    "propagation_steps": "its temporal guidance is the warped previous output, through its ControlNet and decoder",
}


def settle(sample: SampleConfig) -> SampleConfig:
    """``sample`` with Stream-DiffVSR's defaults; a UsageError for an option it cannot honour."""
    return settle_fixed(sample, "stream-diffvsr", REFUSED, DEFAULTS)


class Model:
    """Stream-DiffVSR as a sequential model: each frame from its low-resolution input and the previous output."""

    def __init__(self, source: str, config: UpscaleConfig, emit: Emit = ignore):
        self.settings = s = settle(config.sample)
        self.device, self.dtype, folder = placement(source, FILES, config, emit)
        self.vae_dtype = vae_dtype(self.dtype)
        with loading(source, folder):
            (self.text,) = encode_prompts(folder, [("prompt", "")], self.device, self.dtype, emit)  # (1, 77, D)
            self.unet = load_network(UNet2DConditionModel, folder, "unet", FILES.weights["unet"], self.dtype, self.device)
            self.controlnet = load_network(ControlNetModel, folder, "controlnet", FILES.weights["controlnet"], self.dtype, self.device)
            self.vae = load_network(TemporalAutoencoderTiny, folder, "vae", FILES.weights["vae"], self.vae_dtype, self.device)
            self.scheduler_config = DDIMScheduler.load_config(folder, subfolder="scheduler")
        check_networks(source, self.unet, self.controlnet, what="Stream-DiffVSR")
        factor = 2 ** (len(self.vae.config.decoder_block_out_channels) - 1)
        if factor != SCALE or self.vae.config.latent_channels != 4:
            raise ModelError(f"{source} is not Stream-DiffVSR: its tiny autoencoder has factor {factor}, not {SCALE}")
        if s.compile:
            compile_networks(self.unet, self.controlnet)
            emit(Event("info", message="--compile: the UNet and the ControlNet compile on their first calls"))
        cost = Cost(
            dtype_bytes=torch.finfo(self.dtype).bits // 8, vae_dtype_bytes=torch.finfo(self.vae_dtype).bits // 8,
            frames_together=False, unet_per_px=Cost.unet_per_px + CONTROLNET_RESIDUAL_BYTES,
            vae_fixed=TINY_VAE_FIXED, vae_per_px=TINY_VAE_PER_PX, vae_attention=0, vae_state_per_px=0, vae_tiles=TINY_VAE_TILES,
            vae_halo=HALO,
        )
        self.info = ModelInfo(name="stream-diffvsr", scale=SCALE, kind="sequential", flow=True, generative=True, cost=cost,
                              device=str(self.device))

    def step(self, window: Window, state: torch.Tensor | None, plan: MemoryPlan, progress: Progress) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, h, w, 3) in [0, 1] and the previous output (1, 3, 4h, 4w) in [-1, 1] or None (a restart)
        -> ((1, 4h, 4w, 3) float32, nominally [0, 1]; this output (1, 3, 4h, 4w), the next frame's state)."""
        s = self.settings
        guided = state is not None
        per_step = 1 + (CONTROLNET_IN_UNET_EVALS if guided else 0)
        work = s.steps * per_step + TINY_VAE_IN_UNET_EVALS * (2 if guided else 1)  # in UNet evaluations
        rgb = torch.from_numpy(np.ascontiguousarray(window.frames, dtype=np.float32)).permute(0, 3, 1, 2)  # (1, 3, h, w)
        low_res = (2.0 * rgb - 1.0).to(self.device, self.dtype)  # (1, 3, h, w)
        with torch.no_grad(), compile_errors():
            control = previous = None
            if guided:
                flow = upscale_flow(window.flow.next_to_i[0:1].to(self.device), SCALE)  # (1, 2, 4h, 4w): frame n back to n-1
                warped = warp(state, flow)  # (1, 3, 4h, 4w) the previous output on this frame's grid
                with stage("vae"):
                    previous = previous_features(self.vae, warped.to(self.vae_dtype), plan.vae_tile)  # 7 x (1, 64, hk/4, wk/4)
                control = warped.to(self.dtype)  # (1, 3, 4h, 4w)
            latents = sample_frame(
                controlled_denoiser(self.unet, self.controlnet, self.text, plan), DDIMScheduler.from_config(self.scheduler_config),
                low_res, generators(s.seed, window.indices)[0], s.steps, control,
                progress=lambda k: progress((k + 1) * per_step / work),
            )  # (1, 4, h, w)
            with stage("vae"):
                image = decode(self.vae, latents.to(self.vae_dtype), previous, plan.vae_tile)  # (1, 3, 4h, 4w) float32, [-1, 1]
            progress(1.0)
        out = image.mul(0.5).add_(0.5)  # (1, 3, 4h, 4w), a new tensor: the pipeline colour-fixes it in place, the state stays raw
        return out.permute(0, 2, 3, 1), image  # (1, 4h, 4w, 3), (1, 3, 4h, 4w)
