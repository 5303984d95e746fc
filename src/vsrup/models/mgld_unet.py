"""MGLD-VSR's denoiser: the SD 2.1 UNet with SPADE in every resblock and a temporal middle block, and its struct encoder.

Read from the published code (IanYeung/MGLD-VSR @9aa7731; reference/ports.md §1). What diffusers lacks:

    SPADE(h, s)      = GN(h) * (1 + gamma(s)) + beta(s),  gamma, beta = Conv3x3(ReLU(Conv3x3(s)))   (GN: 32 groups, affine)
    SPADE resblock   h = conv2(SiLU(GN(conv1(SiLU(GN(x))) + W SiLU(emb))));  out = skip(x) + SPADE(h, s)
                     (diffusers' ResnetBlock2D with SPADE between its second convolution and the residual add)
    temporal conv    out = a * Conv3d_(3,1,1)(x over the T frames) + (1 - a) * x        a: a learned scalar
    temporal attn    out = a * Attn(LN(x)) + (1 - a) * x, self-attention across the T frames at each pixel,
                     no positional encoding
    middle block     resnet, temporal conv, transformer, temporal attn, resnet, temporal conv

``s`` is the struct encoder's feature map at the resolution of ``h`` (256 channels). The struct encoder
(StableSR's time-aware encoder) is a half UNet over the low-resolution latent: 256 * (1, 1, 2, 2) channels,
ResBlocks with a 1024 timestep embedding, 4-head self-attention at the first three levels and in the middle;
a ResBlock per level (``fea_tran``) maps the feature before each downsample, and the middle's output, to
256 channels. Everything else (timestep embedding, transformers, down/upsamplers, norms) is diffusers'
``UNet2DConditionModel`` with the SD 2.1-base config, parameter for parameter (the converter,
``models/mgld_convert.py``, maps every key). Batches are clips: (N * T, C, h, w), T frames of each clip together.
"""

from __future__ import annotations

from functools import wraps

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D

STRUCT_CHANNELS = 256  # the struct encoder's output width (the UNet's ``semb_channels``)
SPADE_HIDDEN = 128  # SPADE's shared convolution width (fixed in the published code)
NORM_EPS = 1e-5  # LDM's GroupNorm32 and the SD UNet's norm_eps


class SPADE(torch.nn.Module):
    """Spatially-adaptive normalisation: GN(h) * (1 + gamma(s)) + beta(s)."""

    def __init__(self, channels: int, struct_channels: int = STRUCT_CHANNELS):
        super().__init__()
        self.param_free_norm = torch.nn.GroupNorm(32, channels, eps=NORM_EPS)  # affine, as published
        self.mlp_shared = torch.nn.Sequential(torch.nn.Conv2d(struct_channels, SPADE_HIDDEN, 3, padding=1), torch.nn.ReLU())
        self.mlp_gamma = torch.nn.Conv2d(SPADE_HIDDEN, channels, 3, padding=1)
        self.mlp_beta = torch.nn.Conv2d(SPADE_HIDDEN, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, struct: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features and (B, 256, h, w) struct features -> (B, C, h, w)."""
        actv = self.mlp_shared(struct)  # (B, 128, h, w)
        return self.param_free_norm(h) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock2D(ResnetBlock2D):
    """diffusers' ``ResnetBlock2D`` (groups 32, eps 1e-5) with SPADE applied to its residual branch before the add."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, struct_channels: int = STRUCT_CHANNELS):
        super().__init__(in_channels=in_channels, out_channels=out_channels, temb_channels=temb_channels, eps=NORM_EPS)
        self.spade = SPADE(out_channels, struct_channels)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, struct: torch.Tensor) -> torch.Tensor:
        """(B, Cin, h, w), (B or 1, temb) and (B, 256, h, w) -> (B, Cout, h, w)."""
        h = self.conv1(self.nonlinearity(self.norm1(x)))  # (B, Cout, h, w)
        h = h + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]  # (B, Cout, h, w)
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))  # (B, Cout, h, w)
        h = self.spade(h, struct)  # (B, Cout, h, w)
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)  # (B, Cout, h, w)
        return skip + h


