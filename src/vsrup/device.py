"""Where the model runs and in which precision.

``--device auto`` picks CUDA, then MPS, then the CPU. ``--dtype auto`` picks bf16 on CUDA devices that
support it, fp16 on other accelerators and fp32 on the CPU. The VAE decodes fp16 jobs in fp32: the
x4 upscaler's decoder is known to break in half precision (the original ``x4-upscaling.yaml`` says
"decoder seems to break in half precision (UNet is fine though)", and diffusers upcasts it the same way
through the VAE's ``force_upcast``); bf16 has fp32's exponent range, so bf16 jobs decode in bf16 as
diffusers does.
"""

from __future__ import annotations

import torch

from vsrup.errors import UsageError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

def resolve_device(name: str) -> torch.device:
    """``auto|cpu|cuda|cuda:N|mps`` -> a torch device that exists on this machine (UsageError otherwise)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available to this torch build; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto|fp32|fp16|bf16`` -> the compute dtype of the UNet and text encoder on ``device``."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; use auto, fp32, fp16 or bf16")
    return DTYPES[name]


def vae_dtype(dtype: torch.dtype) -> torch.dtype:
    """The decoder's dtype for a job computed in ``dtype``: fp16 is upcast to fp32 (see the module notes)."""
    return torch.float32 if dtype == torch.float16 else dtype


def is_half(dtype: torch.dtype) -> bool:
    return dtype in (torch.float16, torch.bfloat16)
