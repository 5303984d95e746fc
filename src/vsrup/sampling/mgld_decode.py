"""MGLD-VSR's temporal CFW decode of a clip in bounded memory: latent tiles, all T frames of a tile together.

What the decoder mixes (models/mgld_vae.py): its 3x3 convs mix neighbouring pixels of a frame, its temporal
convs (3,1,1) mix the T frames at the same pixel, its GroupNorms normalise each frame with that frame's
statistics (nn.GroupNorm over a batch of T frames), the CFW fuse concatenates the encoder's features of the
same pixels (spatially aligned with the decoder's states: H/2 and H/4 of the upsampled input, latent x4 and x2),
and the mid block's attention mixes every latent pixel of a frame. So a spatial tile holding all T frames
of its pixels sees everything a pixel of it depends on, but for the statistics and the attention.

Exact (``plan.vae_frame_stats``): ``vae_decode``'s passes (its module doc) with the clip's T frames in the
batch of every core: each pass runs on disjoint cores cut with its convs' halo (the temporal conv's is 0, a
residual dense block's 5: five chained 3x3 convs), every GroupNorm normalises each frame with its own
statistics summed over the cores (Moments per frame, (T, C)), the CFW fuse's first GroupNorm over [e ; d]
from the encoder features' and the decoder's per-frame moments, and the mid-block attention runs frame by
frame over the whole frame (its state is latent-sized), a core's worth of queries at a time (each query's
softmax spans every key, so the chunks change nothing). So this is the untiled ``decode_clip`` within float
rounding, attention included (unlike the x4's tiled decode, whose attention runs in windows). The clip's
decoder states live on the device (about 0.6 MB per latent px of the clip in fp32: docs/models/mgld-vsr.md).

Blended (``plan.vae_frame_stats`` False, when the clip's states do not fit): ``decode_clip`` on overlapping
tiles of the latent, each with the CFW features of its own crop of the upsampled frames (``tiles.tiled``'
extras), each tile normalised with its own statistics (the features' encoder too), blended with the cosine
ramps; memory is one tile's features and decode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from vsrup.memory import MemoryPlan
from vsrup.models.mgld_vae import FEATURE_LEVELS
from vsrup.sampling.tiles import Span, profile, spans, tiled
from vsrup.sampling.vae_decode import (
    Moments, Strips, cores, moments, norm_affine, normalise, reach, resnet_passes, run_pass, vae_factor,
)

# Latent px of context cut around a blended encode tile (and thrown away): the SD encoder's convs reach 15 latent px
# (a 3x3 conv adds 1 px at its level, a stride-2 downsampler takes r to r / 2 + 1: conv_in and level 0's four convs
# 5 px at H; 8 at H/2 and 9 at H/4 after levels 1 and 2; 10 at H/8 after level 3, 14 with the mid block's resnets,
# 15 with conv_out). The mid block's attention spans the cut.
ENCODE_HALO = 16
DENSE_REACH = 5  # px of context of one residual dense block: conv5 reads conv4's output, which reads conv3's, ... (five 3x3 convs)


def decode(video, z: torch.Tensor, up: torch.Tensor, weight: float, plan: MemoryPlan | None) -> torch.Tensor:
    """(T, 4, h, w) unscaled latents of one clip and its upsampled input frames (T, 3, 8h, 8w) in [-1, 1], whose CFW
    features the decoder fuses -> (T, 3, 8h, 8w), about [-1, 1].

    Untiled (``video.decode_clip``) without a plan, with ``plan.vae_tile`` 0, or when one tile covers the latent;
    else exact pass by pass on the clip's features, or blended tiles, each with its own features (module doc).
    """
    frames = z.shape[0]
    tile = vae_tile(plan, up)
    if tile and not plan.vae_frame_stats:
        return decode_blended(video, z, up, weight, tile, plan.vae_overlap)
    features = clip_features(video, up, tile)
    if not tile:
        return video.decode_clip(z, features, weight, frames)
    return decode_exact(video, z, features, weight, tile)


def vae_tile(plan: MemoryPlan | None, up: torch.Tensor) -> int:
    """The plan's VAE tile for the upsampled frames (T, 3, 8h, 8w); 0 when there is none or it covers the latent."""
    tile = plan.vae_tile if plan is not None else 0
    return 0 if up.shape[2] <= 8 * tile and up.shape[3] <= 8 * tile else tile


