"""``--scheduler`` names -> diffusers schedulers configured from the model's own scheduler config.

The step arithmetic is diffusers'; we only choose the class. ``from_config`` carries the model's
training facts over (beta schedule, ``prediction_type="v_prediction"``, ``steps_offset``, timestep
spacing), the same thing ``pipe.scheduler = Cls.from_config(pipe.scheduler.config)`` does.

Step hooks (sampling/temporal.py) edit a step's latents x_t and model output before the scheduler
steps. DDIM, DDPM, Euler and DPM++ 2M step from both as given. UniPC first runs its corrector, which
recomputes x_t from the previous step's input and model outputs and so discards the edit of x_t
(measured: the edit's reach into x_{t-1} fell to 0.64 of DDIM's, and motion guidance 0.5 left
0.82 of the unguided warping error against DDIM's 0.58). So at the steps a hook edits, UniPC runs
without its corrector: diffusers' own ``disable_corrector``, there for large guidance scales, whose
step index j skips the corrector that would run at step j + 1.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from vsrup.errors import UsageError

SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),  # the model's own (scheduler/scheduler_config.json), deterministic at eta 0
    "ddpm": (DDPMScheduler, {}),  # ancestral: draws fresh noise every step from the frames' generators
    "dpm++ 2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
}


def build_scheduler(name: str, model_config: Mapping[str, Any], edited_steps: Collection[int] = ()):
    """A fresh scheduler (schedulers hold per-run state) of kind ``name`` from the model's scheduler config.

    ``edited_steps``: the loop steps (0-based) whose latents a step hook edits; UniPC skips its corrector there.
    """
    if name not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[name]
    if cls is UniPCMultistepScheduler:
        overrides = {**overrides, "disable_corrector": sorted(i - 1 for i in edited_steps if i > 0)}
    return cls.from_config(dict(model_config), **overrides)
