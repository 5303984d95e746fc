"""Model files: a local folder, or the files a job needs from a Hub repo, via the standard cache.

This module knows no model names: a family passes its ``Layout`` (which configs, which folders,
which networks' weights). Only those files are fetched, never a repo's single-file checkpoints or
pickle (``.bin``, ``.ckpt``) weights unless a Layout names them as files (MGLD-VSR's two checkpoints) or folders whole
(Upscale-A-Video, whose weights exist only as pickles); ``models/pickles.py`` reads those as weights only and converts
them once. With a half precision dtype the ``fp16`` weight variant is taken where the repo has it. Everything goes through huggingface_hub, which itself honours HF_HOME,
HF_HUB_CACHE, HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN.

Without a network (or with HF_HUB_OFFLINE=1) a job uses the cached snapshot of the revision, with
whichever weight variant is cached; without one it fails with a ``ModelError`` that says how to fix it.

Progress: one ``info`` event per file actually fetched (name and size), then ``download`` events with
its bytes, which the CLI draws as a Rich progress bar. huggingface_hub offers byte progress only
through a ``tqdm_class`` (recent versions); ours draws nothing itself and forwards the counts.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from vsrup.errors import ModelError
from vsrup.events import Emit, Event, ignore

HALF_VARIANT = "fp16"
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


@dataclass(frozen=True)
class Layout:
    """The files of a diffusers-layout model folder that a family loads."""

    what: str  # the family in words, for messages ("an SD x4 upscaler")
    configs: tuple[str, ...]  # files every copy must have
    folders: tuple[str, ...]  # folders taken whole (tokenizer files)
    weights: Mapping[str, str]  # subfolder -> weight file stem ("unet" -> "diffusion_pytorch_model")


def pick_weights(files: Iterable[str], subfolder: str, stem: str, half: bool) -> str | None:
    """The one weight file of ``subfolder`` to load: the fp16 variant first for half precision jobs,
    the full-precision file first otherwise, falling back to the other; None when neither exists."""
    full, variant = f"{subfolder}/{stem}.safetensors", f"{subfolder}/{stem}.{HALF_VARIANT}.safetensors"
    available = set(files)
    for name in (variant, full) if half else (full, variant):
        if name in available:
            return name
    return None


def plan_files(files: Iterable[str], layout: Layout, half: bool) -> tuple[list[str], list[str]]:
    """(files to use, what is missing) for a repo or folder holding ``files`` (paths relative to its root)."""
    available = sorted(set(files))
    wanted = [f for f in layout.configs if f in available]
    missing = [f for f in layout.configs if f not in available]
    for folder in layout.folders:
        inside = [f for f in available if f.startswith(folder + "/")]
        wanted += inside
        missing += [] if inside else [folder + "/"]
    for subfolder, stem in layout.weights.items():
        weights = pick_weights(available, subfolder, stem, half)
        wanted += [weights] if weights else []
        missing += [] if weights else [f"{subfolder}/{stem}.safetensors"]
    return wanted, missing


def variant_of(weights_file: str | None) -> str | None:
    """``unet/diffusion_pytorch_model.fp16.safetensors`` -> ``fp16``; the full-precision file -> None."""
    return HALF_VARIANT if weights_file and weights_file.endswith(f".{HALF_VARIANT}.safetensors") else None


def weights_variant(folder: Path, subfolder: str, stem: str, half: bool) -> str | None:
    """Which weight file of ``folder/subfolder`` to load: ``"fp16"`` for the fp16 variant, None for the plain one."""
    files = [f"{subfolder}/{p.name}" for p in (folder / subfolder).iterdir()]
    return variant_of(pick_weights(files, subfolder, stem, half))


def resolve(source: str, layout: Layout, revision: str | None, half: bool, emit: Emit = ignore) -> Path:
    """A folder holding what a job needs: ``source`` itself when it is a local folder, else the
    snapshot of Hub repo ``source`` in the cache (fetching missing files when the Hub can be reached)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        check_complete(folder, layout, half, f"local model folder {folder}")
        return folder
    return fetch(source, layout, revision, half, emit)


def check_complete(folder: Path, layout: Layout, half: bool, what: str) -> None:
    """ModelError when ``folder`` lacks a file of ``layout``, or when a network's weights are pickles.

    diffusers follows a ``*.safetensors.index.json`` to the shards it names; one that names a pickle
    shard would be unpickled, so any index is refused unless every shard it names is safetensors.
    """
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    _, missing = plan_files(files, layout, half)
    if missing:
        raise ModelError(f"{what} is incomplete for {layout.what}: missing {', '.join(missing)}")
    for subfolder in layout.weights:
        for index in sorted((folder / subfolder).glob("*.index.json")):
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise ModelError(f"{what}: {subfolder}/{index.name} is not a weight index vsrup can read") from None
            pickles = sorted(s for s in shards if not str(s).endswith(".safetensors"))
            if pickles:
                raise ModelError(
                    f"{what}: {subfolder}/{index.name} names pickle weights ({', '.join(map(str, pickles))}); "
                    "vsrup loads safetensors only"
                )


