"""MGLD-VSR's sampler, written out: one clip of T frames, DDPM on 50 respaced steps from the noised input latent.

As published (reference/seeds.md §1.2, §1.7, §1.8; the tile script of IanYeung/MGLD-VSR @9aa7731)::

    s     = max(512 / min(h, w), 4)                   the input is upsampled bicubic by s, reflect-padded to 32
    z_lr  = 0.18215 * (mu + sigma e1)                 the SD VAE's posterior sample of the upsampled frames
    x_T   = sqrt(a_999) z_lr + sqrt(1 - a_999) e2     q_sample at t = 999 on the unrespaced schedule, not pure noise
    for t in t_49 > ... > t_0 (t_k = round(k * 999 / 49)):
        eps   = UNet(x_t, t, text(''), Struct(z_lr, t))   the original timestep to both; 64-latent tiles blended
        x_t-1 = DDPM posterior step on the respaced schedule (variance (1 - a_prev) / (1 - a_t) * beta_t, no clipping)
    x     = VideoVAE.decode(x_0 / 0.18215, Encoder features of the upsampled frames, w)
    out   = crop the padding; resize bicubic to 4h x 4w when s > 4

What is vsrup's instead (docs/models/mgld-vsr.md): e1, e2 and each step's noise come from frame i's own generator
(seed + i) at full latent size, so no tile or clip repeats a noise pattern; tiles are ``sampling.tiles``' (flush
with the edges, Gaussian ramps in the overlaps); motion guidance is ``sampling.guidance`` (the intended pairing, a
resolution-independent strength, off in the last tenth) applied to the step's x0 with eps kept; clips overlap and
are cross-faded by the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from vsrup.flow import Flow, occlusion
from vsrup.sampling.noise import frame_noise
from vsrup.sampling.tiles import tiled

MIN_SIDE = 512  # the upsampled frame's short side at least (the model's training size)
SCALE = 4  # the model's factor
PAD = 32  # the upsampled frame is reflect-padded to a multiple of this
TILE = 64  # latent tile (512 px), fixed in the published script
OVERLAP = 32  # latent overlap, the published default (--tile_overlap)
START = 999  # x_T = q_sample(z_lr, START)
TRAIN_STEPS = 1000
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")  # LDM "linear": sqrt-spaced

Hook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (i, t, a_t, x_t, eps) -> x_t


def upsample_factor(h: int, w: int) -> float:
    return max(MIN_SIDE / min(h, w), float(SCALE))


def upsample(low_res: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(T, 3, h, w) in [-1, 1] -> ((T, 3, Hp, Wp) bicubic by ``upsample_factor``, reflect-padded to 32; (H, W) before padding)."""
    s = upsample_factor(*low_res.shape[-2:])
    size = (int(low_res.shape[-2] * s), int(low_res.shape[-1] * s))
    up = F.interpolate(low_res, size=size, mode="bicubic").clamp(-1.0, 1.0)  # (T, 3, H, W)
    pad_h, pad_w = -size[0] % PAD, -size[1] % PAD
    return F.pad(up, (0, pad_w, 0, pad_h), mode="reflect"), size


