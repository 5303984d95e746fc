"""Upscale-A-Video's model calls on a window: the video UNet tile by tile, and the VAE chunk by chunk.

The loop itself is the x4 upscaler's (``sampling/sd_x4.sample_clip``: noise augmentation, CFG,
v-prediction, the step hook for propagation): only the denoiser differs, because the video UNet
mixes the window's frames and must see all T of them in every call.

Tiles. A window's T frames are laid side by side as channels, (V, T C, h, w), so that ``tiles.tiled``
cuts every frame at the same tile and blends the tiles' predictions with its smooth weights (the
published code pastes tiles without blending). Each call then holds all T frames of its tiles, and
the GroupNorm statistics are the tile's, over the T frames, as in the published tiled run.

Decode. The published pipeline decodes the window in chunks of 3 frames (``short_seq``), each
chunk's GroupNorms and 3x3x3 convs spanning its frames; here the same chunks, each in spatial tiles
(``plan.vae_tile``, blended; 0 = whole frames), so the memory is one chunk's tile at a time. A tile
uses its own statistics over the chunk: the frame-statistics pass of ``vae_decode.py`` is written
for the x4 decoder's frame-by-frame layers and is not used here.
"""

from __future__ import annotations

import torch

from vsrup.memory import MemoryPlan
from vsrup.sampling.tiles import tiled
from vsrup.sampling.vae_decode import vae_factor

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

        packed = torch.cat([zc, lc], dim=1).reshape(1, n * (c + 3), h, w)  # (1, n 7, h, w)
        pixels = tiled(run, packed, tile=plan.vae_tile, overlap=plan.vae_overlap, batch=1, scale=f)  # (1, n 3, 4h, 4w)
        out.append(pixels.reshape(n, 3, f * h, f * w))
    return torch.cat(out)  # (T, 3, 4h, 4w)
