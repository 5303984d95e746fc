"""MGLD-VSR: its new modules against their formulas, the converter against the published keys, the sampler
against a straight-line reference of the published loop, and the CLI end to end on tiny Lightning checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_sd import one_torch_thread  # noqa: F401  (fixture)
from tiny_mgld import BUILT, REPO_ID, fixture_keys, lightning_save, tiny_mgld_cache  # noqa: F401  (fixtures)

import media_factory as mf
from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.errors import ModelError, UsageError
from vsrup.models import Window
from vsrup.models.mgld_unet import SPADE, SPADEResnetBlock2D, StructEncoder, TemporalAttention, TemporalConv
from vsrup.models.mgld_vae import CFWFuse
from vsrup.models.registry import choose
from vsrup.sampling import mgld as sampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MIN_SIDE = 128  # the tests' short-side minimum (the published 512 makes tiny runs slow; the rule is the same)


@pytest.fixture(autouse=True)
def small_frames(monkeypatch):
    monkeypatch.setattr(sampler, "MIN_SIDE", MIN_SIDE)


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


# --- the new modules against their formulas -----------------------------------------------------


def group_norm(x, groups, weight, bias, eps):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    g = (g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + eps)
    return g.reshape(x.shape) * weight[None, :, None, None] + bias[None, :, None, None]


def test_spade_is_gn_times_one_plus_gamma_plus_beta():
    spade = randomise(SPADE(64, 32))
    h, s = torch.randn(2, 64, 8, 8), torch.randn(2, 32, 8, 8)
    actv = F.relu(F.conv2d(s, spade.mlp_shared[0].weight, spade.mlp_shared[0].bias, padding=1))
    gamma = F.conv2d(actv, spade.mlp_gamma.weight, spade.mlp_gamma.bias, padding=1)
    beta = F.conv2d(actv, spade.mlp_beta.weight, spade.mlp_beta.bias, padding=1)
    expected = group_norm(h, 32, spade.param_free_norm.weight, spade.param_free_norm.bias, 1e-5) * (1 + gamma) + beta
    torch.testing.assert_close(spade(h, s), expected, atol=1e-5, rtol=1e-5)


def test_spade_resblock_applies_spade_to_the_residual_branch_before_the_skip():
    block = randomise(SPADEResnetBlock2D(32, 64, 16, 32))
    x, temb, s = torch.randn(2, 32, 8, 8), torch.randn(2, 16), torch.randn(2, 32, 8, 8)
    h = F.conv2d(F.silu(group_norm(x, 32, block.norm1.weight, block.norm1.bias, 1e-5)), block.conv1.weight, block.conv1.bias, padding=1)
    h = h + F.linear(F.silu(temb), block.time_emb_proj.weight, block.time_emb_proj.bias)[:, :, None, None]
    h = F.conv2d(F.silu(group_norm(h, 32, block.norm2.weight, block.norm2.bias, 1e-5)), block.conv2.weight, block.conv2.bias, padding=1)
    expected = F.conv2d(x, block.conv_shortcut.weight, block.conv_shortcut.bias) + block.spade(h, s)
    torch.testing.assert_close(block(x, temb, s), expected, atol=1e-5, rtol=1e-5)


def test_temporal_conv_blends_a_3_tap_conv_over_each_clips_frames():
    conv = randomise(TemporalConv(8))
    x = torch.randn(2 * 5, 8, 3, 4)  # two clips of 5 frames
    a, w, b = conv.alpha, conv.conv.weight[:, :, :, 0, 0], conv.conv.bias  # (C, C, 3)
    expected = torch.empty_like(x)
    for clip in range(2):
        for t in range(5):
            mixed = b[None, :, None, None].expand(1, 8, 3, 4).clone()
            for k, dt in enumerate((-1, 0, 1)):  # zero padding in time, within the clip
                if 0 <= t + dt < 5:
                    mixed = mixed + torch.einsum("oc,chw->ohw", w[:, :, k], x[clip * 5 + t + dt])[None]
            expected[clip * 5 + t] = a * mixed[0] + (1 - a) * x[clip * 5 + t]
    torch.testing.assert_close(conv(x, 5), expected, atol=1e-5, rtol=1e-5)


def test_temporal_attention_blends_self_attention_across_frames_at_each_pixel():
    attention = randomise(TemporalAttention(8, heads=2, head_dim=4))
    x = torch.randn(2 * 3, 8, 2, 3)  # two clips of 3 frames
    at = attention.attn
    expected = torch.empty_like(x)
    for clip in range(2):
        for i in range(2):
            for j in range(3):
                seq = x[clip * 3 : clip * 3 + 3, :, i, j]  # (T, C) one pixel's frames
                n = F.layer_norm(seq, (8,), attention.norm.weight, attention.norm.bias)
                q, k, v = (n @ lin.weight.T for lin in (at.to_q, at.to_k, at.to_v))  # (T, 8)
                heads = []
                for hd in range(2):
                    sl = slice(4 * hd, 4 * hd + 4)
                    weights = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(4), dim=-1)  # (T, T)
                    heads.append(weights @ v[:, sl])
                out = torch.cat(heads, dim=1) @ at.to_out[0].weight.T + at.to_out[0].bias  # (T, C)
                expected[clip * 3 : clip * 3 + 3, :, i, j] = attention.alpha * out + (1 - attention.alpha) * seq
    torch.testing.assert_close(attention(x, 3), expected, atol=1e-5, rtol=1e-5)


def test_cfw_fuse_is_d_plus_w_times_rb_rdb_rdb_rb_of_the_concatenation():
    fuse = randomise(CFWFuse(32)).double()  # float64: eleven convolutions deep, float32 rounding alone reaches 1e-3
    e, d, w = torch.randn(1, 32, 6, 6, dtype=torch.float64), torch.randn(1, 32, 6, 6, dtype=torch.float64), 0.7

    def rb(block, x):
        h = F.conv2d(F.silu(group_norm(x, 32, block.norm1.weight, block.norm1.bias, 1e-6)), block.conv1.weight, block.conv1.bias, padding=1)
        h = F.conv2d(F.silu(group_norm(h, 32, block.norm2.weight, block.norm2.bias, 1e-6)), block.conv2.weight, block.conv2.bias, padding=1)
        return h + (x if block.conv_out is None else F.conv2d(x, block.conv_out.weight, block.conv_out.bias))

    def rdb(block, x):
        c = lambda k, y: F.conv2d(y, getattr(block, f"conv{k}").weight, getattr(block, f"conv{k}").bias, padding=1)  # noqa: E731
        x1 = F.leaky_relu(c(1, x), 0.2)
        x2 = F.leaky_relu(c(2, torch.cat([x, x1], 1)), 0.2)
        x3 = F.leaky_relu(c(3, torch.cat([x, x1, x2], 1)), 0.2)
        x4 = F.leaky_relu(c(4, torch.cat([x, x1, x2, x3], 1)), 0.2)
        return x + 0.2 * c(5, torch.cat([x, x1, x2, x3, x4], 1))

    h = rb(fuse.encode_enc_1, torch.cat([e, d], 1))
    h = rdb(fuse.encode_enc_2[1], rdb(fuse.encode_enc_2[0], h))
    expected = d + w * rb(fuse.encode_enc_3, h)
    torch.testing.assert_close(fuse(e, d, w), expected, atol=1e-5, rtol=1e-5)


def test_struct_encoder_gives_one_map_per_unet_level():
    encoder = randomise(StructEncoder(channels=32, out_channels=64))
    features = encoder(torch.randn(2, 4, 16, 16), torch.tensor(500))
    assert [tuple(f.shape) for f in features] == [(2, 64, 16, 16), (2, 64, 8, 8), (2, 64, 4, 4), (2, 64, 2, 2)]


def test_the_struct_encoders_attention_split_from_the_fused_qkv_computes_the_legacy_block():
    """LDM's AttentionBlock with QKVAttentionLegacy, from its fused (3C, C, 1) qkv, against vsrup's converted Attention."""
    from tiny_mgld import fused_qkv

    from vsrup.models.mgld_convert import split_qkv

    encoder = randomise(StructEncoder(channels=32, out_channels=32))
    attention, heads = encoder.levels[0].attentions[0], 4
    state = {f"a.to_{n}.{k}": getattr(attention, f"to_{n}").state_dict()[k] for n in "qkv" for k in ("weight", "bias")}
    qkv_w, qkv_b = fused_qkv("a.qkv.weight", state, heads), fused_qkv("a.qkv.bias", state, heads)  # the published layout
    assert all(torch.equal(v, state[k]) for k, v in {**split_qkv("a.qkv.weight", qkv_w, heads), **split_qkv("a.qkv.bias", qkv_b, heads)}.items())
    x = torch.randn(2, 32, 4, 5)
    n = group_norm(x, 32, attention.group_norm.weight, attention.group_norm.bias, 1e-5).reshape(2, 32, 20)
    qkv = (F.conv1d(n, qkv_w, qkv_b)).reshape(2 * heads, 3 * 8, 20)  # heads first, then q k v of 8 channels
    q, k, v = qkv.split(8, dim=1)
    weights = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(8), dim=-1)
    h = torch.einsum("bts,bcs->bct", weights, v).reshape(2, 32, 20)
    out = F.conv1d(h, attention.to_out[0].weight[..., None], attention.to_out[0].bias)
    torch.testing.assert_close(attention(x), x + out.reshape(x.shape), atol=1e-5, rtol=1e-5)


# --- the converter against the published keys -----------------------------------------------------


def meta_state(name):
    return {k: torch.empty(s, device="meta") for k, s in fixture_keys(name).items()}


def test_the_converter_maps_every_published_key_onto_the_full_size_networks():
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from vsrup.models import mgld_vsr
    from vsrup.models.mgld_convert import IGNORED, convert_unet, convert_vae
    from vsrup.models.mgld_unet import MGLDUNet
    from vsrup.models.mgld_vae import CFWAutoencoder

    parts = convert_unet(meta_state("mgld_vsr_unet_keys.txt"))
    parts["video"] = convert_vae(meta_state("mgld_vsr_vae_keys.txt"))
    with torch.device("meta"):
        nets = {"unet": MGLDUNet(**mgld_vsr.UNET_CONFIG), "struct": StructEncoder(**mgld_vsr.STRUCT_CONFIG),
                "vae": AutoencoderKL(**mgld_vsr.VAE_CONFIG), "video": CFWAutoencoder(**mgld_vsr.VAE_CONFIG),
                "text": CLIPTextModel(CLIPTextConfig(**mgld_vsr.TEXT_CONFIG))}
    for name, net in nets.items():
        wanted = {k: v.shape for k, v in net.state_dict().items()}
        if name == "vae":  # the SD VAE's decoder side is ignored on purpose (the video VAE decodes)
            wanted = {k: s for k, s in wanted.items() if not k.startswith(("decoder.", "post_quant_conv."))}
        got = {k: v.shape for k, v in parts[name].items()}
        assert sorted(set(wanted) - set(got)) == [] and sorted(set(got) - set(wanted)) == [], name  # none missing, none left over
        assert {k: s for k, s in got.items() if s != wanted[k]} == {}, name  # shapes equal
    assert sum(v.numel() for v in nets["unet"].parameters()) == 935_321_287  # the published count
    assert "first_stage_model.decoder." in IGNORED and "loss." in IGNORED


def test_an_unknown_key_in_a_checkpoint_is_a_model_error():
    from vsrup.models.mgld_convert import convert_unet

    state = meta_state("mgld_vsr_unet_keys.txt")
    state["model.diffusion_model.extra_block.weight"] = torch.empty(3, device="meta")
    with pytest.raises(ModelError, match="unexpected tensor model.diffusion_model.extra_block.weight"):
        convert_unet(state)


# --- the family ---------------------------------------------------------------------------------------


def test_chosen_by_short_name_and_by_repo_id():
    assert (choose("mgld-vsr").family, choose("mgld-vsr").source) == ("mgld-vsr", REPO_ID)
    assert choose(REPO_ID).family == "mgld-vsr"


@pytest.mark.parametrize("option", [dict(guidance=6.0), dict(noise_level=20), dict(prompt="a cat"), dict(scheduler="ddim"), dict(steps=1)])
def test_options_it_cannot_honour_are_usage_errors(option):
    with pytest.raises(UsageError, match="mgld-vsr"):
        choose("mgld-vsr").settle(UpscaleConfig(sample=SampleConfig(**option)))


def test_the_respaced_schedule_is_the_published_one():
    steps = sampler.respaced(50)
    assert len(steps) == 50 and steps[0] == 999 and steps[-1] == 0 and steps[-2:] == [20, 0] and steps[-3] == 41


def test_the_weights_only_loader_refuses_a_checkpoint_holding_an_arbitrary_object(tiny_mgld_cache, tmp_path):
    import shutil

    from vsrup.models import mgld_vsr

    folder = tmp_path / "model"
    shutil.copytree(BUILT["folder"], folder)

    lightning_save({"a": torch.zeros(1)}, folder / "video_vae_cfw.ckpt", extra=Arbitrary())
    with pytest.raises(ModelError, match=r"refused .*video_vae_cfw\.ckpt: the pickle needs test_mgld_vsr\.Arbitrary"):
        mgld_vsr.Model(str(folder), UpscaleConfig(model=str(folder), device="cpu", sample=SampleConfig(steps=2)))


class Arbitrary:
    """An object of a class that no allow-list names, saved beside a checkpoint's weights."""


