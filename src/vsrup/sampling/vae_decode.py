"""Tiled VAE decode: overlapping latent tiles decoded one call at a time, feather-blended in pixels.

The x4 VAE decoder's mid-block self-attention is quadratic in latent pixels (perf.md section 3:
0.55 TFLOP at a 128^2 latent, 34 TFLOP at 270x480), so large frames are decoded in tiles. The
tile plan and weights are the UNet's (tiles.py), scaled by the VAE's factor into pixel space: a
latent overlap of o becomes a pixel overlap of f * o. The full-frame decode is never attempted
unless the caller asks for it with tile == 0; memory.plan_memory chooses the tile.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vsrup.sampling.tiles import tiled

DecodeFn = Callable[[Tensor], Tensor]  # latents (N, 4, th, tw) -> pixels (N, 3, f*th, f*tw)


def vae_factor(vae) -> int:
    """Output pixels per latent pixel of a diffusers AutoencoderKL: one downsampling per block but the last."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def decode_tiled(decode_fn: DecodeFn, latents: Tensor, *, tile: int, overlap: int, factor: int, batch: int = 1) -> Tensor:
    """(B, 4, h, w) latents -> (B, 3, f*h, f*w) pixels, decoding ``batch`` tiles per call (0 = whole frames)."""
    return tiled(lambda tiles, rows: decode_fn(tiles), latents, tile=tile, overlap=overlap, batch=batch, scale=factor)


def vae_decoder(vae) -> DecodeFn:
    """decode_fn for a diffusers AutoencoderKL, as the diffusers pipelines decode (unscale, decode)."""

    def decode(latents: Tensor) -> Tensor:
        with torch.no_grad():
            z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor  # (N, 4, th, tw)
            return vae.decode(z).sample  # (N, 3, f*th, f*tw)

    return decode
