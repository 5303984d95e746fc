"""Upscale-A-Video: its published keys, each new module against its formula, the tie to the x4 UNet, the
sampler's tiles and chunks, and the CLI end to end on tiny random weights in both layouts."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_sd import one_torch_thread, point_hf_at  # noqa: F401  (fixture)
from tiny_uav import REPO_ID, TINY_UNET_CONFIG, TINY_VAE_3D_CONFIG, randomised, tiny_uav_cache, tiny_uav_folder  # noqa: F401

import media_factory as mf
from vsrup.config import SampleConfig, UpscaleConfig
from vsrup.errors import ModelError, UsageError
from vsrup.memory import MemoryPlan
from vsrup.models import configs
from vsrup.models.registry import choose
from vsrup.models.upscale_a_video import check_keys, diffusers_kwargs, unet_from_config, vae_from_config
from vsrup.models.video_unet import (
    RotaryEmbedding, TemporalAttention, TemporalModule, TemporalResnet, VideoTransformerBlock, WindowGroupNorm, position_bucket,
    set_frames,
)
from vsrup.models.video_vae import ConditionFuse, ResnetPlus, published_key

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fixture_keys(name: str) -> dict[str, tuple[int, ...]]:
    """The published network's keys and shapes (the fixture's header says how they were produced)."""
    lines = (FIXTURES / f"upscale_a_video_{name}_keys.txt").read_text().splitlines()
    pairs = (line.split(" ", 1) for line in lines if not line.startswith("#"))
    return {key: tuple(int(n) for n in shape.strip("()").split(",") if n) for key, shape in pairs}


FULL_SIZE = {
    "unet": lambda: unet_from_config(configs.UAV_UNET_CONFIG),
    "vae_3d": lambda: vae_from_config(configs.UAV_VAE_3D_CONFIG, video=False),
    "vae_video": lambda: vae_from_config(configs.UAV_VAE_VIDEO_CONFIG, video=True),
}


@pytest.mark.parametrize("name", FULL_SIZE)
def test_the_full_size_networks_hold_exactly_the_published_keys(name):
    with torch.device("meta"):
        network = FULL_SIZE[name]()
    published = {published_key(k): shape for k, shape in fixture_keys(name).items()}
    ours = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    assert ours == published
    state = {k: torch.empty(shape, device="meta") for k, shape in fixture_keys(name).items()}
    check_keys(network, {published_key(k): v for k, v in state.items()}, Path(name))  # the loader's check passes
    first = next(iter(state))
    with pytest.raises(ModelError, match=f"1 missing \\(first {first}\\)"):
        check_keys(network, {published_key(k): v for k, v in state.items() if k != first}, Path(name))
    with pytest.raises(ModelError, match="1 unexpected \\(first extra.weight\\)"):
        check_keys(network, {**{published_key(k): v for k, v in state.items()}, "extra.weight": state[first]}, Path(name))


def test_the_fixture_parameter_counts_are_the_published_sizes():
    """UNet 2.76 GB and video VAE 455 MB in fp32 (reference/ports.md §2): 691.0 M and 113.8 M parameters."""
    counts = {name: sum(math.prod(s) for k, s in fixture_keys(name).items() if not k.endswith("rotary_emb.freqs")) for name in FULL_SIZE}
    assert round(counts["unet"] * 4 / 1e9, 2) == 2.76
    assert round(counts["vae_video"] * 4 / 1e6) == 455
    assert round(counts["vae_3d"] / 1e6, 1) == 55.3


# ---------------------------------------------------------------- each module against its formula


def window_group_norm_reference(x, frames, groups, weight, bias, eps):
    """GN over (channels of the group, the video's T frames, all pixels): x rows (V T, C, H, W), video-major."""
    out = torch.empty_like(x)
    per = x.shape[1] // groups
    for v in range(x.shape[0] // frames):
        rows = slice(v * frames, (v + 1) * frames)
        for g in range(groups):
            chans = slice(g * per, (g + 1) * per)
            part = x[rows, chans]
            mean, var = part.mean(), part.var(unbiased=False)
            out[rows, chans] = (part - mean) / torch.sqrt(var + eps)
    return out * weight[None, :, None, None] + bias[None, :, None, None]


def random_norm(norm):
    with torch.no_grad():
        norm.weight.normal_(1, 0.1)
        norm.bias.normal_(0, 0.1)
    return norm


def test_window_group_norm_takes_statistics_over_each_videos_frames():
    torch.manual_seed(0)
    norm = random_norm(WindowGroupNorm(4, 8, eps=1e-6))
    x = torch.randn(2 * 3, 8, 5, 7) * 3 + 1  # 2 videos of 3 frames
    norm.frames = 3
    assert torch.allclose(norm(x), window_group_norm_reference(x, 3, 4, norm.weight, norm.bias, 1e-6), atol=1e-5)
    norm.frames = 1  # one frame per video: the stock GroupNorm
    assert torch.allclose(norm(x), F.group_norm(x, 4, norm.weight, norm.bias, 1e-6), atol=1e-6)


def temporal_conv_reference(x, conv, frames):
    """A (k, 1, 1) conv along time as a sum over offsets of 1x1 convs, zero beyond the window's ends: rows in, rows out."""
    k = conv.kernel_size[0]
    v = x.shape[0] // frames
    video = x.reshape(v, frames, *x.shape[1:])  # (V, T, C, H, W)
    out = torch.zeros(v, frames, conv.out_channels, *x.shape[2:])
    for t in range(frames):
        for j in range(k):
            s = t + j - k // 2
            if 0 <= s < frames:
                out[:, t] += torch.einsum("oc,vchw->vohw", conv.weight[:, :, j, 0, 0], video[:, s])
    return (out + conv.bias[None, None, :, None, None]).reshape(v * frames, conv.out_channels, *x.shape[2:])


def temporal_resnet_reference(r, x, emb, frames):
    gn = lambda t, n: window_group_norm_reference(t, frames, n.num_groups, n.weight, n.bias, n.eps)  # noqa: E731
    h = temporal_conv_reference(F.silu(gn(x, r.norm1)), r.conv1, frames)
    if emb is not None:
        h = h + (F.silu(emb) @ r.time_emb_proj.weight.T + r.time_emb_proj.bias)[:, :, None, None]
    return x + temporal_conv_reference(F.silu(gn(h, r.norm2)), r.conv2, frames)


@pytest.mark.parametrize("kernel,temb", [(5, 16), (3, None)])
def test_temporal_resnet_is_its_formula(kernel, temb):
    torch.manual_seed(1)
    r = randomised(TemporalResnet(32, kernel, temb), 1)
    frames = 4
    x = torch.randn(2 * frames, 32, 3, 5)
    emb = torch.randn(2, 16).repeat_interleave(frames, 0) if temb else None  # one embedding per video
    r.frames = frames
    set_frames([m for m in r.modules() if isinstance(m, WindowGroupNorm)], frames)
    with torch.no_grad():
        assert torch.allclose(r(x, emb), temporal_resnet_reference(r, x, emb, frames), atol=1e-5)


def spatial_resnet_reference(r, x, emb, frames):
    gn = lambda t, n: window_group_norm_reference(t, frames, n.num_groups, n.weight, n.bias, n.eps)  # noqa: E731
    h = F.conv2d(F.silu(gn(x, r.norm1)), r.conv1.weight, r.conv1.bias, padding=1)
    h = h + (F.silu(emb) @ r.time_emb_proj.weight.T + r.time_emb_proj.bias)[:, :, None, None]
    return x + F.conv2d(F.silu(gn(h, r.norm2)), r.conv2.weight, r.conv2.bias, padding=1)


def test_temporal_module_is_x_plus_the_shift_of_both_resnets():
    torch.manual_seed(2)
    m = randomised(TemporalModule(32, 16), 2)
    frames = 3
    set_frames([mod for mod in m.modules() if isinstance(mod, (WindowGroupNorm, TemporalResnet))], frames)
    x = torch.randn(2 * frames, 32, 4, 4)
    emb = torch.randn(2, 16).repeat_interleave(frames, 0)
    h = temporal_resnet_reference(m.resblocks_3d_temporal, x, emb, frames)
    h = spatial_resnet_reference(m.resblocks_3d_spatial, h, emb, frames)
    expected = x + torch.einsum("oc,nchw->nohw", m.shift_conv.weight[:, :, 0, 0], h) + m.shift_conv.bias[None, :, None, None]
    with torch.no_grad():
        assert torch.allclose(m(x, emb), expected, atol=1e-5)


def test_rotary_embedding_turns_each_pair_by_its_angle():
    """Pair k of position n, as a complex number a + ib, is multiplied by exp(i n w_k), w_k = 10000^(-2k/32);
    features past the first 32 are left alone."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 6, 40, dtype=torch.float64)  # (N, heads, T, d)
    got = RotaryEmbedding().double()(x)
    pairs = torch.complex(x[..., :32:2], x[..., 1:32:2])  # (N, heads, T, 16)
    w = torch.tensor([10000.0 ** (-2 * k / 32) for k in range(16)], dtype=torch.float64)
    turned = pairs * torch.exp(1j * torch.arange(6, dtype=torch.float64)[:, None] * w[None])
    assert torch.allclose(got[..., :32:2], turned.real) and torch.allclose(got[..., 1:32:2], turned.imag)
    assert torch.equal(got[..., 32:], x[..., 32:])


def t5_bucket(relative: int) -> int:
    """T5's bidirectional bucket, 32 buckets, max distance 32, written for one integer."""
    n = -relative
    bucket = 16 if n < 0 else 0
    n = abs(n)
    if n < 8:
        return bucket + n
    return bucket + min(8 + int(math.log(n / 8) / math.log(32 / 8) * 8), 15)


def test_position_buckets_are_t5s():
    relative = torch.arange(-70, 71)
    assert position_bucket(relative).tolist() == [t5_bucket(int(r)) for r in relative]


def test_temporal_attention_is_its_formula():
    torch.manual_seed(4)
    heads, d, c, frames = 2, 32, 48, 5
    rotary = RotaryEmbedding()
    attn = randomised(TemporalAttention(c, heads, d, rotary), 4)
    x = torch.randn(3, frames, c)  # 3 positions, T frames
    q, k, v = x @ attn.to_q.weight.T, x @ attn.to_k.weight.T, x @ attn.to_v.weight.T
    bias = attn.time_rel_pos_bias.relative_attention_bias.weight  # (32, heads)
    outs = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        qh, kh = rotary(q[:, :, cols]) / math.sqrt(d), rotary(k[:, :, cols])  # (3, T, d)
        table = torch.tensor([[t5_bucket(j - i) for j in range(frames)] for i in range(frames)])
        scores = qh @ kh.transpose(1, 2) + bias[table, h]  # (3, T, T)
        outs.append(torch.softmax(scores, dim=-1) @ v[:, :, cols])
    expected = torch.cat(outs, dim=-1) @ attn.to_out[0].weight.T + attn.to_out[0].bias
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)


def test_the_transformer_block_adds_temporal_attention_between_cross_attention_and_feed_forward():
    from diffusers.models.attention import BasicTransformerBlock

    torch.manual_seed(5)
    args = dict(dim=64, num_attention_heads=2, attention_head_dim=32, cross_attention_dim=32)
    stock = randomised(BasicTransformerBlock(**args), 5)
    block = VideoTransformerBlock(**args)
    block.add_temporal(64, 2, 32, RotaryEmbedding())
    randomised(block, 6)
    block.load_state_dict({**block.state_dict(), **stock.state_dict()})
    frames, tokens = 3, 4
    x, text = torch.randn(2 * frames, tokens, 64), torch.randn(2 * frames, 7, 32)
    block.frames = frames
    with torch.no_grad():
        h = x + block.attn1(block.norm1(x))
        h = h + block.attn2(block.norm2(h), encoder_hidden_states=text)
        seq = h.reshape(2, frames, tokens, 64).transpose(1, 2).reshape(2 * tokens, frames, 64)  # (V L, T, C)
        seq = seq + block.attn_temporal(block.norm_temporal(seq))
        h = seq.reshape(2, tokens, frames, 64).transpose(1, 2).reshape(2 * frames, tokens, 64)
        assert torch.allclose(block(x, encoder_hidden_states=text), h + block.ff(block.norm3(h)), atol=1e-5)
        torch.nn.init.zeros_(block.attn_temporal.to_out[0].weight)
        torch.nn.init.zeros_(block.attn_temporal.to_out[0].bias)
        assert torch.allclose(block(x, encoder_hidden_states=text), stock(x, encoder_hidden_states=text), atol=1e-6)


def test_the_video_vae_resnet_adds_its_3d_residual_and_the_fuse_is_sft():
    torch.manual_seed(7)
    frames = 3
    r = randomised(ResnetPlus(in_channels=32, out_channels=64, temb_channels=None, eps=1e-6), 7)
    set_frames([m for m in r.modules() if isinstance(m, WindowGroupNorm)], frames)
    x = torch.randn(frames, 32, 5, 6)
    gn = lambda t, n: window_group_norm_reference(t, frames, n.num_groups, n.weight, n.bias, n.eps)  # noqa: E731
    h = F.conv2d(F.silu(gn(x, r.norm1)), r.conv1.weight, r.conv1.bias, padding=1)
    h = F.conv2d(F.silu(gn(h, r.norm2)), r.conv2.weight, r.conv2.bias, padding=1)
    out = F.conv2d(x, r.conv_shortcut.weight, r.conv_shortcut.bias) + h
    video = F.silu(gn(out, r.norm_3d)).transpose(0, 1)[None]  # (1, C, T, H, W)
    expected = out + F.conv3d(video, r.conv_3d.weight, r.conv_3d.bias, padding=1)[0].transpose(0, 1)
    with torch.no_grad():
        assert torch.allclose(r(x), expected, atol=1e-5)

    fuse = randomised(ConditionFuse(32, 64), 8)
    set_frames([m for m in fuse.modules() if isinstance(m, WindowGroupNorm)], frames)
    condition, dec = torch.randn(frames, 32, 5, 6), torch.randn(frames, 64, 5, 6)
    with torch.no_grad():
        s = fuse.shared[1](fuse.shared[0](torch.cat([condition, dec], 1), None), None)
        expected = dec + dec * F.conv2d(s, fuse.scale.weight, fuse.scale.bias, padding=1) + F.conv2d(s, fuse.shift.weight, fuse.shift.bias, padding=1)
        assert torch.allclose(fuse(condition, dec), expected, atol=1e-5)


# ---------------------------------------------------------------- the tie to the x4 UNet and VAE


def tiny_pair():
    """The tiny video UNet (random weights, temporal layers zeroed) and the stock x4 UNet with its 2D weights."""
    from diffusers import UNet2DConditionModel

    video = randomised(unet_from_config(TINY_UNET_CONFIG), 9)
    video.zero_temporal()
    stock = UNet2DConditionModel(**diffusers_kwargs(UNet2DConditionModel, TINY_UNET_CONFIG)).eval()
    stock.load_state_dict({k: v for k, v in video.state_dict().items() if k in stock.state_dict()}, strict=True)
    return video, stock


def test_zeroed_temporal_layers_leave_the_x4_unet():
    """One frame, or T equal frames (the window's statistics are then the frame's): the video UNet with its temporal
    output layers zeroed is the x4 UNet, exactly up to float rounding. With them random, equal frames change."""
    video, stock = tiny_pair()
    torch.manual_seed(10)
    x, text, t, level = torch.randn(2, 7, 13, 22), torch.randn(2, 77, 32), torch.tensor(400), torch.tensor([120, 120])  # odd: sizes forwarded
    with torch.no_grad():
        expected = stock(x, t, encoder_hidden_states=text, class_labels=level).sample  # (2, 4, 13, 22)
        assert torch.allclose(video(x, t, text, level, frames=1)[0], expected, atol=1e-5)
        frames = 4
        rows = x.repeat_interleave(frames, 0)  # 2 videos of 4 equal frames
        got = video(rows, t, text.repeat_interleave(frames, 0), level.repeat_interleave(frames), frames=frames)[0]
        assert torch.allclose(got, expected.repeat_interleave(frames, 0), atol=1e-5)
        randomised(video, 11)
        changed = video(rows, t, text.repeat_interleave(frames, 0), level.repeat_interleave(frames), frames=frames)[0]
        video.load_state_dict({**video.state_dict(), **stock.state_dict()})
        assert (changed - expected.repeat_interleave(frames, 0)).abs().max() > 1e-2


def test_the_3d_vae_decodes_one_frame_as_the_x4_vae():
    from diffusers import AutoencoderKL

    vae = randomised(vae_from_config(TINY_VAE_3D_CONFIG, video=False), 12)
    stock = AutoencoderKL(**diffusers_kwargs(AutoencoderKL, TINY_VAE_3D_CONFIG)).eval()
    stock.load_state_dict(vae.state_dict())
    z = torch.randn(2, 4, 6, 8)
    with torch.no_grad():
        assert torch.allclose(vae.decode_frames(z, None, frames=1), stock.decode(z).sample, atol=1e-5)


# ---------------------------------------------------------------- the sampler: tiles and chunks


def test_video_unet_tiles_batch_and_cover_like_the_untiled_call():
    from vsrup.sampling.upscale_a_video import VideoDenoiser

    video, _ = tiny_pair()
    randomised(video, 13)
    frames = 3
    torch.manual_seed(14)
    x = torch.randn(2 * frames, 7, 16, 24)
    text = torch.randn(2, 77, 32).repeat_interleave(frames, 0)  # one prompt per video (unconditional, conditional)
    level, t = torch.full((2 * frames,), 120), torch.tensor(300)
    plan = lambda tile, batch: MemoryPlan((16, 24), tile, 4, batch, 0, 0)  # noqa: E731
    with torch.no_grad():
        whole = VideoDenoiser(video, plan(0, 16), frames)(x, t, text, level)
        direct = video(x, t, text, level, frames=frames)[0]
        assert torch.allclose(whole, direct, atol=1e-6)
        assert torch.allclose(VideoDenoiser(video, plan(32, 16), frames)(x, t, text, level), whole, atol=1e-6)  # one tile covers it
        one, many = (VideoDenoiser(video, plan(16, b), frames)(x, t, text, level) for b in (1, 64))
        assert torch.allclose(one, many, atol=1e-5)  # the batch of tiles changes nothing (but GEMM rounding)


def test_the_vae_decodes_chunks_of_three_frames_each_on_its_own():
    from vsrup.sampling.upscale_a_video import decode_window
    from tiny_uav import TINY_VAE_VIDEO_CONFIG

    vae = randomised(vae_from_config(TINY_VAE_VIDEO_CONFIG, video=True), 15)
    torch.manual_seed(16)
    latents, lr = torch.randn(5, 4, 6, 8), torch.rand(5, 3, 6, 8) * 2 - 1
    with torch.no_grad():
        got = decode_window(vae, latents, lr, MemoryPlan((6, 8), 0, 0, 1, 0, 0))
        z = latents / vae.config.scaling_factor
        first, rest = vae.decode_frames(z[:3], lr[:3], frames=3), vae.decode_frames(z[3:], lr[3:], frames=2)
        assert torch.allclose(got, torch.cat([first, rest]), atol=1e-5)
        covering = decode_window(vae, latents, lr, MemoryPlan((6, 8), 0, 0, 1, 8, 2))  # one tile covers the frame
        assert torch.allclose(covering, got, atol=1e-5)
        tiled = decode_window(vae, latents, lr, MemoryPlan((6, 8), 0, 0, 1, 4, 2, vae_frame_stats=False))  # blended tiles, their own statistics
        corner = decode_window(vae, latents[..., :4, :4], lr[..., :4, :4], MemoryPlan((4, 4), 0, 0, 1, 0, 0))  # the first tile alone
        assert tiled.shape == got.shape
        assert torch.allclose(tiled[..., :8, :8], corner[..., :8, :8], atol=1e-5)  # where no other tile reaches, it is that tile's


# ---------------------------------------------------------------- the family: settle, registry, loading, end to end


def test_defaults_are_the_published_recipe_and_the_window_cross_fades():
    from vsrup.pipeline import clip_shape

    s = choose("upscale-a-video").settle(UpscaleConfig()).sample
    assert (s.noise_level, s.guidance, s.steps, s.scheduler, s.propagation_steps) == (120, 6.0, 30, "ddim", ())
    assert (s.prompt, s.negative_prompt) == ("best quality, extremely detailed", "blur, worst quality")
    with pytest.raises(UsageError, match="between 0 and 200"):
        choose("upscale-a-video").settle(UpscaleConfig(sample=SampleConfig(noise_level=250)))

    class Fake:
        class info:
            window = 8

    assert clip_shape(Fake, UpscaleConfig()) == (8, 2)  # windows of 8, stride 6, cross-faded over 2 frames


def test_both_layouts_are_known_and_a_missing_file_is_one_line(tiny_uav_folder, tiny_uav_cache, tmp_path):
    from vsrup.models import hub, upscale_a_video

    assert choose("upscale-a-video").source == REPO_ID
    assert choose(str(tiny_uav_folder)).family == "upscale-a-video"  # by its files: it has no model_index.json
    snapshot = next((tiny_uav_cache / "hub").glob("models--Runware--Video-Upscale/snapshots/*"))
    assert choose(str(snapshot)).family == "upscale-a-video"  # by its model_index.json
    assert hub.download(REPO_ID, upscale_a_video.FILES) == snapshot  # `vsrup download upscale-a-video`, offline: the cached copy
    broken = tmp_path / "broken"
    shutil.copytree(tiny_uav_folder, broken)
    (broken / "unet" / "unet_video.bin").unlink()
    config = UpscaleConfig(model=str(broken), device="cpu")
    with pytest.raises(ModelError, match=r"has no UNet weights of Upscale-A-Video: expected one of unet/unet_video.bin, "):
        upscale_a_video.Model(str(broken), config)


def test_pickles_are_converted_once_and_the_licence_is_said(tiny_uav_folder, tmp_path, monkeypatch):
    from vsrup.models import upscale_a_video

    point_hf_at(monkeypatch, tmp_path / "hf")
    config = UpscaleConfig(model=str(tiny_uav_folder), device="cpu", sample=SampleConfig(steps=2))
    first, again = [], []
    upscale_a_video.Model(str(tiny_uav_folder), config, first.append)
    model = upscale_a_video.Model(str(tiny_uav_folder), config, again.append)
    converted = lambda events: sorted(e.message.split()[1] for e in events if e.message.startswith("converted"))  # noqa: E731
    assert converted(first) == ["pytorch_model.bin", "unet_video.bin", "vae_video.bin"]
    assert converted(again) == []
    assert any(e.kind == "warning" and "non-commercial" in e.message for e in again)
    assert model.vae.conditioned and model.info.window == 8


def test_upscale_and_frames_run_on_the_official_folder(tiny_uav_folder, tmp_path, run_vsrup, monkeypatch):
    import av
    from PIL import Image

    point_hf_at(monkeypatch, tmp_path / "hf")
    src = mf.make_video(tmp_path / "in.mp4", frames=10, size=(16, 12))  # windows [0, 8) and [6, 10), cross-faded at 6, 7
    out = tmp_path / "out.mp4"
    code, err = run_vsrup("upscale", src, out, "--model", tiny_uav_folder, "--steps", "2", "--propagation-steps", "1")
    assert code == 0, err
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
        assert sum(1 for _ in c.decode(video=0)) == 10
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((12, 16, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    code, err = run_vsrup("frames", folder, tmp_path / "shots_x4", "--model", tiny_uav_folder, "--steps", "2")
    assert code == 0, err
    assert all(Image.open(tmp_path / "shots_x4" / f"{i}.png").size == (64, 48) for i in range(3))


def test_upscale_and_frames_run_on_the_mirror_in_the_cache(tiny_uav_cache, tmp_path, run_vsrup):
    import av
    from PIL import Image

    src = mf.make_video(tmp_path / "in.mp4", frames=4, size=(16, 12))
    code, err = run_vsrup("upscale", src, tmp_path / "out.mp4", "--model", "upscale-a-video", "--steps", "2")
    assert code == 0, err
    assert "non-commercial" in err
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
        assert sum(1 for _ in c.decode(video=0)) == 4
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((12, 16, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    code, err = run_vsrup("frames", folder, tmp_path / "shots_x4", "--model", "upscale-a-video", "--steps", "2", "-s", "2")
    assert code == 0, err
    assert all(Image.open(tmp_path / "shots_x4" / f"{i}.png").size == (32, 24) for i in range(2))


def test_a_windows_frames_are_seeded_by_their_input_indices(tiny_uav_folder, tmp_path, monkeypatch):
    """The determinism contract: the same window and indices give the same frames, bit for bit; other indices
    (other noise) give other frames."""
    from tiny_sd import run_window

    from vsrup.models import upscale_a_video

    point_hf_at(monkeypatch, tmp_path / "hf")
    config = UpscaleConfig(model=str(tiny_uav_folder), device="cpu", sample=SampleConfig(steps=2, seed=5, color_fix="none"))
    model = upscale_a_video.Model(str(tiny_uav_folder), config)
    frames = np.random.default_rng(3).random((4, 12, 16, 3), dtype=np.float32)
    first, again = (run_window(model, config, frames, range(3, 7)) for _ in range(2))
    other = run_window(model, config, frames, range(4, 8))
    assert first.shape == (4, 48, 64, 3)
    assert np.array_equal(first, again)
    assert np.abs(first - other).mean() > 1e-3


@pytest.mark.parametrize("video", [False, True])
def test_the_tiled_decode_with_chunk_statistics_is_the_whole_decode_but_for_attention(video):
    """Pass by pass on cores with the chunk's GroupNorm statistics, the 3x3x3 residuals and the LR condition: the
    untiled decode of the chunk, within 1e-5, once the mid-block attention (run in windows) is taken out."""
    from tiny_uav import TINY_VAE_VIDEO_CONFIG

    from vsrup.sampling.upscale_a_video import decode_chunk, decode_window

    vae = randomised(vae_from_config(TINY_VAE_VIDEO_CONFIG if video else TINY_VAE_3D_CONFIG, video=video), 21)
    for attn in vae.decoder.mid_block.attentions:
        torch.nn.init.zeros_(attn.to_out[0].weight)
        torch.nn.init.zeros_(attn.to_out[0].bias)
    torch.manual_seed(22)
    z, lr = torch.randn(3, 4, 10, 13), torch.rand(3, 3, 10, 13) * 2 - 1  # ragged: cores of unequal sizes
    with torch.no_grad():
        whole = vae.decode_frames(z, lr if video else None, frames=3)
        for tile in (4, 8):
            assert torch.allclose(decode_chunk(vae, z, lr, tile, 2), whole, atol=2e-5)
        planned = decode_window(vae, z * vae.config.scaling_factor, lr, MemoryPlan((10, 13), 0, 0, 1, 4, 2))  # the plan's path
        assert torch.allclose(planned, whole, atol=2e-5)
