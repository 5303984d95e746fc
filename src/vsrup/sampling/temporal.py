"""The step hook that makes a clip temporally consistent: latent propagation and motion guidance.

Both act on the predicted clean latent x0 of the step, and the scheduler then steps with the edited
x0 and the model's own noise estimate (guidance.py's docstring argues for x0 over x_t;
benchmarks/bench_temporal.py measures both). With a = alphas_cumprod[t] and x_t the scheduler's
latents times ``Step.input_scale`` (1, or Euler's 1 / sqrt(1 + sigma^2) = sqrt(a))::

    x0  = sqrt(a) x_t - sqrt(1 - a) v            the v-prediction model's clean latent
    x0' = guide(propagate(x0))                   at the steps where each is on
    d   = x0' - x0
    x_t' = x_t + sqrt(a) d,   v' = v - sqrt(1 - a) d    so that eps = sqrt(1 - a) x_t + sqrt(a) v is unchanged

Every offered scheduler then steps from x_t' and v' as given (UniPC without its corrector at these
steps: schedulers.py), so x_{t-1} moves by sqrt(a_{t-1}) d under DDIM, DDPM and Euler, plus the
multistep extrapolation of d under DPM++ 2M and UniPC (tests/test_schedulers.py).
"""

from __future__ import annotations

from dataclasses import replace

from vsrup.config import SampleConfig
from vsrup.flow import Flow
from vsrup.sampling.guidance import in_window, motion_guidance
from vsrup.sampling.sd_x4 import Step, StepHook
from vsrup.sampling.propagation import propagate


# Strength. --motion-guidance s is the fraction of the flicker between frames that see both neighbours
# removed per tenth of the schedule (guidance.py: one step of strength s_n leaves 1 - s_n of it), so
# over the n / 10 steps of a tenth of an n-step schedule (1 - s_n)^(n / 10) = 1 - s, that is
#   s_n = 1 - (1 - s)^(10 / n)        (s_10 = s; s = 0 and s = 1 are kept at any n)
# The same s then leaves about the same output warping error at 10 and 30 steps: 0.47x and 0.43x of the
# unguided run at s = 0.75 on a real pan, against 0.58x and 0.37x for a per-step 0.5 (docs/temporal.md).
def step_strength(strength: float, steps: int) -> float:
    """The strength of one guided step of an ``steps``-step schedule for --motion-guidance ``strength``."""
    return 1.0 - (1.0 - strength) ** (10 / steps)


def guided_steps(sample: SampleConfig) -> frozenset[int]:
    """The loop steps where motion guidance acts: its window, when it is on."""
    if sample.motion_guidance <= 0:
        return frozenset()
    return frozenset(i for i in range(sample.steps) if in_window(i, sample.steps, sample.guidance_window))


def edited_steps(sample: SampleConfig) -> frozenset[int]:
    """The loop steps whose latents the hook edits (schedulers.build_scheduler needs them for UniPC)."""
    return guided_steps(sample) | frozenset(sample.propagation_steps)


def temporal_hook(flow: Flow, sample: SampleConfig, target: str = "x0") -> StepHook | None:
    """The hook for ``sample``'s propagation steps and guidance window; None when both are off.

    ``target`` "latents" guides x_t itself instead of x0 (for the measurement in benchmarks/).
    """
    if not edited_steps(sample):
        return None
    window = guided_steps(sample)
    strength = step_strength(sample.motion_guidance, sample.steps)

    def hook(step: Step) -> Step:
        guide = step.index in window
        spread = step.index in sample.propagation_steps
        if not (guide or spread):
            return step
        a = step.alpha_prod.to(step.latents.dtype)
        x_t = step.input_scale * step.latents  # (T, 4, h, w)
        if target == "latents":
            guided = motion_guidance(x_t, flow, strength) if guide else x_t  # (T, 4, h, w)
            return replace(step, latents=guided / step.input_scale)
        x0 = a.sqrt() * x_t - (1 - a).sqrt() * step.model_output  # (T, 4, h, w)
        edited = propagate(x0, flow) if spread else x0  # (T, 4, h, w)
        edited = motion_guidance(edited, flow, strength) if guide else edited  # (T, 4, h, w)
        d = edited - x0  # (T, 4, h, w)
        return replace(step, latents=step.latents + a.sqrt() * d / step.input_scale, model_output=step.model_output - (1 - a).sqrt() * d)

    return hook
