"""The step hook that makes a clip temporally consistent: latent propagation and motion guidance.

Both act on the predicted clean latent x0 of the step, and the scheduler then steps with the edited
x0 and the model's own noise estimate (guidance.py's docstring argues for x0 over x_t;
benchmarks/bench_temporal.py measures both). With a = alphas_cumprod[t] and x_t the scheduler's
latents times ``Step.input_scale`` (1, or Euler's 1 / sqrt(1 + sigma^2) = sqrt(a))::

    x0  = sqrt(a) x_t - sqrt(1 - a) v            the v-prediction model's clean latent
    x0' = guide(propagate(x0))                   at the steps where each is on
    d   = x0' - x0
    x_t' = x_t + sqrt(a) d,   v' = v - sqrt(1 - a) d    so that eps = sqrt(1 - a) x_t + sqrt(a) v is unchanged
"""

from __future__ import annotations

from dataclasses import replace

from vsrup.config import SampleConfig
from vsrup.flow import Flow
from vsrup.sampling.guidance import in_window, motion_guidance
from vsrup.sampling.sd_x4 import Step, StepHook
from vsrup.sampling.propagation import propagate


def temporal_hook(flow: Flow, sample: SampleConfig, target: str = "x0") -> StepHook | None:
    """The hook for ``sample``'s propagation steps and guidance window; None when both are off.

    ``target`` "latents" guides x_t itself instead of x0 (for the measurement in benchmarks/).
    """
    if sample.motion_guidance <= 0 and not sample.propagation_steps:
        return None

    def hook(step: Step) -> Step:
        guide = sample.motion_guidance > 0 and in_window(step.index, sample.steps, sample.guidance_window)
        spread = step.index in sample.propagation_steps
        if not (guide or spread):
            return step
        a = step.alpha_prod.to(step.latents.dtype)
        x_t = step.input_scale * step.latents  # (T, 4, h, w)
        if target == "latents":
            guided = motion_guidance(x_t, flow, sample.motion_guidance) if guide else x_t  # (T, 4, h, w)
            return replace(step, latents=guided / step.input_scale)
        x0 = a.sqrt() * x_t - (1 - a).sqrt() * step.model_output  # (T, 4, h, w)
        edited = propagate(x0, flow) if spread else x0  # (T, 4, h, w)
        edited = motion_guidance(edited, flow, sample.motion_guidance) if guide else edited  # (T, 4, h, w)
        d = edited - x0  # (T, 4, h, w)
        return replace(step, latents=step.latents + a.sqrt() * d / step.input_scale, model_output=step.model_output - (1 - a).sqrt() * d)

    return hook