def pipeline_class(repo: str) -> str | None:
    """The ``_class_name`` of Hub repo ``repo``'s ``model_index.json`` (plain JSON: nothing is run), from the cache
    or fetched alone; None when neither has it (offline, unreachable, not a diffusers repo)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "model_index.json")
    try:
        path = cached if isinstance(cached, str) else hf_hub_download(repo, "model_index.json")
        named = json.loads(Path(path).read_text()).get("_class_name")
    except Exception:  # noqa: BLE001  any failure to learn it leaves the family to the caller's default
        return None
    return named if isinstance(named, str) else None


def download(repo: str, layout: Layout, revision: str | None = None, emit: Emit = ignore, *, half: bool = False) -> Path:
    """``vsrup download``: fetch ``repo`` into the cache now; returns the snapshot.

    ``half=False`` fetches the full-precision weights, which serve every dtype (a half precision job
    prefers the fp16 variant when online, but uses cached full-precision weights offline).
    """
    path = fetch(repo, layout, revision, half, emit)
    emit(Event("info", message=f"{repo} is in the Hugging Face cache at {path}"))
    return path


def fetch(repo: str, layout: Layout, revision: str | None, half: bool, emit: Emit) -> Path:
    from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    at = f"{repo}@{revision}" if revision else repo
    # 1. Ask the Hub what the revision holds; offline or unreachable -> the cached snapshot.
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except GatedRepoError:
        raise ModelError(f"{at} is gated: accept its terms on huggingface.co and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{at} is neither a folder here nor a repo on the Hugging Face Hub (private repos need HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ModelError(f"revision {revision!r} of {repo} does not exist") from None
    except Exception as error:
        if not (unreachable(error) or isinstance(error, HfHubHTTPError)):
            raise
        reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub cannot be reached ({type(error).__name__})"
        return cached_snapshot(repo, layout, revision, half, reason)

    # 2. Fetch the planned files that are not cached yet.
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    wanted, missing = plan_files(sizes, layout, half)
    if missing:
        pickles = [f for f in sizes if f.endswith(PICKLE_SUFFIXES)]
        note = "; it has pickle weights only, and vsrup loads safetensors only" if pickles else ""
        raise ModelError(f"{at} does not hold {layout.what} in diffusers layout: missing {', '.join(missing)}{note}")
    bars = "tqdm_class" in inspect.signature(hf_hub_download).parameters
    for name in wanted:
        if not isinstance(try_to_load_from_cache(repo, name, revision=info.sha), str):
            emit(Event("info", message=f"downloading {repo}/{name} ({sizes[name] / 1e9:.2f} GB)"))
        try:
            progress = {"tqdm_class": byte_progress(f"{repo}/{name}", emit)} if bars else {}
            local = Path(hf_hub_download(repo, name, revision=revision, **progress))
        except Exception as error:
            if not unreachable(error):
                raise
            raise ModelError(f"downloading {repo}/{name} failed: the connection to the Hub was lost; run again") from None
    return local.parents[len(Path(name).parts) - 1]  # the snapshot folder the last file was placed in


def cached_snapshot(repo: str, layout: Layout, revision: str | None, half: bool, reason: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo, revision=revision, local_files_only=True, allow_patterns=[layout.configs[0]]))
    except LocalEntryNotFoundError:
        raise ModelError(
            f"model {repo} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason}; "
            f"run `vsrup download {repo}` on a connected machine, or set HF_HOME to a cache that has it"
        ) from None
    check_complete(folder, layout, half, f"the cached copy of {repo} ({folder})")
    return folder


def unreachable(error: Exception) -> bool:
    """Offline mode, or a network failure of whichever HTTP client this huggingface_hub uses."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"OfflineModeIsEnabled", "ConnectionError", "ConnectError", "TimeoutException", "Timeout"})


def byte_progress(name: str, emit: Emit) -> type:
    """A tqdm class for huggingface_hub that draws nothing and reports bytes as ``download`` events.

    huggingface_hub offers byte progress only through a tqdm class; events go out at most once per
    percent, and when the file is complete.
    """

    class Progress(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # the library never prints; the CLI draws the bar
            super().__init__(*args, **kwargs)
            self.done, self.sent = 0, -1.0

        def update(self, n=1):
            self.done += n or 0
            fraction = self.done / self.total if self.total else 0.0
            if fraction - self.sent >= 0.01 or fraction >= 1.0:
                self.sent = fraction
                emit(Event("download", message=name, done=self.done, total=self.total))

    return Progress
