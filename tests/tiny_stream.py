"""Tiny random-weight Stream-DiffVSR, in the real repo's layout, and a Hugging Face cache that holds it.

The layout is ``Jamichsu/Stream-DiffVSR``'s (reference/nextmodels.md §2.1): ``model_index.json``
naming the custom ``StreamDiffVSRPipeline`` and a VAE class of no library, ``unet/`` (no class
embedding), ``controlnet/`` (a 3-level conditioning embedding), ``vae/`` (a ``TemporalAutoencoderTiny``
config and safetensors weights: the published structure at 16 channels), ``text_encoder/``,
``tokenizer/`` and ``scheduler/`` (the x4 DDIM config with "trailing" spacing), built seeded. The
snapshot also holds Python files named like the repo's custom code that write a marker file if
anything ever imports them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_sd import TINY_UNET, built_once, point_hf_at, tiny_tokenizer, tiny_vae_and_text_encoder
from tiny_stablevsr import CUSTOM_PIPELINE, tiny_controlnet

REPO_ID = "Jamichsu/Stream-DiffVSR"
COMMIT = "c0d0ce1c0d0ce1c0d0ce1c0d0ce1c0d0ce1c0d0"
TINY_TAE = dict(  # the published TemporalAutoencoderTiny's structure (3 levels, blocks 1/3/3 and 3/3/1) at 16 channels
    encoder_block_out_channels=(16, 16, 16),
    decoder_block_out_channels=(16, 16, 16),
    num_encoder_blocks=(1, 3, 3),
    num_decoder_blocks=(3, 3, 1),
    act_fn="relu",
    upsample_fn="nearest",
    latent_channels=4,
    upsampling_scaling_factor=2,
)


def tiny_tae(seed: int = 2):
    """A tiny TemporalAutoencoderTiny whose output spans [-1, 1] around 0 (not a saturated -1, as at random init)
    and whose TPMs visibly matter (alpha away from 1/2, larger Conv1d weights)."""
    import torch

    from vsrup.models.temporal_tiny import TemporalAutoencoderTiny

    torch.manual_seed(seed)
    tae = TemporalAutoencoderTiny(**TINY_TAE).eval()
    with torch.no_grad():
        for k, block in enumerate(tae.blocks(tae.decoder)):
            block.alpha.fill_(0.2 + 0.1 * k)
            for conv in block.temporal_processor[0::2]:
                conv.weight.mul_(3.0)
        last = tae.decoder.layers[-1]
        last.weight.mul_(20.0)
        last.bias.fill_(0.5)  # DecoderTiny maps [0, 1] to [-1, 1]: centred
    return tae


def build_tiny_stream(folder: Path) -> dict:
    """Tiny random Stream-DiffVSR components (seeded), saved in the real repo's layout at ``folder``."""
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from vsrup.models.configs import STREAM_SCHEDULER_CONFIG

    tokenizer = tiny_tokenizer(folder.parent / "stream-tokenizer-src")
    torch.manual_seed(3)
    unet = UNet2DConditionModel(**TINY_UNET)  # no class embedding
    controlnet = tiny_controlnet(unet, seed=4)
    _, text_encoder = tiny_vae_and_text_encoder(tokenizer)
    vae = tiny_tae()
    scheduler = DDIMScheduler.from_config(STREAM_SCHEDULER_CONFIG)
    for name, part in dict(unet=unet, controlnet=controlnet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler).items():
        part.save_pretrained(folder / name)
    index = {
        "_class_name": "StreamDiffVSRPipeline", "_diffusers_version": "0.21.0.dev0", "_name_or_path": REPO_ID,
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": [None, "TemporalAutoencoderTiny"], "controlnet": ["diffusers", "ControlNetModel"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    for path in ("pipeline/stream_diffvsr_pipeline.py", "temporal_autoencoder/autoencoder_tiny.py", "vae/autoencoder_tiny.py"):
        (folder / path).parent.mkdir(exist_ok=True)
        (folder / path).write_text(CUSTOM_PIPELINE)
    return dict(unet=unet, controlnet=controlnet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def _built(tmp_path_factory) -> dict[str, Path]:
    return built_once(tmp_path_factory, "stream", build_tiny_stream, REPO_ID, COMMIT)


@pytest.fixture(scope="session")
def tiny_stream_folder(tmp_path_factory) -> Path:
    """The tiny Stream-DiffVSR as a local folder in the repo's layout; built once per session."""
    return _built(tmp_path_factory)["folder"]


@pytest.fixture
def tiny_stream_cache(monkeypatch, tmp_path_factory) -> Path:
    """A Hugging Face cache holding the tiny model as ``Jamichsu/Stream-DiffVSR``, offline; returns HF_HOME."""
    hf_home = _built(tmp_path_factory)["hf_home"]
    point_hf_at(monkeypatch, hf_home)
    return hf_home
