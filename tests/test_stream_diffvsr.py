"""Stream-DiffVSR against a straight causal loop written from its description, on tiny random networks.

The oracle below follows reference/nextmodels.md §2.3-2.4 and the issue: untiled, frame by frame in
order; a frame's initial latent is its own draw (seed + index); 4 DDIM steps on the repo's
"trailing" schedule, the low-resolution frame concatenated clean; from the second frame on, the
previous frame's decoded output (not clamped) warped onto the current frame by the flow is the
ControlNet's control image at every step, and the encoder's block outputs of that warped image (fed
as it is, without the [-1, 1] -> [0, 1] shift) are the decoder's previous features, each decoder
block adding 0.1 x the upsampled fusion of its TPM. Both sides get the same known, non-zero flow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_sd import one_torch_thread  # noqa: F401  (fixture)
from tiny_stablevsr import MARKER
from test_stablevsr import oracle_warp  # out(p) = image(p + flow(p)), written there from the convention
from tiny_stream import REPO_ID, tiny_stream_cache, tiny_stream_folder, tiny_tae  # noqa: F401  (fixtures)

import media_factory as mf
from vsrup.clips import last_restart
from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.errors import UsageError
from vsrup.flow import Flow
from vsrup.memory import MemoryPlan
from vsrup.models import Window
from vsrup.models.registry import choose
from vsrup.models.temporal_tiny import TemporalAutoencoderTiny, TemporalBlock
from vsrup.pipeline import in_span, upscale_frames
from vsrup.sampling import tiny_decode

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 12, 16  # low-resolution frame; the output is 48 x 64
M = (2.0, -1.0)  # (dx, dy): content moves this far per frame, in low-resolution pixels
INDICES = (3, 4, 5, 6, 7)
SEED = 5
UNTILED = MemoryPlan((H, W), tile=0, overlap=0, batch=1, vae_tile=0, vae_overlap=0)
TINY_DECODER_TILES = MemoryPlan((H, W), tile=0, overlap=0, batch=1, vae_tile=8, vae_overlap=0)  # the UNet untiled, the TAE in 4 tiles
KEYS = Path(__file__).with_name("fixtures") / "stream_diffvsr_vae_keys.txt"


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).random((len(INDICES), H, W, 3), dtype=np.float32)  # (T, h, w, 3)


def pair_flow() -> Flow:
    """The pair (n-1, n) when frame n is frame n-1 moved by M: f_{n-1->n} = M, f_{n->n-1} = -M, nothing occluded."""
    motion = torch.tensor(M).view(1, 2, 1, 1).expand(1, 2, H, W)  # (1, 2, h, w)
    zeros = torch.zeros(1, 1, H, W)
    return Flow(i_to_next=motion.clone(), next_to_i=-motion, occ_i=zeros, occ_next=zeros.clone())


def load(folder, **sample):
    choice = choose(str(folder))
    config = choice.settle(UpscaleConfig(model=str(folder), device="cpu", sample=SampleConfig(seed=SEED, **sample)))
    return choice.load(config), config


@pytest.fixture(scope="module")
def model(tiny_stream_folder):
    return load(tiny_stream_folder)[0]


# --- the oracle ---------------------------------------------------------------------------------


def oracle_features(tae, image: torch.Tensor) -> list[torch.Tensor]:
    """The encoder's block outputs of ``image`` as given (no shift to [0, 1]), in the decoder's order."""
    out, x = [], image
    for layer in tae.encoder.layers:
        x = layer(x)
        if isinstance(layer, TemporalBlock):
            out.append(x)
    return out[::-1]


def oracle_decode(tae, z: torch.Tensor, features: list[torch.Tensor] | None) -> torch.Tensor:
    """DecoderTiny with each block's TPM: c = conv(x); c += 0.1 up(alpha q_cur + (1 - alpha) q_prev); ReLU(c + x)."""
    x, k = torch.tanh(z / 3) * 3, 0
    for layer in tae.decoder.layers:
        if not isinstance(layer, TemporalBlock):
            x = layer(x)
            continue
        c = layer.conv(x)
        if features is not None:
            cur, prev = F.avg_pool2d(c, 4), F.avg_pool2d(features[k], 4)  # (1, C, hp, wp) each
            n = cur.shape[2] * cur.shape[3]
            q = layer.temporal_processor(torch.cat([cur.flatten(2), prev.flatten(2)], dim=2))  # (1, C, 2n)
            fused = (layer.alpha * q[:, :, :n] + (1 - layer.alpha) * q[:, :, n:]).view(cur.shape)
            c = c + 0.1 * F.interpolate(fused, size=c.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.relu(c + x)
        k += 1
    return x * 2 - 1


def oracle(folder, frames: np.ndarray, *, warp_previous: bool = True, temporal_decoder: bool = True) -> np.ndarray:
    """The method, straight: (T, h, w, 3) in [0, 1] -> (T, 4h, 4w, 3) in [0, 1]."""
    from diffusers import ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    controlnet = ControlNetModel.from_pretrained(folder, subfolder="controlnet").eval()
    tae = TemporalAutoencoderTiny.from_pretrained(folder, subfolder="vae").eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    back = torch.tensor((-M[0], -M[1])).view(1, 2, 1, 1).expand(1, 2, 4 * H, 4 * W) * 4  # HR flow from frame n to n-1
    outputs, previous = [], None
    with torch.no_grad():
        empty = text_encoder(tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids)[0]  # (1, 77, D)
        for n, i in enumerate(INDICES):
            lr = torch.from_numpy(frames[n : n + 1]).permute(0, 3, 1, 2) * 2 - 1  # (1, 3, h, w)
            control = features = None
            if previous is not None:
                control = oracle_warp(previous, back) if warp_previous else previous
                features = oracle_features(tae, control) if temporal_decoder else None
            z = torch.randn(1, 4, H, W, generator=torch.Generator().manual_seed(SEED + i))
            scheduler.set_timesteps(4)
            assert scheduler.timesteps.tolist() == [999, 749, 499, 249]
            for t in scheduler.timesteps:
                x = torch.cat([z, lr], dim=1)  # (1, 7, h, w)
                residuals = {}
                if control is not None:
                    down, mid = controlnet(x, t, encoder_hidden_states=empty, controlnet_cond=control, return_dict=False)
                    residuals = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
                v = unet(x, t, encoder_hidden_states=empty, **residuals).sample
                z = scheduler.step(v, t, z, eta=0.0).prev_sample
            previous = oracle_decode(tae, z, features)  # (1, 3, 4h, 4w)
            outputs.append(previous)
    return (torch.cat(outputs) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(np.round(a * 255) - np.round(b * 255)).max())


def ours(model, frames, plan=UNTILED) -> np.ndarray:
    """vsrup's model, stepped frame by frame as the pipeline does (no colour fix: the oracle has none)."""
    state, out = None, []
    for n, i in enumerate(INDICES):
        window = Window(frames[n : n + 1], (i,), pair_flow() if state is not None else None)
        image, state = model.step(window, state, plan, lambda fraction: None)
        out.append(image.clamp(0, 1).numpy())
    return np.concatenate(out)  # (T, 4h, 4w, 3)


# --- the tests ----------------------------------------------------------------------------------


def test_equals_the_straight_causal_loop(tiny_stream_folder, model, frames):
    mine = ours(model, frames, TINY_DECODER_TILES)
    reference = oracle(tiny_stream_folder, frames)
    assert mine.shape == reference.shape == (5, 4 * H, 4 * W, 3)
    assert levels(mine, reference) <= 1
    assert np.abs(mine - reference).max() < 1e-4
    # Negative controls: the comparison fails when the previous output is not warped, or the decoder ignores it.
    assert levels(mine, oracle(tiny_stream_folder, frames, warp_previous=False)) > 3
    assert levels(mine, oracle(tiny_stream_folder, frames, temporal_decoder=False)) > 3


def test_a_restart_frame_owes_nothing_to_the_frames_before(model, frames):
    """At a restart (state None) the same frame gives the same image; guided by its predecessors it differs."""
    alone, _ = model.step(Window(frames[2:3], (5,)), None, UNTILED, lambda f: None)
    again, _ = model.step(Window(frames[2:3], (5,)), None, UNTILED, lambda f: None)
    assert torch.equal(alone, again)
    assert levels(alone.clamp(0, 1).numpy(), ours(model, frames)[2:3]) > 3


# --- the tiny temporal autoencoder --------------------------------------------------------------


def test_the_autoencoder_has_every_published_key_and_shape():
    from vsrup.models.configs import STREAM_VAE_CONFIG

    published = {}
    for line in KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split()
            published[name] = () if shape == "scalar" else tuple(int(n) for n in shape.split("x"))
    with torch.device("meta"):
        tae = TemporalAutoencoderTiny(**STREAM_VAE_CONFIG)
    ours_ = {name: tuple(t.shape) for name, t in tae.state_dict().items()}
    assert len(published) == 166
    assert ours_ == published  # every key mapped, none missing or left over, every shape equal
    assert sum(p.numel() for p in tae.parameters()) == 2_052_501


def test_a_block_without_previous_features_is_diffusers_own():
    """Restart frames decode with the stock AutoencoderTiny: loading our weights (less the TPMs) into it gives the same image."""
    from diffusers import AutoencoderTiny
    from tiny_stream import TINY_TAE

    tae = tiny_tae()
    stock = AutoencoderTiny(**TINY_TAE).eval()
    missing = stock.load_state_dict({k: v for k, v in tae.state_dict().items() if "temporal" not in k and "alpha" not in k})
    assert not missing.missing_keys and not missing.unexpected_keys
    z = torch.randn(1, 4, 9, 13)
    with torch.no_grad():
        assert torch.equal(tiny_decode.decode(tae, z, None, 0), stock.decoder(z))


@pytest.mark.parametrize("tile", [4, 8, 12])
def test_tiled_encode_and_decode_equal_the_whole_frame(tile):
    tae = tiny_tae()
    h, w = 14, 23  # not multiples of 4: the pooled maps floor, tiles are ragged
    z = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(0))
    previous = torch.randn(1, 3, 4 * h, 4 * w, generator=torch.Generator().manual_seed(1)).clamp(-1.3, 1.3)
    with torch.no_grad():
        whole = oracle_decode(tae, z, oracle_features(tae, previous))  # (1, 3, 4h, 4w)
        tiled = tiny_decode.decode(tae, z, tiny_decode.previous_features(tae, previous, tile), tile)
        plain = oracle_decode(tae, z, None)
    assert (whole - plain).abs().max() > 0.01  # the TPMs matter here
    assert (tiled - whole).abs().max() < 1e-5


