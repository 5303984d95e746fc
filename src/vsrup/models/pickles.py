"""Model files published only as pickles: read without running them, converted once to safetensors.

A pickle can run any code as it loads. vsrup reads one only through torch's weights-only unpickler,
which builds tensors, containers and plain values and refuses every other global. Training
frameworks leave a few globals in their checkpoints beside the weights: those named in ``INERT``
are let through as ``Inert``, a class that has no behaviour (the framework's own class is never
imported), so the weights can be read; any other global refuses the whole file, named in a one-line
``ModelError``. The tensors found (a checkpoint's ``state_dict``, or the file's top-level dict) are
written once, atomically, as safetensors under ``converted_dir()``, named by the pickle's SHA-256, and
later runs read that file and never the pickle again.

Used by the families whose weights exist only as pickles (MGLD-VSR's Lightning ``.ckpt`` files,
Upscale-A-Video's ``.bin`` files); the diffusers-layout families load safetensors only.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
from pathlib import Path

import torch

from vsrup.errors import ModelError
from vsrup.events import Emit, Event, ignore

# Globals that checkpoints name beside their weights and that vsrup reads as inert placeholders. PyTorch
# Lightning 1.x keys a checkpoint's "callbacks" by the callback class (reference/ports.md §1: both MGLD-VSR
# checkpoints import ModelCheckpoint); Lightning 2 ("lightning.pytorch") may do the same.
INERT = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
)
CHUNK = 8 * 2**20
# What torch.load raises for a file it will not or cannot read as weights (a refused global, a damaged or foreign file).
UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError)


class Inert:
    """Stands in for a framework's class named in a checkpoint: it can be created and given state, and does nothing."""

    def __setstate__(self, state) -> None:
        self.state = state


def converted_dir() -> Path:
    """Where converted weights live: ``$HF_HOME/vsrup/converted`` (beside the Hub cache)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "vsrup" / "converted"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The named tensors of a pickle file, read with torch's weights-only unpickler (on the CPU)."""
    try:
        with torch.serialization.safe_globals([(Inert, name) for name in INERT]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as error:
        text = str(error)
        needed = re.search(r"GLOBAL ([\w.]+)", text)
        reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)  # torch's own reason, after its generic advice
        detail = reason.group(1) if reason else (text.splitlines()[0] if text else type(error).__name__)
        what = f"needs {needed.group(1)}" if needed else f"cannot be read as weights ({detail})"
        raise ModelError(f"refused {path}: the pickle {what}, which is neither a tensor nor a plain value; vsrup never runs code from a model file") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise ModelError(f"refused {path}: it holds no named tensors (a state dict, or a checkpoint's 'state_dict')")
    return tensors


def converted(path: Path, emit: Emit = ignore) -> Path:
    """The safetensors copy of the pickle ``path``, converted on the first call (atomically) and reused after."""
    from safetensors.torch import save_file

    path = Path(path)
    target = converted_dir() / f"{sha256(path)}.safetensors"
    if target.exists():
        return target
    tensors = read_tensors(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Shared or non-contiguous storage (tied weights, views) cannot be saved as they are: one contiguous copy each.
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".safetensors", dir=target.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"converted_from": path.name})
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    emit(Event("info", message=f"converted {path.name} to safetensors once: {target}"))
    return target
