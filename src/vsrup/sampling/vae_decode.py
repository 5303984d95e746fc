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

A pass runs on disjoint cores that partition the frame (a quarter tile of latent rows by a tile of
columns, twice that per upsampling so far), each cut with a halo of its conv's reach, so every core
of the output is the untiled computation; the core is written into the output, and each channel's S1
and S2 over it are added up (float64). The cores partition the frame, so the sums are the frame's, and
the next pass normalises every core with the frame's mu_g, var_g. What remains different from the
untiled decode is the attention alone, which runs in overlapping latent windows (docs/tiling.md).

Where the states live. Between passes a frame's activations stay on the VAE's device (moving them to
the host and back at every pass would cost more than the decode's compute on a GPU), as row strips: a
pass frees each input strip as soon as the cores below no longer read it, so it holds its input and
its output at once for a few strips only. Frames are decoded one at a time (docs/tiling.md gives the
bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vsrup.sampling.tiles import tiled


Strips = list[Tensor]  # a frame-sized state as row strips (1, C, rows_r, W), top to bottom


@dataclass(frozen=True)
class Moments:
    """Per-channel sums of a frame-sized state: what its GroupNorm statistics are made of."""

    total: Tensor  # (C,) S1 per channel, or (N, C) per frame of the batch (per_frame: each frame its own statistics)
    squares: Tensor  # (C,) or (N, C) S2 per channel
    pixels: int  # N H W: the pixels summed over (N frames decoded together; 1 for the x4 VAE); H W per frame


def decode_tiled(vae, latents: Tensor, *, tile: int, overlap: int, frame_statistics: bool = True) -> Tensor:
    """(B, C_z, h, w) latents as the sampler returns them (scaled) -> (B, C_out, f h, f w) pixels, about [-1, 1].

    The latents are divided by ``vae.config.scaling_factor``, as StableDiffusionUpscalePipeline does;
    f is the VAE's factor, 2^(number of upsamplings). Frames are decoded one at a time. tile == 0, or a
    tile covering the frame: ``vae.decode`` itself, bit for bit. Otherwise pass by pass on cores of a
    quarter ``tile`` of rows by ``tile`` columns, attention in windows of ``tile`` overlapping by ``overlap``.
    ``frame_statistics`` False (the memory plan's choice when a frame's states do not fit on the device):
    each overlapping tile is decoded alone, with its own statistics, and the tiles are blended (tiles.tiled).
    """
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor  # (B, C_z, h, w)
    _, _, h, w = z.shape
    whole = tile == 0 or (h <= tile and w <= tile)
    with torch.no_grad():
        if not (whole or frame_statistics):
            decode = lambda tiles, rows: vae.decode(tiles).sample  # noqa: E731  (N, C_out, f th, f tw)
            return tiled(decode, z, tile=tile, overlap=overlap, batch=1, scale=vae_factor(vae))  # (B, C_out, f h, f w)
        if not whole:
            check_decoder(vae)
        frames = [vae.decode(zi).sample if whole else decode_frame(vae, zi, tile, overlap) for zi in z.split(1)]
    return torch.cat(frames)  # (B, C_out, f h, f w)


def vae_factor(vae) -> int:
    """Output pixels per latent pixel of a diffusers AutoencoderKL: 2 per upsampling block."""
    return 2 ** sum(1 for block in vae.decoder.up_blocks if block.upsamplers)


def check_decoder(vae) -> None:
    """The decoder layout this module walks: diffusers' Decoder with GroupNorms and UpDecoderBlock2D blocks."""
    d = vae.decoder
    if not isinstance(d.conv_norm_out, nn.GroupNorm) or any(hasattr(b, "attentions") for b in d.up_blocks):
        blocks = ", ".join(type(b).__name__ for b in d.up_blocks)
        raise ValueError(f"tiled decode needs a GroupNorm decoder of UpDecoderBlock2D blocks; got {blocks}, {type(d.conv_norm_out).__name__}")


def decode_frame(vae, z: Tensor, tile: int, overlap: int) -> Tensor:
    """One frame (1, C_z, h, w), unscaled, through vae's decoder pass by pass -> (1, C_out, f h, f w)."""
    d = vae.decoder
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)  # (1, C_z, h, w) 1x1: pointwise
    # Strips a quarter of a tile high, which every later state keeps (x2 per upsampling): a pass then holds
    # its input and output at once for about a quarter tile's rows only, for ~3% more conv work at tile 128.
    rows = [z[:, :, a:b] for a, b in cores(z.shape[2], max(1, tile // 4))]
    (x,), m = run_pass(lambda t: (d.conv_in(t),), (rows,), tile, reach(d.conv_in))
    return decoder_passes(d, x, m, tile, overlap)  # (1, C_out, f h, f w)


def decoder_passes(d, x: Strips, m: Moments, tile: int, overlap: int, resnet=None, attention=None) -> Tensor:
    """The decoder ``d`` from its mid block to ``conv_out``, pass by pass on the strips ``x`` (after ``conv_in``) with
    their Moments ``m`` -> the decoded rows, concatenated (N, C_out, f h, f w). ``resnet`` and ``attention`` run one
    block on strips (default: ``resnet_passes`` and ``attention_pass``), for decoders whose blocks add to diffusers'."""
    resnet = resnet or resnet_passes
    attention = attention or attention_pass
    x, m = resnet(d.mid_block.resnets[0], x, m, tile)
    for attn, block in zip(d.mid_block.attentions, d.mid_block.resnets[1:]):
        if attn is not None:
            x, m = attention(attn, x, m, tile, overlap)
        x, m = resnet(block, x, m, tile)
    for level in d.up_blocks:
        for block in level.resnets:
            x, m = resnet(block, x, m, tile)
        for upsampler in level.upsamplers or ():
            (x,), m = run_pass(lambda t: (upsampler(t),), (x,), tile, reach(upsampler.conv), scale=2, consumed=1)
            tile *= 2  # cores keep covering the same latent px
    out_norm = norm_affine(d.conv_norm_out, m)
    (pixels,), _ = run_pass(lambda t: (d.conv_out(d.conv_act(normalise(t, out_norm))),), (x,), tile, reach(d.conv_out), consumed=1)
    return torch.cat(pixels, dim=2)


def resnet_passes(resnet, x: Strips, m: Moments, tile: int) -> tuple[Strips, Moments]:
    """A ResnetBlock2D without time embedding, as two passes: out = (shortcut(x) + F2(F1(x))) / s. Consumes x.
    Per-frame Moments in, per-frame statistics throughout."""
    first = norm_affine(resnet.norm1, m)
    per_frame = m.total.dim() == 2

    def half1(t: Tensor) -> tuple[Tensor, Tensor]:  # (1, C_in, th, tw) -> 2 x (1, C_out, th, tw)
        skip = t if resnet.conv_shortcut is None else resnet.conv_shortcut(t)  # 1x1: x itself is not kept
        return resnet.conv1(resnet.nonlinearity(normalise(t, first))), skip

    (hidden, skip), mh = run_pass(half1, (x,), tile, reach(resnet.conv1), consumed=1, per_frame=per_frame)
    second = norm_affine(resnet.norm2, mh)

    def half2(t: Tensor, skip: Tensor) -> tuple[Tensor]:  # 2 x (1, C_out, th, tw) -> (1, C_out, th, tw)
        out = resnet.conv2(resnet.dropout(resnet.nonlinearity(normalise(t, second))))
        return ((skip + out) / resnet.output_scale_factor,)

    (out,), m = run_pass(half2, (hidden, skip), tile, reach(resnet.conv2), consumed=2, per_frame=per_frame)
    return out, m


# Attention (diffusers' Attention in the decoder's mid block: one group-normed token per latent pixel,
# residual, output rescaled), within one window W of latent pixels:
#   t = GN(x)|_W  (frame statistics),  Q, K, V = t Wq, t Wk, t Wv   (per head)
#   out = (x|_W + softmax(Q K^T / sqrt(d)) V Wo) / rescale_output_factor
# Windows are the tile plan's overlapping tiles and their outputs are blended (tiles.py), so a window
# covering the frame is the untiled attention.
def attention_pass(attn, x: Strips, m: Moments, tile: int, overlap: int) -> tuple[Strips, Moments]:
    norm = norm_affine(attn.group_norm, m)

    def window(t: Tensor, rows: Tensor) -> Tensor:  # (1, C, th, tw) -> (1, C, th, tw)
        b, c, th, tw = t.shape
        tokens = normalise(t, norm).flatten(2).transpose(1, 2)  # (1, P, C)
        q, k, v = (proj(tokens).unflatten(-1, (attn.heads, -1)).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))  # (1, heads, P, d)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (1, P, heads d)
        out = attn.to_out[1](attn.to_out[0](mixed)).transpose(1, 2).reshape(b, c, th, tw)  # (1, C, th, tw)
        return (out + t) / attn.rescale_output_factor

    out = tiled(window, torch.cat(x, dim=2), tile=tile, overlap=min(overlap, tile - 1), batch=1)  # (1, C, h, w) latent: small
    return list(out.split([strip.shape[2] for strip in x], dim=2)), moments(out)


def run_pass(fn: Callable[..., tuple[Tensor, ...]], inputs: tuple[Strips, ...], tile: int, halo: int, scale: int = 1, consumed: int = 0,
             per_frame: bool = False) -> tuple[tuple[Strips, ...], Moments]:
    """``fn`` over frame-sized ``inputs`` core by core -> its outputs, as strips, and the first output's Moments.

    Each core (one strip's rows, ``tile`` columns) is cut from every input with ``halo`` px of context
    (fewer at the frame's edge, where the convs' own zero padding is the untiled one's), and fn's
    outputs are cropped back to the core: (1, C', s th, s tw) for inputs (1, C_i, th, tw), s = ``scale``.
    The first ``consumed`` inputs are emptied strip by strip once no later core reads them.
    ``per_frame``: the Moments are each frame's of the batch, (N, C), not their sum.
    """
    width = inputs[0][0].shape[3]
    outputs: list[Strips] = []
    total = squares = 0
    for r in range(len(inputs[0])):
        top = halo if r > 0 else 0
        rows = inputs[0][r].shape[2]
        strips: list[Tensor] | None = None
        for x0, x1 in cores(width, tile):
            b0, b1 = max(x0 - halo, 0), min(x1 + halo, width)
            results = fn(*(cut(x, r, halo, b0, b1) for x in inputs))  # each (1, C', s th', s tw')
            ys, xs = slice(scale * top, scale * (top + rows)), slice(scale * (x0 - b0), scale * (x1 - b0))
            if strips is None:
                strips = [new_state(res, scale * rows, scale * width) for res in results]  # (1, C', s rows, s W) each
            for strip, res in zip(strips, results):
                strip[:, :, :, scale * x0 : scale * x1] = res[:, :, ys, xs]
            part = moments(results[0][:, :, ys, xs], per_frame)
            total, squares = total + part.total, squares + part.squares
        outputs = outputs or [[] for _ in strips]
        for done, strip in zip(outputs, strips):
            done.append(strip)
        for x in inputs[:consumed]:  # from here on, only strip r+1's cores read these inputs: strip r's last rows
            if r > 0:
                x[r - 1] = None
            x[r] = x[r][:, :, x[r].shape[2] - halo :].clone()
    for x in inputs[:consumed]:
        x.clear()
    frames = 1 if per_frame else outputs[0][0].shape[0]
    return tuple(outputs), Moments(total, squares, sum(frames * strip.shape[2] * strip.shape[3] for strip in outputs[0]))


def cut(x: Strips, r: int, halo: int, b0: int, b1: int) -> Tensor:
    """Columns [b0, b1) of strip r with ``halo`` rows of its neighbours above and below (where they exist)."""
    parts = [x[r - 1][:, :, -halo:, b0:b1]] if r > 0 and halo else []
    parts.append(x[r][:, :, :, b0:b1])
    if r + 1 < len(x) and halo:
        parts.append(x[r + 1][:, :, :halo, b0:b1])
    return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


def new_state(like: Tensor, height: int, width: int) -> Tensor:
    """An empty (N, C, height, width) strip in ``like``'s batch, dtype, device and memory format."""
    layout = torch.channels_last if like.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return like.new_empty((like.shape[0], like.shape[1], height, width)).contiguous(memory_format=layout)


def cores(n: int, tile: int) -> list[tuple[int, int]]:
    """ceil(n / tile) disjoint spans partitioning [0, n), sizes differing by at most one."""
    count = -(-n // tile)
    bounds = [i * n // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def reach(conv: nn.Conv2d) -> int:
    """Pixels of context a stride-1 conv reads on each side of an output pixel."""
    return max(conv.kernel_size) // 2


def moments(x: Tensor, per_frame: bool = False) -> Moments:
    """Per-channel S1 and S2 of (N, C, H, W) over all N ((C,) each), or each frame's (``per_frame``: (N, C) each), summed in
    float64 (float32 on MPS, which has no float64)."""
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    dims, frames = ((2, 3), 1) if per_frame else ((0, 2, 3), x.shape[0])
    return Moments(x.sum(dim=dims, dtype=acc), x.square().sum(dim=dims, dtype=acc), frames * x.shape[2] * x.shape[3])


def norm_affine(norm: nn.GroupNorm, m: Moments) -> tuple[Tensor, Tensor]:
    """GN(x) = x * scale + shift per channel, from the frame's Moments (formula in the module doc): (C,), (C,);
    (N, C), (N, C) from per-frame Moments."""
    per_group = norm.num_channels // norm.num_groups
    n = m.pixels * per_group
    lead = m.total.shape[:-1]  # () or (N,)
    mean = m.total.view(*lead, norm.num_groups, per_group).sum(-1) / n  # (G,) or (N, G)
    var = (m.squares.view(*lead, norm.num_groups, per_group).sum(-1) / n - mean.square()).clamp_min(0)  # (G,) or (N, G)
    scale = norm.weight * (var + norm.eps).rsqrt().repeat_interleave(per_group, dim=-1)  # (C,) or (N, C)
    shift = norm.bias - mean.repeat_interleave(per_group, dim=-1) * scale  # (C,) or (N, C)
    return scale, shift


def normalise(t: Tensor, affine: tuple[Tensor, Tensor]) -> Tensor:
    """(N, C, th, tw) -> GN(t) with the frame's statistics (or each frame's, from (N, C) affines), in t's dtype."""
    scale, shift = (a.to(t.dtype)[..., :, None, None] for a in affine)  # (C, 1, 1) or (N, C, 1, 1)
    return t * scale + shift
