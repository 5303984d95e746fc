"""Upscale-A-Video (Zhou et al., CVPR 2024): the x4 upscaler with a trained temporal UNet and video VAE.

Licence: the weights are released under the S-Lab License 1.0, for non-commercial use only (the
unofficial Hub mirror carries the same weights). vsrup says so when it loads them.

Files. Two layouts of the same folders, told apart by their file names only:

* the official release (a Google Drive folder, ``pretrained_models/upscale_a_video/``), loaded with
  ``--model PATH``: ``unet/unet_video.bin`` + ``unet_video_config.json``, ``vae/vae_video.bin`` +
  ``vae_video_config.json`` (or ``vae_3d.*``), ``text_encoder/``, ``tokenizer/``, ``scheduler/``,
  ``low_res_scheduler/`` (``propagator/`` is not read: vsrup's flow is its own);
* the unofficial Hub mirror ``Runware/Video-Upscale`` (``--model upscale-a-video``), diffusers-style:
  ``unet/diffusion_pytorch_model.bin``, ``vae/diffusion_pytorch_model.bin`` (or ``model.bin``) with
  its config under one of the names below, ``text_encoder/pytorch_model.bin`` (the x4's own file).
  Its full tree was not readable here (reference/ports.md §2), so each file is looked for under the
  names either layout uses, and the VAE's kind is read from its keys.

Every ``.bin`` is a pickle: it is read by torch's weights-only unpickler and converted once to
safetensors in the cache (``models/pickles.py``); nothing in the folder is run, and no
``model_index.json`` is read for loading. The networks are vsrup's ``UNetVideo`` and
``VideoAutoencoderKL`` (``models/video_unet.py``, ``models/video_vae.py``), built from the folder's
published configs; every key of a checkpoint must be one of theirs and every one of theirs in it.

Sampling is the x4 loop (``sampling/sd_x4.sample_clip``) with Upscale-A-Video's recipe (noise level
120, CFG 6 with its prompts, 30 DDIM steps, propagation at the chosen steps through
``sampling/propagation.py``) on windows of 8 frames that overlap by ``--clip-overlap`` (2: its
stride of 6) and are cross-faded by the pipeline, tiles blended, the VAE decoding chunks of 3 frames
(``sampling/upscale_a_video.py``). docs/models/upscale-a-video.md lists what differs from the
published code.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.device import vae_dtype
from vsrup.errors import ModelError
from vsrup.events import Emit, Event, ignore
from vsrup.memory import Cost, MemoryPlan, stage
from vsrup.models import ModelInfo, Progress, Window, hub, pickles
from vsrup.models.configs import VAE_DECODE_IN_UNET_EVALS
from vsrup.models.loading import compile_errors, compile_networks, encode_prompts, loading, placement, to_device
from vsrup.models.sd_x4 import DEFAULTS as SD_X4_DEFAULTS
from vsrup.models.sd_x4 import settle as settle_x4
from vsrup.models.video_unet import UNetVideo
from vsrup.models.video_vae import VideoAutoencoderKL, published_key
from vsrup.sampling.noise import generators
from vsrup.sampling.schedulers import build_scheduler
from vsrup.sampling.sd_x4 import TextEmbeddings, augment, sample_clip
from vsrup.sampling.temporal import edited_steps, temporal_hook
from vsrup.sampling.upscale_a_video import DECODE_FRAMES, VideoDenoiser, decode_window

LICENCE = "Upscale-A-Video's weights are licensed for non-commercial use only (S-Lab License 1.0)"

FILES = hub.Layout(  # what both layouts share; the weight and config names are looked up below
    what="Upscale-A-Video",
    configs=("scheduler/scheduler_config.json", "low_res_scheduler/scheduler_config.json"),
    folders=("unet", "vae", "text_encoder", "tokenizer"),  # taken whole from the Hub: their files have either layout's names
    weights={},
)
PIPELINE_CLASSES = ("UpscaleAVideoPipeline", "VideoUpscalePipeline")  # the mirror's model_index.json; the published class
MARKER_FILES = ("unet/unet_video_config.json", "unet/unet_video.bin")  # the official folder, whatever its model_index.json says

UNET_CONFIGS = ("unet/unet_video_config.json", "unet/config.json")
UNET_WEIGHTS = ("unet/unet_video.bin", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin")
VAE_CHOICES = (  # (weights, its config names), the video VAE first
    ("vae/vae_video.bin", ("vae/vae_video_config.json",)),
    ("vae/vae_3d.bin", ("vae/vae_3d_config.json",)),
    ("vae/diffusion_pytorch_model.safetensors", ("vae/config.json", "vae/vae_video_config.json", "vae/vae_3d_config.json")),
    ("vae/diffusion_pytorch_model.bin", ("vae/config.json", "vae/vae_video_config.json", "vae/vae_3d_config.json")),
    ("vae/model.bin", ("vae/config.json", "vae/vae_video_config.json", "vae/vae_3d_config.json")),
)
TEXT_WEIGHTS = ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin")
STALE_TEXT_KEYS = ("text_model.embeddings.position_ids",)  # a buffer older transformers saved and today's does not load


MAX_NOISE_LEVEL = 200  # the published CLI's range, and the mirror's model_index.json "max_noise_level"
SCALE = 4
WINDOW = 8  # frames the temporal layers were trained on; the pipeline overlaps windows by --clip-overlap
DEFAULTS = dict(SD_X4_DEFAULTS, noise_level=120, motion_guidance=0.0)  # inference_upscale_a_video.py: -n 120, no guidance of ours
# UNet activation bytes per latent px of a frame tile (fp32), with the x4's 96 MiB intercept (memory.Cost): peaks of one
# full-size video UNet call on 8 frames, random weights, CPU, VmHWM above the loaded model: 332 / 613 / 772 MiB at
# 32^2 / 48^2 / 64^2 (docs/models/upscale-a-video.md); 32 KB bounds all three (the x4's is 16 KB). Not measured on a GPU.
UNET_PER_PX = 32_000
# The video VAE's decode of a chunk of 3 frames, fp32 bytes (benchmarks/bench_uav_memory.py, 2026-12-02, this 2-core CPU,
# full-size random-weight UAV_VAE_VIDEO_CONFIG, MALLOC_MMAP_THRESHOLD_=65536, VmHWM of one call in a fresh process):
# one tile's call (decode_frames, LR condition) 62.3 / 171.1 / 392.6 / 679.7 / 1527.5 MiB at 16^2 / 32^2 / 48^2 / 64^2 / 96^2
# latent px, 174 KB per tile px from 32^2 to 96^2, about 20 MiB at 0: 32 MiB + 180 KB per px bounds all five. The chunk's
# states of the pass-by-pass decode (decode_chunk at tile n / 2 on 3 frames of n x 2n): 36.4 / 132.2 / 202.4 MiB at
# 512 / 2048 / 3200 latent px of the frame, 74.5 / 67.7 / 66.3 KB per px (its pass's work included); 78 KiB bounds them.
# The attention (per frame, a chunk's 3 frames in one call) did not show up to 96^2 (CPU SDPA holds no scores): the x4's 8 B
# per px^2 per frame is kept, times 3. Not measured on a GPU.
VAE_FIXED = 32 * 2**20
VAE_PER_PX = 180_000
VAE_STATE_PER_PX = 78 * 2**10


def settle(sample: SampleConfig) -> SampleConfig:
    """``sample`` with Upscale-A-Video's defaults for what the user left unset; UsageError for values it cannot run."""
    return settle_x4(sample, DEFAULTS, MAX_NOISE_LEVEL, "upscale-a-video")


