"""StableVSR's frame-wise bidirectional sampling (Rota et al., ECCV 2024), written out.

Every frame has its own latent; at each timestep the frames of the window are visited one by one,
first to last on even steps and last to first on odd ones. The frame visited first runs the UNet
alone; every other frame is guided by the frame visited just before it, whose clean estimate at
this same timestep is decoded to high resolution, warped onto the current frame along the optical
flow, and fed to a ControlNet ("temporal texture guidance")::

    for step k at timestep t:
        order = 0 .. T-1 if k is even else T-1 .. 0
        for n, j in enumerate(order):
            x   = [z_j ; lr_j]                                    7 channels, the low-res frame clean
            if n == 0:  v = UNet(x, t, e)
            else:       p = order[n - 1]
                        c = W(D(x0_p), F_{j->p})                   D: VAE decode (not clamped), F: HR flow
                        v = UNet(x, t, e, residuals = ControlNet(x, t, e, c))
            z_j, x0_j = DDPM step(v, t, z_j), with frame j's own generator

e is the empty prompt's embedding, W the project's one backward warp (flow.warp), F_{j->p} the flow
from frame j to frame p on frame j's grid, scaled to high resolution. Per step: T UNet calls, T - 1
ControlNet calls and T - 1 high-resolution decodes. After the last step every latent is decoded.

The model (``models/stablevsr.py``) supplies the network calls (tiled) and the decode (tiled); this
function only orders the visits and keeps each frame's latent and clean estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vsrup.flow import Flow, upscale_flow, warp
from vsrup.sampling.noise import frame_noise

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]  # (1, 7, h, w), t, (1, 3, H, W) | None -> (1, 4, h, w)
Decode = Callable[[torch.Tensor], torch.Tensor]  # latents (1, 4, h, w) -> RGB (1, 3, H, W) in about [-1, 1]


def visiting_order(t_frames: int, step_index: int) -> list[int]:
    """Frames in the order step ``step_index`` visits them: forward on even steps, backward on odd ones."""
    order = list(range(t_frames))
    return order if step_index % 2 == 0 else order[::-1]


def neighbour_flow(flow: Flow, j: int, p: int) -> torch.Tensor:
    """F_{j->p}, the flow from frame j to its neighbour p on frame j's grid: (1, 2, h, w)."""
    if p == j - 1:
        return flow.next_to_i[j - 1 : j]  # pair (j-1, j), the flow from frame j back to j-1
    if p == j + 1:
        return flow.i_to_next[j : j + 1]  # pair (j, j+1), the flow from frame j on to j+1
    raise ValueError(f"frames {j} and {p} are not neighbours")


def sample_window(
    denoise: Denoise,
    decode: Decode,
    scheduler,
    low_res: torch.Tensor,
    flow: Flow | None,
    generators: Sequence[torch.Generator],
    steps: int,
    factor: int,
    progress: Callable[[int], None] = lambda step: None,
) -> torch.Tensor:
    """Sample one window: (T, 3, h, w) low-resolution frames in [-1, 1] -> (T, 4, h, w) latents.

    ``scheduler`` is a DDPMScheduler (stateless between calls, so one steps every frame);
    ``generators`` holds one CPU generator per frame, seeded ``seed + frame index``: frame j's
    initial latent is its first draw and its step noise the following ones. ``flow`` (on the
    low-resolution grid, None only for T = 1) is scaled by ``factor`` to the decoded frames' grid.
    ``low_res`` sets device and dtype. ``progress(k)`` is called after step k.
    """
    t_frames, _, height, width = low_res.shape  # (T, 3, h, w)
    device, dtype = low_res.device, low_res.dtype
    if t_frames > 1 and flow is None:
        raise ValueError("a window of several frames needs their flow")

    # 1. Timesteps, and every frame's own initial latent.
    scheduler.set_timesteps(steps, device=device)
    latents = list(frame_noise(generators, 4, height, width, dtype).to(device).split(1))  # T x (1, 4, h, w)
    latents = [z * scheduler.init_noise_sigma for z in latents]

    # 2. Timesteps outside, frames inside, the order reversed every step.
    for k, t in enumerate(scheduler.timesteps):
        previous = None  # (frame index, its clean estimate at this step (1, 4, h, w))
        for j in visiting_order(t_frames, k):
            x = torch.cat([scheduler.scale_model_input(latents[j], t), low_res[j : j + 1]], dim=1)  # (1, 7, h, w)
            control = None
            if previous is not None:
                p, x0_p = previous
                guide = decode(x0_p)  # (1, 3, H, W)
                control = warp(guide, upscale_flow(neighbour_flow(flow, j, p), factor).to(device)).to(dtype)  # (1, 3, H, W)
            v = denoise(x, t, control)  # (1, 4, h, w)
            out = scheduler.step(v, t, latents[j], generator=generators[j])
            latents[j] = out.prev_sample  # (1, 4, h, w)
            previous = (j, out.pred_original_sample)
        progress(k)
    return torch.cat(latents)  # (T, 4, h, w)
