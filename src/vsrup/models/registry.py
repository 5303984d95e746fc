"""The one place that names models: short names, their Hub repos, and the class that loads each family.

``--model`` is a short name (below), a Hub repo id (``owner/name``) or a local folder in diffusers
layout; repo ids and folders are loaded as x4 upscalers (``models/sd_x4.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

from vsrup.config import UpscaleConfig
from vsrup.errors import UsageError
from vsrup.events import Emit

SHORT_NAMES = {
    "lanczos": None,  # non-neural, no weights
    "sd-x4": "stabilityai/stable-diffusion-x4-upscaler",
}
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells them


def model_source(model: str) -> str:
    """A short name's repo, else ``model`` itself when it is a local folder or a Hub repo id."""
    if SHORT_NAMES.get(model):
        return SHORT_NAMES[model]
    if Path(model).expanduser().is_dir() or REPO_ID.match(model):
        return model
    raise UsageError(
        f"unknown model {model!r}: not one of {', '.join(SHORT_NAMES)}, a Hub repo id (owner/name) or an existing folder"
    )


def repo_for(model: str) -> str:
    """The Hub repo that ``vsrup download MODEL`` fetches."""
    source = SHORT_NAMES.get(model, model)
    if source is None:
        raise UsageError(f"model {model!r} has no weights to download")
    if not REPO_ID.match(source):
        raise UsageError(f"{model!r} is not a short name ({', '.join(k for k, v in SHORT_NAMES.items() if v)}) or a Hub repo id (owner/name)")
    return source


def load(config: UpscaleConfig, emit: Emit):
    if config.model == "lanczos":
        from vsrup.models.lanczos import LanczosUpscaler

        return LanczosUpscaler(config.scale)
    model_source(config.model)  # UsageError for unknown names before torch and diffusers import
    from vsrup.models.sd_x4 import DiffusionUpscaler

    return DiffusionUpscaler(config, emit)
