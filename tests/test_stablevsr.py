"""StableVSR against a straight implementation of its frame-wise bidirectional sampling, on tiny random networks.

The oracle below is written from the description of the method (reference/nextmodels.md §1.4, the
issue): untiled, the whole sequence in one window, frames visited in turn, forward on even steps and
backward on odd ones; the first frame of a pass runs the UNet alone, every other frame gets the
previous visited frame's x0 estimate at the same timestep, decoded by the VAE (not clamped), warped
onto it by the flow between them, as the ControlNet's control image. Both sides get the same known,
non-zero flow: a constant motion of M low-resolution pixels per frame.
"""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_sd import one_torch_thread  # noqa: F401  (fixture)
from tiny_stablevsr import MARKER, REPO_ID, tiny_stablevsr_cache, tiny_stablevsr_folder  # noqa: F401  (fixtures)

import media_factory as mf
from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.errors import ModelError, UsageError
from vsrup.flow import Flow
from vsrup.memory import MemoryPlan
from vsrup.models import Window
from vsrup.models.registry import choose
from vsrup.pipeline import in_span, upscale_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 12, 16  # low-resolution frame; the output is 48 x 64
M = (1.5, -0.75)  # (dx, dy): content moves this far per frame, in low-resolution pixels
INDICES = (3, 4, 5, 6, 7)  # seeds follow input positions
SEED, STEPS = 11, 3  # 3 steps: forward, backward, forward
UNTILED = MemoryPlan((H, W), tile=0, overlap=0, batch=1, vae_tile=0, vae_overlap=0)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).random((len(INDICES), H, W, 3), dtype=np.float32)  # (T, h, w, 3)


def known_flow(t_frames: int) -> Flow:
    """Frame k+1 is frame k moved by M: f_{k->k+1} = M and f_{k+1->k} = -M everywhere, nothing occluded."""
    motion = torch.tensor(M).view(1, 2, 1, 1).expand(t_frames - 1, 2, H, W)  # (T-1, 2, h, w)
    zeros = torch.zeros(t_frames - 1, 1, H, W)
    return Flow(i_to_next=motion.clone(), next_to_i=-motion, occ_i=zeros, occ_next=zeros.clone())


def load(folder, **sample):
    choice = choose(str(folder))
    config = choice.settle(UpscaleConfig(model=str(folder), device="cpu", sample=SampleConfig(seed=SEED, steps=STEPS, **sample)))
    return choice.load(config), config


@pytest.fixture(scope="module")
def model(tiny_stablevsr_folder):
    return load(tiny_stablevsr_folder)[0]


# --- the oracle ---------------------------------------------------------------------------------


def oracle_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """out(p) = image(p + flow(p)), bilinear, edge pixels repeated outside, pixel centres at integers."""
    _, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    x = (xs + flow[:, 0]) / (w - 1) * 2 - 1  # (1, h, w) in grid_sample's [-1, 1], -1 and 1 at the edge pixels' centres
    y = (ys + flow[:, 1]) / (h - 1) * 2 - 1
    return F.grid_sample(image, torch.stack([x, y], dim=-1), mode="bilinear", padding_mode="border", align_corners=True)