def straight_line_reference(nets, text, frames: np.ndarray, seed: int, steps: int) -> torch.Tensor:
    """The published tile script's sampling of one segment, written out (one covering tile: the Gaussian weights
    cancel), with the per-frame generators in place of the global RNG."""
    t_frames, h, w, _ = frames.shape
    x = torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1  # (T, 3, h, w)
    s = max(MIN_SIDE / min(h, w), 4.0)
    up = F.interpolate(x, size=(int(h * s), int(w * s)), mode="bicubic").clamp(-1, 1)
    H, W = up.shape[-2:]
    up = F.pad(up, (0, -W % 32, 0, -H % 32), mode="reflect")
    gens = [torch.Generator().manual_seed(seed + i) for i in range(t_frames)]
    draw = lambda shape: torch.cat([torch.randn((1, *shape), generator=g) for g in gens])  # noqa: E731
    moments = nets["vae"].quant_conv(nets["vae"].encoder(up))
    mean, logvar = moments.chunk(2, dim=1)
    z_lr = 0.18215 * (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * draw(mean.shape[1:]))
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    use = [round(k * 999 / (steps - 1)) for k in range(steps)]  # space_timesteps
    new_abar = abar[use]
    new_betas = 1 - new_abar / torch.cat([torch.ones(1, dtype=torch.float64), new_abar[:-1]])
    x_t = abar[999].sqrt().float() * z_lr + (1 - abar[999]).sqrt().float() * draw(z_lr.shape[1:])
    for i in reversed(range(steps)):
        t = torch.tensor(use[i])
        eps = nets["unet"](x_t, t, text, nets["struct"](z_lr, t), t_frames)
        a, b = new_abar[i], new_betas[i]
        a_prev = new_abar[i - 1] if i > 0 else torch.tensor(1.0, dtype=torch.float64)
        x0 = (x_t - (1 - a).sqrt().float() * eps) / a.sqrt().float()
        mean = (a_prev.sqrt() * b / (1 - a)).float() * x0 + ((1 - b).sqrt() * (1 - a_prev) / (1 - a)).float() * x_t
        variance = torch.clamp(b * (1 - a_prev) / (1 - a), min=1e-20).float()
        noise = draw(x_t.shape[1:])
        x_t = mean + (variance.sqrt() * noise if i > 0 else 0)
    video = nets["video"]
    image = video.decode_clip(x_t / 0.18215, video.features(up), 1.0, t_frames)[:, :, :H, :W]
    if (H, W) != (4 * h, 4 * w):
        image = F.interpolate(image.clamp(-1, 1), size=(4 * h, 4 * w), mode="bicubic")
    return (image * 0.5 + 0.5).permute(0, 2, 3, 1)


