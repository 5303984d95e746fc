"""Upscale-A-Video's temporal UNet: the x4 upscaler's UNet with temporal layers, in diffusers' own classes.

The published ``UNetVideoModel`` (Zhou et al., CVPR 2024; reference/ports.md §2) keeps every 2D
weight of the x4 UNet under its diffusers name and adds, for a window of T frames of one video:

* after each down block, the mid block and each up block, a ``TemporalModule``::

      h   = R_t(x, emb)                          TemporalResnet, kernel (5, 1, 1) along time
      h   = R_s(h, emb)                          a ResnetBlock2D (eps 1e-6) run frame by frame
      out = x + shift_conv(h)                    1x1 conv, zero at the published init

* inside every transformer, before its GroupNorm, ``resblock_temporal``: a TemporalResnet with
  kernel (3, 1, 1) and no time embedding;
* inside every transformer block, between the cross-attention and the feed-forward, a temporal
  self-attention over the T frames at each spatial position::

      h   = x + Wo softmax(rot(Q) rot(K)^T / sqrt(d) + B) V,   Q, K, V = LN(x) Wq, Wk, Wv (8 heads)

  ``rot`` the rotary embedding of the frame index on the first 32 features of each head (one set
  of frequencies shared by the whole UNet), ``B`` the T5-style relative position bias (32 buckets,
  max distance 32, one value per head).

The published network runs on 5-D tensors (B, C, T, H, W), so every GroupNorm that sees them takes
its statistics over the window's T frames together: those of all resnets (2D and temporal) and of
the output norm. The transformers' own GroupNorm and the attentions run frame by frame. Here a
window is a batch of rows (V videos x T frames, video-major) and ``WindowGroupNorm`` gives the same
statistics; with T = 1, or with T equal frames, they are the frame's own.

With ``shift_conv``, the temporal resnets' last conv and the temporal attention's output layer all
zero, the video UNet is the x4 UNet exactly (tests/test_upscale_a_video.py measures it). The
published init zeroes ``shift_conv`` and the attention's output weight (not its bias, nor the
transformers' temporal resnets); ``zero_temporal`` zeroes all three.
"""

from __future__ import annotations

import math
from functools import wraps

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

ROTARY_DIM = 32  # features of each head rotated by the frame index
POSITION_BUCKETS = 32  # relative position bias buckets
POSITION_MAX_DISTANCE = 32
TEMPORAL_EPS = 1e-6  # GroupNorm eps of the temporal resnets


class WindowGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics span the ``frames`` rows of each video: rows (V T, C, ...) video-major."""

    frames: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frames == 1:
            return super().forward(x)
        rows, c = x.shape[:2]
        video = x.reshape(rows // self.frames, self.frames, c, -1).transpose(1, 2)  # (V, C, T, P)
        out = F.group_norm(video, self.num_groups, self.weight, self.bias, self.eps)  # (V, C, T, P)
        return out.transpose(1, 2).reshape(x.shape)


def window_norm(norm: nn.GroupNorm) -> WindowGroupNorm:
    """A WindowGroupNorm with ``norm``'s groups, channels, eps and affine flag (fresh weights)."""
    return WindowGroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)


def windowed_resnet(resnet: ResnetBlock2D) -> ResnetBlock2D:
    """``resnet`` with window statistics in both its norms (in place)."""
    resnet.norm1, resnet.norm2 = window_norm(resnet.norm1), window_norm(resnet.norm2)
    return resnet


def set_frames(modules: list[nn.Module], frames: int) -> None:
    """Tell every window-aware module how many rows make one video."""
    for module in modules:
        module.frames = frames


