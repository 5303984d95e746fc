"""MGLD-VSR's two LDM-format checkpoints -> the state dicts of vsrup's modules, key by key.

``mgldvsr_unet.ckpt`` holds the UNet (``model.diffusion_model.``), the struct encoder (``structcond_stage_model.``),
the SD VAE (``first_stage_model.``) and the OpenCLIP text tower (``cond_stage_model.model.``); ``video_vae_cfw.ckpt``
the video VAE (``encoder.``, ``decoder.``, the quant convs). ``pickles.converted`` has already read each pickle
without running it and cached its tensors as safetensors; this module only renames (and, for attention, reshapes)
them. What is read and deliberately not kept is ``IGNORED``, with why. Everything else must map: ``convert_unet``
and ``convert_vae`` raise on a key they do not know, and the models' ``load_state_dict(strict=True)`` on one missing.
The topology is the published one (4 levels, 2 resnets a level); the widths come from the tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from vsrup.errors import ModelError

IGNORED = {  # prefix -> why vsrup does not load it
    "flownet_model.": "RAFT for the published sampler's flow; vsrup estimates flow itself",
    "first_stage_model.decoder.": "the SD VAE's decoder; the video VAE decodes",
    "first_stage_model.post_quant_conv.": "the SD VAE's decoder side; the video VAE decodes",
    "cond_stage_model.model.text_projection": "the pooled projection; the per-token states are used",
    "cond_stage_model.model.logit_scale": "CLIP's contrastive temperature; unused for text states",
    "loss.": "the video VAE's training loss (LPIPS, discriminator, SpyNet)",
    "model_ema.": "an EMA copy (the published config trains without one)",
}
SCHEDULE_BUFFERS = {  # LatentDiffusion's registered schedule, recomputed by the sampler from the config's betas
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
    "scale_factor", "cond_ids",
}
LEVELS = 4  # UNet, struct encoder and VAE levels
LAYERS = 2  # resnets a level (down side)

RESNET = (("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
          ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut."),
          ("nin_shortcut.", "conv_shortcut."))
VAE_ATTENTION = (("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0."))

Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def ignored(key: str) -> bool:
    return key in SCHEDULE_BUFFERS or any(key.startswith(prefix) for prefix in IGNORED)


def rename(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def down_index(n: int) -> tuple[int, int | None]:
    """LDM input_blocks index n >= 1 -> (level, layer) of a resnet block, or (level, None) for the downsampler after it."""
    level, position = divmod(n - 1, LAYERS + 1)
    return level, (position if position < LAYERS else None)


def unet_key(rest: str) -> str:
    """A ``model.diffusion_model.`` key (prefix removed) -> the ``MGLDUNet`` key."""
    if m := re.fullmatch(r"time_embed\.([02])\.(.+)", rest):
        return f"time_embedding.linear_{1 + int(m[1]) // 2}.{m[2]}"
    if m := re.fullmatch(r"input_blocks\.0\.0\.(.+)", rest):
        return f"conv_in.{m[1]}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.(\d)\.(.+)", rest):
        level, layer = down_index(int(m[1]))
        if layer is None:
            return f"down_blocks.{level}.downsamplers.0.conv.{m[3].removeprefix('op.')}"
        part = "resnets" if m[2] == "0" else "attentions"
        return f"down_blocks.{level}.{part}.{layer}.{rename(m[3], RESNET)}"
    if m := re.fullmatch(r"middle_block\.(\d)\.(.+)", rest):
        index, inner = int(m[1]), m[2]
        if index in (0, 4):
            return f"mid_block.resnets.{index // 4}.{rename(inner, RESNET)}"
        if index == 2:
            return f"mid_block.attentions.0.{inner}"
        temporal = {1: "temporal_convs.0", 3: "temporal_attention", 5: "temporal_convs.1"}[index]
        inner = rename(inner, (("temporal_conv.", "conv."), ("temporal_attn.", "attn."), ("temporal_alpha", "alpha")))
        return f"mid_block.{temporal}.{inner}"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.(\d)\.(.+)", rest):
        level, layer = divmod(int(m[1]), LAYERS + 1)
        if m[3].startswith("conv."):  # the upsampler closing the level
            return f"up_blocks.{level}.upsamplers.0.{m[3]}"
        part = "resnets" if m[2] == "0" else "attentions"
        return f"up_blocks.{level}.{part}.{layer}.{rename(m[3], RESNET)}"
    if m := re.fullmatch(r"out\.([02])\.(.+)", rest):
        return f"{'conv_norm_out' if m[1] == '0' else 'conv_out'}.{m[2]}"
    raise KeyError(rest)


def struct_key(rest: str) -> str:
    """A ``structcond_stage_model.`` key (prefix removed) -> the ``StructEncoder`` key (legacy attention: see ``split_qkv``)."""
    if m := re.fullmatch(r"time_embed\.([02])\.(.+)", rest):
        return f"time_embedding.linear_{1 + int(m[1]) // 2}.{m[2]}"
    if m := re.fullmatch(r"input_blocks\.0\.0\.(.+)", rest):
        return f"conv_in.{m[1]}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.(\d)\.(.+)", rest):
        level, layer = down_index(int(m[1]))
        if layer is None:
            return f"levels.{level}.downsample.conv.{m[3].removeprefix('op.')}"
        if m[2] == "0":
            return f"levels.{level}.resnets.{layer}.{rename(m[3], RESNET)}"
        return f"levels.{level}.attentions.{layer}.{legacy_attention(m[3])}"
    if m := re.fullmatch(r"middle_block\.(\d)\.(.+)", rest):
        if m[1] == "1":
            return f"mid_attention.{legacy_attention(m[2])}"
        return f"mid_resnets.{int(m[1]) // 2}.{rename(m[2], RESNET)}"
    if m := re.fullmatch(r"fea_tran\.(\d+)\.(.+)", rest):
        return f"fea_tran.{m[1]}.{rename(m[2], RESNET)}"
    raise KeyError(rest)


def legacy_attention(rest: str) -> str:
    """Legacy ``AttentionBlock`` names -> ``Attention``'s; ``qkv`` stays, for ``split_qkv``."""
    return rename(rest, (("norm.", "group_norm."), ("proj_out.", "to_out.0.")))


