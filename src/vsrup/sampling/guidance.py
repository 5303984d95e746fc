"""Motion-guided sampling (MGLD-VSR, Yang et al., ECCV 2024), with the intended pairing and a bounded step.

One pure function, ``motion_guidance(z, flow, strength)``: it pulls every latent of a clip toward
what its visible neighbours say it should be, after warping them along the optical flow.

What is different from MGLD-VSR's code (reference/seeds.md §1.5-1.6):
* Pairing: z_i is compared with z_{i+1} warped by f_{i→i+1} (and the mirror), not by the flow of
  the next pair, and nothing is pulled toward zero.
* Step: MGLD descends ``10 |log σ̃²_t| ∇L`` on a mean-reduced L1 loss, so its strength depends on the
  latent size and the final step (σ̃² clipped to 1e-20) is 6.5x the one before. Here the step is
  a fraction of the gap, with no σ, no sum over pixels and no clip length in it (see below).

Strength (of one step; --motion-guidance is per tenth of the schedule, sampling/temporal.py converts).
Each latent moves ``strength``/4 of the way toward each visible warped neighbour: a plain
gradient step of size s/8 on the squared warping loss L below (holding the warped neighbours fixed).
So s is the fraction of frame-to-frame flicker (the alternating component) one step removes between
frames that see both neighbours: it shrinks by exactly 1 - s; a frame with one visible neighbour (a
clip's first and last frame, a pixel occluded one way) gets half that pull. Every pair's own gap
contracts by the same factor 1 - s/2 wherever it sits in the clip. (Dividing the pull by the number
of visible neighbours instead would make clip ends twice as stiff as the middle: measured on the
synthetic pan, end pairs came out 2.7x more consistent than interior ones, which shows as a jump
at every clip boundary; benchmarks/bench_temporal.py.) Every term is per pixel and the update is
linear in z, so:
  * resolution h x w: nothing is summed or averaged over pixels -> same per-pixel update;
  * clip length T: each latent sees at most two neighbours, each with the same weight;
  * latent scale: z -> c z gives Δz -> c Δz, the same relative reduction.
The tests check all three. Bounded by construction: the new value is a convex combination of the old
value (weight >= 1/2) and (bilinear, edge-replicating, hence convex) warped neighbour values, so it
never leaves the range of the input values, at any step, the last included. Pixels with no visible
neighbour (occluded both ways) are left exactly as they are.

Latents x_t or predicted clean latent x̂0? vsrup guides x̂0 (the loop's prediction of the clean
latent, as Upscale-A-Video does for propagation) and the scheduler steps with the model's noise
estimate ε̂ unchanged (sampling/temporal.py). Measured with a tiny random x4 model on a 12-frame
synthetic pan, 30 steps, default window (benchmarks/bench_temporal.py):
  * output warping error vs no guidance: x̂0 0.41x, x_t 0.31x; detail (mean |Laplacian|) 1.04x / 1.01x
    (the default 0.75 per tenth, 2026-11-22; at a per-step 0.5, 0.35x / 0.27x).
  * the std of the latents the UNet sees, against the unguided run's 1.00 at the first steps (per-step 0.5):
    x̂0 keeps 0.996 / 0.991 / 0.971 at steps 0 / 3 / 6; x_t drops it to 0.78 / 0.58 / 0.53.
So guiding x_t is a little more effective on random weights, but it does so by averaging the frames'
independent noise: the UNet is fed about half the noise its timestep says, off the distribution it
was trained on (a known cause of washed-out samples, which random weights cannot show). Guiding x̂0
keeps the noise statistics where the model expects them, and its edit Δ reaches x_{t-1} scaled by
√ᾱ_{t-1}: small early, full at the end where flicker is made. MGLD-VSR guides x_t but with steps of
~1e-4..1e-3 per element, where the effect on the noise is negligible; ours are not that small.
"""

from __future__ import annotations

import math

import torch

from vsrup.flow import Flow, warp

