"""Resolving --model to files: what is asked of the Hub, the cache lookup, and the offline errors.

No test reaches the network: online behaviour is checked by replacing huggingface_hub's two calls
(``HfApi.model_info`` and ``hf_hub_download``) and inspecting what vsrup asks them for.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import huggingface_hub
import pytest
from tiny_sd import COMMIT, REPO_ID, point_hf_at, seed_hf_cache, tiny_sd_x4_cache, tiny_sd_x4_folder  # noqa: F401

from vsrup.config import UpscaleConfig
from vsrup.errors import ModelError, UsageError
from vsrup.models import hub
from vsrup.models.registry import choose, repo_for
from vsrup.models.sd_x4 import FILES


def load_upscaler(config):
    choice = choose(config.model)
    return choice.load(choice.settle(config))


def download(model, revision, emit=lambda event: None, half=False):
    """What `vsrup download MODEL` does."""
    repo, choice = repo_for(model)
    return hub.download(repo, choice.module.FILES, revision, emit, half=half)

# The repo's file list as recalled (2023-2024 state); the test is about the choice, not the exact list.
REAL_REPO_FILES = [
    ".gitattributes",
    "README.md",
    "low_res_cat.png",
    "model_index.json",
    "x4-upscaler-ema.ckpt",
    "x4-upscaler-ema.safetensors",
    "low_res_scheduler/scheduler_config.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder/pytorch_model.bin",
    "text_encoder/pytorch_model.fp16.bin",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.bin",
    "vae/diffusion_pytorch_model.fp16.bin",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
]
NEEDED_CONFIGS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "low_res_scheduler/scheduler_config.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
]


@pytest.mark.parametrize("half,suffix", [(False, "safetensors"), (True, "fp16.safetensors")])
def test_plan_takes_the_diffusers_subfolders_and_one_weight_file_each(half, suffix):
    wanted, missing = hub.plan_files(REAL_REPO_FILES, FILES, half)
    assert missing == []
    assert wanted == NEEDED_CONFIGS + [
        f"unet/diffusion_pytorch_model.{suffix}",
        f"vae/diffusion_pytorch_model.{suffix}",
        f"text_encoder/model.{suffix}",
    ]
    assert not any(f.endswith((".ckpt", ".bin")) or f.startswith("x4-upscaler") for f in wanted)


def test_plan_falls_back_to_the_variant_that_exists_and_reports_what_is_missing():
    only_full = [f for f in REAL_REPO_FILES if ".fp16." not in f]
    assert hub.plan_files(only_full, FILES, half=True)[0][-1] == "text_encoder/model.safetensors"
    only_half = [f for f in REAL_REPO_FILES if not f.endswith("/model.safetensors")]
    assert hub.plan_files(only_half, FILES, half=False)[0][-1] == "text_encoder/model.fp16.safetensors"
    no_vae = [f for f in REAL_REPO_FILES if not f.startswith(("vae/", "tokenizer/"))]
    assert hub.plan_files(no_vae, FILES, half=False)[1] == ["vae/config.json", "tokenizer/", "vae/diffusion_pytorch_model.safetensors"]


def test_short_name_repo_id_and_folder_resolve(tiny_sd_x4_cache, tiny_sd_x4_folder):
    snapshot = tiny_sd_x4_cache / "hub" / "models--stabilityai--stable-diffusion-x4-upscaler" / "snapshots" / COMMIT
    assert choose("sd-x4").source == REPO_ID
    assert hub.resolve(choose("sd-x4").source, FILES, None, half=False) == snapshot
    assert hub.resolve(REPO_ID, FILES, "main", half=True) == snapshot  # fp32 weights serve a half job offline
    assert hub.resolve(str(tiny_sd_x4_folder), FILES, None, half=False) == tiny_sd_x4_folder


def test_offline_without_a_cached_copy_says_how_to_fix_it(monkeypatch, tmp_path):
    point_hf_at(monkeypatch, tmp_path / "empty-hf-home")
    with pytest.raises(ModelError) as caught:
        load_upscaler(UpscaleConfig(model="sd-x4", device="cpu"))
    message = str(caught.value)
    assert "\n" not in message
    assert f"model {REPO_ID} is not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert f"run `vsrup download {REPO_ID}` on a connected machine, or set HF_HOME to a cache that has it" in message


def test_download_offline_fails_clearly_and_rejects_non_repos(monkeypatch, tmp_path):
    point_hf_at(monkeypatch, tmp_path / "empty-hf-home")
    with pytest.raises(ModelError, match="not in the Hugging Face cache"):
        download("sd-x4", None)
    with pytest.raises(UsageError, match="no weights"):
        download("lanczos", None)
    with pytest.raises(UsageError):
        download("./some/folder", None)


def test_an_incomplete_cached_copy_names_the_missing_files(monkeypatch, tmp_path, tiny_sd_x4_folder):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_sd_x4_folder, partial)
    (partial / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    seed_hf_cache(tmp_path / "hf" / "hub", partial)
    point_hf_at(monkeypatch, tmp_path / "hf")
    with pytest.raises(ModelError, match=r"is incomplete for an SD x4 upscaler: missing vae/diffusion_pytorch_model\.safetensors"):
        hub.resolve(REPO_ID, FILES, None, half=False)


class FakeHub:
    """Stands in for the Hub: lists REAL_REPO_FILES and records each file vsrup asks to download."""

    def __init__(self, monkeypatch, snapshot, error=None):
        self.snapshot, self.error, self.requested = snapshot, error, []
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", self.model_info)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.hf_hub_download)

    def model_info(self, repo_id, revision=None, files_metadata=False):
        if self.error:
            raise self.error
        siblings = [SimpleNamespace(rfilename=f, size=2_000_000_000 if f.endswith("safetensors") else 1000) for f in REAL_REPO_FILES]
        return SimpleNamespace(sha=COMMIT, siblings=siblings)

    def hf_hub_download(self, repo_id, filename, revision=None, tqdm_class=None):
        self.requested.append((repo_id, filename, revision))
        assert tqdm_class is not None and tqdm_class(total=10).disable  # huggingface_hub's bars stay silent
        path = self.snapshot / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return str(path)


@pytest.mark.parametrize("half", [False, True])
def test_download_asks_only_for_the_planned_files(monkeypatch, tmp_path, half):
    point_hf_at(monkeypatch, tmp_path / "hf", offline=False)
    fake = FakeHub(monkeypatch, tmp_path / "snap")
    events = []
    path = download("sd-x4", "v1", events.append, half=half)
    assert path == tmp_path / "snap"
    assert fake.requested == [(REPO_ID, f, "v1") for f in hub.plan_files(REAL_REPO_FILES, FILES, half)[0]]
    fetched = [e.message for e in events if e.message.startswith("downloading")]
    assert len(fetched) == len(fake.requested)  # nothing was cached: one info event per file
    weights = "unet/diffusion_pytorch_model.fp16.safetensors" if half else "unet/diffusion_pytorch_model.safetensors"
    assert f"downloading {REPO_ID}/{weights} (2.00 GB)" in fetched


def test_unreachable_hub_falls_back_to_the_cache(monkeypatch, tiny_sd_x4_cache, tmp_path):
    class ConnectError(Exception):  # the name httpx (and huggingface_hub's httpx2) gives a failed connection
        pass

    point_hf_at(monkeypatch, tiny_sd_x4_cache, offline=False)
    fake = FakeHub(monkeypatch, tmp_path / "unused", error=ConnectError("[Errno -2] Name or service not known"))
    assert hub.resolve(REPO_ID, FILES, None, half=True).name == COMMIT
    assert fake.requested == []

    point_hf_at(monkeypatch, tmp_path / "empty", offline=False)
    with pytest.raises(ModelError, match=r"the Hub cannot be reached \(ConnectError\); run `vsrup download"):
        hub.resolve(REPO_ID, FILES, None, half=True)


def test_unknown_repo_is_a_model_error(monkeypatch, tmp_path):
    from huggingface_hub.errors import RepositoryNotFoundError

    point_hf_at(monkeypatch, tmp_path / "hf", offline=False)
    FakeHub(monkeypatch, tmp_path / "unused", error=RepositoryNotFoundError.__new__(RepositoryNotFoundError))
    with pytest.raises(ModelError, match="neither a folder here nor a repo on the Hugging Face Hub"):
        load_upscaler(UpscaleConfig(model="someone/no-such-model", device="cpu"))
