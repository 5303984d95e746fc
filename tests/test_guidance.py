"""sampling/guidance.py: the intended warping loss, a step that closes a fixed fraction of it, bounded, scale-free."""

from __future__ import annotations

import pytest
import torch

from vsrup.flow import Flow, occlusion, warp
from vsrup.sampling.guidance import in_window, motion_guidance, warping_error


def translation_clip(h: int, w: int, shifts: list[tuple[int, int]], channels: int = 4, seed: int = 0):
    """A clip whose content moves by shifts[k] = (dx, dy) from frame k to k+1, and its exact Flow.

    Returns (content (T, C, h, w), a second moving field (T, C, h, w) that follows the same motion,
    flow). Flows are the exact constants; masks come from flow.occlusion on them.
    """
    g = torch.Generator().manual_seed(seed)
    margin = sum(abs(dx) + abs(dy) for dx, dy in shifts) + 1
    big = torch.randn(2, channels, h + 2 * margin, w + 2 * margin, generator=g)  # (2, C, H, W)
    ox = oy = 0
    frames = []
    for k in range(len(shifts) + 1):
        # frame_k(p) = big(p - o_k)
        frames.append(big[:, :, margin - oy : margin - oy + h, margin - ox : margin - ox + w])
        if k < len(shifts):
            ox, oy = ox + shifts[k][0], oy + shifts[k][1]
    clip = torch.stack(frames, dim=1)  # (2, T, C, h, w)
    i_to_next = torch.tensor([[dx, dy] for dx, dy in shifts], dtype=torch.float32)[:, :, None, None].expand(-1, 2, h, w)
    i_to_next = i_to_next.contiguous()  # (T-1, 2, h, w)
    next_to_i = -i_to_next  # (T-1, 2, h, w)
    flow = Flow(i_to_next, next_to_i, occlusion(i_to_next, next_to_i), occlusion(next_to_i, i_to_next))
    return clip[0], clip[1], flow


def flicker_clip(h: int, w: int, t: int, scale: float = 1.0, seed: int = 0):
    """Moving content plus a moving pattern whose sign alternates frame to frame: pure flicker."""
    shifts = [((k % 3) - 1, 1 - (k % 2) * 2) for k in range(t - 1)]  # varying velocity
    content, pattern, flow = translation_clip(h, w, shifts, seed=seed)
    sign = torch.tensor([(-1.0) ** k for k in range(t)])[:, None, None, None]  # (T, 1, 1, 1)
    return scale * (content + sign * pattern), flow


# ---------------------------------------------------------------- the strength is a fraction, whatever the scale


@pytest.mark.parametrize("strength", [0.25, 0.5, 1.0])
@pytest.mark.parametrize(
    "h, w, t, scale", [(16, 16, 3, 1.0), (64, 64, 3, 1.0), (16, 16, 8, 1.0), (64, 64, 8, 10.0), (24, 40, 5, 0.1)]
)
def test_one_step_removes_the_strength_fraction_of_flicker(strength, h, w, t, scale):
    """Interior frames lose exactly ``strength`` of their flicker, end frames half that, at any size and scale."""
    content, pattern, flow = translation_clip(h, w, [(1, -1)] * (t - 1))
    sign = torch.tensor([(-1.0) ** k for k in range(t)])[:, None, None, None]  # (T, 1, 1, 1)
    z = scale * (content + sign * pattern)  # (T, C, h, w)
    out = motion_guidance(z, flow, strength)
    left = torch.full((t, 1, 1, 1), 1.0 - strength)  # (T, 1, 1, 1) flicker left in interior frames ...
    left[0] = left[-1] = 1.0 - strength / 2  # ... and in the two end frames, which have one neighbour
    expected = scale * (content + left * sign * pattern)  # (T, C, h, w)
    seen = torch.ones(t, 1, h, w, dtype=torch.bool)  # pixels that see every neighbour they have
    seen[:-1] &= flow.occ_i == 0
    seen[1:] &= flow.occ_next == 0
    seen = seen.expand_as(z)
    assert seen.float().mean() > 0.7  # the checked pixels are most of the clip (borders leave the frame)
    assert torch.allclose(out[seen], expected[seen], atol=1e-4 * scale)
    assert warping_error(out, flow) < warping_error(z, flow)


def test_clip_ends_are_no_stiffer_than_the_middle():
    """Every pair's own gap contracts alike: a long clip's end pairs shrink no more than its middle ones."""
    torch.manual_seed(0)
    z = torch.randn(9, 4, 16, 16)  # independent frames: every pair has its own gap
    still = Flow(*(torch.zeros(8, c, 16, 16) for c in (2, 2, 1, 1)))
    gaps = lambda x: (x[1:] - x[:-1]).square().mean(dim=(1, 2, 3)).sqrt()  # noqa: E731  (8,) per pair
    ratio = gaps(motion_guidance(z, still, 0.5)) / gaps(z)  # (8,)
    assert ratio[0] >= ratio[1:-1].min() - 0.02 and ratio[-1] >= ratio[1:-1].min() - 0.02


def test_relative_reduction_does_not_depend_on_latent_scale_or_size_for_any_content():
    torch.manual_seed(0)
    small = torch.randn(5, 4, 16, 16)  # unaligned frames: a mix of every temporal frequency
    still = lambda z: Flow(*(torch.zeros(z.shape[0] - 1, c, *z.shape[2:]) for c in (2, 2, 1, 1)))  # noqa: E731
    big = small.repeat(1, 1, 4, 4)  # (5, 4, 64, 64): the same per-pixel series, 16x the pixels

    def reduction(z):
        return 1.0 - warping_error(motion_guidance(z, still(z), 0.5), still(z)) / warping_error(z, still(z))

    base = reduction(small)
    assert 0.1 < base < 0.5  # smooth components close less than the alternating one
    assert reduction(10.0 * small) == pytest.approx(base, abs=1e-6)
    assert reduction(big) == pytest.approx(base, abs=1e-6)