def first(folder: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of ``names`` that ``folder`` holds; a ModelError naming them all otherwise."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ModelError(f"{folder} has no {what} of Upscale-A-Video: expected one of {', '.join(names)}")


def read_tensors(path: Path, emit: Emit) -> dict[str, torch.Tensor]:
    """A weight file's tensors: safetensors as they are, a pickle through its converted safetensors copy."""
    from safetensors.torch import load_file

    return load_file(path if path.suffix == ".safetensors" else pickles.converted(path, emit))


def check_keys(network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """ModelError unless ``state`` holds exactly ``network``'s keys, with its shapes."""
    ours = network.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (first {keys[0]})" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if keys]
        raise ModelError(f"{path} is not Upscale-A-Video's published network: {', '.join(parts)}")


def build_loaded(build, state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """``build()`` made without allocating (meta), checked against ``state``, then given its tensors."""
    with torch.device("meta"):
        network = build()
    check_keys(network, state, path)
    network.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return network.to(device).eval()  # the default layout: torch has no channels-last form of the 3D convs' 5-D weights


def diffusers_kwargs(cls, config: dict) -> dict:
    """The fields of a published config that diffusers' ``cls`` takes, its 3D block names read as the 2D ones."""
    names = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in config.items() if k in names}
    for key in ("down_block_types", "up_block_types"):
        if key in kwargs:
            kwargs[key] = [name.replace("3D_plus", "2D").replace("3D", "2D") for name in kwargs[key]]
    return kwargs


def unet_from_config(config: dict) -> UNetVideo:
    """UNetVideo from a published config; UNetVideo builds the published temporal layout only (configs/unet_video_config.json):
    a temporal module after every block, no temporal transformer in them."""
    levels = list(range(len(config.get("down_block_types", ()))))
    layout = {k: config.get(k) for k in ("down_temporal_idx", "mid_temporal", "up_temporal_idx")}
    attention = (config.get("temporal_module_config") or {}).get("attention_block_types", ["", ""])
    if layout != dict(down_temporal_idx=levels, mid_temporal=True, up_temporal_idx=levels) or list(attention) != ["", ""]:
        raise ModelError(f"this UNet config's temporal layout {layout}, {attention} is not the published one vsrup builds")
    return UNetVideo(**diffusers_kwargs(UNet2DConditionModel, config))


def load_unet(folder: Path, dtype: torch.dtype, device: torch.device, emit: Emit) -> UNetVideo:
    config = json.loads(first(folder, UNET_CONFIGS, "UNet config").read_text())
    path = first(folder, UNET_WEIGHTS, "UNet weights")
    return build_loaded(lambda: unet_from_config(config), read_tensors(path, emit), path, dtype, device)


def vae_from_config(config: dict, video: bool) -> VideoAutoencoderKL:
    vae = VideoAutoencoderKL(**diffusers_kwargs(AutoencoderKL, config))
    if video:
        vae.add_temporal(config.get("condition_channels", 128))
    return vae


def load_vae(folder: Path, dtype: torch.dtype, device: torch.device, emit: Emit) -> VideoAutoencoderKL:
    """The video VAE where the folder has it, else the 3D one; which one a file holds is read from its keys."""
    for weights, configs in VAE_CHOICES:
        if (folder / weights).is_file():
            path = folder / weights
            config = json.loads(first(folder, configs, f"config beside {weights}").read_text())
            state = {published_key(k): v for k, v in read_tensors(path, emit).items()}
            video = any(k.startswith("decoder.condition_in.") for k in state)
            return build_loaded(lambda: vae_from_config(config, video), state, path, dtype, device)
    raise ModelError(f"{folder} has no VAE weights of Upscale-A-Video: expected one of {', '.join(w for w, _ in VAE_CHOICES)}")


def text_encoder(folder: Path, dtype: torch.dtype, device: torch.device, emit: Emit) -> torch.nn.Module | None:
    """The CLIP text encoder from pickle weights; None when the folder has safetensors (encode_prompts loads those)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    path = first(folder, TEXT_WEIGHTS, "text encoder weights")
    if path.suffix == ".safetensors":
        return None
    state = {k: v for k, v in read_tensors(path, emit).items() if k not in STALE_TEXT_KEYS}
    encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    check_keys(encoder, state, path)
    encoder.load_state_dict(state, strict=True)
    return to_device(encoder.to(dtype), device)


class Model:
    """Upscale-A-Video as a clip model: windows of 8 frames -> (T, 4h, 4w, 3), frame i seeded ``seed + i``."""

    def __init__(self, source: str, config: UpscaleConfig, emit: Emit = ignore):
        self.settings = s = settle(config.sample)
        self.device, self.dtype, folder = placement(source, FILES, config, emit)
        emit(Event("warning", message=LICENCE))
        guided = s.guidance > 1.0
        with loading(source, folder):
            # 1. Prompts first: the text encoder never shares the device with the UNet.
            prompts = [("prompt", s.prompt)] + ([("negative prompt", s.negative_prompt or "")] if guided else [])
            encoder = text_encoder(folder, self.dtype, self.device, emit)
            embeddings = encode_prompts(folder, prompts, self.device, self.dtype, emit, encoder=encoder)
            del encoder
            self.text = TextEmbeddings(cond=embeddings[0], uncond=embeddings[1] if guided else None)
            # 2. The networks and the schedulers.
            self.unet = load_unet(folder, self.dtype, self.device, emit)
            self.vae = load_vae(folder, vae_dtype(self.dtype), self.device, emit)
            self.scheduler_config = DDIMScheduler.load_config(folder, subfolder="scheduler")
            self.low_res_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="low_res_scheduler")
        if s.compile:
            compile_networks(self.unet)
            emit(Event("info", message="--compile: the video UNet compiles on its first call"))
        cost = Cost(
            dtype_bytes=torch.finfo(self.dtype).bits // 8, vae_dtype_bytes=torch.finfo(vae_dtype(self.dtype)).bits // 8,
            rows_per_frame=2 if guided else 1, unet_per_px=UNET_PER_PX,
            vae_fixed=VAE_FIXED, vae_per_px=VAE_PER_PX,  # a chunk of 3 frames per decode call, measured (VAE_FIXED's comment)
            vae_attention=Cost.vae_attention * DECODE_FRAMES,  # the x4's per frame: not visible on this CPU
            vae_state_per_px=VAE_STATE_PER_PX,  # a chunk's states per latent px of the frame, measured
        )
        temporal = s.motion_guidance > 0 or bool(s.propagation_steps)
        self.info = ModelInfo(name="upscale-a-video", scale=SCALE, kind="clip", flow=temporal, generative=True, cost=cost,
                              device=str(self.device), window=WINDOW)

    def sample(self, window: Window, plan: MemoryPlan, progress: Progress) -> torch.Tensor:
        """(T, h, w, 3) float32 in [0, 1] -> (T, 4h, 4w, 3) float32, nominally [0, 1]."""
        s = self.settings
        evals = s.steps * (2 if s.guidance > 1.0 else 1)
        work = evals + VAE_DECODE_IN_UNET_EVALS  # the window's work, in UNet evaluations per frame
        # 1. RGB [0, 1] -> [-1, 1]: float32 for the VAE's condition, the compute dtype for the UNet.
        rgb = torch.from_numpy(np.ascontiguousarray(window.frames, dtype=np.float32)).permute(0, 3, 1, 2)  # (T, 3, h, w)
        clean = (2.0 * rgb - 1.0).to(self.device)  # (T, 3, h, w) float32
        low_res = clean.to(self.dtype)  # (T, 3, h, w)
        hook = temporal_hook(window.flow.to(self.device), s) if window.flow is not None else None
        with torch.no_grad(), compile_errors():
            # 2. Noise-augment the input, then sample the window's latents together, in tiles.
            gens = generators(s.seed, window.indices)
            image, levels = augment(self.low_res_scheduler, low_res, gens, s.noise_level)  # (T, 3, h, w), (T,)
            latents = sample_clip(
                VideoDenoiser(self.unet, plan, frames=len(window.indices)),
                build_scheduler(s.scheduler, self.scheduler_config, edited_steps(s) if hook is not None else ()),
                image, levels, self.text, gens, steps=s.steps, guidance=s.guidance,
                latent_channels=self.unet.config.out_channels, hook=hook,
                progress=lambda i: progress((i + 1) * evals / s.steps / work),
            )  # (T, 4, h, w)
            # 3. Decode in chunks of frames, in tiles, [-1, 1] -> [0, 1].
            with stage("vae"):
                images = decode_window(self.vae, latents, clean, plan)  # (T, 3, 4h, 4w)
            progress(1.0)
        images = images.float().mul_(0.5).add_(0.5)  # (T, 3, 4h, 4w) in place: [-1, 1] -> [0, 1]
        return images.permute(0, 2, 3, 1)  # (T, 4h, 4w, 3)
