"""Tiny random-weight StableVSR, in the real repo's layout, and a Hugging Face cache that holds it.

The layout is ``claudiom4sir/StableVSR``'s (reference/nextmodels.md §1.1): ``model_index.json`` naming
the custom ``StableVSRPipeline`` class, ``unet/`` (no class embedding), ``controlnet/`` (built with
``ControlNetModel.from_unet`` and a 3-level conditioning embedding, as StableVSR's train.py does),
``vae/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/`` (the x4 DDIM config, which StableVSR reads
as DDPM), at toy widths, built after ``torch.manual_seed(0)``. The snapshot also holds a Python file
named like the repo's custom pipeline that writes a marker file if anything ever imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_sd import TINY_UNET, built_once, point_hf_at, tiny_tokenizer, tiny_vae_and_text_encoder

REPO_ID = "claudiom4sir/StableVSR"
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
MARKER = "CUSTOM_CODE_RAN"  # the custom pipeline file writes this beside itself when imported

CUSTOM_PIPELINE = f'''"""Stands in for the repo's custom pipeline code: running it leaves a trace."""
from pathlib import Path
Path(__file__).with_name("{MARKER}").write_text("imported")
'''


def tiny_controlnet(unet, seed: int):
    """``ControlNetModel.from_unet`` with a 3-level conditioning embedding (StableVSR's train.py), seeded.

    from_unet zero-initialises the residual convolutions and the control embedding's last conv (ControlNet's
    init): a trained ControlNet's are not zero, and with zeros the tests could not tell a control image from
    none. The embedding's is drawn large, so that moving the control image moves the residuals visibly.
    """
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16))
    with torch.no_grad():
        for conv, std in [*((c, 0.3) for c in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]),
                          (controlnet.controlnet_cond_embedding.conv_out, 3.0)]:
            conv.weight.normal_(0, std)
            conv.bias.normal_(0, 0.05)
    return controlnet


def build_tiny_stablevsr(folder: Path) -> dict:
    """Tiny random StableVSR components (seeded), saved in the real repo's layout at ``folder``."""
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from vsrup.models.configs import STABLEVSR_SCHEDULER_CONFIG

    tokenizer = tiny_tokenizer(folder.parent / "stablevsr-tokenizer-src")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET)  # no class embedding: the low-resolution frame enters clean
    controlnet = tiny_controlnet(unet, seed=1)
    vae, text_encoder = tiny_vae_and_text_encoder(tokenizer)
    scheduler = DDIMScheduler.from_config(STABLEVSR_SCHEDULER_CONFIG)
    for name, part in dict(unet=unet, controlnet=controlnet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler).items():
        part.save_pretrained(folder / name)
    index = {
        "_class_name": "StableVSRPipeline", "_diffusers_version": "0.21.0.dev0", "_name_or_path": REPO_ID,
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "controlnet": ["diffusers", "ControlNetModel"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    (folder / "stablevsr_pipeline.py").write_text(CUSTOM_PIPELINE)
    (folder / "pipeline").mkdir()
    (folder / "pipeline" / "stablevsr_pipeline.py").write_text(CUSTOM_PIPELINE)
    return dict(unet=unet, controlnet=controlnet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def _built(tmp_path_factory) -> dict[str, Path]:
    return built_once(tmp_path_factory, "stablevsr", build_tiny_stablevsr, REPO_ID, COMMIT)


@pytest.fixture(scope="session")
def tiny_stablevsr_folder(tmp_path_factory) -> Path:
    """The tiny StableVSR as a local folder in the repo's layout; built once per session."""
    return _built(tmp_path_factory)["folder"]


@pytest.fixture
def tiny_stablevsr_cache(monkeypatch, tmp_path_factory) -> Path:
    """A Hugging Face cache holding the tiny model as ``claudiom4sir/StableVSR``, offline; returns HF_HOME."""
    hf_home = _built(tmp_path_factory)["hf_home"]
    point_hf_at(monkeypatch, hf_home)
    return hf_home