def latent_size(h: int, w: int) -> tuple[int, int]:
    """The latent grid of an (h, w) input: the upsampled, padded frame / 8 (what ``upsample`` then the encoder give)."""
    s = upsample_factor(h, w)
    return tuple(-(-int(n * s) // PAD) * PAD // 8 for n in (h, w))


def respaced(steps: int) -> list[int]:
    """The published ``space_timesteps(1000, [steps])``: round(k (1000 - 1) / (steps - 1)), k = 0..steps-1, descending."""
    return sorted({round(k * (TRAIN_STEPS - 1) / (steps - 1)) for k in range(steps)}, reverse=True)


def ddpm(steps: int) -> DDPMScheduler:
    """A fresh DDPM scheduler on the respaced timesteps (posterior on the respaced schedule, no x0 clipping)."""
    scheduler = DDPMScheduler(num_train_timesteps=TRAIN_STEPS, **BETAS, clip_sample=False, variance_type="fixed_small",
                              prediction_type="epsilon")
    scheduler.set_timesteps(timesteps=respaced(steps))
    return scheduler


def latent_flow(flow: Flow, size: tuple[int, int]) -> Flow:
    """The low-resolution grid's flow resized to the latent grid ``size`` (vectors scaled), occlusion checked there."""
    def resize(f: torch.Tensor) -> torch.Tensor:  # (N, 2, h, w) -> (N, 2, *size)
        scale = torch.tensor([size[1] / f.shape[-1], size[0] / f.shape[-2]], device=f.device, dtype=f.dtype)
        return F.interpolate(f, size=size, mode="bilinear", align_corners=False) * scale[None, :, None, None]

    forward, backward = resize(flow.i_to_next), resize(flow.next_to_i)  # (T-1, 2, *size) each
    return Flow(forward, backward, occlusion(forward, backward), occlusion(backward, forward))


class TiledEps:
    """The struct encoder and the UNet on 64-latent tiles of a clip, all T frames of a tile in one call, blended."""

    def __init__(self, unet, struct, text: torch.Tensor, batch: int):
        self.unet, self.struct, self.text, self.batch = unet, struct, text, batch

    def __call__(self, latents: torch.Tensor, z_lr: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps for (T, 4, h, w) latents given the (T, 4, h, w) input latent, at original timestep t."""
        frames, _, h, w = latents.shape
        x = torch.cat([latents, z_lr], dim=1).reshape(1, frames * 8, h, w)  # (1, T*8, h, w) the clip as one sample

        def run(tiles: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # (N, T*8, th, tw) -> (N, T*4, th, tw)
            n, _, th, tw = tiles.shape
            clips = tiles.reshape(n * frames, 8, th, tw)  # (N*T, 8, th, tw)
            struct = self.struct(clips[:, 4:], t)  # 4 x (N*T, 256, th/2^l, tw/2^l)
            eps = self.unet(clips[:, :4], t, self.text, struct, frames)  # (N*T, 4, th, tw)
            return eps.reshape(n, frames * 4, th, tw)

        eps = tiled(run, x, tile=TILE, overlap=OVERLAP, batch=self.batch, weighting="gaussian")  # (1, T*4, h, w)
        return eps.reshape(frames, 4, h, w)


def sample_clip(
    eps_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: DDPMScheduler,
    z_lr: torch.Tensor,
    generators: Sequence[torch.Generator],
    hook: Hook | None = None,
    progress: Callable[[int], None] = lambda step: None,
) -> torch.Tensor:
    """The clip's latents: (T, 4, h, w) scaled input latent -> (T, 4, h, w) x_0.

    ``generators``: one per frame, after the VAE posterior's draw; this draws x_T's noise, then each step's.
    """
    alphas = scheduler.alphas_cumprod.to(z_lr.device, torch.float32)  # (1000,)
    # 1. Start from the input latent noised to t = 999.
    noise = frame_noise(generators, z_lr.shape[1], *z_lr.shape[2:], z_lr.dtype).to(z_lr.device)  # (T, 4, h, w)
    a = alphas[START].to(z_lr.dtype)
    latents = a.sqrt() * z_lr + (1 - a).sqrt() * noise  # (T, 4, h, w)
    # 2. DDPM steps; the hook (motion guidance) edits x_t with eps kept before the step.
    for i, t in enumerate(scheduler.timesteps):  # on the CPU, where the scheduler looks its own timesteps up
        t_model = t.to(z_lr.device)
        eps = eps_fn(latents, z_lr, t_model)  # (T, 4, h, w)
        if hook is not None:
            latents = hook(i, t_model, alphas[t_model.long()].to(z_lr.dtype), latents, eps)  # (T, 4, h, w)
        latents = scheduler.step(eps, t, latents, generator=list(generators), return_dict=False)[0]  # (T, 4, h, w)
        progress(i)
    return latents


def guidance_hook(flow: Flow, steps: frozenset[int], strength: float) -> Hook:
    """Motion guidance on x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) at ``steps``: x0' = guide(x0), x_t' = x_t + sqrt(a) (x0' - x0)."""
    from vsrup.sampling.guidance import motion_guidance

    def hook(i, t, a, latents, eps):
        if i not in steps:
            return latents
        x0 = (latents - (1 - a).sqrt() * eps) / a.sqrt()  # (T, 4, h, w)
        return latents + a.sqrt() * (motion_guidance(x0, flow, strength) - x0)

    return hook