def test_one_tile_one_clip_no_guidance_equals_the_published_loop_within_one_level(tiny_mgld_cache):
    choice = choose("mgld-vsr")
    config = choice.settle(UpscaleConfig(model="mgld-vsr", device="cpu", sample=SampleConfig(steps=4, motion_guidance=0.0)))
    model = choice.load(config)
    assert model.info.window == 5 and model.info.kind == "clip" and not model.info.flow
    frames = np.random.default_rng(0).random((5, 24, 32, 3)).astype(np.float32)  # x 128/24 > 4: the downsize path too
    with torch.no_grad():
        ours = model.sample(Window(frames, tuple(range(3, 8))), None, lambda f: None)
        nets = {k: v.float() for k, v in BUILT["nets"].items()}
        reference = straight_line_reference(nets, model.text, frames, seed=config.sample.seed + 3, steps=4)
    assert ours.shape == (5, 96, 128, 3) and ours.std() > 0.01
    levels = (ours.clamp(0, 1) - reference.clamp(0, 1)).abs().max() * 255
    print(f"largest difference from the published loop: {float(levels):.2e} of an 8-bit level")
    assert levels < 1.0


def test_the_text_states_are_the_open_clip_penultimate_layer_of_the_empty_prompt(tiny_mgld_cache):
    from tiny_mgld import TEXT_LAYERS, TEXT_VOCAB

    model = choose("mgld-vsr").load(UpscaleConfig(model="mgld-vsr", device="cpu"))
    tiny = BUILT["nets"]["text"]  # TEXT_LAYERS + 1 blocks, as OpenCLIP has one more than is used
    ids = torch.tensor([[TEXT_VOCAB - 2, TEXT_VOCAB - 1] + [0] * 75])
    with torch.no_grad():
        states = tiny(ids, output_hidden_states=True).hidden_states[TEXT_LAYERS]  # after block TEXT_LAYERS - 1
        expected = tiny.text_model.final_layer_norm(states) if hasattr(tiny, "text_model") else tiny.final_layer_norm(states)
    torch.testing.assert_close(model.text, expected)