def oracle(folder, frames: np.ndarray, *, reverse: bool = True, warp_control: bool = True) -> np.ndarray:
    """The method, straight: (T, h, w, 3) in [0, 1] -> (T, 4h, 4w, 3) in [0, 1]."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    controlnet = ControlNetModel.from_pretrained(folder, subfolder="controlnet").eval()
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")  # the DDIM file, read as DDPM
    scale = vae.config.scaling_factor
    t_frames = frames.shape[0]
    with torch.no_grad():
        ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
        empty = text_encoder(ids)[0]  # (1, 77, D)
        lr = torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1  # (T, 3, h, w)
        gens = [torch.Generator().manual_seed(SEED + i) for i in INDICES]
        z = [torch.randn(1, 4, H, W, generator=g) for g in gens]
        scheduler.set_timesteps(STEPS)
        order = list(range(t_frames))
        for t in scheduler.timesteps:
            before = None
            for j in order:
                x = torch.cat([z[j], lr[j : j + 1]], dim=1)  # (1, 7, h, w)
                if before is None:
                    v = unet(x, t, encoder_hidden_states=empty).sample
                else:
                    p, x0 = before
                    hr = vae.decode(x0 / scale).sample  # (1, 3, 4h, 4w)
                    to_p = torch.tensor(M if p == j + 1 else (-M[0], -M[1])).view(1, 2, 1, 1) * 4  # HR flow from j to p
                    control = oracle_warp(hr, to_p.expand(1, 2, 4 * H, 4 * W)) if warp_control else hr
                    down, mid = controlnet(x, t, encoder_hidden_states=empty, controlnet_cond=control, conditioning_scale=1.0, return_dict=False)
                    v = unet(x, t, encoder_hidden_states=empty, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
                out = scheduler.step(v, t, z[j], generator=gens[j])
                z[j], before = out.prev_sample, (j, out.pred_original_sample)
            if reverse:
                order = order[::-1]
        images = torch.cat([vae.decode(zj / scale).sample for zj in z])  # (T, 3, 4h, 4w)
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(np.round(a * 255) - np.round(b * 255)).max())


def ours(model, frames, plan=UNTILED) -> np.ndarray:
    out = model.sample(Window(frames, INDICES, known_flow(len(INDICES))), plan, lambda fraction: None)  # (T, 4h, 4w, 3)
    return out.clamp(0, 1).numpy()


# --- the tests ----------------------------------------------------------------------------------


def test_equals_the_straight_bidirectional_sampler(tiny_stablevsr_folder, model, frames):
    mine = ours(model, frames)
    reference = oracle(tiny_stablevsr_folder, frames)
    assert mine.shape == reference.shape == (5, 4 * H, 4 * W, 3)
    assert levels(mine, reference) <= 1
    assert np.abs(mine - reference).max() < 1e-4
    # Negative controls: the comparison fails when the order is not reversed, or the control is not warped.
    assert levels(mine, oracle(tiny_stablevsr_folder, frames, reverse=False)) > 3
    assert levels(mine, oracle(tiny_stablevsr_folder, frames, warp_control=False)) > 3


def test_one_covering_tile_is_exactly_untiled_and_small_tiles_stay_close(model, frames):
    untiled = ours(model, frames)
    covering = ours(model, frames, MemoryPlan((H, W), tile=16, overlap=4, batch=4, vae_tile=16, vae_overlap=4))
    assert np.array_equal(untiled, covering)
    small = ours(model, frames, MemoryPlan((H, W), tile=8, overlap=4, batch=3, vae_tile=8, vae_overlap=2))
    assert 0 < np.abs(small - untiled).mean() < 0.1


def test_a_frame_does_not_depend_on_its_window_position_seed(model, frames):
    """Frame i's noise comes from seed + i: the same frames under other indices give other results."""
    shifted = model.sample(Window(frames, tuple(i + 1 for i in INDICES), known_flow(5)), UNTILED, lambda f: None)
    assert levels(ours(model, frames), shifted.clamp(0, 1).numpy()) > 10


@pytest.mark.parametrize("k", [3, 5])
def test_partial_runs_give_the_whole_runs_frames(model, k):
    from test_clips import sequence

    items = sequence(9, h=H, w=W)
    config = UpscaleConfig(model="stablevsr", device="cpu", sample=SampleConfig(steps=2, clip_len=4, clip_overlap=2))

    def run(first, stop):
        return [(f.index, image) for f, image in upscale_frames(items, model, config, in_span(first, stop), stop)]

    whole, parts = run(0, None), run(0, k) + run(k, None)
    assert [i for i, _ in whole] == [i for i, _ in parts] == list(range(9))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole, parts))


