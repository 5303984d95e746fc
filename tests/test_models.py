"""The x4 family's configs, device/dtype choice, loading through the registry, and the CPU estimate."""

from __future__ import annotations

import gc
import shutil
import weakref

import pytest
import torch
from tiny_sd import one_torch_thread, tiny_sd_x4_cache, tiny_sd_x4_folder  # noqa: F401  (fixtures)

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.device import job_seconds, resolve_device, resolve_dtype, vae_dtype
from vsrup.errors import ModelError, UsageError
from vsrup.models import load_upscaler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_full_size_configs_give_the_published_sizes():
    from vsrup.models.sd_x4 import build_random_components

    parts = build_random_components("meta")  # nothing allocated
    assert round(params(parts["unet"]), 1) == 473.4  # perf.md §3
    assert round(params(parts["vae"]), 1) == 55.3
    assert round(params(parts["vae"].decoder) + params(parts["vae"].post_quant_conv), 1) == 33.0
    assert round(params(parts["text_encoder"]), 1) == 340.4  # 1.36 GB in fp32 (seeds.md §4)
    assert parts["unet"].device.type == "meta"
    assert parts["scheduler"].config.prediction_type == "v_prediction"
    assert parts["scheduler"].config.steps_offset == 1
    assert parts["low_res_scheduler"].config.prediction_type == "epsilon"


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        if not torch.backends.mps.is_available():
            assert resolve_device("auto") == torch.device("cpu")
        for name in ("cuda", "cuda:0", "cuda:3"):
            with pytest.raises(UsageError, match="no CUDA device"):
                resolve_device(name)
    for name in ("gpu", "tpu", "cuda:x"):
        with pytest.raises(UsageError):
            resolve_device(name)


def test_dtype_resolution(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", torch.device("mps")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", cuda) == torch.float16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(UsageError):
        resolve_dtype("fp8", cpu)
    # The decoder: fp16 upcast to fp32 (it overflows in fp16), bf16 kept, fp32 kept.
    assert [vae_dtype(d) for d in (torch.float16, torch.bfloat16, torch.float32)] == [torch.float32, torch.bfloat16, torch.float32]


def test_job_seconds_arithmetic():
    # 1e-6 s per latent px per UNet eval, 10 frames of 100 x 100, 30 steps with CFG: 60 evals + the decode.
    assert job_seconds(1e-6, 10, 100, 100, 30, True) == pytest.approx(0.1 * (60 + 155 / 69.3))
    assert job_seconds(1e-6, 10, 100, 100, 30, False) == pytest.approx(0.1 * (30 + 155 / 69.3))


@pytest.mark.parametrize("model", ["sd-x4", "stabilityai/stable-diffusion-x4-upscaler", "folder"])
def test_registry_loads_short_name_repo_id_and_local_folder(tiny_sd_x4_cache, tiny_sd_x4_folder, model):
    from vsrup.models.sd_x4 import DiffusionUpscaler

    events = []
    model = str(tiny_sd_x4_folder) if model == "folder" else model
    up = load_upscaler(UpscaleConfig(model=model, device="cpu"), events.append)
    assert isinstance(up, DiffusionUpscaler) and up.scale == 4
    assert any(e.kind == "info" and model in e.message for e in events)


def test_registry_keeps_lanczos_and_rejects_unknown_names():
    from vsrup.models.lanczos import LanczosUpscaler

    assert isinstance(load_upscaler(UpscaleConfig(model="lanczos")), LanczosUpscaler)
    for name in ("sd-x8", "./no/such/folder", "a/b/c"):
        with pytest.raises(UsageError, match="unknown model"):
            load_upscaler(UpscaleConfig(model=name))


def test_text_encoder_runs_once_and_is_freed(tiny_sd_x4_cache, monkeypatch):
    from transformers import CLIPTextModel

    from vsrup.models.sd_x4 import DiffusionUpscaler

    made, calls = [], []
    original = CLIPTextModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        made.append(weakref.ref(model))
        model.register_forward_hook(lambda *_: calls.append(1))
        return model

    monkeypatch.setattr(CLIPTextModel, "from_pretrained", classmethod(spy))
    up = DiffusionUpscaler(UpscaleConfig(device="cpu", sample=SampleConfig(guidance=5.0, steps=2)))
    up.upscale(torch.rand(2, 8, 8, 3).numpy(), [0, 1])
    gc.collect()
    assert len(made) == 1 and made[0]() is None  # loaded once, no reference left
    assert len(calls) == 2  # prompt and negative prompt, once per job, not per clip


def test_long_prompt_warns(tiny_sd_x4_cache):
    events = []
    load_upscaler(UpscaleConfig(device="cpu", sample=SampleConfig(prompt="the best " * 60)), events.append)
    assert [e.message for e in events if e.kind == "warning"] == ["the prompt is longer than 77 tokens; the rest is ignored"]


def test_cpu_estimate_comes_from_the_first_real_step_once(tiny_sd_x4_cache):
    events = []
    up = load_upscaler(UpscaleConfig(device="cpu", sample=SampleConfig(steps=3, guidance=5.0, tile=0)), events.append)
    up.expect(100, 8, 12)
    frames = torch.rand(2, 8, 12, 3).numpy()
    up.upscale(frames, [0, 1])
    up.upscale(frames, [2, 3])
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and "running on the CPU: about" in warnings[0].message and "100 frame(s) of 12x8" in warnings[0].message
    estimate = warnings[0].data["estimate_seconds"]
    assert estimate > 0


def test_job_estimate_is_linear_in_frames_and_pixels_and_counts_cfg():
    from vsrup.device import VAE_DECODE_IN_UNET_EVALS, job_seconds

    one = job_seconds(1e-6, 10, 32, 48, steps=20, guided=False)
    assert one == pytest.approx(1e-6 * 10 * 32 * 48 * (20 + VAE_DECODE_IN_UNET_EVALS))
    assert job_seconds(1e-6, 20, 32, 48, 20, False) == pytest.approx(2 * one)
    assert job_seconds(1e-6, 10, 64, 48, 20, False) == pytest.approx(2 * one)
    assert job_seconds(1e-6, 10, 32, 48, 20, True) == pytest.approx(1e-6 * 10 * 32 * 48 * (40 + VAE_DECODE_IN_UNET_EVALS))


def test_corrupt_weights_are_a_model_error(tiny_sd_x4_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_x4_folder, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot load") as caught:
        load_upscaler(UpscaleConfig(model=str(folder), device="cpu"))
    assert "\n" not in str(caught.value)


def test_fp16_variant_is_chosen_for_half_precision(tiny_sd_x4_folder, tmp_path):
    from vsrup.models.sd_x4 import weights_variant

    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_x4_folder, folder)
    assert weights_variant(folder, "unet", half=True) is None  # only the full-precision file exists
    shutil.copy(folder / "unet/diffusion_pytorch_model.safetensors", folder / "unet/diffusion_pytorch_model.fp16.safetensors")
    assert weights_variant(folder, "unet", half=True) == "fp16"
    assert weights_variant(folder, "unet", half=False) is None
