"""The families' configs, device/dtype choice, and loading the x4 family through the registry."""

from __future__ import annotations

import gc
import shutil
import weakref

import pytest
import torch
from tiny_sd import REPO_ID, one_torch_thread, run_window, tiny_sd_x4_cache, tiny_sd_x4_folder  # noqa: F401  (fixtures)

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.device import resolve_device, resolve_dtype, vae_dtype
from vsrup.errors import ModelError, UsageError
from vsrup.models.registry import choose


def load_upscaler(config, emit=lambda event: None):
    """What the pipeline does: resolve --model once, settle the options, load."""
    choice = choose(config.model)
    return choice.load(choice.settle(config), emit)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_full_size_configs_give_the_published_sizes():
    from vsrup.models.configs import build_random_components

    parts = build_random_components("meta")  # nothing allocated
    assert round(params(parts["unet"]), 1) == 473.4  # perf.md §3
    assert round(params(parts["vae"]), 1) == 55.3
    assert round(params(parts["vae"].decoder) + params(parts["vae"].post_quant_conv), 1) == 33.0
    assert round(params(parts["text_encoder"]), 1) == 340.4  # 1.36 GB in fp32 (seeds.md §4)
    assert parts["unet"].device.type == "meta"
    assert parts["scheduler"].config.prediction_type == "v_prediction"
    assert parts["scheduler"].config.steps_offset == 1
    assert parts["low_res_scheduler"].config.prediction_type == "epsilon"


def test_full_size_stablevsr_configs_give_the_published_sizes():
    from vsrup.models.configs import build_random_components

    parts = build_random_components("meta", family="stablevsr")
    assert round(params(parts["controlnet"]), 1) == 207.7  # controlnet/diffusion_pytorch_model.safetensors: 831 MB fp32
    assert round(params(parts["unet"]), 1) == 472.4  # the x4 UNet less its 1000 x 1024 class embedding: 1.89 GB
    assert parts["unet"].class_embedding is None and parts["controlnet"].class_embedding is None
    scheduler = parts["scheduler"]
    assert type(scheduler).__name__ == "DDPMScheduler" and scheduler.config.prediction_type == "v_prediction"
    scheduler.set_timesteps(50)
    assert scheduler.timesteps[0] == 981 and scheduler.timesteps[-1] == 1  # leading spacing, steps_offset 1 (nextmodels.md §1.4)


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


@pytest.mark.parametrize("model", ["sd-x4", "stabilityai/stable-diffusion-x4-upscaler", "folder"])
def test_registry_loads_short_name_repo_id_and_local_folder(tiny_sd_x4_cache, tiny_sd_x4_folder, model):
    from vsrup.models import sd_x4

    events = []
    model = str(tiny_sd_x4_folder) if model == "folder" else model
    assert choose(model).family == "sd-x4"
    up = load_upscaler(UpscaleConfig(model=model, device="cpu"), events.append)
    assert isinstance(up, sd_x4.Model) and up.info.scale == 4 and up.info.kind == "clip"
    assert any(e.kind == "info" and model in e.message for e in events)


def test_registry_keeps_lanczos_and_rejects_unknown_names():
    from vsrup.models import lanczos

    assert isinstance(load_upscaler(UpscaleConfig(model="lanczos")), lanczos.Model)
    for name in ("sd-x8", "./no/such/folder", "a/b/c"):
        with pytest.raises(UsageError, match="unknown model"):
            load_upscaler(UpscaleConfig(model=name))


def test_text_encoder_runs_once_and_is_freed(tiny_sd_x4_cache, monkeypatch):
    from transformers import CLIPTextModel

    from vsrup.models import sd_x4

    made, calls = [], []
    original = CLIPTextModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        made.append(weakref.ref(model))
        model.register_forward_hook(lambda *_: calls.append(1))
        return model

    monkeypatch.setattr(CLIPTextModel, "from_pretrained", classmethod(spy))
    config = UpscaleConfig(device="cpu", sample=SampleConfig(guidance=5.0, steps=2))
    up = sd_x4.Model(REPO_ID, config)
    run_window(up, config, torch.rand(2, 8, 8, 3).numpy(), [0, 1])
    gc.collect()
    assert len(made) == 1 and made[0]() is None  # loaded once, no reference left
    assert len(calls) == 2  # prompt and negative prompt, once per job, not per clip


def test_long_prompt_warns(tiny_sd_x4_cache):
    events = []
    load_upscaler(UpscaleConfig(device="cpu", sample=SampleConfig(prompt="the best " * 60)), events.append)
    assert [e.message for e in events if e.kind == "warning"] == ["the prompt is longer than 77 tokens; the rest is ignored"]


def test_corrupt_weights_are_a_model_error(tiny_sd_x4_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_x4_folder, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot load") as caught:
        load_upscaler(UpscaleConfig(model=str(folder), device="cpu"))
    assert "\n" not in str(caught.value)


def test_fp16_variant_is_chosen_for_half_precision(tiny_sd_x4_folder, tmp_path):
    from vsrup.models import hub

    def weights_variant(folder, subfolder, half):
        return hub.weights_variant(folder, subfolder, "diffusion_pytorch_model", half)

    folder = tmp_path / "model"
    shutil.copytree(tiny_sd_x4_folder, folder)
    assert weights_variant(folder, "unet", half=True) is None  # only the full-precision file exists
    shutil.copy(folder / "unet/diffusion_pytorch_model.safetensors", folder / "unet/diffusion_pytorch_model.fp16.safetensors")
    assert weights_variant(folder, "unet", half=True) == "fp16"
    assert weights_variant(folder, "unet", half=False) is None