def test_upscale_and_frames_run_end_to_end(tiny_mgld_cache, tmp_path, run_vsrup, monkeypatch):
    import av
    from PIL import Image

    from vsrup.models import mgld_vsr

    windows = []
    original = mgld_vsr.Model.sample
    monkeypatch.setattr(mgld_vsr.Model, "sample", lambda self, window, *rest: (windows.append(window.indices), original(self, window, *rest))[1])
    src = mf.make_video(tmp_path / "in.mp4", frames=7, size=(32, 32))
    out = tmp_path / "out.mp4"
    code, err = run_vsrup("upscale", src, out, "--model", "mgld-vsr", "--steps", "2", "--clip-overlap", "2")
    assert code == 0, err
    assert "non-commercial" in err
    # Clips of 5 frames that overlap by 2 (cross-faded), not the published back-to-back segments.
    assert all(len(w) <= 5 for w in windows) and windows[0] == (0, 1, 2, 3, 4) and len(set(windows[0]) & set(windows[1])) == 2
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (128, 128)
        assert sum(1 for _ in c.decode(video=0)) == 7
    folder, out_dir = tmp_path / "shots", tmp_path / "shots_x4"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    code, err = run_vsrup("frames", folder, out_dir, "--model", "mgld-vsr", "--steps", "2")
    assert code == 0, err
    assert all(Image.open(out_dir / f"{i}.png").size == (128, 128) for i in range(3))


