"""The one place that names models: short names, their Hub repos, and the module of each family.

``--model`` is a short name (below), a Hub repo id (``owner/name``) or a local folder. ``choose``
resolves it once into a ``Choice``: the family's module (see ``models/__init__.py`` for what a family
module provides) and where its files are. A local folder's family is read from its
``model_index.json`` (``_class_name``, plain JSON; nothing in the folder is run), and so is an other
repo id's (its ``model_index.json`` alone, from the cache or the Hub): a variant of a family (say
``Jamichsu/Stream-DiffVSR-Mix-Degradation``) loads as that family. A family whose published folder is
not in diffusers layout names the files that mark it (``MARKER_FILES``: Upscale-A-Video's official
``unet/unet_video_config.json``), which are looked for first. A repo or folder whose index names
no known pipeline, or cannot be read, is loaded as an x4 upscaler (fine-tunes in diffusers layout).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from importlib import import_module
from pathlib import Path
from types import ModuleType

from vsrup.config import UpscaleConfig
from vsrup.errors import UsageError
from vsrup.events import Emit, ignore

FAMILIES = {  # short name -> (module, Hub repo)
    "sd-x4": ("vsrup.models.sd_x4", "stabilityai/stable-diffusion-x4-upscaler"),
    "stablevsr": ("vsrup.models.stablevsr", "claudiom4sir/StableVSR"),
    "stream-diffvsr": ("vsrup.models.stream_diffvsr", "Jamichsu/Stream-DiffVSR"),
    "mgld-vsr": ("vsrup.models.mgld_vsr", "Iceclear/MGLD-VSR"),  # S-Lab License 1.0: non-commercial use only
    "upscale-a-video": ("vsrup.models.upscale_a_video", "Runware/Video-Upscale"),  # unofficial mirror; weights non-commercial (S-Lab)
    "lanczos": ("vsrup.models.lanczos", None),  # non-neural, no weights
}
DEFAULT_FAMILY = "sd-x4"  # of repo ids and folders that name no known family
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells them


@dataclass(frozen=True)
class Choice:
    """What ``--model`` names: a family and where its files are (a repo id or a folder; None: no files)."""

    family: str
    source: str | None

    @property
    def module(self) -> ModuleType:
        return import_module(FAMILIES[self.family][0])

    def settle(self, config: UpscaleConfig) -> UpscaleConfig:
        """``config`` with the family's sampler defaults; a UsageError for options the family refuses."""
        return replace(config, sample=self.module.settle(config.sample))

    def load(self, config: UpscaleConfig, emit: Emit = ignore):
        """The family's loaded ``Model`` (see models/__init__.py)."""
        return self.module.Model(self.source, config, emit)


def choose(model: str) -> Choice:
    """Resolve ``--model`` (UsageError for a name that is none of the three kinds)."""
    if model in FAMILIES:
        return Choice(model, FAMILIES[model][1])
    folder = Path(model).expanduser()
    if folder.is_dir():
        return Choice(folder_family(folder), model)
    if REPO_ID.match(model) and folder.parent.is_dir():  # "weights/sdx4" beside a weights/ folder: a path, not a Hub id
        raise UsageError(f"unknown model {model!r}: no such folder ({folder.parent}/ exists, so this reads as a local path, not a Hub repo id)")
    if REPO_ID.match(model):
        known = [name for name, (_, repo) in FAMILIES.items() if repo == model]
        return Choice(known[0] if known else repo_family(model), model)
    raise UsageError(
        f"unknown model {model!r}: not one of {', '.join(FAMILIES)}, a Hub repo id (owner/name) or an existing folder"
    )


def folder_family(folder: Path) -> str:
    """The family whose MARKER_FILES the folder holds (a published layout that is not diffusers'), else the one
    whose pipeline class its ``model_index.json`` names; the default otherwise."""
    for name, (module, _) in FAMILIES.items():
        if any((folder / marker).is_file() for marker in getattr(import_module(module), "MARKER_FILES", ())):
            return name
    try:
        named = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_FAMILY
    return class_family(named)


def repo_family(repo: str) -> str:
    """The family of a Hub repo that is not one of FAMILIES' own: the pipeline class its ``model_index.json``
    names (read from the cache, or fetched alone), so a fine-tune or variant of a family is loaded as that family."""
    from vsrup.models.hub import pipeline_class

    return class_family(pipeline_class(repo))


def class_family(named: str | None) -> str:
    """The family whose PIPELINE_CLASSES hold ``named``; the default otherwise."""
    for name, (module, _) in FAMILIES.items():
        if named in import_module(module).PIPELINE_CLASSES:
            return name
    return DEFAULT_FAMILY


def repo_for(model: str) -> tuple[str, Choice]:
    """The Hub repo that ``vsrup download MODEL`` fetches, and the family it holds."""
    choice = choose(model) if model in FAMILIES or REPO_ID.match(model) else None
    if choice is None or choice.source is None or not REPO_ID.match(choice.source):
        names = ", ".join(name for name, (_, repo) in FAMILIES.items() if repo)
        raise UsageError(f"{model!r} has no weights to download: name one of {names} or a Hub repo id (owner/name)")
    return choice.source, choice