# Paper notation (MGLD-VSR, warping loss; BasicVSR pairing):
#   z_i            latent of frame i, (C, h, w)
#   f_{i→j}        flow from frame i to frame j on frame i's grid; W(z, f)(p) = z(p + f(p))
#   O_i            occlusion of frame i w.r.t. frame i+1   (Flow.occ_i[i])
#   O'_{i+1}       occlusion of frame i+1 w.r.t. frame i   (Flow.occ_next[i])
#   L(z) = Σ_i Σ_p (1 - O_i)     ‖W(z_{i+1}, f_{i→i+1}) - z_i‖²
#        + Σ_i Σ_p (1 - O'_{i+1}) ‖W(z_i, f_{i+1→i}) - z_{i+1}‖²
# Step (a gradient step, Jacobi: all frames at once). Differentiate L with respect to each latent
# where it is the reference, holding the warped neighbours fixed:
#   g_i = 2 Σ_{visible j} (z_i - W(z_j)),  j = i-1, i+1
# and step s/8 down it:
#   z_i <- z_i - (s/8) g_i = z_i + (s/4) Σ_{visible j} (W(z_j) - z_i)        (no visible j: untouched)


def _neighbour_views(z: torch.Tensor, flow: Flow) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the visible warped neighbours of every latent, and how many there are."""
    from_next = warp(z[1:], flow.i_to_next)  # (T-1, C, h, w) z_{k+1} seen from frame k
    from_prev = warp(z[:-1], flow.next_to_i)  # (T-1, C, h, w) z_k seen from frame k+1
    visible_next = 1.0 - flow.occ_i  # (T-1, 1, h, w) frame k's pixels seen in frame k+1
    visible_prev = 1.0 - flow.occ_next  # (T-1, 1, h, w) frame k+1's pixels seen in frame k
    total = torch.zeros_like(z)  # (T, C, h, w)
    count = torch.zeros_like(z[:, :1])  # (T, 1, h, w)
    total[:-1] += visible_next * from_next
    count[:-1] += visible_next
    total[1:] += visible_prev * from_prev
    count[1:] += visible_prev
    return total, count


def motion_guidance(z: torch.Tensor, flow: Flow, strength: float) -> torch.Tensor:
    """One guidance step on ``z`` (T, C, h, w): close ``strength`` of the masked warping gap. Returns a new tensor.

    Computed in float32, returned in z's dtype and device. T = 1 or strength 0 returns z unchanged.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"motion guidance strength must be in [0, 1], got {strength}")
    if z.shape[0] != flow.num_frames:
        raise ValueError(f"{z.shape[0]} latents but the flow covers {flow.num_frames} frames")
    if z.shape[0] < 2 or strength == 0.0:
        return z
    flow = flow.to(z.device)
    zf = z.float()  # (T, C, h, w)
    total, count = _neighbour_views(zf, flow)  # (T, C, h, w), (T, 1, h, w)
    pull = total - count * zf  # (T, C, h, w) sum over visible neighbours of (warped neighbour - z_i)
    return (zf + 0.25 * strength * pull).to(z.dtype)  # (T, C, h, w)


def warping_error(z: torch.Tensor, flow: Flow) -> float:
    """RMS of the masked warping gap, both directions: sqrt(L / (C · number of visible terms)).

    The quantity ``strength`` is a fraction of; for measurements and logs.
    """
    flow = flow.to(z.device)
    zf = z.float()  # (T, C, h, w)
    gap_i = warp(zf[1:], flow.i_to_next) - zf[:-1]  # (T-1, C, h, w) on frame k
    gap_next = warp(zf[:-1], flow.next_to_i) - zf[1:]  # (T-1, C, h, w) on frame k+1
    visible_i = 1.0 - flow.occ_i  # (T-1, 1, h, w)
    visible_next = 1.0 - flow.occ_next  # (T-1, 1, h, w)
    squares = (visible_i * gap_i.square()).sum() + (visible_next * gap_next.square()).sum()
    terms = z.shape[1] * (visible_i.sum() + visible_next.sum())
    return math.sqrt(float(squares / terms.clamp(min=1.0)))


def in_window(step_index: int, n_steps: int, window: tuple[float, float]) -> bool:
    """Whether loop step ``step_index`` (0-based, of ``n_steps``) lies in ``window`` = (start, end).

    Step i sits at fraction i / n_steps of the schedule and is inside when start <= i / n_steps < end,
    so (0, 1) is every step, (0, 0.9) skips the last tenth, and (a, a) is none.
    """
    start, end = window
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"guidance window must satisfy 0 <= START <= END <= 1, got {start}:{end}")
    if not 0 <= step_index < n_steps:
        raise ValueError(f"step {step_index} is outside a schedule of {n_steps} steps")
    # Integer bounds avoid float noise: i / n < end  <=>  i < ceil(end * n) (up to a 1e-9 tolerance).
    first = math.ceil(start * n_steps - 1e-9)
    stop = math.ceil(end * n_steps - 1e-9)
    return first <= step_index < stop
