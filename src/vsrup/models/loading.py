"""Loading stock diffusers and transformers networks from a folder in diffusers layout, safely.

Shared by the families whose weights are in diffusers layout (sd-x4, StableVSR). Every network is
built from its own subfolder by its stock class, with ``use_safetensors=True``: vsrup never unpickles
a model file and never runs code from a model folder (a ``model_index.json`` may name a custom
pipeline class; nothing here reads it). ``hub.check_complete`` has already refused weight indexes
that point at pickle shards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from vsrup.config import UpscaleConfig
from vsrup.device import is_half, resolve_device, resolve_dtype
from vsrup.errors import ModelError
from vsrup.events import Emit, Event
from vsrup.models import hub


def placement(source: str, files: hub.Layout, config: UpscaleConfig, emit: Emit) -> tuple[torch.device, torch.dtype, Path]:
    """(device, compute dtype, the folder holding ``files``) for a job; one ``info`` event says which."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    folder = hub.resolve(source, files, config.revision, is_half(dtype), emit)
    emit(Event("info", message=f"model {config.model} from {folder}, on {device} in {str(dtype).removeprefix('torch.')}"))
    return device, dtype, folder


@contextmanager
def loading(source: str, folder: Path) -> Iterator[None]:
    """Quiet libraries; a corrupt or mismatched file becomes one ModelError line naming the model."""
    try:
        with quiet_libraries():
            yield
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        text = str(error).strip()
        first_line = text.splitlines()[0] if text else type(error).__name__
        raise ModelError(f"cannot load {source} from {folder}: {first_line}") from None


def load_network(cls, folder: Path, subfolder: str, stem: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """``cls`` (a diffusers or transformers model class) from ``folder/subfolder``, on ``device`` for inference."""
    network = cls.from_pretrained(
        folder, subfolder=subfolder, torch_dtype=dtype, use_safetensors=True,
        variant=hub.weights_variant(folder, subfolder, stem, is_half(dtype)),
    )
    return to_device(network, device)


def to_device(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` on ``device`` for inference, its weights channels-last on CUDA and the CPU.

    Channels-last (NHWC) is the layout cuDNN's and oneDNN's convolution kernels prefer; on the CPU it
    measured as fast or faster for the x4 UNet and VAE (docs/benchmarks.md). MPS keeps the default, untested.
    """
    layout = torch.channels_last if device.type in ("cuda", "cpu") else torch.preserve_format
    return network.to(device, memory_format=layout).eval()


def encode_prompts(
    folder: Path, texts: Sequence[tuple[str, str]], device: torch.device, dtype: torch.dtype, emit: Emit,
    encoder: torch.nn.Module | None = None,
) -> list[torch.Tensor]:
    """Run the folder's text encoder once on each (what, text), (1, 77, D) each; the encoder is freed on return.

    ``encoder``: one the caller built (from converted pickle weights), used instead of the folder's safetensors.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    if encoder is None:
        encoder = load_network(CLIPTextModel, folder, "text_encoder", "model", dtype, device)
    limit = tokenizer.model_max_length
    out = []
    with torch.no_grad():
        for what, text in texts:
            if len(tokenizer(text).input_ids) > limit:
                emit(Event("warning", message=f"the {what} is longer than {limit} tokens; the rest is ignored"))
            ids = tokenizer(text, padding="max_length", max_length=limit, truncation=True, return_tensors="pt").input_ids  # (1, 77)
            out.append(encoder(ids.to(device))[0])  # (1, 77, D)
    del encoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def compile_networks(*networks: torch.nn.Module) -> None:
    """``--compile``: torch.compile each network in place, on its first call.

    Each input shape compiles once: tiles all have the memory plan's shape, and a call with fewer
    tiles (a step's last group, a short last window) recompiles once, after which PyTorch treats
    the batch size as dynamic.
    """
    for network in networks:
        network.compile()


@contextmanager
def compile_errors() -> Iterator[None]:
    """A failed torch.compile (no C++ compiler, an unsupported op) becomes one line saying how to go on."""
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as error:
        cause = getattr(error, "inner_exception", None) or error  # a backend's failure wraps the real one
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        raise ModelError(f"--compile failed: {lines[0] if lines else type(error).__name__}; run without --compile") from None


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence diffusers' and transformers' loggers and loading bars for the block (the library never prints)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _, _ in saved:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