def test_a_halo_too_small_for_the_receptive_field_shows(monkeypatch):
    """The check above can fail: with 4 px of halo the tiles' zero padding reaches the kept pixels."""
    tae = tiny_tae()
    z = torch.randn(1, 4, 14, 23, generator=torch.Generator().manual_seed(0))
    previous = torch.randn(1, 3, 56, 92, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = tiny_decode.decode(tae, z, tiny_decode.previous_features(tae, previous, 0), 0)
        monkeypatch.setattr(tiny_decode, "HALO", 4)
        tiled = tiny_decode.decode(tae, z, tiny_decode.previous_features(tae, previous, 8), 8)
    assert (tiled - whole).abs().max() > 1e-3


def test_bilinear_crop_is_a_window_of_interpolate():
    x = torch.randn(2, 3, 5, 7)
    full = F.interpolate(x, size=(22, 29), mode="bilinear", align_corners=False)
    assert torch.allclose(tiny_decode.bilinear_crop(x, (22, 29), (3, 17), (0, 29)), full[:, :, 3:17], atol=1e-6)
    assert torch.allclose(tiny_decode.bilinear_crop(x, (22, 29), (20, 22), (11, 12)), full[:, :, 20:22, 11:12], atol=1e-6)


# --- in the pipeline ----------------------------------------------------------------------------


def test_partial_runs_from_a_restart_point_give_the_whole_runs_frames(model):
    from test_clips import sequence

    items = sequence(8, cuts=(4,), h=H, w=W)  # a new shot at frame 4: a restart point
    config = UpscaleConfig(model="stream-diffvsr", device="cpu", sample=SampleConfig(steps=2))

    events = []

    def run(first, stop):
        said = lambda e: "carries its state" in e.message and events.append(e.message)  # noqa: E731
        start_at = last_restart(items, first, None, config.sample.scene_threshold)  # as upscale_video finds it
        return [(f.index, image) for f, image in upscale_frames(items, model, config, in_span(first, stop), stop, start_at=start_at, emit=said)]

    whole = run(0, None)
    assert [i for i, _ in whole] == list(range(8)) and not events
    for parts in (run(0, 4) + run(4, None), run(0, 6) + run(6, None)):  # 6 is inside the shot: it runs from 4
        assert [i for i, _ in parts] == list(range(8))
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole, parts))
    # The state does cross frames within a shot: frame 5 after frame 4 differs from frame 5 as a restart.
    restarted = run(5, None)  # from frame 5 the model must start at 4: same frames again, and it says so
    assert np.array_equal(restarted[0][1], whole[5][1])
    assert [m.split(":")[0] for m in events] == ["stream-diffvsr carries its state from frame 4, where the shot starts"] * 2