def to_video(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Rows (V T, C, H, W) -> (V, C, T, H, W)."""
    return x.reshape(-1, frames, *x.shape[1:]).transpose(1, 2)


def to_rows(x: torch.Tensor) -> torch.Tensor:
    """(V, C, T, H, W) -> rows (V T, C, H, W)."""
    return x.transpose(1, 2).flatten(0, 1)


class TemporalResnet(nn.Module):
    """GN -> SiLU -> Conv3d (k, 1, 1) [+ emb] -> GN -> SiLU -> Conv3d (3, 1, 1), plus the input (published ResnetBlock3DCNN)."""

    def __init__(self, channels: int, kernel: int, temb_channels: int | None, groups: int = 32):
        super().__init__()
        self.frames = 1
        self.norm1 = nn.GroupNorm(groups, channels, eps=TEMPORAL_EPS)
        self.conv1 = nn.Conv3d(channels, channels, (kernel, 1, 1), padding=(kernel // 2, 0, 0))
        self.time_emb_proj = nn.Linear(temb_channels, channels) if temb_channels else None
        self.norm2 = nn.GroupNorm(groups, channels, eps=TEMPORAL_EPS)
        self.conv2 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """Rows (V T, C, H, W) and per-row emb (V T, E) or None -> (V T, C, H, W)."""
        video = to_video(x, self.frames)  # (V, C, T, H, W)
        h = self.conv1(F.silu(self.norm1(video)))  # (V, C, T, H, W)
        if self.time_emb_proj is not None:
            per_video = emb[:: self.frames]  # (V, E) the rows of a video share one embedding
            h = h + self.time_emb_proj(F.silu(per_video))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))  # (V, C, T, H, W)
        return x + to_rows(h)


class TemporalModule(nn.Module):
    """After a down, mid or up block: x + shift_conv(R_s(R_t(x))) (published TemporalModule3D, no transformer)."""

    def __init__(self, channels: int, temb_channels: int):
        super().__init__()
        self.resblocks_3d_temporal = TemporalResnet(channels, 5, temb_channels)
        self.resblocks_3d_spatial = windowed_resnet(ResnetBlock2D(in_channels=channels, temb_channels=temb_channels, eps=TEMPORAL_EPS))
        self.shift_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.resblocks_3d_temporal(x, emb)  # (V T, C, H, W)
        h = self.resblocks_3d_spatial(h, emb)  # (V T, C, H, W)
        return x + self.shift_conv(h)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding of the frame index (Su et al. 2021), interleaved pairs, on the first ``dim`` features.

    For position n and pair k of features (2k, 2k+1): (a, b) -> (a cos n w_k - b sin n w_k, b cos n w_k + a sin n w_k),
    w_k = 10000^(-2k / dim). ``freqs`` (w) is stored, as the published checkpoint holds it.
    """

    def __init__(self, dim: int = ROTARY_DIM):
        super().__init__()
        self.freqs = nn.Parameter(10000.0 ** (-torch.arange(0, dim, 2).float() / dim), requires_grad=False)  # (dim / 2,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, d) -> (..., T, d), positions 0..T-1 along the second-last axis."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=self.freqs.dtype)  # (T,)
        angles = (positions[:, None] * self.freqs[None]).repeat_interleave(2, dim=-1).to(x.dtype)  # (T, dim)
        dim = angles.shape[-1]
        rotated, rest = x[..., :dim], x[..., dim:]
        pairs = rotated.unflatten(-1, (-1, 2))  # (..., T, dim / 2, 2)
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (..., T, dim)
        return torch.cat([rotated * angles.cos() + turned * angles.sin(), rest], dim=-1)


def position_bucket(relative: torch.Tensor, buckets: int = POSITION_BUCKETS, max_distance: int = POSITION_MAX_DISTANCE) -> torch.Tensor:
    """T5's bidirectional bucket of a relative position j - i: half the buckets for each sign, exact below a
    quarter of them, logarithmic up to ``max_distance``."""
    half = buckets // 2
    n = -relative
    sign = (n < 0).long() * half
    n = n.abs()
    exact = half // 2
    far = exact + (torch.log(n.float().clamp_min(1) / exact) / math.log(max_distance / exact) * (half - exact)).long()
    return sign + torch.where(n < exact, n, far.clamp_max(half - 1))


class RelativePositionBias(nn.Module):
    def __init__(self, heads: int):
        super().__init__()
        self.relative_attention_bias = nn.Embedding(POSITION_BUCKETS, heads)

    def forward(self, frames: int, device: torch.device) -> torch.Tensor:
        """-> (heads, T, T): the bias of query frame i attending to key frame j."""
        index = torch.arange(frames, device=device)  # (T,)
        return self.relative_attention_bias(position_bucket(index[None, :] - index[:, None])).permute(2, 0, 1)


class TemporalAttention(nn.Module):
    """Self-attention across the frames at one spatial position, with rotary embedding and relative position bias."""

    def __init__(self, dim: int, heads: int, head_dim: int, rotary: RotaryEmbedding):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])
        self.time_rel_pos_bias = RelativePositionBias(heads)
        self.rotary_emb = rotary  # shared by the whole UNet (and listed under every attention in the state dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C) sequences over time -> (N, T, C)."""
        q, k, v = (proj(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))  # (N, heads, T, d)
        q = q * q.shape[-1] ** -0.5
        q, k = self.rotary_emb(q), self.rotary_emb(k)
        scores = q @ k.transpose(-1, -2) + self.time_rel_pos_bias(x.shape[1], x.device).to(q.dtype)  # (N, heads, T, T)
        mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(2)  # (N, T, heads d)
        return self.to_out[0](mixed)


