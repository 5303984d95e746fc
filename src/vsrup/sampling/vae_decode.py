"""Tiled VAE decode that normalises every tile with the whole frame's GroupNorm statistics.

Why tiles. The x4 VAE decoder's mid-block self-attention is quadratic in latent pixels (perf.md
section 3: 0.55 TFLOP at a 128^2 latent, 34 TFLOP at 270x480), so large frames are decoded in tiles;
memory.plan_memory chooses the tile, and tile == 0 means one untiled ``vae.decode`` per frame.

Why shared statistics. Each GroupNorm (Wu & He 2018) of the decoder normalises with statistics over
the whole image: for a frame x (C, H, W) and group g of the C / G channels c in g,

    mu_g  = S1_g / n,   var_g = S2_g / n - mu_g^2,   S1_g = sum_{c in g, p} x_c(p),  S2_g = sum x_c(p)^2
    GN(x)_c(p) = (x_c(p) - mu_g) / sqrt(var_g + eps) * gamma_c + beta_c,   n = H W C / G.

A tile decoded alone uses its own mu_g, var_g, and its tone shifts (docs/tiling.md measures it).

How. The decoder runs pass by pass over the frame, a pass being the work between two GroupNorms:

    conv_in                                the latent in (after post_quant_conv, 1x1)
    GN1 -> SiLU -> conv1                   ResnetBlock2D, first half
    GN2 -> SiLU -> conv2, + shortcut(x)    second half; x is the block's input
    GN -> attention, + residual            mid block; on overlapping latent tiles, blended (tiles.tiled)
    nearest x2 -> conv                     Upsample2D
    GN -> SiLU -> conv_out                 the pixels out

A pass runs on disjoint cores that partition the frame (``tile`` latent px a side, twice that per
upsampling so far), each cut with a halo of its conv's reach, so every core of the output is the
untiled computation; the core is written into the frame-sized output, and each channel's S1 and S2
over it are added up (float64). The cores partition the frame, so the sums are the frame's, and the
next pass normalises every tile with the frame's mu_g, var_g. What remains different from the untiled
decode is the attention alone, which each latent tile computes within itself (docs/tiling.md).

Where the states live. A pass reads frame-sized inputs and writes a frame-sized output, kept on the
VAE's device: moving them to the host and back at every pass would cost more than the decode's
compute on a GPU. Frames are decoded one at a time, so the states are one frame's (docs/tiling.md
gives the bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vsrup.sampling.tiles import tiled


@dataclass(frozen=True)
class Moments:
    """Per-channel sums of a frame-sized state: what its GroupNorm statistics are made of."""

    total: Tensor  # (C,) S1 per channel
    squares: Tensor  # (C,) S2 per channel
    pixels: int  # H W


def decode_tiled(vae, latents: Tensor, *, tile: int, overlap: int) -> Tensor:
    """(B, C_z, h, w) latents as the sampler returns them (scaled) -> (B, C_out, f h, f w) pixels, about [-1, 1].

    The latents are divided by ``vae.config.scaling_factor``, as StableDiffusionUpscalePipeline does;
    f is the VAE's factor, 2^(number of upsamplings). Frames are decoded one at a time. tile == 0, or a
    tile covering the frame: ``vae.decode`` itself, bit for bit. Otherwise cores of ``tile`` latent px,
    attention windows of ``tile`` overlapping by ``overlap`` (see the module doc).
    """
    check_decoder(vae)
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor  # (B, C_z, h, w)
    _, _, h, w = z.shape
    whole = tile == 0 or (h <= tile and w <= tile)
    with torch.no_grad():
        frames = [vae.decode(zi).sample if whole else decode_frame(vae, zi, tile, overlap) for zi in z.split(1)]
    return torch.cat(frames)  # (B, C_out, f h, f w)


def check_decoder(vae) -> None:
    """The decoder layout this module walks: diffusers' Decoder with GroupNorms and UpDecoderBlock2D blocks."""
    d = vae.decoder
    if not isinstance(d.conv_norm_out, nn.GroupNorm) or any(hasattr(b, "attentions") for b in d.up_blocks):
        raise ValueError(f"tiled decode needs a GroupNorm decoder with UpDecoderBlock2D blocks; got {type(vae).__name__}")