def posterior(vae, up: torch.Tensor, plan: MemoryPlan | None) -> DiagonalGaussianDistribution:
    """The SD VAE's posterior of (T, 3, H, W) upsampled frames, frame by frame (nothing in the encoder mixes frames):
    ``vae.encode`` itself where the plan does not tile the VAE, else pass by pass (``encode_frame``, the same within
    rounding), or in blended tiles (``encode_blended``) where the frame's encoder states do not fit."""
    tile = vae_tile(plan, up)
    if not tile:
        encode = lambda frame: vae.encode(frame).latent_dist.parameters  # noqa: E731
    elif plan.encode_frame_stats:
        encode = lambda frame: encode_frame(vae, frame, tile)  # noqa: E731
    else:
        encode = lambda frame: encode_blended(vae, frame, tile, plan.vae_overlap)  # noqa: E731
    return DiagonalGaussianDistribution(torch.cat([encode(frame[None]) for frame in up]))  # parameters (T, 8, H/8, W/8)


def clip_features(video, up: torch.Tensor, tile: int) -> list[torch.Tensor]:
    """The CFW features of (T, 3, H, W) frames, frame by frame, whole at tile 0 or pass by pass (``frame_features``)
    -> [(T, 256, H/2, W/2), (T, 512, H/4, W/4)]."""
    per_frame = [video.features(frame[None]) if tile == 0 else frame_features(video, frame[None], tile) for frame in up]
    return [torch.cat(level) for level in zip(*per_frame)]


