"""StableVSR (Rota et al., ECCV 2024; Hub ``claudiom4sir/StableVSR``): the x4 upscaler's UNet guided
frame by frame by a ControlNet fed the warped high-resolution estimate of the neighbouring frame.

Stock classes only, each loaded from its own subfolder: ``UNet2DConditionModel`` (no class
embedding: the low-resolution frame enters clean, and no class labels are ever passed),
``ControlNetModel``, ``AutoencoderKL`` (scaling 0.08333), ``CLIPTextModel``/``CLIPTokenizer``, and the
repo's scheduler config read as a ``DDPMScheduler`` (the file names DDIM; StableVSR's own inference
replaces it with DDPM). ``model_index.json`` names a custom pipeline class; vsrup never reads it
for loading and never runs code from the repo. The loop is ``vsrup.sampling.stablevsr``; the
differences from the published code are in docs/models/stablevsr.md.
"""

from __future__ import annotations


import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.device import vae_dtype
from vsrup.errors import ModelError
from vsrup.events import Emit, Event, ignore
from vsrup.memory import Cost, MemoryPlan, stage
from vsrup.models import ModelInfo, Progress, Window, hub, settle_fixed
from vsrup.models.configs import CONTROLNET_IN_UNET_EVALS, VAE_DECODE_IN_UNET_EVALS
from vsrup.models.loading import compile_errors, compile_networks, encode_prompts, load_network, loading, placement
from vsrup.sampling.noise import generators
from vsrup.sampling.stablevsr import sample_window
from vsrup.sampling.tiles import tiled
from vsrup.sampling.vae_decode import decode_tiled, vae_factor

FILES = hub.Layout(
    what="StableVSR",
    configs=(
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "controlnet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
    ),
    folders=("tokenizer",),
    weights={
        "unet": "diffusion_pytorch_model",
        "controlnet": "diffusion_pytorch_model",
        "vae": "diffusion_pytorch_model",
        "text_encoder": "model",
    },
)
# model_index.json "_class_name": the published one, and the name it had before 2024-09-04 (nextmodels.md §1.2)
PIPELINE_CLASSES = ("StableVSRPipeline", "StableDiffusionControlNetPipelineSRVideoBidirectional")

SCALE = 4
DEFAULTS = dict(steps=50, scheduler="ddpm")  # test.py: 50 steps, DDPMScheduler from the repo's scheduler config
REFUSED = {  # options of other models that StableVSR has no use for, and why
    "guidance": "it samples without classifier-free guidance",
    "prompt": "it samples with the empty prompt it was trained with",
    "negative_prompt": "it samples without classifier-free guidance",
    "noise_level": "its low-resolution input is not noise-augmented",
    "motion_guidance": "its temporal guidance is its ControlNet",
    "guidance_window": "its temporal guidance is its ControlNet",
    "propagation_steps": "its temporal guidance is its ControlNet",
}
CONTROLNET_RESIDUAL_BYTES = 5_300  # fp32 bytes per latent px: the 13 residuals the UNet call holds (1312 channels at 1/1 .. 1/64 px)


def settle(sample: SampleConfig) -> SampleConfig:
    """``sample`` with StableVSR's defaults; a UsageError for an option it cannot honour."""
    return settle_fixed(sample, "stablevsr", REFUSED, DEFAULTS)


