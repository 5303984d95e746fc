"""MGLD-VSR's video VAE: the SD VAE whose decoder mixes the T frames of a clip and fuses the encoder's features (CFW).

Read from the published code (IanYeung/MGLD-VSR @9aa7731, ``VideoAutoencoderKLResi`` with ``VideoDecoder_Mix``;
reference/ports.md §1). The encoder, the quant convs and every resnet, attention and upsampler of the decoder are
diffusers' ``AutoencoderKL`` (SD config, 128 * (1, 2, 4, 4)). The decoder adds:

    temporal conv   out = a * Conv3d_(3,1,1)(x over the T frames) + (1 - a) * x   (mgld_unet.TemporalConv) after the
                    middle block's first resnet (before its attention) and after every resnet of every up block
    CFW fuse        at the up blocks of 512 and 256 channels, after their resnets and before their upsampler:
                    out = d + w * RB(C->C)(RDB(RDB(RB(2C->C)([e ; d]))))
                    d: the decoder's features, e: the encoder's features of the same resolution (computed on the
                    upsampled low-resolution input: after the encoder's 2nd level, 256 ch at H/2, and its 3rd, 512 ch
                    at H/4), w: the fusion weight (``dec_w``)
    RB(x)           = conv2(SiLU(GN(conv1(SiLU(GN(x)))))) + (x, or conv_out(x) when the width changes)   (GN: 32, eps 1e-6)
    RDB(x)          ESRGAN's residual dense block: x_k = LReLU_0.2(conv_k([x, x_1 .. x_{k-1}])) for k = 1..4,
                    out = x + 0.2 * conv_5([x, x_1 .. x_4]); growth 32 channels

Batches are clips: (N * T, C, H, W), T frames of each clip together.
"""

from __future__ import annotations

from functools import wraps

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from vsrup.models.mgld_unet import TemporalConv

VAE_EPS = 1e-6  # the LDM VAE's GroupNorm eps
GROWTH = 32  # the dense blocks' growth channels
DENSE_SCALE = 0.2  # ESRGAN's residual scaling
FEATURE_LEVELS = (1, 2)  # encoder levels whose outputs the decoder fuses (256 ch at H/2, 512 ch at H/4)


class FuseResBlock(torch.nn.Module):
    """RB: two GroupNorm-SiLU-conv3x3 stages and a (1x1-projected when widths differ) skip."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(32, in_channels, eps=VAE_EPS)
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = torch.nn.GroupNorm(32, out_channels, eps=VAE_EPS)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_out = torch.nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, Cout, H, W)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, Cout, H, W)
        return h + (x if self.conv_out is None else self.conv_out(x))


class DenseBlock(torch.nn.Module):
    """RDB: five 3x3 convolutions, each fed every earlier output; a 0.2-scaled residual."""

    def __init__(self, channels: int, growth: int = GROWTH):
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", torch.nn.Conv2d(channels + (k - 1) * growth, growth, 3, padding=1))
        self.conv5 = torch.nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for k in range(1, 5):
            seen.append(F.leaky_relu(getattr(self, f"conv{k}")(torch.cat(seen, dim=1)), 0.2))  # (B, 32, H, W)
        return x + DENSE_SCALE * self.conv5(torch.cat(seen, dim=1))


class CFWFuse(torch.nn.Module):
    """out = d + w * RB(RDB(RDB(RB([e ; d])))): the encoder's features e fused into the decoder's d."""

    def __init__(self, channels: int, blocks: int = 2):
        super().__init__()
        self.encode_enc_1 = FuseResBlock(2 * channels, channels)
        self.encode_enc_2 = torch.nn.Sequential(*[DenseBlock(channels) for _ in range(blocks)])
        self.encode_enc_3 = FuseResBlock(channels, channels)

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor, weight: float) -> torch.Tensor:
        """(B, C, H, W) twice -> (B, C, H, W)."""
        fused = self.encode_enc_3(self.encode_enc_2(self.encode_enc_1(torch.cat([encoder, decoder], dim=1))))  # (B, C, H, W)
        return decoder + weight * fused


class CFWAutoencoder(AutoencoderKL):
    """``AutoencoderKL`` whose decoder also holds ``mid_temporal``, each up block's ``temporal_mixing`` and the
    ``fuse`` of the up blocks at 512 and 256 channels (the 2nd and 3rd); ``features`` and ``decode_clip`` run them."""

    @wraps(AutoencoderKL.__init__)  # the config's fields are AutoencoderKL's
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        decoder = self.decoder
        decoder.mid_temporal = TemporalConv(decoder.mid_block.resnets[0].out_channels)
        for k, block in enumerate(decoder.up_blocks):
            block.temporal_mixing = torch.nn.ModuleList([TemporalConv(r.out_channels) for r in block.resnets])
            if len(decoder.up_blocks) - 1 - k in FEATURE_LEVELS:  # the LDM level this up block mirrors
                block.fuse = CFWFuse(block.resnets[-1].out_channels)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's outputs of levels 1 and 2 (before their downsamplers): (B, 3, H, W) in [-1, 1] ->
        [(B, 256, H/2, W/2), (B, 512, H/4, W/4)]. The rest of the encoder is not run."""
        h = self.encoder.conv_in(x)  # (B, 128, H, W)
        out = []
        for level, block in enumerate(self.encoder.down_blocks[: max(FEATURE_LEVELS) + 1]):
            for resnet in block.resnets:
                h = resnet(h, None)
            if level in FEATURE_LEVELS:
                out.append(h)
            if block.downsamplers and level < max(FEATURE_LEVELS):
                h = block.downsamplers[0](h)
        return out

    def decode_clip(self, z: torch.Tensor, features: list[torch.Tensor], weight: float, frames: int) -> torch.Tensor:
        """(N * T, 4, h, w) unscaled latents and ``features`` of the same frames -> (N * T, 3, 8h, 8w) in about [-1, 1]."""
        decoder = self.decoder
        h = decoder.conv_in(self.post_quant_conv(z))  # (B, 512, h, w)
        mid = decoder.mid_block
        h = decoder.mid_temporal(mid.resnets[0](h, None), frames)
        h = mid.resnets[1](mid.attentions[0](h), None)  # (B, 512, h, w)
        for k, block in enumerate(decoder.up_blocks):
            for resnet, mixing in zip(block.resnets, block.temporal_mixing):
                h = mixing(resnet(h, None), frames)
            if hasattr(block, "fuse"):
                level = len(decoder.up_blocks) - 1 - k
                h = block.fuse(features[FEATURE_LEVELS.index(level)], h, weight)
            if block.upsamplers:
                h = block.upsamplers[0](h)
        return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(h)))  # (B, 3, 8h, 8w)


def vae_config(channels: int = 128, mult: tuple[int, ...] = (1, 2, 4, 4), groups: int = 32) -> dict:
    """The SD VAE's ``AutoencoderKL`` config (4 latent channels, scaling 0.18215) with ``channels`` * ``mult`` widths."""
    levels = len(mult)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=groups,
        block_out_channels=[channels * m for m in mult], sample_size=512, scaling_factor=0.18215,
        down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
    )
