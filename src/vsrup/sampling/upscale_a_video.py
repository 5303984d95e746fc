"""Upscale-A-Video's model calls on a window: the video UNet tile by tile, and the VAE chunk by chunk.

The loop itself is the x4 upscaler's (``sampling/sd_x4.sample_clip``: noise augmentation, CFG,
v-prediction, the step hook for propagation): only the denoiser differs, because the video UNet
mixes the window's frames and must see all T of them in every call.

Tiles. A window's T frames are laid side by side as channels, (V, T C, h, w), so that ``tiles.tiled``
cuts every frame at the same tile and blends the tiles' predictions with its smooth weights (the
published code pastes tiles without blending). Each call then holds all T frames of its tiles, and
the GroupNorm statistics are the tile's, over the T frames, as in the published tiled run.

Decode. The published pipeline decodes the window in chunks of 3 frames (``short_seq``), each
chunk's GroupNorms and 3x3x3 convs spanning its frames; here the same chunks. A chunk larger than
``plan.vae_tile`` is decoded pass by pass on disjoint cores, as ``vae_decode.py`` decodes an x4
frame (its module doc), the n frames of the chunk riding together in the batch: every core of every
pass is the untiled computation (the convs' halos, the 3x3x3 conv's frames all in the core), each
GroupNorm normalises with the chunk's statistics summed over the cores, and the mid-block attention,
frame by frame with its frame's statistics, runs in blended windows (the one part that is not the
untiled decode, as for the x4). Without room for the chunk's states (``plan.vae_frame_stats``
False) the chunk is decoded in overlapping tiles, each with its own statistics, blended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vsrup.memory import MemoryPlan
from vsrup.models.video_unet import to_rows, to_video
from vsrup.models.video_vae import ResnetPlus
from vsrup.sampling.tiles import tiled
from vsrup.sampling.vae_decode import (
    Moments, Strips, attention_pass, cores, decoder_passes, moments, norm_affine, normalise, reach, resnet_passes, run_pass, vae_factor,
)

DECODE_FRAMES = 3  # frames decoded together (the published pipeline's short_seq)


class VideoDenoiser:
    """The sd_x4 ``Denoiser`` contract for the video UNet: rows (V T, 7, h, w), video-major, T = ``frames``."""

    def __init__(self, unet, plan: MemoryPlan, frames: int):
        self.unet, self.plan, self.frames = unet, plan, frames

    def __call__(self, x, t, text, noise_level):  # x (V T, 7, h, w), text (V T, 77, D), noise_level (V T,)
        frames = self.frames
        rows, c, h, w = x.shape
        per_video_text, per_video_level = text[::frames], noise_level[::frames]  # (V, 77, D), (V,)

        def run(tiles, videos):  # tiles (N, T 7, th, tw), videos (N,)
            n, _, th, tw = tiles.shape
            out = self.unet(
                tiles.reshape(n * frames, c, th, tw), t, per_video_text[videos].repeat_interleave(frames, 0),
                per_video_level[videos].repeat_interleave(frames), frames=frames,
            )[0]  # (N T, 4, th, tw)
            return out.reshape(n, -1, th, tw)  # (N, T 4, th, tw)

        packed = x.reshape(rows // frames, frames * c, h, w)  # (V, T 7, h, w)
        batch = max(1, self.plan.batch // frames)  # the plan counts frame tiles
        out = tiled(run, packed, tile=self.plan.tile, overlap=self.plan.overlap, batch=batch)  # (V, T 4, h, w)
        return out.reshape(rows, -1, h, w)  # (V T, 4, h, w)


def decode_window(vae, latents: torch.Tensor, low_res: torch.Tensor, plan: MemoryPlan) -> torch.Tensor:
    """(T, 4, h, w) scaled latents and the clean LR frames (T, 3, h, w) in [-1, 1] -> (T, 3, 4h, 4w) in about [-1, 1].

    Chunks of DECODE_FRAMES frames from the window's first; ``low_res`` conditions the video VAE only.
    """
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor  # (T, 4, h, w)
    lr = low_res.to(vae.device, vae.dtype)  # (T, 3, h, w)
    _, c, h, w = z.shape
    f = vae_factor(vae)
    out = []
    for start in range(0, z.shape[0], DECODE_FRAMES):
        zc, lc = z[start : start + DECODE_FRAMES], lr[start : start + DECODE_FRAMES]  # (n, 4, h, w), (n, 3, h, w)
        n = zc.shape[0]

        def run(tiles, _):  # (1, n 7, th, tw) -> (1, n 3, 4 th, 4 tw)
            _, _, th, tw = tiles.shape
            frames = tiles.reshape(n, c + 3, th, tw)  # (n, 7, th, tw)
            pixels = vae.decode_frames(frames[:, :c], frames[:, c:] if vae.conditioned else None, frames=n)  # (n, 3, 4 th, 4 tw)
            return pixels.reshape(1, -1, *pixels.shape[2:])

        if plan.vae_tile and plan.vae_frame_stats and (h > plan.vae_tile or w > plan.vae_tile):
            out.append(decode_chunk(vae, zc, lc, plan.vae_tile, plan.vae_overlap))  # (n, 3, 4h, 4w)
            continue
        packed = torch.cat([zc, lc], dim=1).reshape(1, n * (c + 3), h, w)  # (1, n 7, h, w)
        pixels = tiled(run, packed, tile=plan.vae_tile, overlap=plan.vae_overlap, batch=1, scale=f)  # (1, n 3, 4h, 4w)
        out.append(pixels.reshape(n, 3, f * h, f * w))
    return torch.cat(out)  # (T, 3, 4h, 4w)


def decode_chunk(vae, z: torch.Tensor, low_res: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """n frames decoded together, pass by pass on cores (module doc): unscaled (n, 4, h, w) latents and the LR
    frames (n, 3, h, w) -> (n, 3, f h, f w). Strips are (n, C, rows, W): the chunk's frames in the batch."""
    d = vae.decoder
    z = vae.post_quant_conv(z)  # (n, 4, h, w) 1x1: pointwise
    bounds = cores(z.shape[2], max(1, tile // 4))
    rows = [z[:, :, a:b] for a, b in bounds]
    (x,), m = run_pass(lambda t: (d.conv_in(t),), (rows,), tile, reach(d.conv_in))  # (n, 512, ., w) strips
    if vae.conditioned:
        x, m = condition_passes(d, x, [low_res[:, :, a:b] for a, b in bounds], moments(low_res), tile)
    return decoder_passes(d, x, m, tile, overlap, resnet=block_passes, attention=framewise_attention)  # (n, 3, f h, f w)


def block_passes(resnet, x: Strips, m: Moments, tile: int) -> tuple[Strips, Moments]:
    """A decoder resnet: vae_decode's two passes, then for a ResnetPlus its third, out + conv_3d(SiLU(GN_3d(out))). Consumes x."""
    x, m = resnet_passes(resnet, x, m, tile)
    if not isinstance(resnet, ResnetPlus):
        return x, m
    norm = norm_affine(resnet.norm_3d, m)

    def residual(t: torch.Tensor) -> tuple[torch.Tensor]:  # (n, C, th, tw): all the chunk's frames of the core
        video = to_video(F.silu(normalise(t, norm)), t.shape[0])  # (1, C, n, th, tw)
        return ((t + to_rows(resnet.conv_3d(video))) / resnet.output_scale_factor,)

    (x,), m = run_pass(residual, (x,), tile, 1, consumed=1)  # the 3x3x3 conv reads 1 px around
    return x, m


def condition_passes(d, x: Strips, low_res: Strips, m_lr: Moments, tile: int) -> tuple[Strips, Moments]:
    """The video VAE's LR condition after conv_in, pass by pass: x + x * scale(s) + shift(s), s from [R_c(lr) ; x]."""
    c, mc = low_res, m_lr
    for resnet in d.condition_in:
        c, mc = block_passes(resnet, c, mc, tile)  # (n, 128, ., w) strips
    fuse = d.condition_fuse
    (s,), ms = run_pass(lambda a, b: (torch.cat([a, b], dim=1),), (c, x), tile, 0, consumed=1)  # (n, 640, ., w)
    for resnet in fuse.shared:
        s, ms = block_passes(resnet, s, ms, tile)  # (n, 512, ., w)
    (x,), m = run_pass(lambda a, b: (b + b * fuse.scale(a) + fuse.shift(a),), (s, x), tile, reach(fuse.scale), consumed=2)
    return x, m


def framewise_attention(attn, x: Strips, m: Moments, tile: int, overlap: int) -> tuple[Strips, Moments]:
    """The mid-block attention frame by frame, each with its own frame's statistics (vae_decode.attention_pass;
    the chunk's Moments ``m`` are not used)."""
    outs, total = [], None
    for i in range(x[0].shape[0]):
        frame = [strip[i : i + 1] for strip in x]  # (1, C, rows, w) strips
        m = Moments(sum(moments(s).total for s in frame), sum(moments(s).squares for s in frame), sum(s.shape[2] * s.shape[3] for s in frame))
        strips, mi = attention_pass(attn, frame, m, tile, overlap)
        outs.append(strips)
        total = mi if total is None else Moments(total.total + mi.total, total.squares + mi.squares, total.pixels + mi.pixels)
    return [torch.cat(parts) for parts in zip(*outs)], total