def decode_frame(vae, z: Tensor, tile: int, overlap: int) -> Tensor:
    """One frame (1, C_z, h, w), unscaled, through vae's decoder pass by pass -> (1, C_out, f h, f w)."""
    d = vae.decoder
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)  # (1, C_z, h, w) 1x1: pointwise
    x, m = run_pass(d.conv_in, (z,), tile, reach(d.conv_in))  # (1, C, h, w)
    x, m = resnet_passes(d.mid_block.resnets[0], x, m, tile)
    for attn, resnet in zip(d.mid_block.attentions, d.mid_block.resnets[1:]):
        if attn is not None:
            x, m = attention_pass(attn, x, m, tile, overlap)
        x, m = resnet_passes(resnet, x, m, tile)
    for block in d.up_blocks:
        for resnet in block.resnets:
            x, m = resnet_passes(resnet, x, m, tile)
        for upsampler in block.upsamplers or ():
            x, m = run_pass(upsampler, (x,), tile, reach(upsampler.conv), scale=2)  # (1, C, 2H, 2W)
            tile *= 2  # cores keep covering the same latent px
    out_norm = norm_affine(d.conv_norm_out, m)
    pixels, _ = run_pass(lambda t: d.conv_out(d.conv_act(normalise(t, out_norm))), (x,), tile, reach(d.conv_out))
    return pixels  # (1, C_out, f h, f w)


def resnet_passes(resnet, x: Tensor, m: Moments, tile: int) -> tuple[Tensor, Moments]:
    """A ResnetBlock2D without time embedding, as its two passes: out = (shortcut(x) + F2(F1(x))) / s."""
    first = norm_affine(resnet.norm1, m)

    def half1(t: Tensor) -> Tensor:  # (1, C_in, th, tw) -> (1, C_out, th, tw)
        return resnet.conv1(resnet.nonlinearity(normalise(t, first)))

    hidden, mh = run_pass(half1, (x,), tile, reach(resnet.conv1))  # (1, C_out, H, W)
    second = norm_affine(resnet.norm2, mh)

    def half2(t: Tensor, skip: Tensor) -> Tensor:  # (1, C_out, th, tw), (1, C_in, th, tw) -> (1, C_out, th, tw)
        skip = skip if resnet.conv_shortcut is None else resnet.conv_shortcut(skip)
        out = resnet.conv2(resnet.dropout(resnet.nonlinearity(normalise(t, second))))
        return (skip + out) / resnet.output_scale_factor

    return run_pass(half2, (hidden, x), tile, reach(resnet.conv2))  # (1, C_out, H, W)


# Attention (diffusers' Attention in the decoder's mid block: one group-normed token per latent pixel,
# residual, output rescaled), within one window W of latent pixels:
#   t = GN(x)|_W  (frame statistics),  Q, K, V = t Wq, t Wk, t Wv   (per head)
#   out = (x|_W + softmax(Q K^T / sqrt(d)) V Wo) / rescale_output_factor
# Windows are the tile plan's overlapping tiles and their outputs are blended (tiles.py), so a window
# covering the frame is the untiled attention.
def attention_pass(attn, x: Tensor, m: Moments, tile: int, overlap: int) -> tuple[Tensor, Moments]:
    norm = norm_affine(attn.group_norm, m)

    def window(t: Tensor, rows: Tensor) -> Tensor:  # (1, C, th, tw) -> (1, C, th, tw)
        b, c, th, tw = t.shape
        tokens = normalise(t, norm).flatten(2).transpose(1, 2)  # (1, P, C)
        q, k, v = (proj(tokens).unflatten(-1, (attn.heads, -1)).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))  # (1, heads, P, d)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (1, P, heads d)
        out = attn.to_out[1](attn.to_out[0](mixed)).transpose(1, 2).reshape(b, c, th, tw)  # (1, C, th, tw)
        return (out + t) / attn.rescale_output_factor

    out = tiled(window, x, tile=tile, overlap=min(overlap, tile - 1), batch=1)  # (1, C, H, W)
    return out, moments(out)


