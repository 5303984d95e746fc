"""sampling/schedulers.py: every offered scheduler carries a step hook's edit into its step."""

from __future__ import annotations

import pytest
import torch

from vsrup.models.configs import SCHEDULER_CONFIG
from vsrup.sampling.schedulers import SCHEDULERS, build_scheduler

STEPS, EDITED = 10, 4


def run(name: str, edit: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A 10-step loop with a linear stand-in model, the x0 edit ``edit`` made at step EDITED as temporal.py makes it
    (latents + sqrt(a) d / input_scale, v - sqrt(1 - a) d); returns (x_t after that step, sqrt(a) of its timestep)."""
    scheduler = build_scheduler(name, SCHEDULER_CONFIG, edited_steps={EDITED})
    scheduler.set_timesteps(STEPS)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]  # DDPM draws the same step noise in both runs
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(9)) * scheduler.init_noise_sigma  # (T, 4, h, w)
    extra = {"generator": generators} if name == "ddpm" else {}
    timesteps = list(scheduler.timesteps)
    for i, t in enumerate(timesteps):
        v = 0.5 * scheduler.scale_model_input(latents, t)  # (T, 4, h, w)
        if i == EDITED and edit is not None:
            a = scheduler.alphas_cumprod[t.long()]
            scale = scheduler.scale_model_input(torch.ones(()), t)
            latents, v = latents + a.sqrt() * edit / scale, v - (1 - a).sqrt() * edit
        latents = scheduler.step(v, t, latents, **extra, return_dict=False)[0]  # (T, 4, h, w)
        if i == EDITED:
            following = timesteps[i + 1]
            x_t = scheduler.scale_model_input(latents, following)  # (T, 4, h, w) x_t itself (Euler holds it scaled)
            return x_t, scheduler.alphas_cumprod[following.long()].sqrt()
    raise AssertionError("unreachable")


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_an_edit_of_x0_reaches_the_next_latents_under_every_scheduler(name):
    """Editing x0 by d with eps kept moves x_{t-1} by sqrt(a_{t-1}) d (DDIM's, DDPM's mean's and Euler's step exactly).

    The multistep solvers add their extrapolation (m0 - m1) / 2r of the one-step edit on top. UniPC's corrector
    would recompute the step's input from the previous step and discard the latents part (0.64 of the reach measured
    before build_scheduler skipped the corrector at edited steps).
    """
    d = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))  # (T, 4, h, w)
    plain, sqrt_a = run(name, None)
    edited, _ = run(name, d)
    reach = float(((edited - plain) * d).sum() / (sqrt_a * d.square().sum()))  # projection of the change on d
    if name in ("ddim", "ddpm", "euler"):
        assert reach == pytest.approx(1.0, abs=1e-3)
    else:
        assert 1.0 <= reach < 1.5, reach


def test_unipc_keeps_its_corrector_where_nothing_is_edited():
    assert build_scheduler("unipc", SCHEDULER_CONFIG).config.disable_corrector == []
    assert build_scheduler("unipc", SCHEDULER_CONFIG, edited_steps={0, 3, 4}).config.disable_corrector == [2, 3]