def vae_key(rest: str) -> str:
    """An LDM VAE key (``encoder.``/``decoder.``/quant convs) -> the ``AutoencoderKL``/``CFWAutoencoder`` key."""
    if rest.startswith(("quant_conv.", "post_quant_conv.")):
        return rest
    if re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.(.+)", rest):
        return rest
    if m := re.fullmatch(r"(encoder|decoder)\.norm_out\.(.+)", rest):
        return f"{m[1]}.conv_norm_out.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.+)", rest):
        if m[2] == "attn_1":
            return f"{m[1]}.mid_block.attentions.0.{rename(m[3], VAE_ATTENTION)}"
        return f"{m[1]}.mid_block.resnets.{int(m[2][-1]) - 1}.{rename(m[3], RESNET)}"
    if m := re.fullmatch(r"encoder\.down\.(\d)\.block\.(\d)\.(.+)", rest):
        return f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{rename(m[3], RESNET)}"
    if m := re.fullmatch(r"encoder\.down\.(\d)\.downsample\.(.+)", rest):
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.{m[2]}"
    if m := re.fullmatch(r"decoder\.up\.(\d)\.block\.(\d)\.(.+)", rest):
        return f"decoder.up_blocks.{LEVELS - 1 - int(m[1])}.resnets.{m[2]}.{rename(m[3], RESNET)}"
    if m := re.fullmatch(r"decoder\.up\.(\d)\.upsample\.(.+)", rest):
        return f"decoder.up_blocks.{LEVELS - 1 - int(m[1])}.upsamplers.0.{m[2]}"
    if m := re.fullmatch(r"decoder\.up\.(\d)\.temporal_mixing\.(\d)\.(.+)", rest):
        return f"decoder.up_blocks.{LEVELS - 1 - int(m[1])}.temporal_mixing.{m[2]}.{temporal(m[3])}"
    if m := re.fullmatch(r"decoder\.temporal_mixing\.(.+)", rest):
        return f"decoder.mid_temporal.{temporal(m[1])}"
    if m := re.fullmatch(r"decoder\.fusion_layer_(\d)\.(.+)", rest):
        return f"decoder.up_blocks.{LEVELS - 1 - int(m[1])}.fuse.{m[2]}"
    raise KeyError(rest)


