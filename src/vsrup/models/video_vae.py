"""Upscale-A-Video's VAEs: the x4 autoencoder decoding a chunk of frames together, optionally with temporal layers and the LR frames.

Both published VAEs (reference/ports.md §2) are diffusers' x4 ``AutoencoderKL`` under its own key
names, run on 5-D tensors, so that every GroupNorm of the decoder's resnets and its output norm
takes statistics over the frames decoded together (the mid-block attention and its norm stay frame
by frame); ``WindowGroupNorm`` (``models/video_unet.py``) gives the same on rows (V T, C, H, W).

* ``vae_3d``: nothing else.
* ``vae_video``: every resnet of the decoder's mid and up blocks gains a temporal residual, and the
  LR frames condition the decoder after ``conv_in`` (SFT: spatial feature transform)::

      out  = R(x);   out = out + conv_3d(SiLU(GN_3d(out)))           conv_3d 3x3x3 over (T, H, W), zero at init
      c    = R_c2(R_c1(lr))                                          3 -> 128 -> 128 channels, the same "plus" resnets
      s    = S2(S1([c ; x]))                                         two resnets, 640 -> 512 -> 512
      x'   = x + (x * scale(s) + shift(s))                           3x3 convs

  ``lr`` is the clean low-resolution frame in [-1, 1] on the latent grid (the published pipeline
  keeps a copy before noise augmentation). The 3x3x3 conv pads with zeros in time at the ends of
  the chunk, so a frame's result depends on the chunk that holds it.

The encoder's weights are in both checkpoints and load into the stock encoder; vsrup never runs it.
"""

from __future__ import annotations

import re
from functools import wraps

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from vsrup.models.video_unet import WindowGroupNorm, set_frames, to_rows, to_video, window_norm, windowed_resnet

CONDITION_CHANNELS = 128  # vae_video_config.json "condition_channels"
RESNET_EPS = 1e-6


class ResnetPlus(ResnetBlock2D):
    """A ResnetBlock2D (window statistics) plus the published temporal residual: out + conv_3d(SiLU(GN_3d(out)))."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        windowed_resnet(self)
        self.norm_3d = window_norm(self.norm2)
        self.conv_3d = nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1)

    @property
    def frames(self) -> int:
        return self.norm_3d.frames

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(input_tensor, temb)  # (V T, C, H, W)
        video = to_video(F.silu(self.norm_3d(out)), self.frames)  # (V, C, T, H, W)
        return (out + to_rows(self.conv_3d(video))) / self.output_scale_factor


def plus_like(resnet: ResnetBlock2D) -> ResnetPlus:
    """A ResnetPlus with ``resnet``'s channels, groups, eps and scale (fresh weights)."""
    return ResnetPlus(
        in_channels=resnet.in_channels, out_channels=resnet.out_channels, temb_channels=None, groups=resnet.norm1.num_groups,
        groups_out=resnet.norm2.num_groups, eps=resnet.norm1.eps, output_scale_factor=resnet.output_scale_factor,
    )


class ConditionFuse(nn.Module):
    """The published Fuse_sft_block: x + (x * scale(s) + shift(s)), s = two resnets on [condition ; x]."""

    def __init__(self, condition_channels: int, channels: int):
        super().__init__()
        self.shared = nn.Sequential(
            windowed_resnet(ResnetBlock2D(in_channels=condition_channels + channels, out_channels=channels, temb_channels=None, eps=RESNET_EPS)),
            windowed_resnet(ResnetBlock2D(in_channels=channels, temb_channels=None, eps=RESNET_EPS)),
        )
        self.scale = nn.Conv2d(channels, channels, 3, padding=1)
        self.shift = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, condition: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat([condition, x], dim=1)  # (V T, C_c + C, h, w)
        for resnet in self.shared:
            s = resnet(s, None)  # (V T, C, h, w)
        return x + (x * self.scale(s) + self.shift(s))


class VideoAutoencoderKL(AutoencoderKL):
    """diffusers' AutoencoderKL (same config, same keys) whose decoder decodes chunks of frames as published.

    ``add_temporal()`` turns it into the video VAE: "plus" resnets in the decoder and the LR condition.
    """

    @wraps(AutoencoderKL.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.decoder
        for block in [d.mid_block, *d.up_blocks]:
            for resnet in block.resnets:
                windowed_resnet(resnet)
        d.conv_norm_out = window_norm(d.conv_norm_out)
        self.conditioned = False
        self.refresh()

    def add_temporal(self, condition_channels: int = CONDITION_CHANNELS) -> None:
        d = self.decoder
        for block in [d.mid_block, *d.up_blocks]:
            block.resnets = nn.ModuleList(plus_like(r) for r in block.resnets)
        channels = d.conv_in.out_channels
        d.condition_in = nn.Sequential(
            ResnetPlus(in_channels=3, out_channels=condition_channels, temb_channels=None, groups=3, groups_out=32, eps=RESNET_EPS),
            ResnetPlus(in_channels=condition_channels, temb_channels=None, eps=RESNET_EPS),
        )
        d.condition_fuse = ConditionFuse(condition_channels, channels)
        self.conditioned = True
        self.refresh()

    def refresh(self) -> None:
        self.windowed = [m for m in self.decoder.modules() if isinstance(m, WindowGroupNorm)]

    def decode_frames(self, z: torch.Tensor, low_res: torch.Tensor | None, frames: int) -> torch.Tensor:
        """Unscaled latents as rows (V T, 4, h, w), and the LR frames (V T, 3, h, w) in [-1, 1] for the video VAE,
        decoded T frames together -> (V T, 3, 4h, 4w)."""
        d = self.decoder
        set_frames(self.windowed, frames)
        x = d.conv_in(self.post_quant_conv(z))  # (V T, 512, h, w)
        if self.conditioned:
            condition = low_res.to(x.dtype)  # (V T, 3, h, w)
            for resnet in d.condition_in:
                condition = resnet(condition)  # (V T, 128, h, w)
            x = d.condition_fuse(condition, x)  # (V T, 512, h, w)
        x = d.mid_block(x)
        for block in d.up_blocks:
            x = block(x)  # x2 per upsampler
        x = d.conv_out(d.conv_act(d.conv_norm_out(x)))  # (V T, 3, 4h, 4w)
        set_frames(self.windowed, 1)
        return x


# diffusers 0.16's AttentionBlock names of the mid-block attentions, as both checkpoints hold them, -> today's Attention.
LEGACY_ATTENTION = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def published_key(key: str) -> str:
    """A checkpoint key -> this class's: only the mid-block attentions' legacy names change."""
    legacy = LEGACY_ATTENTION.match(key)
    return f"{legacy[1]}.{ATTENTION_NAMES[legacy[2]]}.{legacy[3]}" if legacy else key