# ---------------------------------------------------------------- the intended loss, not MGLD's mispairing


def test_consistent_content_with_changing_velocity_is_left_alone():
    # Each pair moves differently; a loss that warps z_{i+1} with the *next* pair's flow (MGLD's code)
    # or swaps the two flow directions would see a gap here and move the latents.
    content, _, flow = translation_clip(32, 40, [(2, 0), (-1, 3), (0, -2), (3, 1)])
    assert warping_error(content, flow) < 1e-6
    assert torch.allclose(motion_guidance(content, flow, 1.0), content, atol=1e-5)


def test_step_is_a_gradient_step_on_the_warping_loss():
    # Sub-pixel flows and random occlusion: the general case, checked against autograd.
    torch.manual_seed(0)
    t, c, h, w = 4, 4, 12, 14
    z = torch.randn(t, c, h, w)
    fwd = 1.5 * torch.randn(t - 1, 2, h, w)
    bwd = 1.5 * torch.randn(t - 1, 2, h, w)
    flow = Flow(fwd, bwd, (torch.rand(t - 1, 1, h, w) < 0.3).float(), (torch.rand(t - 1, 1, h, w) < 0.3).float())
    ref = z.clone().requires_grad_(True)  # the un-warped (reference) occurrence of each latent
    loss = ((1 - flow.occ_i) * (warp(z[1:], fwd) - ref[:-1]) ** 2).sum()
    loss = loss + ((1 - flow.occ_next) * (warp(z[:-1], bwd) - ref[1:]) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, ref)  # (T, C, h, w)
    strength = 0.7
    expected = -(strength / 8) * grad  # a plain gradient step of size s/8
    assert torch.allclose(motion_guidance(z, flow, strength) - z, expected, atol=1e-5)


# ---------------------------------------------------------------- occlusion and bounds


def test_pixels_without_a_visible_neighbour_are_untouched():
    z, flow = flicker_clip(32, 32, 4)
    occ_i, occ_next = flow.occ_i.clone(), flow.occ_next.clone()
    occ_i[2, :, 8:20, 10:24] = 1  # frame 2 cannot see frame 3 here ...
    occ_next[1, :, 8:20, 10:24] = 1  # ... nor frame 1
    flow = Flow(flow.i_to_next, flow.next_to_i, occ_i, occ_next)
    out = motion_guidance(z, flow, 1.0)
    assert torch.equal(out[2, :, 8:20, 10:24], z[2, :, 8:20, 10:24])
    assert (out[2] != z[2]).float().mean() > 0.5  # the rest of frame 2 moves
    # content moves 1 px left from frame 0 to 1: frame 0's left column leaves, and frame 0 has no other neighbour
    dx = int(flow.i_to_next[0, 0, 0, 0])
    assert dx == -1 and torch.equal(out[0, :, :, :1], z[0, :, :, :1])


def test_step_is_bounded_even_with_wild_flows_and_many_steps():
    torch.manual_seed(1)
    t, h, w = 6, 20, 20
    z = torch.randn(t, 4, h, w) * 3
    no_occlusion = torch.zeros(t - 1, 1, h, w)
    flow = Flow(8 * torch.randn(t - 1, 2, h, w), 8 * torch.randn(t - 1, 2, h, w), no_occlusion, no_occlusion)
    lo, hi = z.amin(dim=(0, 2, 3)), z.amax(dim=(0, 2, 3))  # (C,)
    out = z
    for _ in range(100):
        new = motion_guidance(out, flow, 1.0)
        assert (new - out).abs().max() <= 0.5 * (hi - lo).max() + 1e-5  # at most halfway to the neighbours
        out = new
    assert (out.amin(dim=(0, 2, 3)) >= lo - 1e-5).all() and (out.amax(dim=(0, 2, 3)) <= hi + 1e-5).all()


def test_identity_cases_dtype_and_argument_checks():
    z, flow = flicker_clip(16, 16, 3)
    assert motion_guidance(z, flow, 0.0) is z
    single = Flow(*(torch.zeros(0, c, 16, 16) for c in (2, 2, 1, 1)))
    assert torch.equal(motion_guidance(z[:1], single, 1.0), z[:1])
    out = motion_guidance(z.bfloat16(), flow, 0.5)
    assert out.dtype == torch.bfloat16
    assert (out.float() - motion_guidance(z, flow, 0.5)).abs().max() < 0.1
    with pytest.raises(ValueError, match="strength"):
        motion_guidance(z, flow, 1.5)
    with pytest.raises(ValueError, match="covers"):
        motion_guidance(z[:2], flow, 0.5)


# ---------------------------------------------------------------- window


def test_in_window_uses_fractions_of_the_schedule():
    assert [i for i in range(30) if in_window(i, 30, (0.0, 0.9))] == list(range(27))
    assert all(in_window(i, 7, (0.0, 1.0)) for i in range(7))
    assert [i for i in range(10) if in_window(i, 10, (0.5, 1.0))] == [5, 6, 7, 8, 9]
    assert [i for i in range(30) if in_window(i, 30, (0.1, 0.95))] == list(range(3, 29))
    assert not any(in_window(i, 20, (0.3, 0.3)) for i in range(20))


def test_in_window_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        in_window(0, 10, (0.8, 0.2))
    with pytest.raises(ValueError, match="window"):
        in_window(0, 10, (0.0, 1.5))
    with pytest.raises(ValueError, match="outside"):
        in_window(10, 10, (0.0, 1.0))