def test_tiles_keep_each_tiles_frames_together_and_in_order(monkeypatch):
    """A stand-in UNet whose output at a pixel depends on that pixel, its frame's position in the clip and the struct
    input: blended tiles of any size must give the untiled result, so the clip's frames were folded and unfolded in order."""
    calls = []

    def struct(lr, t):  # (N*T, 4, th, tw) -> per-level features; level 0 is the input itself
        return [lr, None, None, None]

    def unet(z, t, text, features, frames):
        calls.append((z.shape[0], frames))
        position = torch.arange(z.shape[0]).remainder(frames).float()[:, None, None, None]  # the frame's place in its clip
        return z * (1 + position) + features[0] ** 2

    latents, z_lr = torch.randn(5, 4, 20, 44), torch.randn(5, 4, 20, 44)
    whole = (latents * (1 + torch.arange(5).float()[:, None, None, None]) + z_lr**2)
    monkeypatch.setattr(sampler, "TILE", 16)
    monkeypatch.setattr(sampler, "OVERLAP", 8)
    tiled = sampler.TiledEps(unet, struct, torch.zeros(1, 77, 8), batch=2)(latents, z_lr, torch.tensor(999))
    torch.testing.assert_close(tiled, whole)
    assert calls == [(10, 5)] * 5  # 2 x 5 tiles, two a call, each with its 5 frames


def test_the_guidance_hook_edits_x0_and_keeps_eps():
    from vsrup.flow import estimate_flow
    from vsrup.sampling.guidance import motion_guidance

    frames = np.random.default_rng(1).random((3, 16, 16, 3)).astype(np.float32)
    flow = sampler.latent_flow(estimate_flow(frames), (8, 8))
    latents, eps, a = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor(0.3)
    hook = sampler.guidance_hook(flow, frozenset({0}), 0.5)
    edited = hook(0, torch.tensor(999), a, latents, eps)
    x0 = (latents - (1 - a).sqrt() * eps) / a.sqrt()
    torch.testing.assert_close((edited - (1 - a).sqrt() * eps) / a.sqrt(), motion_guidance(x0, flow, 0.5), atol=1e-5, rtol=1e-5)
    assert torch.equal(hook(1, torch.tensor(500), a, latents, eps), latents)  # outside its steps: untouched