def test_loads_from_the_hub_cache_without_running_the_repos_code(tiny_stream_cache):
    choice = choose("stream-diffvsr")
    assert (choice.family, choice.source) == ("stream-diffvsr", REPO_ID)
    model = choice.load(choice.settle(UpscaleConfig(model="stream-diffvsr", device="cpu")))
    assert model.info.kind == "sequential" and model.info.flow and model.info.scale == 4 and model.info.restart_every is None
    assert model.settings.steps == 4 and model.settings.scheduler == "ddim"
    assert isinstance(model.vae, TemporalAutoencoderTiny) and model.unet.class_embedding is None
    assert not list(tiny_stream_cache.rglob(MARKER))  # the repo's code files were never imported
    # `vsrup download stream-diffvsr` offline finds the same snapshot, with the tiny VAE and the ControlNet in its list.
    from vsrup.models import hub
    from vsrup.models.registry import repo_for

    repo, family = repo_for("stream-diffvsr")
    assert repo == REPO_ID and {"vae", "controlnet"} <= set(family.module.FILES.weights)
    assert (hub.download(repo, family.module.FILES) / "vae" / "diffusion_pytorch_model.safetensors").exists()


def test_a_local_folder_is_recognised_by_its_pipeline_class(tiny_stream_folder):
    assert choose(str(tiny_stream_folder)).family == "stream-diffvsr"


