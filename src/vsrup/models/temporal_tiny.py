"""Stream-DiffVSR's tiny temporal autoencoder: diffusers' ``AutoencoderTiny`` with a temporal processor in every block.

The published ``TemporalAutoencoderTiny`` (Jamichsu/Stream-DiffVSR ``vae/``, reference/nextmodels.md
§2.3) is TAESD at three levels (a 4x autoencoder on the x4 upscaler's latents, 64 channels, ReLU):
diffusers' ``EncoderTiny``/``DecoderTiny`` layer for layer, each block an ``AutoencoderTinyBlock``
that also holds a temporal processor module (TPM). With the previous frame's features ``p`` (the
same block's input-side features of the warped previous output, pooled), a decoder block computes

    c = conv(x)                                                 the block's three 3x3 convolutions
    s = [pool(c) ; pool(p)]                                     4x4 average pools, each flattened in raster order
                                                                and concatenated along that axis: (C, 2L)
    q = Conv1d(ReLU(Conv1d(s)))                                 kernel 3 along the concatenated positions
    f = alpha * q[:, :L] + (1 - alpha) * q[:, L:]               the halves fused by a learned scalar
    out = ReLU(c + 0.1 * up(f) + x)                             up: bilinear to c's size (align_corners False)

and without ``p`` it is the stock block, ReLU(conv(x) + x). The encoder's blocks carry TPM weights
too (the checkpoint has them, 166 tensors in all), but the published model never feeds them: its
encoder only supplies the features. Those features are the block outputs of the encoder run on
the warped previous output *as given*, in [-1, 1]: the published feature path skips the
[-1, 1] -> [0, 1] shift that ``EncoderTiny.forward`` applies, and the decoder was trained on that,
so vsrup keeps it.

This module holds the networks and the TPM formula; ``vsrup.sampling.tiny_decode`` runs them tile by
tile (the TPM mixes a whole frame, so it is computed once per frame there).
"""

from __future__ import annotations

from functools import wraps

import torch
import torch.nn.functional as F
from diffusers import AutoencoderTiny
from diffusers.models.activations import get_activation
from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

POOL = 4  # the TPM's average-pool size and stride, at every level
TEMPORAL_GAIN = 0.1  # how much of the upsampled fused map a block adds


class TemporalBlock(AutoencoderTinyBlock):
    """An ``AutoencoderTinyBlock`` that also holds the TPM's weights (``alpha``, ``temporal_processor``)."""

    def __init__(self, in_channels: int, out_channels: int, act_fn: str):
        super().__init__(in_channels, out_channels, act_fn)
        self.alpha = torch.nn.Parameter(torch.tensor(0.5))
        self.temporal_processor = torch.nn.Sequential(
            torch.nn.Conv1d(out_channels, out_channels, 3, padding=1),
            get_activation(act_fn),
            torch.nn.Conv1d(out_channels, out_channels, 3, padding=1),
        )

    def temporal(self, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """The fused map f of the module doc from pooled features: (N, C, hp, wp) twice -> (N, C, hp, wp)."""
        n, c, hp, wp = current.shape
        length = hp * wp
        sequence = torch.cat([current.reshape(n, c, length), previous.reshape(n, c, length)], dim=2)  # (N, C, 2L)
        q = self.temporal_processor(sequence)  # (N, C, 2L)
        fused = self.alpha * q[:, :, :length] + (1 - self.alpha) * q[:, :, length:]  # (N, C, L)
        return fused.reshape(n, c, hp, wp)

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W) and the previous frame's pooled features (N, C, H // 4, W // 4) or None -> (N, C, H, W)."""
        c = self.conv(x)  # (N, C, H, W)
        if previous is not None:
            fused = self.temporal(pool(c), previous)  # (N, C, H // 4, W // 4)
            c = c + TEMPORAL_GAIN * F.interpolate(fused, size=c.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(c + self.skip(x))


def pool(x: torch.Tensor) -> torch.Tensor:
    """The TPM's 4x4 average pool: (N, C, H, W) -> (N, C, H // 4, W // 4) (empty when a side is under 4)."""
    if min(x.shape[-2:]) < POOL:
        return x[:, :, : x.shape[2] // POOL, : x.shape[3] // POOL]
    return F.avg_pool2d(x, POOL, POOL)


class TemporalAutoencoderTiny(AutoencoderTiny):
    """``AutoencoderTiny`` (same config fields, same layer indices) whose every block is a ``TemporalBlock``.

    Built from the published ``vae/config.json`` by ``from_pretrained``; its ``_class_name`` names this
    class, and nothing else in that folder is read.
    """

    @wraps(AutoencoderTiny.__init__)  # the config's fields are AutoencoderTiny's (diffusers reads them from the signature)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        act_fn = self.config.act_fn
        for layers in (self.encoder.layers, self.decoder.layers):
            for index, layer in enumerate(layers):
                if isinstance(layer, AutoencoderTinyBlock):
                    channels = layer.conv[0].out_channels
                    layers[index] = TemporalBlock(channels, channels, act_fn)

    def blocks(self, part: torch.nn.Module) -> list[TemporalBlock]:
        """The temporal blocks of ``self.encoder`` or ``self.decoder``, in order."""
        return [layer for layer in part.layers if isinstance(layer, TemporalBlock)]
