"""sampling/propagation.py: Upscale-A-Video's recurrent propagation, its squared validity check, identities."""

from __future__ import annotations

import torch

from test_guidance import translation_clip
from vsrup.flow import Flow, occlusion
from vsrup.sampling.guidance import warping_error
from vsrup.sampling.propagation import propagate, valid_mask


def still_flow(t: int, h: int, w: int) -> Flow:
    return Flow(*(torch.zeros(t - 1, c, h, w) for c in (2, 2, 1, 1)))


def test_recurrence_weights_on_a_still_clip():
    # Zero flow: every pixel valid. Backward pass b1 = x1, b0 = (x0 + x1)/2; forward y0 = b0,
    # y1 = (y0 + b1)/2 = x0/4 + 3 x1/4. Order or pass mistakes change these weights.
    x = torch.stack([torch.full((4, 6, 8), 1.0), torch.full((4, 6, 8), 5.0)])  # (2, 4, 6, 8)
    out = propagate(x, still_flow(2, 6, 8))
    assert torch.allclose(out[0], torch.full((4, 6, 8), 3.0))
    assert torch.allclose(out[1], torch.full((4, 6, 8), 4.0))
    x3 = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.0, 8.0)])  # (3, 1, 2, 2)
    out3 = propagate(x3, still_flow(3, 2, 2))
    # b = (2, 4, 8); y0 = 2, y1 = (2 + 4)/2 = 3, y2 = (3 + 8)/2 = 5.5
    assert torch.allclose(out3.flatten(1)[:, 0], torch.tensor([2.0, 3.0, 5.5]))


def test_noisy_translating_clip_gets_more_consistent():
    content, noise, flow = translation_clip(40, 48, [(2, 1), (2, 1), (-1, 2), (0, -3), (1, 1), (2, 0)])
    g = torch.Generator().manual_seed(1)
    noisy = content + 0.5 * torch.randn(content.shape, generator=g)  # independent noise per frame
    before = warping_error(noisy, flow)
    after = warping_error(propagate(noisy, flow), flow)
    assert after < 0.6 * before
    # and it moves the clip toward the clean content, not just anywhere consistent
    assert (propagate(noisy, flow) - content).square().mean() < 0.7 * (noisy - content).square().mean()


def test_invalid_pixels_are_untouched():
    t, h, w = 3, 16, 20
    torch.manual_seed(0)
    x = torch.randn(t, 4, h, w)
    i_to_next = torch.zeros(t - 1, 2, h, w)
    next_to_i = torch.zeros(t - 1, 2, h, w)
    # frame 1 region: its flow to frame 2 and to frame 0 point 3 px right, but nothing comes back
    i_to_next[1, 0, 4:10, 5:12] = 3.0
    next_to_i[0, 0, 4:10, 5:12] = 3.0
    flow = Flow(i_to_next, next_to_i, occlusion(i_to_next, next_to_i), occlusion(next_to_i, i_to_next))
    out = propagate(x, flow)
    assert torch.equal(out[1, :, 4:10, 5:12], x[1, :, 4:10, 5:12])
    assert (out[1] != x[1]).float().mean() > 0.5  # the rest of frame 1 mixes


def test_valid_mask_is_the_squared_uav_check_not_mgld():
    zero = torch.zeros(1, 2, 8, 8)
    back = torch.zeros(1, 2, 8, 8)
    back[:, 0, :, :4] = 0.2  # 0.04 < 0.05 + 0.001 * 0.04: valid
    back[:, 0, :, 4:] = 0.3  # 0.09 > 0.05 + 0.001 * 0.09: invalid under UAV, yet visible under MGLD's 0.5 px
    valid = valid_mask(zero, back)[0, 0]
    assert valid[:, :4].all() and not valid[:, 4:].any()
    assert occlusion(zero, back).sum() == 0


def test_targets_outside_the_frame_are_invalid():
    flow = torch.zeros(1, 2, 6, 10)
    flow[:, 0] = 2.0
    valid = valid_mask(flow, -flow)[0, 0]  # consistent flows, but the right two columns leave
    assert not valid[:, -2:].any() and valid[:, :-2].all()


def test_single_frame_identity_and_dtype():
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(propagate(x, still_flow(1, 8, 8)), x)
    y = torch.randn(3, 4, 8, 8)
    out = propagate(y.half(), still_flow(3, 8, 8))
    assert out.dtype == torch.float16 and (out.float() - propagate(y, still_flow(3, 8, 8))).abs().max() < 1e-2
