"""The host memory a job's frames need, checked before the long work (docs/memory.md).

No torch here: the non-neural path (lanczos) runs without it.
"""

from __future__ import annotations

from pathlib import Path

from vsrup.errors import VsrupError

COLOR_FIX_FRAMES = 6  # one frame's colour fix works in about this many frame-sized float32 buffers (measured)
ENCODER_FRAMES = 60  # pictures an encoder holds: x264 "medium" looks 40 ahead, plus B-frames, references and frame threads
HOST_MARGIN = 64 * 2**20  # thread stacks, codec contexts and the buffers libraries allocate once the frames flow


class HostMemoryError(VsrupError):
    """A job's frames cannot fit in the host's memory (exit 1), said before the long work."""


def host_bytes(
    *,
    in_px: int,
    scale: float,
    model_scale: float,
    window: int,
    overlap: int,
    queue_in: int,
    queue_out: int,
    picture_bytes: float,
    colour_fix_on_host: bool,
) -> int:
    """Peak host bytes of a job's frames, weights and libraries not included (those are resident already).

    F_in, F_nat, F_out: one float32 RGB frame at the input size, the model's native output and the asked
    output (12 bytes per pixel); T, o: the window and its overlap; q_in, q_out: the queue depths::

        decoded    (q_in + T + 1) F_in                the decode queue and the window being gathered
        window     (T + 1) F_nat                      the window's output and one frame of scratch,
                   (T + 6) F_nat                      or of a colour fix where the model's device is the host
        resized    T (F_nat s / s_m + 2 F_out)        when the asked scale s differs from the model's s_m
        blending   o F_out                            the overlap held for the cross-fade
        encoding   (q_out + 1.5) F_out + 60 P         the encode queue, the frame in conversion, and the
                                                      encoder's pictures (P bytes each: 1.5 per pixel for 8-bit 4:2:0)
        margin     64 MiB
    """
    f_in, f_nat, f_out = 12 * in_px, 12 * in_px * model_scale**2, 12 * in_px * scale**2
    decoded = (queue_in + window + 1) * f_in
    held = (window + (COLOR_FIX_FRAMES if colour_fix_on_host else 1)) * f_nat
    resized = window * (f_nat * scale / model_scale + 2 * f_out) if scale != model_scale else 0
    blending = overlap * f_out
    encoding = (queue_out + 1.5) * f_out + ENCODER_FRAMES * picture_bytes * in_px * scale**2
    return int(decoded + held + resized + blending + encoding + HOST_MARGIN)


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux; None elsewhere): what the weights and libraries hold."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_host_memory(need: int, what: str) -> int:
    """HostMemoryError when ``need`` bytes of frames exceed the host's available memory (cgroup limits included)."""
    available = available_host_memory()
    if need > available:
        raise HostMemoryError(
            f"{what} needs about {need / 2**30:.1f} GiB of host memory for its frames, and {available / 2**30:.1f} GiB is "
            "available; lower --clip-len or --scale, or free memory (docs/memory.md)"
        )
    return available


def available_host_memory() -> int:
    """Bytes the host can still give this process: MemAvailable, or the cgroup's limit less its usage if smaller."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available = int(fields["MemAvailable"].split()[0]) * 1024
    limit, usage = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    if limit.exists() and usage.exists() and limit.read_text().strip() != "max":
        available = min(available, int(limit.read_text()) - int(usage.read_text()))
    return available