class TemporalConv(torch.nn.Module):
    """out = a * Conv3d_(3,1,1)(x) + (1 - a) * x, the convolution over the T frames of each clip (zero-padded in time)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.alpha = torch.nn.Parameter(torch.zeros(1))  # loaded from the checkpoint

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """(N * T, C, h, w) -> (N * T, C, h, w)."""
        nt, c, h, w = x.shape
        clips = x.reshape(nt // frames, frames, c, h, w).transpose(1, 2)  # (N, C, T, h, w)
        mixed = self.conv(clips).transpose(1, 2).reshape(nt, c, h, w)  # (N * T, C, h, w)
        return self.alpha * mixed + (1 - self.alpha) * x


class TemporalAttention(torch.nn.Module):
    """out = a * Attn(LN(x)) + (1 - a) * x: self-attention across the T frames of each clip, at every pixel."""

    def __init__(self, channels: int, heads: int, head_dim: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(channels)
        self.attn = Attention(query_dim=channels, heads=heads, dim_head=head_dim, bias=False, out_bias=True)
        self.alpha = torch.nn.Parameter(torch.zeros(1))  # loaded from the checkpoint

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """(N * T, C, h, w) -> (N * T, C, h, w)."""
        nt, c, h, w = x.shape
        n = nt // frames
        seq = x.reshape(n, frames, c, h * w).permute(0, 3, 1, 2).reshape(n * h * w, frames, c)  # (N h w, T, C)
        out = self.attn(self.norm(seq))  # (N h w, T, C)
        out = out.reshape(n, h * w, frames, c).permute(0, 2, 3, 1).reshape(nt, c, h, w)  # (N * T, C, h, w)
        return self.alpha * out + (1 - self.alpha) * x


class MGLDUNet(UNet2DConditionModel):
    """``UNet2DConditionModel`` (SD 2.1-base config) whose resnets are ``SPADEResnetBlock2D`` and whose middle block
    also holds ``temporal_convs`` (2) and ``temporal_attention``; ``forward`` takes the struct features and T."""

    @wraps(UNet2DConditionModel.__init__)  # the config's fields are UNet2DConditionModel's
    def __init__(self, *args, struct_channels: int = STRUCT_CHANNELS, **kwargs):
        super().__init__(*args, **kwargs)
        temb = self.time_embedding.linear_2.out_features
        for block in (*self.down_blocks, self.mid_block, *self.up_blocks):
            for k, resnet in enumerate(block.resnets):
                block.resnets[k] = SPADEResnetBlock2D(resnet.in_channels, resnet.out_channels, temb, struct_channels)
        mid = self.mid_block
        channels = mid.resnets[0].out_channels
        heads = self.config.attention_head_dim[-1] if isinstance(self.config.attention_head_dim, (list, tuple)) else self.config.attention_head_dim
        mid.temporal_convs = torch.nn.ModuleList([TemporalConv(channels), TemporalConv(channels)])
        mid.temporal_attention = TemporalAttention(channels, heads, channels // heads)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                struct: list[torch.Tensor], frames: int) -> torch.Tensor:
        """eps for (N * T, 4, h, w) latents at (original) ``timestep``; ``struct``: one (N * T, 256, h/2^l, w/2^l) per level l."""
        t = timestep.reshape(-1).expand(sample.shape[0])  # (B,)
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))  # (B, 1280)
        text = encoder_hidden_states.expand(sample.shape[0], -1, -1)  # (B, 77, 1024)
        h = self.conv_in(sample)  # (B, 320, h, w)
        skips = [h]
        for level, block in enumerate(self.down_blocks):
            for k, resnet in enumerate(block.resnets):
                h = resnet(h, emb, struct[level])
                if getattr(block, "attentions", None):
                    h = block.attentions[k](h, encoder_hidden_states=text, return_dict=False)[0]
                skips.append(h)
            if block.downsamplers:
                h = block.downsamplers[0](h)
                skips.append(h)
        h = self.middle(h, emb, text, struct[-1], frames)  # (B, 1280, h/8, w/8)
        for level, block in enumerate(self.up_blocks):
            for k, resnet in enumerate(block.resnets):
                h = resnet(torch.cat([h, skips.pop()], dim=1), emb, struct[len(self.up_blocks) - 1 - level])
                if getattr(block, "attentions", None):
                    h = block.attentions[k](h, encoder_hidden_states=text, return_dict=False)[0]
            if block.upsamplers:
                h = block.upsamplers[0](h, skips[-1].shape[-2:])
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))  # (B, 4, h, w)

    def middle(self, h: torch.Tensor, emb: torch.Tensor, text: torch.Tensor, struct: torch.Tensor, frames: int) -> torch.Tensor:
        """resnet, temporal conv, transformer, temporal attention, resnet, temporal conv."""
        mid = self.mid_block
        h = mid.resnets[0](h, emb, struct)
        h = mid.temporal_convs[0](h, frames)
        h = mid.attentions[0](h, encoder_hidden_states=text, return_dict=False)[0]
        h = mid.temporal_attention(h, frames)
        h = mid.resnets[1](h, emb, struct)
        return mid.temporal_convs[1](h, frames)


class StructEncoder(ModelMixin, ConfigMixin):
    """The time-aware struct encoder: the low-resolution latent and the timestep -> 256-channel features per UNet level."""

    @register_to_config
    def __init__(self, in_channels: int = 4, channels: int = 256, out_channels: int = STRUCT_CHANNELS,
                 channel_mult: tuple[int, ...] = (1, 1, 2, 2), layers_per_level: int = 2,
                 attention_levels: tuple[int, ...] = (0, 1, 2), heads: int = 4):
        super().__init__()
        temb = 4 * channels
        self.time_proj = Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels, temb)
        self.conv_in = torch.nn.Conv2d(in_channels, channels, 3, padding=1)
        self.levels = torch.nn.ModuleList()
        width = channels
        for level, mult in enumerate(channel_mult):
            block = torch.nn.Module()
            block.resnets = torch.nn.ModuleList()
            block.attentions = torch.nn.ModuleList()
            for _ in range(layers_per_level):
                block.resnets.append(ResnetBlock2D(in_channels=width, out_channels=mult * channels, temb_channels=temb, eps=NORM_EPS))
                width = mult * channels
                if level in attention_levels:
                    block.attentions.append(self_attention(width, heads))
            block.downsample = Downsample2D(width, use_conv=True, padding=1, name="op") if level < len(channel_mult) - 1 else None
            self.levels.append(block)
        self.mid_resnets = torch.nn.ModuleList([ResnetBlock2D(in_channels=width, out_channels=width, temb_channels=temb, eps=NORM_EPS) for _ in range(2)])
        self.mid_attention = self_attention(width, heads)
        widths = [mult * channels for mult in channel_mult[:-1]] + [width]  # the feature before each downsample, and the middle's
        self.fea_tran = torch.nn.ModuleList(
            [ResnetBlock2D(in_channels=c, out_channels=out_channels, temb_channels=temb, eps=NORM_EPS) for c in widths]
        )

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> list[torch.Tensor]:
        """(B, 4, h, w) low-resolution latents -> one (B, 256, h/2^l, w/2^l) per level l = 0..3."""
        t = timestep.reshape(-1).expand(x.shape[0])  # (B,)
        emb = self.time_embedding(self.time_proj(t).to(x.dtype))  # (B, 1024)
        h = self.conv_in(x)  # (B, 256, h, w)
        features = []
        for block in self.levels:
            for k, resnet in enumerate(block.resnets):
                h = resnet(h, emb)
                if len(block.attentions):
                    h = block.attentions[k](h)
            if block.downsample is not None:
                features.append(h)
                h = block.downsample(h)
        h = self.mid_attention(self.mid_resnets[0](h, emb))
        features.append(self.mid_resnets[1](h, emb))  # (B, 512, h/8, w/8)
        return [tran(f, emb) for tran, f in zip(self.fea_tran, features)]


def self_attention(channels: int, heads: int) -> Attention:
    """The legacy LDM ``AttentionBlock`` as diffusers' ``Attention``: GroupNorm, q/k/v/out with bias, residual."""
    return Attention(channels, heads=heads, dim_head=channels // heads, norm_num_groups=32, eps=NORM_EPS,
                     residual_connection=True, bias=True, upcast_softmax=True, _from_deprecated_attn_block=True)


def unet_config(channels: int = 320, mult: tuple[int, ...] = (1, 2, 4, 4), head_dim: int = 64, cross: int = 1024, groups: int = 32) -> dict:
    """The SD 2.1-base ``UNet2DConditionModel`` config with ``channels`` * ``mult`` widths (head_dim channels a head)."""
    widths = [channels * m for m in mult]
    return dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=widths,
        down_block_types=["CrossAttnDownBlock2D"] * (len(mult) - 1) + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (len(mult) - 1),
        attention_head_dim=[max(1, w // head_dim) for w in widths], cross_attention_dim=cross, use_linear_projection=True,
        norm_num_groups=groups, norm_eps=NORM_EPS, flip_sin_to_cos=True, freq_shift=0,
    )