def test_vsrup_download_finds_both_checkpoints_in_the_cache(tiny_mgld_cache):
    from vsrup.models import hub
    from vsrup.models.registry import repo_for

    repo, family = repo_for("mgld-vsr")
    folder = hub.download(repo, family.module.FILES)
    assert repo == REPO_ID and (folder / "mgldvsr_unet.ckpt").exists() and (folder / "video_vae_cfw.ckpt").exists()


# --- the tiled decode ------------------------------------------------------------------------


def tiny_clip(h: int = 6, w: int = 9):
    """The tiny CFW VAE, random, a 5-frame clip's unscaled latents (5, 4, h, w), its upsampled frames (5, 3, 8h, 8w)
    and their features. Ragged (6 x 9): cores of unequal sizes."""
    from vsrup.models.mgld_vae import CFWAutoencoder, vae_config
    from vsrup.sampling.mgld_decode import clip_features

    video = randomise(CFWAutoencoder(**vae_config(32, (1, 2, 4, 4))), 3)
    torch.manual_seed(0)
    z, up = torch.randn(5, 4, h, w), torch.rand(5, 3, 8 * h, 8 * w) * 2 - 1
    with torch.no_grad():
        features = clip_features(video, up, 0)  # (5, 32*2, 4h, 4w), (5, 32*4, 2h, 2w): whole frames
    return video, z, up, features


# Float32 sums in another order (cores, float64 moments, attention query chunks) through ~40 layers, on outputs of
# magnitude ~3: measured 7.6e-6 (6 x 9 and 10 x 13 latents, tiles 4 and 8); 5e-5 leaves room for other BLAS kernels.
# The negative control's error is ~2.6.
DECODE_ATOL = 5e-5


def test_the_tiled_decode_with_each_frames_statistics_is_the_untiled_decode():
    """Pass by pass on cores, all 5 frames in each, each frame's GroupNorm statistics, the CFW features cut to the
    cores, the mid-block attention over the whole frame with its queries in chunks: decode_clip within rounding."""
    from vsrup.memory import MemoryPlan
    from vsrup.sampling.mgld_decode import decode, decode_exact

    video, z, up, features = tiny_clip()
    with torch.no_grad():
        whole = video.decode_clip(z, features, 1.0, 5)  # (5, 3, 48, 72)
        torch.testing.assert_close(decode_exact(video, z, features, 1.0, 8), whole, atol=DECODE_ATOL, rtol=0)  # 2 x 2 cores
        planned = decode(video, z, up, 1.0, MemoryPlan((6, 9), 64, 32, 5, 4, 1))  # the plan's path: 6 x 3 cores
        torch.testing.assert_close(planned, whole, atol=DECODE_ATOL, rtol=0)


def test_a_dense_block_halo_below_its_reach_is_not_the_untiled_decode(monkeypatch):
    """Negative control: the CFW's residual dense blocks read 5 px around (five chained 3x3 convs); a 1-px halo is wrong."""
    from vsrup.sampling import mgld_decode

    video, z, _, features = tiny_clip()
    monkeypatch.setattr(mgld_decode, "DENSE_REACH", 1)
    with torch.no_grad():
        error = (mgld_decode.decode_exact(video, z, features, 1.0, 4) - video.decode_clip(z, features, 1.0, 5)).abs().max()
    assert error > 100 * DECODE_ATOL


def test_without_room_for_the_clips_states_each_tile_is_decoded_alone_with_its_own_features_and_blended():
    from vsrup.memory import MemoryPlan
    from vsrup.sampling.mgld_decode import decode

    video, z, up, _ = tiny_clip()
    with torch.no_grad():
        blended = decode(video, z, up, 1.0, MemoryPlan((6, 9), 64, 32, 5, 4, 1, vae_frame_stats=False))
        corner = video.decode_clip(z[..., :4, :4], video.features(up[..., :32, :32]), 1.0, 5)  # the first tile, its own features
    assert blended.shape == (5, 3, 48, 72)
    torch.testing.assert_close(blended[..., :8, :8], corner[..., :8, :8], atol=1e-5, rtol=0)  # no other tile reaches here