def run_pass(fn: Callable[..., Tensor], inputs: tuple[Tensor, ...], tile: int, halo: int, scale: int = 1) -> tuple[Tensor, Moments]:
    """``fn`` over frame-sized ``inputs`` (1, C_i, H, W) core by core -> its frame-sized output and Moments.

    Each core is cut from every input with ``halo`` px of context (fewer at the frame's edge, where the
    convs' own zero padding is the untiled one's), and fn's output is cropped back to the core:
    (1, C', s th, s tw) for an input (1, C_i, th, tw), s = ``scale``.
    """
    height, width = inputs[0].shape[2:]
    out = total = squares = None
    for y0, y1 in cores(height, tile):
        for x0, x1 in cores(width, tile):
            a0, a1, b0, b1 = max(y0 - halo, 0), min(y1 + halo, height), max(x0 - halo, 0), min(x1 + halo, width)
            result = fn(*(x[:, :, a0:a1, b0:b1] for x in inputs))  # (1, C', s(a1-a0), s(b1-b0))
            core = result[:, :, scale * (y0 - a0) : scale * (y1 - a0), scale * (x0 - b0) : scale * (x1 - b0)]  # (1, C', s th, s tw)
            if out is None:
                layout = torch.channels_last if result.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
                out = result.new_empty((1, result.shape[1], scale * height, scale * width)).contiguous(memory_format=layout)  # (1, C', sH, sW)
                total = squares = 0
            out[:, :, scale * y0 : scale * y1, scale * x0 : scale * x1] = core
            part = moments(core)
            total, squares = total + part.total, squares + part.squares
    return out, Moments(total, squares, scale * height * scale * width)


def cores(n: int, tile: int) -> list[tuple[int, int]]:
    """ceil(n / tile) disjoint spans partitioning [0, n), sizes differing by at most one."""
    count = -(-n // tile)
    bounds = [i * n // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def reach(conv: nn.Conv2d) -> int:
    """Pixels of context a stride-1 conv reads on each side of an output pixel."""
    return max(conv.kernel_size) // 2


def moments(x: Tensor) -> Moments:
    """Per-channel S1 and S2 of (1, C, H, W), summed in float64 (float32 on MPS, which has no float64)."""
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    return Moments(x.sum(dim=(0, 2, 3), dtype=acc), x.square().sum(dim=(0, 2, 3), dtype=acc), x.shape[2] * x.shape[3])


def norm_affine(norm: nn.GroupNorm, m: Moments) -> tuple[Tensor, Tensor]:
    """GN(x) = x * scale + shift per channel, from the frame's Moments (formula in the module doc): (C,), (C,)."""
    per_group = norm.num_channels // norm.num_groups
    n = m.pixels * per_group
    mean = m.total.view(norm.num_groups, per_group).sum(1) / n  # (G,)
    var = (m.squares.view(norm.num_groups, per_group).sum(1) / n - mean.square()).clamp_min(0)  # (G,)
    scale = norm.weight * (var + norm.eps).rsqrt().repeat_interleave(per_group)  # (C,)
    shift = norm.bias - mean.repeat_interleave(per_group) * scale  # (C,)
    return scale, shift


def normalise(t: Tensor, affine: tuple[Tensor, Tensor]) -> Tensor:
    """(1, C, th, tw) -> GN(t) with the frame's statistics, in t's dtype."""
    scale, shift = (a.to(t.dtype)[None, :, None, None] for a in affine)  # (1, C, 1, 1)
    return t * scale + shift