def temporal(rest: str) -> str:
    return rename(rest, (("temporal_conv.", "conv."), ("temporal_alpha", "alpha")))


def split_qkv(key: str, value: torch.Tensor, heads: int) -> dict[str, torch.Tensor]:
    """LDM's legacy fused qkv (a 1x1 Conv1d, rows ordered head by head, q k v within a head) -> to_q, to_k, to_v."""
    stem, kind = key.rsplit(".qkv.", 1)
    rows = value.reshape(heads, 3, value.shape[0] // (3 * heads), *value.shape[1:2])  # (heads, 3, ch, [C])
    return {f"{stem}.to_{name}.{kind}": rows[:, i].reshape(-1, *value.shape[1:2]) for i, name in enumerate("qkv")}


def linear_weight(key: str, value: torch.Tensor) -> torch.Tensor:
    """1x1 convolution weights of attention projections -> linear weights; anything else unchanged."""
    attention = any(f".{p}." in key for p in ("to_q", "to_k", "to_v", "to_out.0")) and key.endswith(".weight")
    return value.reshape(value.shape[0], value.shape[1]) if attention and value.dim() > 2 else value


def convert(state: Mapping[str, torch.Tensor], prefix: str, key_fn: Callable[[str], str], heads: int | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` under ``prefix`` (ignored keys skipped), renamed by ``key_fn``; ModelError on an unknown key."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix) or ignored(key):
            continue
        try:
            new = key_fn(key[len(prefix):])
        except KeyError:
            raise ModelError(f"unexpected tensor {key} in the MGLD-VSR checkpoint; vsrup does not know where it goes") from None
        if ".qkv." in new:
            out.update(split_qkv(new, value, heads))
        else:
            out[new] = linear_weight(new, value)
    return out


def convert_unet(state: Mapping[str, torch.Tensor], struct_heads: int = 4) -> dict[str, dict[str, torch.Tensor]]:
    """``mgldvsr_unet.ckpt``'s tensors -> {"unet", "struct", "vae" (the SD VAE's encoder side), "text" (CLIPTextModel)}."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    known = ("model.diffusion_model.", "structcond_stage_model.", "first_stage_model.", "cond_stage_model.model.")
    stray = sorted(k for k in state if not ignored(k) and not k.startswith(known))
    if stray:
        raise ModelError(f"unexpected tensor {stray[0]} in the MGLD-VSR checkpoint ({len(stray)} such); vsrup does not know where it goes")
    # OpenCLIP's last block is left out: the model conditions on the penultimate layer's states (then ln_final).
    blocks = [int(m[1]) for k in state if (m := re.match(r"cond_stage_model\.model\.transformer\.resblocks\.(\d+)\.", k))]
    last = f"cond_stage_model.model.transformer.resblocks.{max(blocks)}."
    text_state = {k: v for k, v in state.items() if k.startswith("cond_stage_model.model.") and not ignored(k) and not k.startswith(last)}
    text = convert_open_clip_checkpoint(TextConfigView(state), text_state)
    # CLIPTextModel's own keys (transformers 5 names them without diffusers' "text_model." prefix).
    text = {k.removeprefix("text_model."): v for k, v in text.items() if not k.startswith("text_projection")}
    return {
        "unet": convert(state, "model.diffusion_model.", unet_key),
        "struct": convert(state, "structcond_stage_model.", struct_key, heads=struct_heads),
        "vae": convert(state, "first_stage_model.", vae_key),
        "text": text,
    }


def convert_vae(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``video_vae_cfw.ckpt``'s tensors -> the ``CFWAutoencoder`` state dict."""
    return convert(state, "", vae_key)


class TextConfigView:
    """What diffusers' ``convert_open_clip_checkpoint`` reads of a text model: ``config.hidden_size``, from the tensors."""

    def __init__(self, state: Mapping[str, torch.Tensor]):
        width = state["cond_stage_model.model.positional_embedding"].shape[1]
        self.config = type("Config", (), {"hidden_size": width})()
