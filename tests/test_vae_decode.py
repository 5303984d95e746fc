"""Tiled VAE decode with the frame's GroupNorm statistics, against the full decode of real tiny diffusers AutoencoderKLs."""

from __future__ import annotations

import pytest
import torch
from tiny_sd import one_torch_thread  # noqa: F401  (fixture)
from torch import nn

from vsrup.sampling.tiles import tiled
from vsrup.sampling.vae_decode import cores, decode_tiled, moments, norm_affine, normalise

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # many small convolutions: OpenMP threads only contend

SCALING = 0.08333  # the x4 upscaler's vae.config.scaling_factor


def make_vae(levels: int = 3, attention: bool = True):
    """A tiny AutoencoderKL after torch.manual_seed(0): 3 levels = factor 4 (the x4 upscaler's), 4 = factor 8."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(32, 32, 64, 64)[:levels],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        scaling_factor=SCALING,
        mid_block_add_attention=attention,  # True (diffusers' default): the quadratic self-attention is there
    ).eval()


@pytest.fixture(scope="module")
def vae():
    return make_vae()


@pytest.fixture(scope="module")
def latents(vae):
    torch.manual_seed(1)
    image = torch.rand(1, 3, 128, 192) * 2 - 1  # (B, 3, H, W)
    with torch.no_grad():
        return vae.encode(image).latent_dist.mode() * SCALING  # (B, 4, 32, 48), channels_last strides from the encoder's convs


def full_decode(vae, latents):
    with torch.no_grad():
        return torch.cat([vae.decode(z / SCALING).sample for z in latents.split(1)])  # (B, 3, fh, fw)


def random_latents(b: int, h: int, w: int, seed: int = 1):
    return torch.randn(b, 4, h, w, generator=torch.Generator().manual_seed(seed))  # (B, 4, h, w), the sampler's scale


def test_one_covering_tile_and_tile_zero_are_exactly_the_full_decode(vae, latents):
    full = full_decode(vae, latents)  # (B, 3, 128, 192)
    assert torch.equal(decode_tiled(vae, latents, tile=64, overlap=16), full)
    assert torch.equal(decode_tiled(vae, latents, tile=0, overlap=16), full)


@pytest.mark.parametrize("levels, layout", [(3, torch.contiguous_format), (4, torch.contiguous_format), (3, torch.channels_last)])
def test_without_attention_tiles_are_the_untiled_decode(levels, layout):
    """Shared statistics and halos leave nothing but float rounding: factor 4 or 8, uneven cores, per frame,
    and with the channels-last weights the pipeline loads (sd_x4.to_device)."""
    vae = make_vae(levels, attention=False).to(memory_format=layout)
    z = random_latents(2, 23, 37) * torch.tensor([1.0, 3.0])[:, None, None, None]  # (2, 4, 23, 37): frames of different scale
    full = full_decode(vae, z)  # (2, 3, f 23, f 37)
    factor = 2 ** (levels - 1)
    out = decode_tiled(vae, z, tile=8, overlap=2)  # 3 x 5 cores of 7-8 latent px
    assert out.shape == (2, 3, factor * 23, factor * 37)
    assert (out - full).abs().max() < 1e-4 * full.abs().max()  # measured 2e-6 relative
    alone = (tiled(lambda t, rows: vae.decode(t).sample, z / SCALING, tile=8, overlap=2, batch=1, scale=factor) - full).abs()
    assert alone.max() > 0.05 * full.abs().max()  # each tile decoded alone (per-tile statistics) is far off: the test can fail


def test_with_attention_only_the_attention_windows_differ():
    vae = make_vae()
    z = random_latents(1, 90, 160)  # (1, 4, 90, 160)
    full = full_decode(vae, z)  # (1, 3, 360, 640)
    err = {tile: (decode_tiled(vae, z, tile=tile, overlap=tile // 4) - full).abs() for tile in (128, 32)}
    alone = (tiled(lambda t, rows: vae.decode(t).sample, z / SCALING, tile=32, overlap=8, batch=1, scale=4) - full).abs()
    # Measured (docs/tiling.md), output range about 2: tile 128 mean 5.6e-5, max 1.3e-3; tile 32 mean 5.7e-4, max 0.012;
    # each tile alone at 32: mean 0.0062, max 0.18.
    assert err[128].mean() < 2e-4 and err[128].max() < 5e-3
    assert err[32].mean() < 2e-3 and err[32].max() < 0.04
    assert alone.mean() > 5 * err[32].mean() and alone.max() > 5 * err[32].max()
    assert err[32].mean() > err[128].mean()  # smaller windows see less context: the attention is measured, not skipped


def test_without_frame_statistics_each_tile_is_decoded_alone():
    """The memory plan's fallback when a frame's states do not fit: each tile alone, blended (the old decode)."""
    vae = make_vae()
    z = random_latents(1, 40, 56)  # (1, 4, 40, 56)
    alone = tiled(lambda t, rows: vae.decode(t).sample, z / SCALING, tile=32, overlap=8, batch=1, scale=4)
    assert torch.equal(decode_tiled(vae, z, tile=32, overlap=8, frame_statistics=False), alone)
    assert torch.equal(decode_tiled(vae, z, tile=64, overlap=8, frame_statistics=False), full_decode(vae, z))  # one covering tile


def test_no_worse_than_diffusers_own_tiled_decode(latents):
    vae = make_vae()
    full = full_decode(vae, latents)  # (B, 3, 128, 192)
    ours = (decode_tiled(vae, latents, tile=32, overlap=8) - full).abs()  # (B, 3, 128, 192)
    vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor = 32, 128, 0.25
    with torch.no_grad():
        theirs = (vae.tiled_decode(latents / SCALING).sample - full).abs()  # (B, 3, 128, 192)
    # Measured: mean 0.021 vs 0.063, max 0.19 vs 0.97 (diffusers 0.42.1, linear blend, 25% overlap). On this
    # input all of our error is the attention windows' (two 32-px windows over a 32x48 latent).
    assert ours.mean() < theirs.mean() / 2 and ours.max() < theirs.max() / 3


def test_frame_statistics_give_torchs_group_norm():
    torch.manual_seed(0)
    norm = nn.GroupNorm(4, 8, eps=1e-6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(1, 8, 13, 17) * 3 + 50  # (1, C, H, W), an offset far above the spread
    parts = [moments(x[:, :, :, a:b]) for a, b in cores(17, 5)]
    total = type(parts[0])(sum(p.total for p in parts), sum(p.squares for p in parts), 13 * 17)
    torch.testing.assert_close(normalise(x, norm_affine(norm, total)), norm(x), rtol=1e-5, atol=1e-4)


def test_cores_partition_the_axis():
    for n, tile in [(1, 8), (8, 8), (9, 8), (23, 8), (160, 32), (90, 128)]:
        spans = cores(n, tile)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        sizes = [b - a for a, b in spans]
        assert max(sizes) <= tile and max(sizes) - min(sizes) <= 1


def test_unsupported_decoders_are_refused():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("AttnUpDecoderBlock2D",) * 2,
        block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=32,
    ).eval()
    with pytest.raises(ValueError, match="UpDecoderBlock2D"):
        decode_tiled(vae, random_latents(1, 16, 16), tile=8, overlap=2)