def test_an_out_of_memory_in_the_decode_retries_with_the_smaller_decode_plan(tiny_mgld_cache, monkeypatch):
    """The OOM policy (memory.OomRetry) on a window: an OOM inside stage("vae") shrinks the decode's part of the plan
    only, and the retry from the window's inputs gives the frames of a first run at the smaller plan."""
    from dataclasses import replace

    from vsrup.memory import MemoryPlan, OomRetry
    from vsrup.models import mgld_vsr

    choice = choose("mgld-vsr")
    config = choice.settle(UpscaleConfig(model="mgld-vsr", device="cpu", sample=SampleConfig(steps=2, motion_guidance=0.0)))
    model = choice.load(config)
    window = Window(np.random.default_rng(4).random((5, 16, 16, 3)).astype(np.float32), tuple(range(5)))  # latent 16 x 16
    plans, original = [], mgld_vsr.decode

    def decode_once_short(video, z, up, weight, plan):
        plans.append(plan)
        if len(plans) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(video, z, up, weight, plan)

    monkeypatch.setattr(mgld_vsr, "decode", decode_once_short)
    plan = MemoryPlan((16, 16), 64, 32, 5, 8, 2)  # the decode tiled, each frame's statistics
    retry = OomRetry(plan)
    retried = retry.run(lambda p: model.sample(window, p, lambda f: None))
    assert plans == [plan, replace(plan, vae_frame_stats=False)] and retry.plan == plans[1]  # the UNet's part kept
    monkeypatch.setattr(mgld_vsr, "decode", original)
    first = model.sample(window, retry.plan, lambda f: None)
    assert torch.equal(retried, first)


def test_the_plan_is_made_on_the_latent_and_its_unet_budget_is_spent_on_64_latent_clip_tiles():
    from dataclasses import replace

    from vsrup.memory import Cost, Planner, shrink
    from vsrup.models.mgld_vsr import COST, unet_batch

    plan = Planner(Cost(dtype_bytes=2, vae_dtype_bytes=2, **COST), torch.device("cpu"), None, 32, None, budget=24 * 2**30).plan(5, 480, 854)
    assert plan.frame == (240, 428)  # 480 x 854 upsampled x4, padded to 32, / 8
    assert not plan.vae_frame_stats  # 75 GB of clip states at fp32 (37 GB at fp16) do not fit in 24 GB
    assert unet_batch(plan, 5, 240, 428) == plan.batch * plan.tile**2 // (5 * 64**2)
    smaller = shrink(plan, "unet")
    assert smaller.batch == plan.batch // 2 and unet_batch(smaller, 5, 240, 428) < unet_batch(plan, 5, 240, 428)
    assert unet_batch(replace(plan, batch=1, tile=32), 5, 240, 428) == 1  # the floor: one clip tile a call


def test_the_encoders_pass_by_pass_are_the_whole_frame_encoders():
    """The SD VAE's posterior and the CFW features of a frame on cores (the frame's statistics, stride-2 passes on
    strips of even rows) equal the whole-frame calls within rounding (measured 1.8e-6 and 9e-5 of 132)."""
    from diffusers import AutoencoderKL

    from vsrup.models.mgld_vae import vae_config
    from vsrup.sampling.mgld_decode import encode_frame, frame_features

    vae = randomise(AutoencoderKL(**vae_config(32, (1, 2, 4, 4))), 1)
    video, _, up, _ = tiny_clip(10, 13)  # ragged cores
    frame = up[:1]  # (1, 3, 80, 104)
    with torch.no_grad():
        whole, features = vae.encode(frame).latent_dist.parameters, video.features(frame)
        for tile in (4, 8):
            torch.testing.assert_close(encode_frame(vae, frame, tile), whole, atol=2e-5, rtol=0)
            for got, expected in zip(frame_features(video, frame, tile), features):
                torch.testing.assert_close(got, expected, atol=5e-4, rtol=1e-5)


# --- the blended encode (the plan's fallback where a frame's encoder states do not fit) ------------


def encode_inputs(kind: str):
    """The tiny SD VAE, random, and one upsampled frame (1, 3, 192, 320) (latent 24 x 40): uniform noise (the same
    statistics everywhere) or a smooth picture whose tone changes across the frame (each tile's statistics its own)."""
    from diffusers import AutoencoderKL

    from vsrup.models.mgld_vae import vae_config

    vae = randomise(AutoencoderKL(**vae_config(32, (1, 2, 4, 4))), 1)
    torch.manual_seed(0)
    if kind == "noise":
        return vae, torch.rand(1, 3, 192, 320) * 2 - 1
    y, x = torch.meshgrid(torch.linspace(0, 1, 192), torch.linspace(0, 1, 320), indexing="ij")
    return vae, torch.stack([torch.sin(6 * x + 2 * y), 2 * x - 1, torch.cos(9 * y) * (x > 0.6)])[None]


