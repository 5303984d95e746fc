"""Tiny random-weight Upscale-A-Video in both of its layouts: the official folder and the Hub mirror's.

The networks are vsrup's ``UNetVideo`` and ``VideoAutoencoderKL`` at toy widths (32 and 64 channels:
the published temporal layers hard-code 32 GroupNorm groups, and the rotary embedding needs heads of
at least 32 features), every weight random (seeded), saved the way the published checkpoints are:
``torch.save`` pickles of plain state dicts, the configs in the published format (3D block names,
temporal fields), the VAE's mid-block attention under diffusers 0.16's names. The text encoder and
tokenizer are tiny_sd's.

* official (``pretrained_models/upscale_a_video/``): ``unet/unet_video.bin`` + ``unet_video_config.json``,
  ``vae/vae_video.bin`` + ``vae_video_config.json`` and ``vae/vae_3d.bin`` + ``vae_3d_config.json``,
  ``text_encoder/pytorch_model.bin``, ``tokenizer/``, ``scheduler/``, ``low_res_scheduler/``; no
  ``model_index.json``.
* mirror (``Runware/Video-Upscale``, in a temporary HF cache): ``model_index.json``
  (``UpscaleAVideoPipeline``), ``unet/config.json`` + ``diffusion_pytorch_model.bin``,
  ``vae/vae_3d_config.json`` + ``diffusion_pytorch_model.bin`` holding the *video* VAE (the mirror's
  455 MB file, reference/ports.md §2), the rest as above, the text encoder with the stale
  ``position_ids`` buffer older transformers saved.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tiny_sd import built_once, point_hf_at, tiny_tokenizer, tiny_vae_and_text_encoder

REPO_ID = "Runware/Video-Upscale"
COMMIT = "0aa0aa0aa0aa0aa0aa0aa0aa0aa0aa0aa0aa0aa0"

TINY_UNET_CONFIG = dict(  # the published unet_video_config.json's fields, at two levels
    _class_name="UNetVideoModel",
    in_channels=7,
    out_channels=4,
    block_out_channels=[32, 64],
    down_block_types=["DownBlock3D", "CrossAttnDownBlock3D"],
    up_block_types=["CrossAttnUpBlock3D", "UpBlock3D"],
    only_cross_attention=[False, True],
    attention_head_dim=[1, 2],  # heads per level: 32 features each
    cross_attention_dim=32,
    layers_per_block=1,
    norm_num_groups=32,
    num_class_embeds=1000,
    use_linear_projection=True,
    down_temporal_idx=[0, 1],
    mid_temporal=True,
    up_temporal_idx=[0, 1],
    temporal_module_config={"attention_block_types": ["", ""]},
)
TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=[32, 32, 64],  # 3 levels: factor 4
    layers_per_block=1,
    norm_num_groups=32,
    scaling_factor=0.08333,
    down_block_types=["DownEncoderBlock3D"] * 3,
)
TINY_VAE_3D_CONFIG = dict(TINY_VAE_CONFIG, _class_name="AutoencoderKL3D", up_block_types=["UpDecoderBlock3D"] * 3)
TINY_VAE_VIDEO_CONFIG = dict(TINY_VAE_CONFIG, _class_name="AutoencoderKLVideo", up_block_types=["UpDecoderBlock3D_plus"] * 3,
                             condition_img=True, condition_channels=32, use_temporal_block=True)
NEW_ATTENTION = re.compile(r"^(.*\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$")
OLD_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def randomised(network, seed: int):
    """Every parameter random (seeded; zero-initialised layers too), norms' scales near 1: a trained-like network."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if name.endswith("freqs"):
                continue  # the rotary frequencies are fixed, not trained
            noise = torch.randn(p.shape, generator=generator) * 0.05
            p.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)
    return network.eval()


def tiny_networks() -> dict:
    """The tiny UNet and both VAEs (vsrup's classes, published key names), each randomised."""
    from vsrup.models.upscale_a_video import unet_from_config, vae_from_config

    unet = randomised(unet_from_config(TINY_UNET_CONFIG), 1)
    vae_3d = randomised(vae_from_config(TINY_VAE_3D_CONFIG, video=False), 2)
    vae_video = randomised(vae_from_config(TINY_VAE_VIDEO_CONFIG, video=True), 3)
    return dict(unet=unet, vae_3d=vae_3d, vae_video=vae_video)