class VideoTransformerBlock(BasicTransformerBlock):
    """diffusers' BasicTransformerBlock (layer norms) with a temporal attention between cross-attention and feed-forward."""

    frames: int = 1

    def add_temporal(self, dim: int, heads: int, head_dim: int, rotary: RotaryEmbedding) -> None:
        self.attn_temporal = TemporalAttention(dim, heads, head_dim, rotary)
        self.norm_temporal = nn.LayerNorm(dim)

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, timestep=None,
                cross_attention_kwargs=None, class_labels=None, added_cond_kwargs=None):
        """Rows (V T, L, C) of L spatial tokens -> (V T, L, C)."""
        if self.norm_type != "layer_norm" or self.pos_embed is not None or self.attn2 is None:
            raise ValueError("the video UNet's transformer blocks are layer-norm blocks with cross-attention")
        x = hidden_states
        x = x + self.attn1(self.norm1(x), encoder_hidden_states=encoder_hidden_states if self.only_cross_attention else None)
        x = x + self.attn2(self.norm2(x), encoder_hidden_states=encoder_hidden_states)
        rows, tokens, c = x.shape
        over_time = x.reshape(rows // self.frames, self.frames, tokens, c).transpose(1, 2).reshape(-1, self.frames, c)  # (V L, T, C)
        over_time = over_time + self.attn_temporal(self.norm_temporal(over_time))  # (V L, T, C)
        x = over_time.reshape(rows // self.frames, tokens, self.frames, c).transpose(1, 2).reshape(rows, tokens, c)  # (V T, L, C)
        return x + self.ff(self.norm3(x))


class VideoTransformer(Transformer2DModel):
    """diffusers' Transformer2DModel with a temporal resnet before it and VideoTransformerBlocks inside."""

    @wraps(Transformer2DModel.__init__)  # the config's fields are Transformer2DModel's (diffusers reads the signature)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        self.transformer_blocks = nn.ModuleList(
            VideoTransformerBlock(
                self.inner_dim, c.num_attention_heads, c.attention_head_dim, dropout=c.dropout, cross_attention_dim=c.cross_attention_dim,
                activation_fn=c.activation_fn, num_embeds_ada_norm=c.num_embeds_ada_norm, attention_bias=c.attention_bias,
                only_cross_attention=c.only_cross_attention, double_self_attention=c.double_self_attention,
                upcast_attention=c.upcast_attention, norm_type=c.norm_type, norm_elementwise_affine=c.norm_elementwise_affine,
                norm_eps=c.norm_eps, attention_type=c.attention_type,
            )
            for _ in range(c.num_layers)
        )
        self.resblock_temporal = TemporalResnet(c.in_channels, 3, None)  # 32 groups whatever the config, as published

    def add_temporal(self, rotary: RotaryEmbedding) -> None:
        for block in self.transformer_blocks:
            block.add_temporal(self.inner_dim, self.config.num_attention_heads, self.config.attention_head_dim, rotary)

    def forward(self, hidden_states, encoder_hidden_states=None, **kwargs):
        hidden_states = self.resblock_temporal(hidden_states)  # (V T, C, H, W)
        return super().forward(hidden_states, encoder_hidden_states=encoder_hidden_states, **kwargs)


class UNetVideo(UNet2DConditionModel):
    """The x4 UNet (same config, same 2D key names) with Upscale-A-Video's temporal layers.

    Call it like the x4 UNet on rows (V T, 7, h, w), video-major, with ``frames`` = T. Every row of
    a video must share the timestep and class label (they do within a sampler step).
    """

    @wraps(UNet2DConditionModel.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        temb = self.time_embedding.linear_2.out_features
        self.temporal_rotary_emb = RotaryEmbedding()
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            for resnet in block.resnets:
                windowed_resnet(resnet)
            for index, attention in enumerate(getattr(block, "attentions", [])):
                video = VideoTransformer(**{k: v for k, v in attention.config.items() if not k.startswith("_")})
                video.add_temporal(self.temporal_rotary_emb)
                block.attentions[index] = video
        self.conv_norm_out = window_norm(self.conv_norm_out)
        self.down_temp_blocks = nn.ModuleList(TemporalModule(b.resnets[-1].out_channels, temb) for b in self.down_blocks)
        self.mid_temp_block = TemporalModule(self.mid_block.resnets[-1].out_channels, temb)
        self.up_temp_blocks = nn.ModuleList(TemporalModule(b.resnets[-1].out_channels, temb) for b in self.up_blocks)
        self.windowed = [m for m in self.modules() if isinstance(m, (WindowGroupNorm, TemporalResnet, VideoTransformerBlock))]

    def zero_temporal(self) -> None:
        """Zero every temporal output layer: the network is then the x4 UNet on each window (module doc)."""
        for module in self.modules():
            if isinstance(module, TemporalModule):
                zero(module.shift_conv)
            if isinstance(module, VideoTransformer):
                zero(module.resblock_temporal.conv2)
            if isinstance(module, TemporalAttention):
                zero(module.to_out[0])

    def forward(self, sample, timestep, encoder_hidden_states, class_labels=None, frames: int = 1, return_dict: bool = False):
        """Rows (V T, 7, h, w), timestep, (V T, 77, D) text, (V T,) noise levels -> ((V T, 4, h, w),)."""
        set_frames(self.windowed, frames)
        # 1. Time and noise-level embeddings, one per row.
        emb = self.time_embedding(self.get_time_embed(sample=sample, timestep=timestep), None)  # (V T, E)
        emb = emb + self.get_class_embed(sample=sample, class_labels=class_labels)  # (V T, E)
        upsample_size = None
        uneven = any(s % 2**self.num_upsamplers for s in sample.shape[-2:])  # diffusers forwards sizes then

        # 2. Down: each block, then its temporal module.
        x = self.conv_in(sample)  # (V T, C0, h, w)
        skips = (x,)
        for block, temporal in zip(self.down_blocks, self.down_temp_blocks):
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=encoder_hidden_states)
            else:
                x, res = block(hidden_states=x, temb=emb)
            skips += res
            x = temporal(x, emb)

        # 3. Middle.
        x = self.mid_temp_block(self.mid_block(x, emb, encoder_hidden_states=encoder_hidden_states), emb)

        # 4. Up: each block with its skips, then its temporal module.
        for i, (block, temporal) in enumerate(zip(self.up_blocks, self.up_temp_blocks)):
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            if uneven and i < len(self.up_blocks) - 1:
                upsample_size = skips[-1].shape[2:]
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=encoder_hidden_states,
                          upsample_size=upsample_size)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size)
            x = temporal(x, emb)

        # 5. Out.
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))  # (V T, 4, h, w)
        set_frames(self.windowed, 1)
        return (x,)


def zero(layer: nn.Module) -> None:
    for p in layer.parameters():
        nn.init.zeros_(p)
