"""The SD x4 upscaler's denoising loop, written out: one clip of T frames sampled together.

It follows diffusers' ``StableDiffusionUpscalePipeline.__call__`` step for step, so that with the
same components, scheduler and per-frame generators it gives the same frames. What differs is only
batching: T frames share every model call, and each frame draws its noise from its own generator.

Notation (v-prediction, Salimans & Ho 2022; classifier-free guidance, Ho & Salimans 2022)::

    x_lr' = sqrt(a_s) x_lr + sqrt(1 - a_s) n          noise augmentation of the input, s = noise_level
    v     = UNet([x_t ; x_lr'], t, text, class=s)     7-channel input, 4-channel output
    v_g   = v_uncond + g (v_cond - v_uncond)          guidance g > 1 only
    x_0   = sqrt(a_t) x_t - sqrt(1 - a_t) v_g         what the scheduler's step moves towards

The model (``models/sd_x4.py``) prepares x_lr' (``augment``, the first draw of each frame's generator)
and the class labels; the loop draws the initial latents (the second draw) and steps. Plug-in points:
- ``Denoiser``: the model call on the full latent. The model wraps the UNet to run it tile by tile
  and blend the tiles' outputs; it sees neither the noise, the guidance combination, nor the scheduler.
- ``StepHook``: called once per step between the model call and the scheduler step with the latents
  and the guided model output. Motion guidance and latent propagation replace either there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from vsrup.sampling.noise import frame_noise


@dataclass(frozen=True)
class TextEmbeddings:
    """The prompt's encoder states, computed once per job."""

    cond: torch.Tensor  # (1, 77, D) prompt
    uncond: torch.Tensor | None  # (1, 77, D) negative prompt; None when guidance is off


@dataclass(frozen=True)
class Step:
    """The state a ``StepHook`` sees and may replace: step ``index`` of the loop at ``timestep``.

    For ddim, ddpm, dpm++ 2m and unipc the latents are x_t itself, so with a = ``alpha_prod``::

        x0 = sqrt(a) x_t - sqrt(1 - a) v        eps = sqrt(1 - a) x_t + sqrt(a) v

    Editing x0 by d with eps kept: latents + sqrt(a) d and model_output - sqrt(1 - a) d.
    Editing x0 with the latents kept: model_output = (sqrt(a) x_t - x0') / sqrt(1 - a).
    Euler holds x_t * sqrt(1 + sigma^2) instead (sigma^2 = (1 - a) / a).
    """

    index: int  # 0-based position in the schedule
    timestep: torch.Tensor  # scheduler timestep t (0-dim)
    alpha_prod: torch.Tensor  # a = alphas_cumprod[t] (0-dim, float32)
    latents: torch.Tensor  # (T, 4, h, w) x_t, in the scheduler's own parametrisation
    model_output: torch.Tensor  # (T, 4, h, w) guided model output (v for this model)
    input_scale: torch.Tensor  # 0-dim: x_t = input_scale * latents (1 but for Euler's 1 / sqrt(1 + sigma^2))


StepHook = Callable[[Step], Step]


class Denoiser(Protocol):
    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, noise_level: torch.Tensor
    ) -> torch.Tensor:
        """(B, 7, h, w) model input, timestep, (B, 77, D) text, (B,) noise levels -> (B, 4, h, w)."""
        ...


class UNetDenoiser:
    """The full-frame model call: the UNet on the 7-channel input, the noise level as its class label."""

    def __init__(self, unet):
        self.unet = unet

    def __call__(self, x, t, text, noise_level):
        return self.unet(x, t, encoder_hidden_states=text, class_labels=noise_level, return_dict=False)[0]


