"""The one place that names models: short names, Hub repos and the classes that load them."""

from __future__ import annotations

from vsrup.config import UpscaleConfig
from vsrup.errors import ModelError, UsageError
from vsrup.events import Emit

SHORT_NAMES = {
    "lanczos": None,  # non-neural, no weights
    "sd-x4": "stabilityai/stable-diffusion-x4-upscaler",
}


def load(config: UpscaleConfig, emit: Emit):
    if config.model == "lanczos":
        from vsrup.models.lanczos import LanczosUpscaler

        return LanczosUpscaler(config.scale)
    if config.model in SHORT_NAMES:
        raise ModelError(
            f"model {config.model!r} ({SHORT_NAMES[config.model]}) is not implemented in this build yet; "
            "use --model lanczos for the non-neural preview"
        )
    raise UsageError(f"unknown model {config.model!r}; choose one of: {', '.join(SHORT_NAMES)}")
