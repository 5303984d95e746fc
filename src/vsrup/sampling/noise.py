"""The determinism contract's noise: frame i draws from its own CPU generator, seeded ``seed + i``.

A frame's draws then depend neither on the other frames of its batch or window, nor on the tile
size, the device or where a run starts (design.md, "Determinism per frame").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def generators(seed: int, indices: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per frame, seeded by its 0-based index in the input."""
    return [torch.Generator("cpu").manual_seed(seed + int(i)) for i in indices]


def frame_noise(
    gens: Sequence[torch.Generator], channels: int, height: int, width: int, dtype: torch.dtype
) -> torch.Tensor:
    """One standard-normal draw of (1, channels, height, width) from each frame's CPU generator, on the CPU.

    This is what diffusers' ``randn_tensor`` does with a list of generators (and with a single one for one
    image), so frame i's draws do not depend on the other frames of the batch.
    """
    draws = [torch.randn((1, channels, height, width), generator=g, dtype=dtype) for g in gens]
    return torch.cat(draws)  # (T, channels, height, width)