def decode_blended(video, z: torch.Tensor, up: torch.Tensor, weight: float, tile: int, overlap: int) -> torch.Tensor:
    """``decode_clip`` on overlapping latent tiles of the clip, each with the features of its own crop of the upsampled
    frames (so nothing clip-sized but the input and the output is held), each tile its own statistics, blended."""
    frames, c, h, w = z.shape
    f = vae_factor(video)

    def run(tiles: torch.Tensor, rows: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:  # (1, T 4, th, tw) -> (1, T 3, f th, f tw)
        _, _, th, tw = tiles.shape
        features = video.features(crop.reshape(frames, 3, f * th, f * tw))  # (T, 256, 4 th, 4 tw), (T, 512, 2 th, 2 tw)
        pixels = video.decode_clip(tiles.reshape(frames, c, th, tw), features, weight, frames)  # (T, 3, f th, f tw)
        return pixels.reshape(1, -1, *pixels.shape[2:])

    extras = ((up.reshape(1, frames * 3, f * h, f * w), f),)  # (1, T 3, f h, f w): cut at each tile's extent
    out = tiled(run, z.reshape(1, frames * c, h, w), tile=tile, overlap=overlap, batch=1, scale=f, extras=extras)  # (1, T 3, f h, f w)
    return out.reshape(frames, -1, f * h, f * w)


def decode_exact(video, z: torch.Tensor, features: list[torch.Tensor], weight: float, tile: int) -> torch.Tensor:
    """``decode_clip`` pass by pass on cores of a quarter ``tile`` of rows by ``tile`` columns, the clip's T frames
    in every core, each frame's GroupNorm statistics (module doc): (T, 4, h, w) -> (T, 3, 8h, 8w)."""
    d = video.decoder
    frames = z.shape[0]
    z = video.post_quant_conv(z)  # (T, 4, h, w) 1x1: pointwise
    rows = [z[:, :, a:b] for a, b in cores(z.shape[2], max(1, tile // 4))]
    (x,), m = run_pass(lambda t: (d.conv_in(t),), (rows,), tile, reach(d.conv_in), per_frame=True)  # (T, 512, ., w) strips
    mid = d.mid_block
    x, m = resnet_passes(mid.resnets[0], x, m, tile)
    x, m = temporal_pass(d.mid_temporal, x, tile, frames)
    x, m = whole_attention(mid.attentions[0], x, m, queries=max(1, tile // 4) * tile)  # a core's latent px of queries at a time
    x, m = resnet_passes(mid.resnets[1], x, m, tile)
    for k, block in enumerate(d.up_blocks):
        for resnet, mixing in zip(block.resnets, block.temporal_mixing):
            x, m = resnet_passes(resnet, x, m, tile)
            x, m = temporal_pass(mixing, x, tile, frames)
        if hasattr(block, "fuse"):
            e = features[FEATURE_LEVELS.index(len(d.up_blocks) - 1 - k)]  # (T, C, H_k, W_k): the decoder's resolution here
            x, m = fuse_passes(block.fuse, e, x, m, weight, tile)
        for upsampler in block.upsamplers or ():
            (x,), m = run_pass(lambda t: (upsampler(t),), (x,), tile, reach(upsampler.conv), scale=2, consumed=1, per_frame=True)
            tile *= 2  # cores keep covering the same latent px
    out_norm = norm_affine(d.conv_norm_out, m)
    (pixels,), _ = run_pass(lambda t: (d.conv_out(d.conv_act(normalise(t, out_norm))),), (x,), tile, reach(d.conv_out), consumed=1)
    return torch.cat(pixels, dim=2)  # (T, 3, 8h, 8w)


def temporal_pass(mixing, x: Strips, tile: int, frames: int) -> tuple[Strips, Moments]:
    """a Conv3d_(3,1,1) + (1 - a) x over the T frames of each core: no spatial halo. Consumes x."""
    (x,), m = run_pass(lambda t: (mixing(t, frames),), (x,), tile, 0, consumed=1, per_frame=True)
    return x, m


# The mid-block attention (diffusers' Attention, as vae_decode.attention_pass writes it), frame by frame over the
# whole frame: t = GN(x) with the frame's statistics, out = (x + softmax(Q K^T / sqrt(d)) V Wo) / rescale. Each
# query's softmax runs over every key of its frame, so splitting the queries into chunks changes nothing: the
# chunk bounds the scores (chunk x frame px) where the kernel materialises them. The latent-sized state is small.
def whole_attention(attn, x: Strips, m: Moments, queries: int) -> tuple[Strips, Moments]:
    norm = norm_affine(attn.group_norm, m)  # (T, C) twice
    full = torch.cat(x, dim=2)  # (T, C, h, w): latent-sized
    _, c, h, w = full.shape
    heads = lambda y: y.unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # noqa: E731  (1, P, C) -> (1, heads, P, d)
    outs = []
    for i, frame in enumerate(full.split(1)):
        tokens = normalise(frame, (norm[0][i], norm[1][i])).flatten(2).transpose(1, 2)  # (1, P, C)
        k, v = heads(attn.to_k(tokens)), heads(attn.to_v(tokens))  # (1, heads, P, d)
        mixed = torch.cat([F.scaled_dot_product_attention(heads(attn.to_q(chunk)), k, v) for chunk in tokens.split(queries, dim=1)], dim=2)
        out = attn.to_out[1](attn.to_out[0](mixed.transpose(1, 2).flatten(2))).transpose(1, 2).reshape(1, c, h, w)  # (1, C, h, w)
        outs.append((out + frame) / attn.rescale_output_factor)
    out = torch.cat(outs)  # (T, C, h, w)
    return list(out.split([strip.shape[2] for strip in x], dim=2)), moments(out, per_frame=True)


def fuse_passes(fuse, e: torch.Tensor, d: Strips, m_d: Moments, weight: float, tile: int) -> tuple[Strips, Moments]:
    """CFW: d + w * RB(RDB(RDB(RB([e ; d])))) pass by pass; ``e`` (T, C, H_k, W_k) cut as d's strips. Consumes d."""
    rb1, rb3 = fuse.encode_enc_1, fuse.encode_enc_3
    d = at_least(d, DENSE_REACH)  # a core's halo comes from its neighbouring strips alone; every pass here keeps these strips
    e_strips = list(e.split([strip.shape[2] for strip in d], dim=2))  # views, as d's strips
    m_e = moments(e, per_frame=True)
    first = norm_affine(rb1.norm1, Moments(torch.cat([m_e.total, m_d.total], -1), torch.cat([m_e.squares, m_d.squares], -1), m_d.pixels))

    def half1(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (T, C, th, tw) twice -> 2 x (T, C, th, tw)
        t = torch.cat([a, b], dim=1)  # (T, 2C, th, tw)
        return rb1.conv1(F.silu(normalise(t, first))), rb1.conv_out(t)

    (hidden, skip), m = run_pass(half1, (e_strips, d), tile, reach(rb1.conv1), consumed=1, per_frame=True)  # d kept for the residual
    y, m = res_second_half(rb1, hidden, skip, m, tile)
    for dense in fuse.encode_enc_2:
        (y,), m = run_pass(lambda t: (dense(t),), (y,), tile, DENSE_REACH, consumed=1, per_frame=True)
    first = norm_affine(rb3.norm1, m)
    (hidden,), m = run_pass(lambda t: (rb3.conv1(F.silu(normalise(t, first))),), (y,), tile, reach(rb3.conv1), per_frame=True)
    second = norm_affine(rb3.norm2, m)

    def out(t: torch.Tensor, skip: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor]:  # 3 x (T, C, th, tw) -> (T, C, th, tw)
        return (d + weight * (skip + rb3.conv2(F.silu(normalise(t, second)))),)

    (x,), m = run_pass(out, (hidden, y, d), tile, reach(rb3.conv2), consumed=3, per_frame=True)
    return x, m


def res_second_half(rb, hidden: Strips, skip: Strips, m: Moments, tile: int) -> tuple[Strips, Moments]:
    """A FuseResBlock's second half: skip + conv2(SiLU(GN2(hidden))). Consumes both."""
    norm = norm_affine(rb.norm2, m)
    (y,), m = run_pass(lambda t, s: (s + rb.conv2(F.silu(normalise(t, norm))),), (hidden, skip), tile, reach(rb.conv2), consumed=2, per_frame=True)
    return y, m


def at_least(x: Strips, rows: int) -> Strips:
    """The strips, neighbours joined until each holds at least ``rows`` rows (a pass's halo is read from the next strips only)."""
    out: Strips = []
    for strip in x:
        if out and out[-1].shape[2] < rows:
            out[-1] = torch.cat([out[-1], strip], dim=2)
        else:
            out.append(strip)
    if len(out) > 1 and out[-1].shape[2] < rows:
        out[-2:] = [torch.cat(out[-2:], dim=2)]
    return out


# The encoders of the upsampled frames (the SD VAE's, for the input latent, and the video VAE's, for the CFW
# features), frame by frame, pass by pass on cores as the decode: each GroupNorm with the frame's statistics, so
# exactly the whole-frame encoder within rounding. Their full-resolution levels run in passes; from the latent's
# level on (the last down block, the mid block and its attention, the output convs) the states are latent-sized
# and run whole. Strips start on multiples of 8 rows, so each stride-2 downsampling halves every strip exactly.
def encoder_levels(encoder, frame: torch.Tensor, tile: int, levels: int, keep: tuple[int, ...] = ()) -> tuple[Strips, list[torch.Tensor]]:
    """(1, 3, H, W) through conv_in and the first ``levels`` down blocks, each with its downsampler -> the state
    after them (strips) and the outputs of the levels in ``keep``, before their downsamplers."""
    rows = [frame[:, :, 8 * a : 8 * b] for a, b in cores(frame.shape[2] // 8, max(1, tile // 4))]
    tile_px = 8 * tile  # columns of a core at full resolution: tile latent px
    (x,), m = run_pass(lambda t: (encoder.conv_in(t),), (rows,), tile_px, reach(encoder.conv_in))
    outputs = []
    for level, block in enumerate(encoder.down_blocks[:levels]):
        for resnet in block.resnets:
            x, m = resnet_passes(resnet, x, m, tile_px)
        if level in keep:
            outputs.append(torch.cat(x, dim=2))
        if level + 1 < levels or not keep:  # the features stop before the last level's downsampler
            x, m = downsample_pass(block.downsamplers[0], x, tile_px // 2)
            tile_px //= 2
    return x, outputs


def downsample_pass(down, x: Strips, tile: int) -> tuple[Strips, Moments]:
    """Downsample2D (zeros right and below, then a 3x3 conv of stride 2): output row i reads input rows 2i .. 2i+2,
    so a strip of even rows needs the next strip's first row. ``tile``: output columns per core. Consumes x."""
    out = []
    total = squares = 0
    for r in range(len(x)):
        below = x[r + 1][:, :, :1] if r + 1 < len(x) else None
        t = F.pad(x[r] if below is None else torch.cat([x[r], below], dim=2), (0, 1, 0, 1 if below is None else 0))  # (1, C, rows + 1, W + 1)
        _, c, rows, width = x[r].shape
        strip = x[r].new_empty((1, c, rows // 2, width // 2))  # (1, C, rows / 2, W / 2)
        for x0, x1 in cores(width // 2, tile):
            strip[:, :, :, x0:x1] = down.conv(t[:, :, :, 2 * x0 : 2 * x1 + 1])
        part = moments(strip)
        total, squares = total + part.total, squares + part.squares
        out.append(strip)
        x[r] = None
    x.clear()
    return out, Moments(total, squares, sum(strip.shape[2] * strip.shape[3] for strip in out))


def encode_frame(vae, frame: torch.Tensor, tile: int) -> torch.Tensor:
    """The SD VAE's posterior parameters (encoder, quant_conv) of one (1, 3, H, W) frame in [-1, 1] -> (1, 8, H/8, W/8)."""
    e = vae.encoder
    x, _ = encoder_levels(e, frame, tile, len(e.down_blocks) - 1)  # the last down block is at the latent's size
    h = torch.cat(x, dim=2)  # (1, C, H/8, W/8)
    for resnet in e.down_blocks[-1].resnets:
        h = resnet(h, None)
    h = e.conv_out(e.conv_act(e.conv_norm_out(e.mid_block(h))))  # (1, 8, H/8, W/8)
    return vae.quant_conv(h) if vae.quant_conv is not None else h


def frame_features(video, frame: torch.Tensor, tile: int) -> list[torch.Tensor]:
    """``CFWAutoencoder.features`` of one (1, 3, H, W) frame, pass by pass: [(1, 256, H/2, W/2), (1, 512, H/4, W/4)]."""
    return encoder_levels(video.encoder, frame, tile, max(FEATURE_LEVELS) + 1, keep=FEATURE_LEVELS)[1]


def encode_blended(vae, frame: torch.Tensor, tile: int, overlap: int, halo: int = ENCODE_HALO) -> torch.Tensor:
    """The SD VAE's posterior parameters of one (1, 3, H, W) frame -> (1, 8, H/8, W/8), ``vae.encode`` on overlapping
    latent tiles (``tiles.spans``), each cut with ``halo`` latent px of context (fewer at the frame's edge) that is
    cropped off, each tile normalised with its own statistics and its attention within the cut, blended with the
    cosine ramps. Memory: one cut's whole-frame encode (no frame-sized state but the input and the output)."""
    h, w = frame.shape[2] // 8, frame.shape[3] // 8
    out = total = None
    for ys in spans(h, tile, overlap):
        for xs in spans(w, tile, overlap):
            (y0, y1), (x0, x1) = with_halo(ys, halo, h), with_halo(xs, halo, w)
            params = vae.encode(frame[:, :, 8 * y0 : 8 * y1, 8 * x0 : 8 * x1]).latent_dist.parameters  # (1, 8, y1 - y0, x1 - x0)
            core = params[:, :, ys.start - y0 : ys.end - y0, xs.start - x0 : xs.end - x0].float()  # (1, 8, th, tw)
            if out is None:
                out, total = core.new_zeros((1, core.shape[1], h, w)), core.new_zeros((h, w))  # (1, 8, h, w), (h, w)
            weight = profile(ys, dtype=core.dtype, device=core.device)[:, None] * profile(xs, dtype=core.dtype, device=core.device)  # (th, tw)
            out[:, :, ys.start : ys.end, xs.start : xs.end] += weight * core
            total[ys.start : ys.end, xs.start : xs.end] += weight
    return (out / total).to(frame.dtype)


def with_halo(span: Span, halo: int, n: int) -> tuple[int, int]:
    """The span widened by ``halo`` each side, within [0, n)."""
    return max(span.start - halo, 0), min(span.end + halo, n)
