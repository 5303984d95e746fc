"""Tiny random-weight MGLD-VSR, packed as the repo's two Lightning checkpoints, and a Hugging Face cache holding them.

The networks are vsrup's classes at 32 channels with the published topology, built seeded. They are written
back under the *published* key names and shapes (tests/fixtures/mgld_vsr_*_keys.txt lists them): every key of
the fixtures is filled from the tiny network (the legacy fused qkv re-interleaved head by head, attention
projections back to 1x1 convolutions, the OpenCLIP text tower written in OpenCLIP's names, with the extra last
block the penultimate layer skips), plus a RAFT tensor and schedule buffers that vsrup must ignore. The
checkpoints are pickled the way PyTorch Lightning 1.x writes them (the trainer's state beside "state_dict",
a ``ModelCheckpoint`` class key), so loading goes through the weights-only unpickler as it would for the real files.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch
from tiny_sd import point_hf_at, seed_hf_cache

REPO_ID = "Iceclear/MGLD-VSR"
COMMIT = "3a1d0c1e3a1d0c1e3a1d0c1e3a1d0c1e3a1d0c1e"
FIXTURES = Path(__file__).parent / "fixtures"
LIGHTNING = "pytorch_lightning.callbacks.model_checkpoint"
TEXT_VOCAB, TEXT_WIDTH, TEXT_LAYERS = 1000, 32, 2


def fixture_keys(name: str) -> dict[str, tuple[int, ...]]:
    """``key -> shape`` of a published checkpoint's fixture."""
    out = {}
    for line in (FIXTURES / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split()
            out[key] = () if shape == "scalar" else tuple(int(x) for x in shape.split("x"))
    return out


def tiny_networks(seed: int = 0) -> dict[str, torch.nn.Module]:
    """vsrup's MGLD-VSR networks at 32 channels, seeded; the temporal alphas away from 0."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from vsrup.models.mgld_unet import MGLDUNet, StructEncoder, unet_config
    from vsrup.models.mgld_vae import CFWAutoencoder, vae_config
    from vsrup.models.mgld_vsr import STRUCT_HEADS, TEXT_CONFIG

    torch.manual_seed(seed)
    nets = {
        "unet": MGLDUNet(**unet_config(32, (1, 2, 4, 4), 64, TEXT_WIDTH), struct_channels=32),
        "struct": StructEncoder(channels=32, out_channels=32, heads=STRUCT_HEADS),
        "vae": AutoencoderKL(**vae_config(32, (1, 2, 4, 4))),
        "video": CFWAutoencoder(**vae_config(32, (1, 2, 4, 4))),
        "text": CLIPTextModel(CLIPTextConfig(**dict(TEXT_CONFIG, vocab_size=TEXT_VOCAB, hidden_size=TEXT_WIDTH, intermediate_size=64,
                                                    num_hidden_layers=TEXT_LAYERS + 1, num_attention_heads=1, projection_dim=TEXT_WIDTH,
                                                    bos_token_id=TEXT_VOCAB - 2, eos_token_id=TEXT_VOCAB - 1, pad_token_id=0))),
    }
    with torch.no_grad():
        for k, module in enumerate(m for net in nets.values() for m in net.modules() if hasattr(m, "alpha")):
            module.alpha.fill_(0.3 + 0.05 * (k % 5))
        for net in nets.values():  # zero-initialised output convolutions would hide whole branches
            for name, p in net.named_parameters():
                if p.abs().sum() == 0 and p.dim() > 1:
                    p.normal_(0, 0.05)
    return {name: net.eval() for name, net in nets.items()}


def published_state(nets: dict[str, torch.nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The tiny networks' tensors under the published checkpoints' keys: (mgldvsr_unet.ckpt's, video_vae_cfw.ckpt's)."""
    from vsrup.models.mgld_convert import ignored, struct_key, unet_key, vae_key

    unet_ckpt = {}
    sources = {"model.diffusion_model.": ("unet", unet_key), "structcond_stage_model.": ("struct", struct_key),
               "first_stage_model.": ("vae", vae_key)}
    states = {name: net.state_dict() for name, net in nets.items()}
    for key, shape in fixture_keys("mgld_vsr_unet_keys.txt").items():
        if key.startswith("cond_stage_model."):
            unet_ckpt[key] = open_clip_tensor(key[len("cond_stage_model.model."):], states["text"], len(shape))
            continue
        prefix = next(p for p in sources if key.startswith(p))
        net, key_fn = sources[prefix]
        if ignored(key):  # the SD VAE's decoder side: the tiny SD VAE's own
            unet_ckpt[key] = back_to_rank(states[net][vae_key(key[len(prefix):])], len(shape))
            continue
        ours = key_fn(key[len(prefix):])
        if ".qkv." in ours:
            unet_ckpt[key] = fused_qkv(ours, states[net], heads=4)
        else:
            unet_ckpt[key] = back_to_rank(states[net][ours], len(shape))
    unet_ckpt["flownet_model.fnet.conv1.weight"] = torch.randn(4, 3, 7, 7)  # vsrup ignores RAFT
    unet_ckpt["alphas_cumprod"] = torch.linspace(1, 0, 1000)  # and the schedule buffers
    vae_ckpt = {key: back_to_rank(states["video"][vae_key(key)], len(shape)) for key, shape in fixture_keys("mgld_vsr_vae_keys.txt").items()}
    vae_ckpt["loss.logvar"] = torch.zeros(())  # the training loss, ignored
    return unet_ckpt, vae_ckpt


def back_to_rank(value: torch.Tensor, rank: int) -> torch.Tensor:
    """Linear attention weights back to the 1x1 convolutions the published checkpoint stores."""
    return value.reshape(*value.shape, *([1] * (rank - value.dim()))).clone()


def fused_qkv(ours: str, state: dict[str, torch.Tensor], heads: int) -> torch.Tensor:
    """to_q, to_k, to_v -> LDM's legacy qkv: rows head by head, q k v within a head (a Conv1d weight gets its 1)."""
    stem, kind = ours.rsplit(".qkv.", 1)
    parts = [state[f"{stem}.to_{n}.{kind}"] for n in "qkv"]  # (C, [C]) each
    rows = torch.stack([p.reshape(heads, p.shape[0] // heads, *p.shape[1:]) for p in parts], dim=1)  # (heads, 3, ch, [C])
    fused = rows.reshape(3 * parts[0].shape[0], *parts[0].shape[1:])
    return fused[..., None].clone() if kind == "weight" else fused.clone()


def open_clip_tensor(key: str, text: dict[str, torch.Tensor], rank: int) -> torch.Tensor:
    """An OpenCLIP text-tower tensor (``cond_stage_model.model.`` removed) from the tiny CLIPTextModel."""
    fixed = {"positional_embedding": "embeddings.position_embedding.weight", "token_embedding.weight": "embeddings.token_embedding.weight",
             "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias"}
    if key in fixed:
        return text[fixed[key]].clone()
    if key in ("text_projection", "logit_scale"):
        return torch.eye(TEXT_WIDTH) if key == "text_projection" else torch.tensor(4.6)
    m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key)
    layer, rest = int(m[1]), m[2]
    if layer > TEXT_LAYERS:
        return None
    p = f"encoder.layers.{layer}."
    if rest.startswith("attn.in_proj_"):
        kind = rest.removeprefix("attn.in_proj_")
        return torch.cat([text[f"{p}self_attn.{n}_proj.{kind}"] for n in "qkv"]).clone()
    names = {"attn.out_proj.": "self_attn.out_proj.", "ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
    old = next(o for o in names if rest.startswith(o))
    return text[p + names[old] + rest[len(old):]].clone()


def lightning_save(state: dict[str, torch.Tensor], path: Path, extra: object = None, *, legacy: bool = False) -> None:
    """``state`` as PyTorch Lightning 1.x writes a checkpoint: the weights under "state_dict", beside the trainer's
    state, whose "callbacks" dict is keyed by the callback class itself (so the pickle names Lightning's class).
    ``extra``: one more object in the trainer's state; ``legacy``: torch's pre-zip pickle format."""
    modules = {name: types.ModuleType(name) for name in ("pytorch_lightning", "pytorch_lightning.callbacks", LIGHTNING)}

    class ModelCheckpoint:  # what Lightning's class is, as far as the pickle records it: a name
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = LIGHTNING, "ModelCheckpoint"
    modules[LIGHTNING].ModelCheckpoint = ModelCheckpoint
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        checkpoint = {"epoch": 7, "global_step": 42000, "pytorch-lightning_version": "1.4.2",
                      "state_dict": {k: v for k, v in state.items() if v is not None},
                      "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "best_model_path": "x.ckpt"}},
                      "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}}], "lr_schedulers": []}
        if extra is not None:
            checkpoint["extra"] = extra
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def build_tiny_mgld(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    nets = tiny_networks()
    unet_ckpt, vae_ckpt = published_state(nets)
    lightning_save(unet_ckpt, folder / "mgldvsr_unet.ckpt")
    lightning_save(vae_ckpt, folder / "video_vae_cfw.ckpt")
    return nets


BUILT: dict = {}  # folder, hf_home, snapshot and the tiny networks ("nets"), once built


def built(tmp_path_factory) -> dict:
    if not BUILT:
        folder = tmp_path_factory.mktemp("tiny-mgld") / "model"
        nets = build_tiny_mgld(folder)
        hf_home = tmp_path_factory.mktemp("hf-home-mgld")
        snapshot = seed_hf_cache(hf_home / "hub", folder, repo_id=REPO_ID, commit=COMMIT)
        BUILT.update(folder=folder, hf_home=hf_home, snapshot=snapshot, nets=nets)
    return BUILT


@pytest.fixture
def tiny_mgld_cache(monkeypatch, tmp_path_factory) -> Path:
    """A Hugging Face cache holding the tiny model as ``Iceclear/MGLD-VSR``, offline; returns HF_HOME."""
    hf_home = built(tmp_path_factory)["hf_home"]
    point_hf_at(monkeypatch, hf_home)
    return hf_home
