"""Motion-guided sampling (MGLD-VSR, Yang et al., ECCV 2024), with the intended pairing and a bounded step.

One pure function, ``motion_guidance(z, flow, strength)``: it pulls every latent of a clip toward
what its visible neighbours say it should be, after warping them along the optical flow.

What is different from MGLD-VSR's code (reference/seeds.md §1.5-1.6):
* Pairing: z_i is compared with z_{i+1} warped by f_{i→i+1} (and the mirror), not by the flow of
  the next pair, and nothing is pulled toward zero.
* Step: MGLD descends ``10 |log σ̃²_t| ∇L`` on a mean-reduced L1 loss, so its strength depends on the
  latent size and the final step (σ̃² clipped to 1e-20) is 6.5x the one before. Here the step is
  a fraction of the gap, with no σ, no sum over pixels and no clip length in it (see below).

Strength. ``strength`` s in [0, 1] is the fraction of the masked warping gap W(z_{i+1}) - z_i that one
step closes: each latent moves s/2 of the way to its neighbours' consensus, so the two frames of a
pair meet in the middle at s = 1 (a pair's gap shrinks by exactly 1 - s; so does frame-to-frame
flicker, the alternating component, in a clip of any length; slow drifts shrink less). Every term
is per pixel and divided by its own count of visible neighbours, and the update is linear in z, so:
  * resolution h x w: nothing is summed or averaged over pixels -> same per-pixel update;
  * clip length T: each latent sees at most two neighbours and divides by how many it has;
  * latent scale: z -> c z gives Δz -> c Δz, the same relative reduction.
The tests check all three. Bounded by construction: the new value is a convex combination of the old
value and (bilinear, edge-replicating, hence convex) warped neighbour values, with weight <= s/2 on
the neighbours, so it never leaves the range of the input values, at any step, the last included.
Pixels with no visible neighbour (occluded both ways) are left exactly as they are.

Latents x_t or predicted clean latent x̂0? Apply it to x̂0 (the loop's prediction of the clean latent,
as Upscale-A-Video does for propagation), then take the scheduler step with the model's noise
estimate ε̂ unchanged. The argument, which the lead must still measure inside the loop:
  * x_t = α_t x0 + σ_t ε with independent noise per frame (the seed + i contract). The warping gap of
    x_t is α_t gap(x0) + σ_t gap(ε), and gap(ε) has RMS σ_t √2 per element, so until late steps
    guiding x_t mostly aligns noise. A convex mix of independent Gaussians has less variance
    ((1 - s/2)² + (s/2)² of it for one neighbour), so the UNet then sees less noise than its
    timestep says, a known cause of washed-out, over-smooth samples, and the loss compounds.
    MGLD gets away with it only because its steps are tiny (~1e-4..1e-3 per element) until the last.
  * The flow model "latent ≈ warped neighbour latent" is a statement about clean content: the
    latent grid is the LR grid and the VAE is close to translation-equivariant. x̂0 is what it holds for.
  * An edit Δ of x̂0 reaches x_{t-1} scaled by √ᾱ_{t-1} (DDIM), small early when x̂0 is a blur and
    full at the end where flicker is made, and ε̂ keeps its statistics.
  * Cost of x̂0: the next UNet call sees only √ᾱ_t Δ of the edit and may re-create some flicker;
    whether x̂0 guidance survives to the decoded frames is exactly what must be measured
    (warping error of the decoded output, and sharpness, for x̂0 vs x_t guidance).
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
# Step (a preconditioned gradient step; Jacobi, all frames at once). Differentiate L with respect to
# each latent where it is the reference, holding the warped neighbours fixed:
#   g_i = 2 m_i (z_i - t_i),  m_i(p) = number of visible neighbours (0, 1, 2),  t_i(p) = their mean warped value
# divide by that curvature 2 m_i and take s/2 of it:
#   z_i <- z_i - (s/2) g_i / (2 m_i) = z_i + (s/2) (t_i - z_i)        (pixels with m_i = 0 untouched)


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
    consensus = total / count.clamp(min=1.0)  # (T, C, h, w) t_i
    pull = torch.where(count > 0, consensus - zf, torch.zeros_like(zf))  # (T, C, h, w) t_i - z_i, 0 where unseen
    return (zf + 0.5 * strength * pull).to(z.dtype)  # (T, C, h, w)


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
