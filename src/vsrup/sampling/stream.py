"""Stream-DiffVSR's causal sampling of one frame (Shiu et al., 2025), written out.

Frames are sampled one at a time, in order. What crosses from frame n-1 to frame n is only the
previous frame's final high-resolution output Y_{n-1}, warped onto frame n along the flow::

    c   = W(Y_{n-1}, F_{n->n-1})              none at a restart (the first frame of a shot)
    z   = noise_n                              frame n's own draw (generator seed + n), DDIM's sigma 1
    for t in 999, 749, 499, 249:               DDIM, "trailing" spacing, eta 0 (no step noise)
        x = [z ; lr_n]                         7 channels, the low-resolution frame clean, in [-1, 1]
        v = UNet(x, t, e, residuals = ControlNet(x, t, e, c))      the UNet alone at a restart
        z = DDIM step(v, t, z)
    Y_n = D(z, E(c))                           the tiny temporal decoder, its TPMs fed E's features of c

e is the empty prompt's embedding, W the project's backward warp (flow.warp) and F_{n->n-1} the flow
from frame n back to frame n-1 on frame n's grid, scaled to high resolution. The same warped
previous output guides every step (the paper's ARTG) and the decoder (its TTM).

This function is the loop in the middle; the model (``models/stream_diffvsr.py``) does the warp,
the encoder and decoder (``sampling/tiny_decode.py``) and supplies the tiled network calls.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vsrup.sampling.noise import frame_noise

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]  # (1, 7, h, w), t, (1, 3, H, W) | None -> (1, 4, h, w)


def sample_frame(
    denoise: Denoise,
    scheduler,
    low_res: torch.Tensor,
    generator: torch.Generator,
    steps: int,
    control: torch.Tensor | None,
    progress: Callable[[int], None] = lambda step: None,
) -> torch.Tensor:
    """One frame: (1, 3, h, w) low resolution in [-1, 1] and the warped previous output (1, 3, 4h, 4w)
    or None -> (1, 4, h, w) latents for the tiny decoder.

    ``scheduler`` is a DDIMScheduler; ``generator`` the frame's own CPU generator, whose first draw
    is the initial latent. ``low_res`` sets device and dtype. ``progress(k)`` is called after step k.
    """
    _, _, height, width = low_res.shape  # (1, 3, h, w)
    scheduler.set_timesteps(steps, device=low_res.device)
    latents = frame_noise([generator], 4, height, width, low_res.dtype).to(low_res.device)  # (1, 4, h, w)
    latents = latents * scheduler.init_noise_sigma
    for k, t in enumerate(scheduler.timesteps):
        x = torch.cat([scheduler.scale_model_input(latents, t), low_res], dim=1)  # (1, 7, h, w)
        v = denoise(x, t, control)  # (1, 4, h, w)
        latents = scheduler.step(v, t, latents, eta=0.0).prev_sample  # (1, 4, h, w)
        progress(k)
    return latents
