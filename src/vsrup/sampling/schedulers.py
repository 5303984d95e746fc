"""``--scheduler`` names -> diffusers schedulers configured from the model's own scheduler config.

The step arithmetic is diffusers'; we only choose the class. ``from_config`` carries the model's
training facts over (beta schedule, ``prediction_type="v_prediction"``, ``steps_offset``, timestep
spacing), the same thing ``pipe.scheduler = Cls.from_config(pipe.scheduler.config)`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def build_scheduler(name: str, model_config: Mapping[str, Any]):
    """A fresh scheduler (schedulers hold per-run state) of kind ``name`` from the model's scheduler config."""
    if name not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(dict(model_config), **overrides)
