"""The written-out loop against diffusers' StableDiffusionUpscalePipeline, on tiny random components.

Frame i of vsrup (several frames sampled together, with their input indices) must equal the pipeline
called on that frame alone with ``generator=torch.Generator().manual_seed(seed + i)``, after rounding
to 8 bits, within one level. Negative controls show the comparison can fail: a neighbouring seed, a
different scheduler, guidance or noise level each move the result by many levels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_sd import one_torch_thread, run_window, tiny_sd_x4_cache, tiny_sd_x4_folder, x4_model  # noqa: F401  (fixtures)

from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.errors import UsageError
from vsrup.sampling.sd_x4 import Step, TextEmbeddings, predict
from vsrup.sampling.schedulers import build_scheduler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEED = 7
INDICES = [4, 9, 10]  # not contiguous and not starting at 0: seeds follow input positions
H, W = 16, 12  # low-resolution frame; the output is 64 x 48


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).random((len(INDICES), H, W, 3), dtype=np.float32)  # (T, h, w, 3)


@pytest.fixture(scope="module")
def pipe(tiny_sd_x4_folder):
    from diffusers import StableDiffusionUpscalePipeline

    pipe = StableDiffusionUpscalePipeline.from_pretrained(tiny_sd_x4_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


OFF = dict(tile=0, motion_guidance=0.0, color_fix="none")  # the stages diffusers does not have


class Upscaler:
    """The x4 model as the pipeline runs one window of it."""

    def __init__(self, **sample):
        self.model, self.config = x4_model(seed=SEED, **{**OFF, **sample})
        self.text, self.scheduler_config = self.model.text, self.model.scheduler_config

    def upscale(self, frames, indices, hook=None):
        extra = {"hook": hook} if hook is not None else {}
        return run_window(self.model, self.config, frames, indices, **extra)


make_upscaler = Upscaler


def reference(pipe, frames, indices, scheduler, steps, guidance, noise_level, seed=SEED) -> np.ndarray:
    """diffusers, one call per frame, generator seeded seed + frame index: (T, 4h, 4w, 3) in [0, 1]."""
    pipe.scheduler = build_scheduler(scheduler, pipe.scheduler.config)
    from vsrup.models.sd_x4 import DEFAULTS

    out = [
        pipe(
            prompt=DEFAULTS["prompt"],
            negative_prompt=DEFAULTS["negative_prompt"],
            image=frames[k : k + 1],
            num_inference_steps=steps,
            guidance_scale=guidance,
            noise_level=noise_level,
            generator=torch.Generator().manual_seed(seed + i),
            output_type="np",
        ).images
        for k, i in enumerate(indices)
    ]
    return np.concatenate(out)  # (T, 4h, 4w, 3)


def levels(a: np.ndarray, b: np.ndarray) -> int:
    """Largest difference in 8-bit levels after rounding each image to 8 bits."""
    return int(np.abs(np.round(a * 255) - np.round(b * 255)).max())


CASES = [  # scheduler, steps, guidance, noise level
    ("ddim", 2, 1.0, 20),
    ("ddim", 5, 4.0, 150),
    ("ddpm", 3, 1.0, 150),
    ("ddpm", 4, 7.5, 20),
    ("dpm++ 2m", 4, 3.0, 20),
    ("unipc", 3, 1.0, 20),
    ("euler", 4, 5.0, 150),
]


@pytest.mark.parametrize("scheduler,steps,guidance,noise_level", CASES)
def test_batched_clip_equals_diffusers_per_frame(tiny_sd_x4_cache, pipe, frames, scheduler, steps, guidance, noise_level):
    up = make_upscaler(scheduler=scheduler, steps=steps, guidance=guidance, noise_level=noise_level)
    ours = up.upscale(frames, INDICES)  # (T, 4h, 4w, 3)
    ref = reference(pipe, frames, INDICES, scheduler, steps, guidance, noise_level)
    assert ours.shape == ref.shape == (len(INDICES), 4 * H, 4 * W, 3)
    assert ours.dtype == np.float32 and 0.0 <= ours.min() and ours.max() <= 1.0
    diff = levels(ours, ref)
    assert diff <= 1, f"{scheduler} steps={steps} guidance={guidance} noise={noise_level}: {diff} levels"
    assert np.abs(ours - ref).max() < 1e-4  # in fp32 the two agree to float rounding (measured <= 3.4e-6)
    # Negative control: the neighbouring seeds' frames are far away, so equality above is not an accident.
    shifted = reference(pipe, frames, [i + 1 for i in INDICES], scheduler, steps, guidance, noise_level)
    assert levels(ours, shifted) > 10


def test_untiled_wide_frame_equals_diffusers(tiny_sd_x4_cache, pipe):
    """--tile 0 is untiled everywhere: above 128 latent px a side the VAE decode must not be tiled either."""
    wide = np.random.default_rng(1).random((1, 8, 136, 3), dtype=np.float32)  # (1, h, w, 3), w > 128
    ours = make_upscaler(steps=1, guidance=1.0).upscale(wide, [0])  # (1, 32, 544, 3)
    ref = reference(pipe, wide, [0], "ddim", 1, 1.0, 20)
    assert np.abs(ours - ref).max() < 1e-4


def test_settings_change_the_result(tiny_sd_x4_cache, frames):
    """Each option reaches the model: the equivalence above is not blind to them."""
    base = dict(scheduler="ddim", steps=4, guidance=4.0, noise_level=20)
    out = make_upscaler(**base).upscale(frames, INDICES)
    for change in (dict(scheduler="ddpm"), dict(steps=3), dict(guidance=1.0), dict(noise_level=200)):
        other = make_upscaler(**{**base, **change}).upscale(frames, INDICES)
        assert levels(out, other) > 5, change
    assert levels(out, make_upscaler(**base).upscale(frames, INDICES)) == 0  # and it is deterministic


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_frame_does_not_depend_on_its_batch(tiny_sd_x4_cache, frames, scheduler):
    up = make_upscaler(scheduler=scheduler, steps=3, guidance=5.0)
    together = up.upscale(frames, INDICES)  # (3, 4h, 4w, 3)
    alone = up.upscale(frames[1:2], INDICES[1:2])  # (1, 4h, 4w, 3)
    reversed_ = up.upscale(frames[::-1].copy(), INDICES[::-1])[::-1]  # (3, 4h, 4w, 3)
    assert levels(together[1:2], alone) <= 1
    assert levels(together, reversed_) <= 1
    assert np.abs(together[1:2] - alone).max() < 1e-4


def test_any_frame_size_gives_exactly_four_times(tiny_sd_x4_cache):
    up = make_upscaler(steps=2, guidance=1.0)
    out = up.upscale(np.full((1, 13, 11, 3), 0.5, dtype=np.float32), [0])
    assert out.shape == (1, 52, 44, 3)


def test_hook_sees_every_step_and_its_result_is_used(tiny_sd_x4_cache, frames):
    up = make_upscaler(steps=3, guidance=4.0)
    seen: list[Step] = []

    def identity(step: Step) -> Step:
        seen.append(step)
        return step

    plain = up.upscale(frames, INDICES)
    assert levels(up.upscale(frames, INDICES, hook=identity), plain) == 0
    assert [s.index for s in seen] == [0, 1, 2]
    assert all(s.latents.shape == s.model_output.shape == (len(INDICES), 4, H, W) for s in seen)
    assert seen[0].timestep > seen[-1].timestep

    def zero_output(step: Step) -> Step:
        return Step(step.index, step.timestep, step.alpha_prod, step.latents, torch.zeros_like(step.model_output), step.input_scale)

    assert levels(up.upscale(frames, INDICES, hook=zero_output), plain) > 5


def test_predict_batches_cfg_into_one_call_unconditional_first():
    calls = []

    def denoiser(x, t, text, noise_level):
        calls.append((x.shape, text[:, 0, 0].tolist(), noise_level.tolist()))
        return x[:, :4] + text[:, :1, :1, None]  # (B, 4, h, w): row r shifted by its text marker

    latents = torch.randn(2, 4, 3, 5)  # (T, 4, h, w)
    image = torch.randn(2, 3, 3, 5)  # (T, 3, h, w)
    text = torch.cat([torch.zeros(2, 77, 8), torch.ones(2, 77, 8)])  # (2T, 77, D): uncond 0, cond 1
    out = predict(denoiser, latents, image, torch.tensor(5), text, torch.tensor([20, 20, 20, 20]), guidance=3.0)
    assert calls == [((4, 7, 3, 5), [0.0, 0.0, 1.0, 1.0], [20, 20, 20, 20])]
    torch.testing.assert_close(out, latents + 3.0)  # u + g (c - u) = x + 0 + 3 (1 - 0)

    calls.clear()
    out = predict(denoiser, latents, image, torch.tensor(5), text[2:], torch.tensor([20, 20]), guidance=1.0)
    assert calls == [((2, 7, 3, 5), [1.0, 1.0], [20, 20])]
    torch.testing.assert_close(out, latents + 1.0)


@pytest.mark.parametrize(
    "sample",
    [dict(noise_level=-1), dict(noise_level=351), dict(steps=0), dict(scheduler="lms")],
)
def test_bad_sampler_options_are_usage_errors(sample):
    from vsrup.models.sd_x4 import settle

    with pytest.raises(UsageError):
        settle(SampleConfig(**sample))


def test_text_embeddings_shape_of_the_job(tiny_sd_x4_cache):
    up = make_upscaler(guidance=1.0)
    assert isinstance(up.text, TextEmbeddings)
    assert up.text.cond.shape == (1, 77, 32) and up.text.uncond is None  # no negative pass without CFG
    assert make_upscaler(guidance=2.0).text.uncond.shape == (1, 77, 32)


def test_step_x0_formula_matches_the_schedulers_own(tiny_sd_x4_cache, frames):
    """The x0 that Step's docstring tells hooks to compute is DDIM's pred_original_sample at every step."""
    from diffusers import DDIMScheduler

    up = make_upscaler(steps=4, guidance=4.0)
    steps: list[Step] = []
    up.upscale(frames, INDICES, hook=lambda step: steps.append(step) or step)
    ddim = DDIMScheduler.from_config(up.scheduler_config)
    ddim.set_timesteps(4)
    for step in steps:
        a = step.alpha_prod
        assert a == ddim.alphas_cumprod[int(step.timestep)]
        x0 = a.sqrt() * step.latents - (1 - a).sqrt() * step.model_output  # (T, 4, h, w)
        expected = ddim.step(step.model_output, step.timestep, step.latents).pred_original_sample
        torch.testing.assert_close(x0, expected)


def test_tiles_plug_into_the_loop(tiny_sd_x4_cache, frames):
    """One tile covering the frame (auto, on a small frame) is exactly the untiled run; small tiles blend."""
    untiled = make_upscaler(steps=2, guidance=3.0).upscale(frames, INDICES)
    covering = make_upscaler(steps=2, guidance=3.0, tile=None).upscale(frames, INDICES)
    assert np.array_equal(untiled, covering)
    small = make_upscaler(steps=2, guidance=3.0, tile=8, tile_overlap=4).upscale(frames, INDICES)
    assert small.shape == untiled.shape and np.isfinite(small).all()
    assert 0 < np.abs(small - untiled).mean() < 0.25  # a random tiny UNet has a real receptive field