@pytest.mark.parametrize("option", [dict(guidance=6.0), dict(noise_level=20), dict(prompt="a cat"), dict(propagation_steps=(1,)), dict(scheduler="ddpm")])
def test_options_it_cannot_honour_are_usage_errors(option):
    with pytest.raises(UsageError, match="stream-diffvsr"):
        choose("stream-diffvsr").settle(UpscaleConfig(sample=SampleConfig(**option)))


def test_upscale_runs_end_to_end(tiny_stream_cache, tmp_path, run_vsrup):
    import av

    src = mf.make_video(tmp_path / "in.mp4", frames=5, size=(16, 12), audio=(mf.Audio("aac"),))
    out = tmp_path / "out.mp4"
    code, err = run_vsrup("upscale", src, out, "--model", "stream-diffvsr", "--steps", "2")
    assert code == 0, err
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_a_partial_run_of_a_video_starts_at_the_last_cut_before_it(tiny_stream_cache, tmp_path, run_vsrup, monkeypatch):
    """`--frames A:` on a video runs the model from the last restart point at or before A (found by a pre-scan of the
    input), not from the first frame, and gives the whole run's frames (lossless RGB output to compare)."""
    import av

    from vsrup.models import stream_diffvsr

    src = mf.make_video(tmp_path / "in.mp4", frames=12, size=(16, 12))  # its blue channel wraps at frame 7: a cut
    stepped = []
    original = stream_diffvsr.Model.step
    monkeypatch.setattr(stream_diffvsr.Model, "step", lambda self, window, *rest: (stepped.append(window.indices[0]), original(self, window, *rest))[1])
    lossless = ["--model", "stream-diffvsr", "--steps", "2", "--codec", "libx264rgb", "--crf", "0", "--pix-fmt", "rgb24"]

    def frames(path):
        with av.open(str(path)) as c:
            return [(round(f.time, 4), f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]

    runs = {}
    for name, span in (("whole", []), ("late", ["--frames", "9:"]), ("early", ["--frames", "4:8"])):
        stepped.clear()
        code, err = run_vsrup("upscale", src, tmp_path / f"{name}.mkv", *lossless, *span)
        assert code == 0, err
        runs[name] = (frames(tmp_path / f"{name}.mkv"), list(stepped))
    whole = runs["whole"][0]
    assert runs["whole"][1] == list(range(12))
    assert runs["late"][1] == [7, 8, 9, 10, 11]  # from the cut at 7, not from 0
    assert runs["early"][1] == [0, 1, 2, 3, 4, 5, 6, 7]  # the shot of frame 4 starts at 0; nothing after 8
    for name, keep in (("late", slice(9, 12)), ("early", slice(4, 8))):
        part = runs[name][0]
        assert [t for t, _ in part] == [t for t, _ in whole[keep]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(part, whole[keep]))


def test_another_repo_of_the_family_is_known_by_its_model_index(tiny_stream_folder, tmp_path, monkeypatch):
    """A repo id vsrup does not list (a variant, a fine-tune) is loaded as the family its model_index.json names."""
    from tiny_sd import point_hf_at, seed_hf_cache

    seed_hf_cache(tmp_path / "hub", tiny_stream_folder, repo_id="someone/Stream-DiffVSR-variant", commit="ab" * 20)
    point_hf_at(monkeypatch, tmp_path)
    assert choose("someone/Stream-DiffVSR-variant").family == "stream-diffvsr"
    assert choose("someone/not-cached-anywhere").family == "sd-x4"  # offline and unknown: the default, as before


def test_out_of_memory_in_the_tiny_decoder_retries_in_tiles_with_the_same_state(model, monkeypatch):
    """A CUDA OOM in the whole-frame decode of a guided frame shrinks the decode to tiles (exact), keeps the
    state the frame started with, and gives the same frame; the next frames continue from it."""
    from vsrup.models import stream_diffvsr
    from vsrup.runner import ModelRunner

    h, w = 40, 72  # large enough for a decode tile above the plan's floor (32 latent px)
    frames = np.random.default_rng(2).random((3, h, w, 3), dtype=np.float32)
    motion = torch.tensor(M).view(1, 2, 1, 1).expand(1, 2, h, w)  # (1, 2, h, w)
    zeros = torch.zeros(1, 1, h, w)
    flow = Flow(i_to_next=motion.clone(), next_to_i=-motion, occ_i=zeros, occ_next=zeros.clone())
    config = UpscaleConfig(model="stream-diffvsr", device="cpu", sample=SampleConfig(seed=SEED, steps=2, color_fix="none"))

    def run_frames():
        runner, state, out = ModelRunner(model, config), None, []
        for n in range(3):
            window = Window(frames[n : n + 1], (n,), flow if state is not None else None)

            def step(plan, progress):
                nonlocal state
                image, state = model.step(window, state, plan, progress)
                return image

            out.append(runner.run(window, step))
        return out, runner

    expected, _ = run_frames()
    decode, failed = stream_diffvsr.decode, []

    def decode_once_out_of_memory(tae, latents, previous, tile):
        if previous is not None and tile == 0 and not failed:
            failed.append(tile)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return decode(tae, latents, previous, tile)

    monkeypatch.setattr(stream_diffvsr, "decode", decode_once_out_of_memory)
    got, runner = run_frames()
    assert failed == [0]
    (retry,) = runner.planner.retries.values()
    assert retry.plan.vae_tile == 32  # the rest of the job decodes in tiles
    assert max(levels(a, b) for a, b in zip(expected, got)) <= 1  # a value on a rounding edge may flip
    assert max(np.abs(a - b).max() for a, b in zip(expected, got)) < 1e-5  # tiles are exact, and the state was kept
