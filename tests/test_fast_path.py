"""The fast path: channels-last networks and ``--compile`` give the frames of the plain networks.

Both change only which kernels run, so the frames may move by float rounding and nothing more. The
reference is the same upscaler with its networks as diffusers loads them (contiguous layout, eager). The
compile test compiles a tiny UNet and VAE decoder with inductor on the CPU (~1 min on 2 cores).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_sd import REPO_ID, one_torch_thread, run_window, tiny_sd_x4_cache  # noqa: F401  (fixtures)

import vsrup.models.loading as loading
import vsrup.models.sd_x4 as sd
from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.errors import ModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INDICES = [0, 1, 2]
SAMPLE = dict(steps=2, guidance=3.0, motion_guidance=0.5, color_fix="wavelet", tile=8, tile_overlap=2, seed=3)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).random((len(INDICES), 12, 16, 3), dtype=np.float32)  # (T, h, w, 3)


class Upscaler:
    """The x4 model with SAMPLE's options, run on a window as the pipeline runs it."""

    def __init__(self, emit=lambda event: None, **sample):
        self.config = UpscaleConfig(device="cpu", sample=SampleConfig(**{**SAMPLE, **sample}))
        self.model = sd.Model(REPO_ID, self.config, emit)
        self.unet, self.vae = self.model.unet, self.model.vae

    def upscale(self, frames, indices):
        return run_window(self.model, self.config, frames, indices)  # (T, 4h, 4w, 3)


upscaler = Upscaler


def plain_frames(monkeypatch, frames, **sample) -> np.ndarray:
    """The reference: the same job with the networks as loaded (contiguous, eager)."""
    with monkeypatch.context() as patch:
        patch.setattr(loading, "to_device", lambda network, device: network.to(device).eval())
        model = upscaler(**sample)
        assert model.unet.conv_in.weight.is_contiguous()
        return model.upscale(frames, INDICES)  # (T, 4h, 4w, 3)


def test_networks_run_channels_last_and_give_the_same_frames(tiny_sd_x4_cache, monkeypatch, frames):
    model = upscaler()
    for weight in (model.unet.conv_in.weight, model.vae.decoder.conv_in.weight):
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    fast = model.upscale(frames, INDICES)  # (T, 4h, 4w, 3)
    plain = plain_frames(monkeypatch, frames)
    assert np.abs(fast - plain).max() < 1e-4  # rounding only: a 1/255 level is 4e-3
    assert np.abs(fast - upscaler(seed=4).upscale(frames, INDICES)).max() > 0.1  # the comparison can fail


def test_attention_runs_through_pytorch_sdpa(tiny_sd_x4_cache):
    """diffusers' AttnProcessor2_0 is the processor that calls F.scaled_dot_product_attention."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    model = upscaler()
    processors = [*model.unet.attn_processors.values(), *model.vae.attn_processors.values()]
    assert processors and all(type(p) is AttnProcessor2_0 for p in processors)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.inductor)])
def test_compile_gives_the_same_frames(tiny_sd_x4_cache, monkeypatch, frames, backend):
    """--compile traces the networks (dynamo, AOT autograd) and gives the eager frames. The default run traces with
    the aot_eager backend (seconds); inductor's C++ code generation, --compile's own backend, takes 75 s on a cold
    cache on 2 cores and runs with `pytest -m inductor`."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend=backend, **kw))
    one_shape = dict(tile=0, guidance=1.0)  # untiled, no CFG: each network sees one input shape, so compiles once
    torch._dynamo.reset()
    events = []
    model = upscaler(emit=events.append, **one_shape, compile=True)
    assert any("--compile" in e.message for e in events if e.kind == "info")
    compiled = model.upscale(frames, INDICES)  # (T, 4h, 4w, 3)
    assert np.abs(compiled - plain_frames(monkeypatch, frames, **one_shape)).max() < 1e-4
    torch._dynamo.reset()


def test_a_failed_compile_is_one_line_saying_how_to_go_on(tiny_sd_x4_cache, monkeypatch, frames):
    from torch._dynamo.exc import BackendCompilerFailed

    def broken_backend(graph, example_inputs):  # what inductor raises without a C++ compiler
        raise BackendCompilerFailed(broken_backend, RuntimeError("C++ compiler not found: g++\nmore detail"), None)

    torch._dynamo.reset()
    model = upscaler(compile=True)
    for net in (model.unet, model.vae.decoder):
        net.compile(backend=broken_backend)  # replaces the inductor compile, as a missing compiler would fail it
    with pytest.raises(ModelError) as caught:
        model.upscale(frames, INDICES)
    message = str(caught.value)
    assert message == "--compile failed: C++ compiler not found: g++; run without --compile"
    assert "\n" not in message
    torch._dynamo.reset()