def test_loads_from_the_hub_cache_without_running_the_repos_code(tiny_stablevsr_cache):
    choice = choose("stablevsr")
    assert (choice.family, choice.source) == ("stablevsr", REPO_ID)
    events = []
    model = choice.load(choice.settle(UpscaleConfig(model="stablevsr", device="cpu")), events.append)
    assert model.info.kind == "clip" and model.info.flow and model.info.scale == 4
    assert model.settings.steps == 50 and model.settings.scheduler == "ddpm"
    assert model.unet.class_embedding is None
    assert not list(tiny_stablevsr_cache.rglob(MARKER))  # the custom pipeline file was never imported
    # `vsrup download stablevsr` offline finds the same snapshot, with the ControlNet in its file list.
    from vsrup.models import hub
    from vsrup.models.registry import repo_for

    repo, family = repo_for("stablevsr")
    assert repo == REPO_ID and "controlnet" in family.module.FILES.weights
    assert (hub.download(repo, family.module.FILES) / "controlnet" / "config.json").exists()


def test_a_local_folder_is_recognised_by_its_pipeline_class(tiny_stablevsr_folder):
    assert choose(str(tiny_stablevsr_folder)).family == "stablevsr"


class Payload:
    """Unpickling this writes a file: what a malicious pickle weight file would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_weights_are_refused_and_never_unpickled(tiny_stablevsr_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_stablevsr_folder, folder)
    trap = tmp_path / "unpickled"
    with open(folder / "unet" / "diffusion_pytorch_model-00001-of-00001.bin", "wb") as f:
        pickle.dump(Payload(trap), f)
    # An index naming a pickle shard, beside the real safetensors file: diffusers would follow it.
    (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"conv_in.weight": "diffusion_pytorch_model-00001-of-00001.bin"}}'
    )
    with pytest.raises(ModelError, match="names pickle weights.*vsrup loads safetensors only"):
        load(folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").unlink()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # only the pickle is left
    with pytest.raises(ModelError, match=r"missing unet/diffusion_pytorch_model\.safetensors"):
        load(folder)
    assert not trap.exists()


@pytest.mark.parametrize("option", [dict(guidance=6.0), dict(noise_level=20), dict(prompt="a cat"), dict(motion_guidance=0.5), dict(scheduler="ddim")])
def test_options_it_cannot_honour_are_usage_errors(option):
    with pytest.raises(UsageError, match="stablevsr"):
        choose("stablevsr").settle(UpscaleConfig(sample=SampleConfig(**option)))


def test_upscale_and_frames_run_end_to_end(tiny_stablevsr_cache, tmp_path, run_vsrup):
    import av
    from PIL import Image

    src = mf.make_video(tmp_path / "in.mp4", frames=5, size=(16, 12), audio=(mf.Audio("aac"),))
    out = tmp_path / "out.mp4"
    code, err = run_vsrup("upscale", src, out, "--model", "stablevsr", "--steps", "2", "--clip-len", "3", "--clip-overlap", "1")
    assert code == 0, err
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert sum(1 for _ in c.decode(video=0)) == 5
    folder, out_dir = tmp_path / "shots", tmp_path / "shots_x4"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((12, 16, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    code, err = run_vsrup("frames", folder, out_dir, "--model", "stablevsr", "--steps", "2", "-s", "2")
    assert code == 0, err
    assert all(Image.open(out_dir / f"{i}.png").size == (32, 24) for i in range(3))


def test_a_refused_option_fails_before_anything_loads(tiny_stablevsr_cache, tmp_path, run_vsrup, monkeypatch):
    from vsrup.models.registry import Choice

    def never(*args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Choice, "load", never)
    src = mf.make_video(tmp_path / "in.mp4", frames=2, size=(16, 12))
    code, err = run_vsrup("upscale", src, tmp_path / "out.mp4", "--model", "stablevsr", "--guidance", "6")
    assert code == 2
    assert err.strip() == "vsrup: error: --guidance does not apply to --model stablevsr: it samples without classifier-free guidance"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