class Model:
    """StableVSR as a clip model: windows of frames sampled with frame-wise bidirectional guidance."""

    def __init__(self, source: str, config: UpscaleConfig, emit: Emit = ignore):
        self.settings = s = settle(config.sample)
        self.device, self.dtype, folder = placement(source, FILES, config, emit)
        with loading(source, folder):
            (self.text,) = encode_prompts(folder, [("prompt", "")], self.device, self.dtype, emit)  # (1, 77, D)
            self.unet = load_network(UNet2DConditionModel, folder, "unet", FILES.weights["unet"], self.dtype, self.device)
            self.controlnet = load_network(ControlNetModel, folder, "controlnet", FILES.weights["controlnet"], self.dtype, self.device)
            self.vae = load_network(AutoencoderKL, folder, "vae", FILES.weights["vae"], vae_dtype(self.dtype), self.device)
            self.scheduler_config = DDPMScheduler.load_config(folder, subfolder="scheduler")
        check_networks(source, self.unet, self.controlnet)
        if vae_factor(self.vae) != SCALE:
            raise ModelError(f"{source} is not StableVSR: its VAE's factor is {vae_factor(self.vae)}, not {SCALE}")
        if s.compile:
            compile_networks(self.unet, self.controlnet, self.vae.decoder)
            emit(Event("info", message="--compile: the UNet, the ControlNet and the VAE decoder compile on their first calls"))
        cost = Cost(
            dtype_bytes=torch.finfo(self.dtype).bits // 8, vae_dtype_bytes=torch.finfo(vae_dtype(self.dtype)).bits // 8,
            frames_together=False, unet_per_px=Cost.unet_per_px + CONTROLNET_RESIDUAL_BYTES,
        )
        self.info = ModelInfo(name="stablevsr", scale=SCALE, kind="clip", flow=True, generative=True, cost=cost, device=str(self.device))

    def sample(self, window: Window, plan: MemoryPlan, progress: Progress) -> torch.Tensor:
        """(T, h, w, 3) float32 in [0, 1] -> (T, 4h, 4w, 3) float32, nominally [0, 1]."""
        s = self.settings
        t_frames = len(window.indices)
        per_step = t_frames + (t_frames - 1) * (CONTROLNET_IN_UNET_EVALS + VAE_DECODE_IN_UNET_EVALS)
        work = s.steps * per_step + t_frames * VAE_DECODE_IN_UNET_EVALS  # in UNet evaluations
        rgb = torch.from_numpy(np.ascontiguousarray(window.frames, dtype=np.float32)).permute(0, 3, 1, 2)  # (T, 3, h, w)
        low_res = (2.0 * rgb - 1.0).to(self.device, self.dtype)  # (T, 3, h, w)
        flow = window.flow.to(self.device) if window.flow is not None else None
        def decode(latents: torch.Tensor) -> torch.Tensor:  # (N, 4, h, w) -> (N, 3, 4h, 4w)
            with stage("vae"):
                return decode_tiled(self.vae, latents, tile=plan.vae_tile, overlap=plan.vae_overlap, frame_statistics=plan.vae_frame_stats)

        with torch.no_grad(), compile_errors():
            latents = sample_window(
                controlled_denoiser(self.unet, self.controlnet, self.text, plan), decode, DDPMScheduler.from_config(self.scheduler_config), low_res, flow,
                generators(s.seed, window.indices), steps=s.steps, factor=SCALE,
                progress=lambda k: progress((k + 1) * per_step / work),
            )  # (T, 4, h, w)
            images = decode(latents)  # (T, 3, 4h, 4w)
            progress(1.0)
        images = images.float().mul_(0.5).add_(0.5)  # (T, 3, 4h, 4w) in place: [-1, 1] -> [0, 1]
        return images.permute(0, 2, 3, 1)  # (T, 4h, 4w, 3)


def controlled_denoiser(unet, controlnet, text: torch.Tensor, plan: MemoryPlan):
    """The UNet with a ControlNet's residuals when there is a control image, tile by tile under ``plan``.

    StableVSR's and Stream-DiffVSR's call: ``text`` (1, 77, D) the empty prompt, no class labels, the
    control image (at ``SCALE`` times the latent grid) cut to each tile.
    """

    def denoise(x: torch.Tensor, t: torch.Tensor, control: torch.Tensor | None) -> torch.Tensor:
        # x (1, 7, h, w), control (1, 3, 4h, 4w) or None -> (1, 4, h, w)
        def run(tiles, rows, *controls):  # tiles (N, 7, th, tw), controls: (N, 3, 4th, 4tw)
            embedding = text.expand(tiles.shape[0], -1, -1)  # (N, 77, D)
            residuals = {}
            if controls:
                down, mid = controlnet(
                    tiles, t, encoder_hidden_states=embedding, controlnet_cond=controls[0], conditioning_scale=1.0, return_dict=False
                )
                residuals = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
            return unet(tiles, t, encoder_hidden_states=embedding, **residuals, return_dict=False)[0]  # (N, 4, th, tw)

        extras = ((control, SCALE),) if control is not None else ()
        return tiled(run, x, tile=plan.tile, overlap=plan.overlap, batch=plan.batch, extras=extras)

    return denoise


def check_networks(source: str, unet, controlnet, what: str = "StableVSR") -> None:
    """The folder holds ``what``'s UNet and ControlNet (StableVSR's layout), not merely files of those names."""
    if unet.config.in_channels != 7 or controlnet.config.in_channels != 7:
        raise ModelError(f"{source} is not {what}: its UNet and ControlNet take 7 channels (latent and low-resolution RGB)")
    if unet.config.num_class_embeds or controlnet.config.num_class_embeds or unet.config.class_embed_type:
        raise ModelError(f"{source} is not {what}: its UNet or ControlNet has a class embedding, which {what} never feeds")
    control_factor = 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)
    if control_factor != SCALE:
        raise ModelError(f"{source} is not {what}: its ControlNet's conditioning embedding downsamples by {control_factor}, not {SCALE}")
