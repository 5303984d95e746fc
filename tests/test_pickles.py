"""Pickle-only weights: read with torch's weights-only unpickler, never run, converted once to safetensors."""

from __future__ import annotations

import pickle
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from tiny_mgld import lightning_save
from vsrup.errors import ModelError
from vsrup.models import pickles
from vsrup.models.pickles import Inert, converted, read_tensors



@pytest.fixture
def cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-home" / "vsrup" / "converted"


def weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, generator=g)
    return {"model.diffusion_model.conv.weight": base, "model.diffusion_model.conv.bias": torch.randn(6, generator=g),
            "first_stage_model.tied": base, "first_stage_model.view": base[:, 1]}  # a tied weight and a view share storage


def lightning_checkpoint(path, legacy: bool = False) -> None:
    lightning_save(weights(), path, legacy=legacy)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_lightning_checkpoint_gives_its_state_dict_without_lightning(tmp_path, legacy):
    path = tmp_path / "model.ckpt"
    lightning_checkpoint(path, legacy)
    assert "pytorch_lightning" not in sys.modules  # nothing of Lightning is importable here, and nothing imports it
    tensors = read_tensors(path)
    assert set(tensors) == set(weights())
    assert all(torch.equal(tensors[k], v) for k, v in weights().items())
    assert "pytorch_lightning" not in sys.modules


def test_a_plain_state_dict_bin_is_read_as_it_is(tmp_path):
    path = tmp_path / "diffusion_pytorch_model.bin"
    torch.save(weights(), path)
    assert set(read_tensors(path)) == set(weights())


def test_conversion_happens_once_and_is_atomic(tmp_path, cache, monkeypatch):
    path = tmp_path / "model.ckpt"
    lightning_checkpoint(path)
    events = []
    target = converted(path, events.append)
    assert target.parent == cache and target.name == f"{pickles.sha256(path)}.safetensors"
    saved = load_file(target)
    assert set(saved) == set(weights()) and all(torch.equal(saved[k], v) for k, v in weights().items())
    assert [e.kind for e in events] == ["info"] and "converted model.ckpt" in events[0].message
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial-")]

    def never(*args, **kwargs):
        raise AssertionError("the pickle was read again")

    monkeypatch.setattr(torch, "load", never)
    assert converted(path) == target  # the second run reads the safetensors copy only


def test_a_failed_conversion_leaves_nothing(tmp_path, cache, monkeypatch):
    path = tmp_path / "model.ckpt"
    lightning_checkpoint(path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with pytest.raises(OSError):
        converted(path)
    assert not list(cache.iterdir())


class Payload:
    """Unpickling this calls ``open(path, "w")``: what a malicious weights file does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("hidden", ["top", "state_dict", "callbacks"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, cache, hidden):
    trap = tmp_path / "it-ran"
    content = {"state_dict": weights()}
    if hidden == "top":
        content = Payload(trap)
    elif hidden == "state_dict":
        content["state_dict"]["evil"] = Payload(trap)
    else:
        content["callbacks"] = {"x": Payload(trap)}
    path = tmp_path / "model.ckpt"
    with open(path, "wb") as f:
        pickle.dump(content, f)
    torch_saved = tmp_path / "model-torch.ckpt"
    torch.save(content, torch_saved)
    with pytest.raises(ModelError, match=r"^refused .*the pickle needs (io|builtins)\.open, which is neither a tensor nor a plain value"):
        converted(torch_saved)
    with pytest.raises(ModelError, match=r"^refused .*model\.ckpt: the pickle cannot be read as weights \(Unsupported operand"):
        converted(path)  # pickle's own protocol 4 framing, which the weights-only unpickler does not read
    assert not trap.exists()
    assert not cache.exists() or not list(cache.iterdir())


def test_an_unknown_framework_class_is_refused_by_name(tmp_path):
    module = types.ModuleType("someframework")

    class Config:
        pass

    Config.__module__, Config.__qualname__ = "someframework", "Config"
    module.Config = Config
    sys.modules["someframework"] = module
    try:
        torch.save({"state_dict": weights(), "hyper_parameters": Config()}, tmp_path / "model.ckpt")
    finally:
        del sys.modules["someframework"]
    with pytest.raises(ModelError, match=r"needs someframework\.Config"):
        read_tensors(tmp_path / "model.ckpt")


def test_files_without_weights_are_refused(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "empty.ckpt")
    (tmp_path / "garbage.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(ModelError, match="holds no named tensors"):
        read_tensors(tmp_path / "empty.ckpt")
    with pytest.raises(ModelError, match="^refused .*garbage.bin"):
        read_tensors(tmp_path / "garbage.bin")


def test_inert_does_nothing_but_hold_state():
    placeholder = Inert.__new__(Inert)
    placeholder.__setstate__({"a": 1})
    assert placeholder.state == {"a": 1} and [n for n in vars(Inert) if not n.startswith("__")] == []
