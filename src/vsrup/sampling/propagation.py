"""Training-free recurrent latent propagation (Upscale-A-Video, Zhou et al., CVPR 2024).

``propagate(x0, flow)`` mixes each frame's predicted clean latent with its neighbour's, warped along the
flow, where the flow is trustworthy: a backward pass (last frame to first) and then a forward pass
(first to last) over the backward pass's output. It is recurrent, so frame i receives frame j's
content with weight ~0.5^|i-j| along a consistent trajectory.

Upscale-A-Video calls it on x̂0 at chosen loop steps (its README uses late ones, e.g. 24,26,28 of
30) and then takes the scheduler step from the edited x̂0 with the model's noise estimate unchanged.

Validity uses Upscale-A-Video's **squared** forward-backward check, which is stricter than MGLD's
(flow.occlusion): at small motion a round-trip error above ~0.22 px fails here but passes MGLD's 0.5 px.
The two are kept apart on purpose. A target outside the frame is always invalid (flow.leaves_frame).
The latent warp is nearest-neighbour, as in Upscale-A-Video (bilinear would blur the latent a little
more at every recurrent hop); the flow warp inside the check is bilinear.
"""

from __future__ import annotations

import torch

from vsrup.flow import Flow, leaves_frame, warp

VALID_ALPHA = 0.001  # relative tolerance on |f_fw|² + |W(f_bw, f_fw)|² (Upscale-A-Video alpha1)
VALID_BETA = 0.05  # absolute tolerance in px² (Upscale-A-Video alpha2)
FUSE = 0.5  # weight of the warped neighbour where valid (Upscale-A-Video fuse_scale)

# Notation (Upscale-A-Video, Propagation(learnable=False), mode "fuse"):
#   f_fw           flow from the frame being updated to the neighbour it reads from, on its own grid
#   f_bw           flow from that neighbour back, on the neighbour's grid
#   valid(p)   <=> |f_fw + W(f_bw, f_fw)|² < 0.001 (|f_fw|² + |W(f_bw, f_fw)|²) + 0.05
#   backward pass, i = T-2 .. 0 (b_{T-1} = x_{T-1}):
#       b_i = valid · (0.5 W(b_{i+1}, f_{i→i+1}) + 0.5 x_i) + (1 - valid) · x_i
#   forward pass, i = 1 .. T-1 (y_0 = b_0):
#       y_i = valid · (0.5 W(y_{i-1}, f_{i→i-1}) + 0.5 b_i) + (1 - valid) · b_i
#   output y.


def valid_mask(f_fw: torch.Tensor, f_bw: torch.Tensor) -> torch.Tensor:
    """(N, 2, h, w) flows -> (N, 1, h, w) float, 1 where Upscale-A-Video's squared check passes."""
    back = warp(f_bw, f_fw)  # (N, 2, h, w) the neighbour's flow read where each pixel lands
    gap2 = (f_fw + back).square().sum(dim=1, keepdim=True)  # (N, 1, h, w)
    magnitude2 = f_fw.square().sum(dim=1, keepdim=True) + back.square().sum(dim=1, keepdim=True)  # (N, 1, h, w)
    tolerance = VALID_ALPHA * magnitude2 + VALID_BETA  # (N, 1, h, w)
    return ((gap2 < tolerance) & ~leaves_frame(f_fw)).float()  # (N, 1, h, w)


def _fuse(own: torch.Tensor, neighbour: torch.Tensor, f_fw: torch.Tensor, f_bw: torch.Tensor) -> torch.Tensor:
    """One recurrent hop on one frame: own (1, C, h, w), neighbour (1, C, h, w), flows (1, 2, h, w)."""
    valid = valid_mask(f_fw, f_bw)  # (1, 1, h, w)
    warped = warp(neighbour, f_fw, mode="nearest")  # (1, C, h, w) neighbour on own's grid
    return valid * (FUSE * warped + (1.0 - FUSE) * own) + (1.0 - valid) * own  # (1, C, h, w)


def propagate(x0: torch.Tensor, flow: Flow) -> torch.Tensor:
    """Recurrent propagation of ``x0`` (T, C, h, w) along ``flow``; returns a new (T, C, h, w) tensor.

    Computed in float32, returned in x0's dtype and device. T = 1 returns x0 unchanged.
    """
    if x0.shape[0] != flow.num_frames:
        raise ValueError(f"{x0.shape[0]} latents but the flow covers {flow.num_frames} frames")
    t = x0.shape[0]
    if t < 2:
        return x0
    flow = flow.to(x0.device)
    x = x0.float()  # (T, C, h, w)

    backward = [x[t - 1 : t]]  # b_{T-1}, ..., b_0, each (1, C, h, w)
    for i in range(t - 2, -1, -1):
        f_fw = flow.i_to_next[i : i + 1]  # (1, 2, h, w) f_{i→i+1} on frame i
        f_bw = flow.next_to_i[i : i + 1]  # (1, 2, h, w) f_{i+1→i} on frame i+1
        backward.append(_fuse(x[i : i + 1], backward[-1], f_fw, f_bw))
    backward.reverse()  # b_0, ..., b_{T-1}

    forward = [backward[0]]  # y_0, ..., y_{T-1}
    for i in range(1, t):
        f_fw = flow.next_to_i[i - 1 : i]  # (1, 2, h, w) f_{i→i-1} on frame i
        f_bw = flow.i_to_next[i - 1 : i]  # (1, 2, h, w) f_{i-1→i} on frame i-1
        forward.append(_fuse(backward[i], forward[-1], f_fw, f_bw))
    return torch.cat(forward).to(x0.dtype)  # (T, C, h, w)