def predict(
    denoiser: Denoiser,
    latents: torch.Tensor,
    image: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    noise_level: torch.Tensor,
    guidance: float,
) -> torch.Tensor:
    """One guided model output for the full latent: (T, 4, h, w) scaled latents -> (T, 4, h, w).

    With guidance (> 1) ``text`` and ``noise_level`` hold the unconditional half first: (2T, 77, D), (2T,).
    """
    guided = guidance > 1.0
    # 1. Batch the unconditional and conditional passes into one model call.
    if guided:
        latents = torch.cat([latents, latents])  # (2T, 4, h, w)
        image = torch.cat([image, image])  # (2T, 3, h, w)
    x = torch.cat([latents, image], dim=1)  # (B, 7, h, w)
    out = denoiser(x, t, text, noise_level)  # (B, 4, h, w)
    # 2. Classifier-free guidance.
    if guided:
        uncond, cond = out.chunk(2)  # (T, 4, h, w) each
        out = uncond + guidance * (cond - uncond)  # (T, 4, h, w)
    return out


def augment(low_res_scheduler, low_res: torch.Tensor, generators: Sequence[torch.Generator], noise_level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x_lr' and its class labels: (T, 3, h, w) in [-1, 1] -> ((T, 3, h, w), (T,)); the first draw of each generator."""
    levels = torch.full((low_res.shape[0],), noise_level, dtype=torch.long, device=low_res.device)  # (T,)
    noise = frame_noise(generators, low_res.shape[1], *low_res.shape[2:], low_res.dtype).to(low_res.device)  # (T, 3, h, w)
    return low_res_scheduler.add_noise(low_res, noise, levels), levels


def sample_clip(
    denoiser: Denoiser,
    scheduler,
    image: torch.Tensor,
    class_labels: torch.Tensor,
    text: TextEmbeddings,
    generators: Sequence[torch.Generator],
    steps: int,
    guidance: float,
    latent_channels: int = 4,
    hook: StepHook | None = None,
    progress: Callable[[int], None] = lambda step: None,
) -> torch.Tensor:
    """Sample the latents of one clip: (T, 3, h, w) conditioning image x_lr' -> (T, 4, h, w).

    ``scheduler`` must be fresh for this clip (it holds per-run state); ``generators`` holds one CPU
    generator per frame, seeded ``seed + frame index``, after ``augment``'s draw. ``image`` sets
    device and dtype. ``progress(i)`` is called after step i.
    """
    t_frames, _, height, width = image.shape  # (T, 3, h, w)
    device, dtype = image.device, image.dtype
    guided = guidance > 1.0

    # 1. Text conditioning and class labels, unconditional half first, one row per model-batch entry.
    cond = text.cond.to(device).expand(t_frames, -1, -1)  # (T, 77, D)
    if guided:
        uncond = text.uncond.to(device).expand(t_frames, -1, -1)  # (T, 77, D)
        cond = torch.cat([uncond, cond])  # (2T, 77, D)
        class_labels = torch.cat([class_labels, class_labels])  # (2T,)

    # 2. Timesteps.
    scheduler.set_timesteps(steps, device=device)

    # 3. Initial latents; the second draw from each frame's generator.
    latents = frame_noise(generators, latent_channels, height, width, dtype).to(device)  # (T, 4, h, w)
    latents = latents * scheduler.init_noise_sigma  # (T, 4, h, w)

    # 4. Ancestral schedulers (DDPM, Euler) draw step noise from the frames' generators too.
    step_kwargs = {"generator": list(generators)} if "generator" in inspect.signature(scheduler.step).parameters else {}

    # 5. Denoising loop. The hook's alphas live on the device: indexing them with the device timestep
    # does not make the host wait for the step's model calls.
    alphas = scheduler.alphas_cumprod.to(device, torch.float32) if hook is not None else None  # (1000,)
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(latents, t)  # (T, 4, h, w)
        model_output = predict(denoiser, model_in, image, t, cond, class_labels, guidance)  # (T, 4, h, w)
        if hook is not None:  # motion guidance / latent propagation act here
            alpha_prod = alphas[t.long()]  # 0-dim
            input_scale = scheduler.scale_model_input(torch.ones((), device=device), t)  # 0-dim
            step = hook(Step(i, t, alpha_prod, latents, model_output, input_scale))
            latents, model_output = step.latents, step.model_output
        latents = scheduler.step(model_output, t, latents, **step_kwargs, return_dict=False)[0]  # (T, 4, h, w)
        progress(i)
    return latents