def published_state(network) -> dict:
    """A state dict under the published checkpoints' names (the VAEs' mid attention as diffusers 0.16 named it)."""
    def old(key: str) -> str:
        m = NEW_ATTENTION.match(key)
        return f"{m[1]}.{OLD_NAMES[m[2]]}.{m[3]}" if m else key

    return {old(k): v.clone() for k, v in network.state_dict().items()}


def write_common(folder: Path, text_state: dict, text_config) -> None:
    """text_encoder/ (pickle), tokenizer/, scheduler/, low_res_scheduler/ of either layout."""
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    from vsrup.models.configs import LOW_RES_SCHEDULER_CONFIG, SCHEDULER_CONFIG

    tokenizer = tiny_tokenizer(folder.parent / f"{folder.name}-tokenizer-src")
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "text_encoder").mkdir(parents=True)
    text_config.save_pretrained(folder / "text_encoder")
    torch.save(text_state, folder / "text_encoder" / "pytorch_model.bin")
    DDIMScheduler(**SCHEDULER_CONFIG).save_config(folder / "scheduler")
    DDPMScheduler(**LOW_RES_SCHEDULER_CONFIG).save_config(folder / "low_res_scheduler")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def build_tiny_official(folder: Path) -> dict:
    import torch

    nets = tiny_networks()
    _, text_encoder = tiny_vae_and_text_encoder(tiny_tokenizer(folder.parent / "tok"))
    write_common(folder, text_encoder.state_dict(), text_encoder.config)
    write_json(folder / "unet" / "unet_video_config.json", TINY_UNET_CONFIG)
    torch.save(published_state(nets["unet"]), folder / "unet" / "unet_video.bin")
    write_json(folder / "vae" / "vae_3d_config.json", TINY_VAE_3D_CONFIG)
    torch.save(published_state(nets["vae_3d"]), folder / "vae" / "vae_3d.bin")
    write_json(folder / "vae" / "vae_video_config.json", TINY_VAE_VIDEO_CONFIG)
    torch.save(published_state(nets["vae_video"]), folder / "vae" / "vae_video.bin")
    return nets


def build_tiny_mirror(folder: Path) -> dict:
    import torch

    nets = tiny_networks()
    _, text_encoder = tiny_vae_and_text_encoder(tiny_tokenizer(folder.parent / "tok"))
    text_state = dict(text_encoder.state_dict(), **{"text_model.embeddings.position_ids": torch.arange(77)[None]})
    write_common(folder, text_state, text_encoder.config)
    write_json(folder / "model_index.json", {"_class_name": "UpscaleAVideoPipeline", "max_noise_level": 200})
    write_json(folder / "unet" / "config.json", TINY_UNET_CONFIG)
    torch.save(published_state(nets["unet"]), folder / "unet" / "diffusion_pytorch_model.bin")
    write_json(folder / "vae" / "vae_3d_config.json", TINY_VAE_VIDEO_CONFIG)
    torch.save(published_state(nets["vae_video"]), folder / "vae" / "diffusion_pytorch_model.bin")
    return nets


@pytest.fixture(scope="session")
def tiny_uav_folder(tmp_path_factory) -> Path:
    """The tiny model as an official release folder (``--model <folder>``)."""
    return built_once(tmp_path_factory, "uav-official", build_tiny_official, "local/unused", COMMIT)["folder"]


@pytest.fixture
def tiny_uav_cache(monkeypatch, tmp_path_factory) -> Path:
    """A Hugging Face cache holding the tiny mirror as ``Runware/Video-Upscale``, offline; returns HF_HOME."""
    hf_home = built_once(tmp_path_factory, "uav-mirror", build_tiny_mirror, REPO_ID, COMMIT)["hf_home"]
    point_hf_at(monkeypatch, hf_home)
    return hf_home