# Each tile's own GroupNorm statistics and attention, so not the whole-frame encode: on the posterior mean
# (|mean| 0.57 to 0.59) at tile 16, overlap 4, halo 16, measured max 0.021 / mean 0.0026 on noise and max 0.27 /
# mean 0.041 on the smooth picture (the tone steps of per-tile statistics; the bounds below leave about 2x). Without
# the halo (the convs' zero padding inside the frame) the noise's max is 0.19 (1.04 at tile 8, 0.029 with it).
@pytest.mark.parametrize("kind, largest, average", [("noise", 0.05, 0.006), ("smooth", 0.6, 0.09)])
def test_the_blended_encode_is_near_the_whole_frame_encode(kind, largest, average):
    from vsrup.sampling.mgld_decode import encode_blended

    vae, frame = encode_inputs(kind)
    with torch.no_grad():
        whole = vae.encode(frame).latent_dist.parameters  # (1, 8, 24, 40)
        error = (encode_blended(vae, frame, 16, 4) - whole)[:, :4].abs()  # the mean's part
        assert torch.equal(encode_blended(vae, frame, 40, 4), whole)  # one tile covering the frame: vae.encode itself
    assert error.max() < largest and error.mean() < average


def test_the_blended_encodes_halo_keeps_the_tile_edges_off_the_convs_zero_padding():
    from vsrup.sampling.mgld_decode import encode_blended

    vae, frame = encode_inputs("noise")
    with torch.no_grad():
        whole = vae.encode(frame).latent_dist.parameters
        with_halo, without = (encode_blended(vae, frame, 16, 4, halo) for halo in (16, 0))
    assert (without - whole).abs().max() > 5 * (with_halo - whole).abs().max()  # measured 0.19 against 0.021


def test_the_plan_encodes_in_blended_tiles_when_a_frames_encoder_states_do_not_fit():
    from vsrup.memory import Cost, Planner
    from vsrup.models.mgld_vsr import COST

    def plan(gib: int):
        return Planner(Cost(dtype_bytes=4, **COST), torch.device("cpu"), None, 32, None, budget=gib * 2**30).plan(5, 480, 854)

    roomy, starved = plan(24), plan(8)  # the frame's encoder states: 240 x 428 latent px x 96 KiB = 9.4 GiB in fp32
    assert roomy.encode_frame_stats and not roomy.vae_frame_stats  # the clip's decode states (75 GB) do not fit in 24 GiB
    assert not starved.encode_frame_stats and not starved.vae_frame_stats and starved.vae_tile
    assert "VAE encode in blended tiles" in starved.describe() and "VAE encode" not in roomy.describe()


def test_an_out_of_memory_in_the_encode_retries_with_blended_encode_tiles(tiny_mgld_cache, monkeypatch):
    """An OOM inside stage("encode") moves the encode (and the decode, whose frame statistics need more) to blended
    tiles; the retry from the window's inputs gives the frames of a first run at that plan."""
    from dataclasses import replace

    from vsrup.memory import MemoryPlan, OomRetry
    from vsrup.models import mgld_vsr
    from vsrup.sampling import mgld_decode

    choice = choose("mgld-vsr")
    config = choice.settle(UpscaleConfig(model="mgld-vsr", device="cpu", sample=SampleConfig(steps=2, motion_guidance=0.0)))
    model = choice.load(config)
    window = Window(np.random.default_rng(4).random((2, 16, 16, 3)).astype(np.float32), tuple(range(2)))  # a short last clip: latent 16 x 16
    plans, blended, original, encode = [], [], mgld_vsr.posterior, mgld_decode.encode_blended

    def posterior_once_short(vae, up, plan):
        plans.append(plan)
        if len(plans) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(vae, up, plan)

    monkeypatch.setattr(mgld_vsr, "posterior", posterior_once_short)
    monkeypatch.setattr(mgld_decode, "encode_blended", lambda *args: blended.append(1) or encode(*args))
    plan = MemoryPlan((16, 16), 64, 32, 5, 8, 2)  # the VAE tiled, the frame's statistics
    retry = OomRetry(plan)
    retried = retry.run(lambda p: model.sample(window, p, lambda f: None))
    assert plans == [plan, replace(plan, vae_frame_stats=False, encode_frame_stats=False)] and retry.plan == plans[1]
    assert len(blended) == 2  # frame by frame
    monkeypatch.setattr(mgld_vsr, "posterior", original)
    assert torch.equal(retried, model.sample(window, retry.plan, lambda f: None))
