"""Tiny random-weight components of the SD x4 upscaler, and a Hugging Face cache that holds them.

The components use the real classes (UNet2DConditionModel with 7 input channels and a noise-level
class embedding, a factor-4 AutoencoderKL, CLIPTextModel, CLIPTokenizer, DDIM + DDPM schedulers
configured like the Hub repo's) at toy widths, built after ``torch.manual_seed(0)`` like diffusers'
fast tests. They are saved once per test session with ``save_pretrained`` in the diffusers layout,
and ``tiny_sd_x4_cache`` places that folder into a temporary Hugging Face cache under the real repo
id, so the real resolving and loading code runs without a network.

Use it from any test module::

    from tiny_sd import tiny_sd_x4_cache  # noqa: F401  (pytest finds the fixture by name)

    def test_something(tiny_sd_x4_cache):
        ...  # UpscaleConfig(model="sd-x4", device="cpu") now loads the tiny model, offline
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

REPO_ID = "stabilityai/stable-diffusion-x4-upscaler"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex string; refs/main points at it

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level BPE alphabet: printable bytes map to themselves, the rest to code points >= 256."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_tiny_clip_tokenizer_files(folder: Path) -> None:
    """vocab.json + merges.txt of a tiny byte-level CLIP BPE (the 256-symbol alphabet and a few merges)."""
    alphabet = list(_bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("b", "e"), ("s", "t"), ("i", "n"), ("in", "g</w>")]
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


TINY_UNET = dict(  # the x4 UNet's layout at toy widths
    sample_size=32,
    in_channels=7,  # 4 latent + 3 low-resolution RGB
    out_channels=4,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    only_cross_attention=(True, True, False),
    cross_attention_dim=32,
    attention_head_dim=4,
    use_linear_projection=True,
)


def tiny_tokenizer(scratch: Path):
    """A CLIPTokenizer over the tiny byte-level BPE, padding with "!" and 77 tokens long, as SD 2's."""
    from transformers import CLIPTokenizer

    write_tiny_clip_tokenizer_files(scratch)
    tokenizer = CLIPTokenizer(vocab=str(scratch / "vocab.json"), merges=str(scratch / "merges.txt"), pad_token="!")
    tokenizer.model_max_length = 77
    return tokenizer


def tiny_vae_and_text_encoder(tokenizer) -> tuple:
    """A factor-4 AutoencoderKL (the x4 VAE's layout) and a 2-layer CLIPTextModel, each built after manual_seed(0)."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16),  # 3 levels -> 2 downsamples -> factor-4 latent
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=8,
        scaling_factor=0.08333,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return vae, text_encoder


def build_tiny_components(folder: Path) -> dict:
    """Tiny random components (seeded), saved as a diffusers-layout pipeline folder at ``folder``."""
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel

    from vsrup.models.configs import LOW_RES_SCHEDULER_CONFIG, SCHEDULER_CONFIG  # the real model's

    tokenizer = tiny_tokenizer(folder.parent / "tokenizer-src")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET, num_class_embeds=1000)  # noise level 0..350 as a class label, like the real model
    vae, text_encoder = tiny_vae_and_text_encoder(tokenizer)
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(**LOW_RES_SCHEDULER_CONFIG),
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        max_noise_level=350,
    )
    pipe.save_pretrained(folder)
    return pipe.components


def seed_hf_cache(cache: Path, snapshot_source: Path, repo_id: str = REPO_ID, commit: str = COMMIT) -> Path:
    """Copy a diffusers folder into ``cache`` the way huggingface_hub stores it; returns the snapshot folder.

    Layout: ``models--owner--name/blobs/<sha256>``, ``snapshots/<commit>/<path>`` as relative symlinks
    to the blobs, and ``refs/main`` holding the commit.
    """
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    for src in sorted(p for p in snapshot_source.rglob("*") if p.is_file()):
        blob = repo_dir / "blobs" / hashlib.sha256(src.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(src, blob)
        dst = snapshot / src.relative_to(snapshot_source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(os.path.relpath(blob, dst.parent))
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


_BUILT: dict[str, dict[str, Path]] = {}  # per tiny family: one model folder and one seeded cache per test session


def built_once(tmp_path_factory, name: str, build, repo_id: str, commit: str) -> dict[str, Path]:
    """The tiny family ``name``: ``build(folder)`` once per session, and a Hugging Face cache holding it as ``repo_id``."""
    if name not in _BUILT:
        folder = tmp_path_factory.mktemp(f"tiny-{name}") / "model"
        build(folder)
        hf_home = tmp_path_factory.mktemp(f"hf-home-{name}")
        snapshot = seed_hf_cache(hf_home / "hub", folder, repo_id=repo_id, commit=commit)
        _BUILT[name] = dict(folder=folder, hf_home=hf_home, snapshot=snapshot)
    return _BUILT[name]


def _built(tmp_path_factory) -> dict[str, Path]:
    return built_once(tmp_path_factory, "sd-x4", build_tiny_components, REPO_ID, COMMIT)


@pytest.fixture(scope="session")
def tiny_sd_x4_folder(tmp_path_factory) -> Path:
    """The tiny model as a local diffusers folder (``--model <folder>`` works on it); built once per session."""
    return _built(tmp_path_factory)["folder"]


def point_hf_at(monkeypatch, hf_home: Path, offline: bool = True) -> None:
    """Set HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE for this test, in the environment (for subprocesses)
    and in huggingface_hub's constants (read once at import, so an already imported hub needs both)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


@pytest.fixture
def tiny_sd_x4_cache(monkeypatch, tmp_path_factory) -> Path:
    """A Hugging Face cache holding the tiny model as ``stabilityai/stable-diffusion-x4-upscaler``, offline.

    Sets HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE=1 for the test (environment and huggingface_hub's
    constants), so ``--model sd-x4`` (and the repo id) resolve to the tiny model through the real
    cache lookup, and nothing touches the network. Returns HF_HOME; the snapshot is at
    ``HF_HOME/hub/models--stabilityai--stable-diffusion-x4-upscaler/snapshots/<COMMIT>``.
    """
    hf_home = _built(tmp_path_factory)["hf_home"]
    point_hf_at(monkeypatch, hf_home)
    return hf_home


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded machine OpenMP's spinning threads
    made these tests ~20x slower (measured: 246 s with 2 threads, 14 s with 1, at load average 5 on 2 cores)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def x4_model(**sample):
    """The x4 family's model on the CPU from the seeded cache (``tiny_sd_x4_cache``), with these sampler options."""
    from vsrup.config import SampleConfig, UpscaleConfig
    from vsrup.models import sd_x4

    config = UpscaleConfig(device="cpu", sample=SampleConfig(**sample))
    return sd_x4.Model(REPO_ID, config), config


def run_window(model, config, frames, indices, **sample_kwargs):
    """What the pipeline does with one window (flow when the model asks, the memory plan, the colour fix,
    clamping): (T, h, w, 3) -> (T, H, W, 3) float32. ``sample_kwargs`` go to ``model.sample`` (the x4 hook)."""
    from vsrup.models import Window
    from vsrup.runner import Flows, ModelRunner

    runner = ModelRunner(model, config)
    with Flows(model, config.sample.flow) as flows:
        window = Window(frames, tuple(indices), flows.get(frames, tuple(indices)))
        return runner.run(window, lambda plan, progress: model.sample(window, plan, progress, **sample_kwargs))
