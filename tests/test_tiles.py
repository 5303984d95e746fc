"""Tiled evaluation: plan geometry, weights, exactness, seams and batch grouping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vsrup.sampling.tiles import DEFAULT_WEIGHTING, WEIGHTINGS, plan, profile, spans, tiled

COMBOS = [  # (h, w, tile, overlap): odd sizes, h or w < tile, tile == overlap + 1, no overlap
    (1, 1, 8, 0),
    (7, 200, 64, 16),
    (37, 53, 16, 5),
    (33, 32, 32, 8),
    (65, 129, 64, 32),
    (100, 3, 4, 3),
    (9, 11, 2, 1),
    (128, 128, 128, 32),
    (270, 480, 128, 32),
    (31, 31, 8, 0),
    (50, 77, 13, 12),
]


def box_blur(x: torch.Tensor, k: int = 9) -> torch.Tensor:
    """Fixed k x k box blur with zero padding: a stand-in model whose tiles see fake borders."""
    kernel = torch.ones(x.shape[1], 1, k, k, dtype=x.dtype) / k**2  # (C, 1, k, k)
    return F.conv2d(x, kernel, padding=k // 2, groups=x.shape[1])  # (N, C, h, w)


def blur_and_tile_mean(x: torch.Tensor) -> torch.Tensor:
    """Blur plus each input's own spatial mean: a per-tile statistic, like GroupNorm or attention."""
    return box_blur(x) + x.mean(dim=(2, 3), keepdim=True)  # (N, C, h, w)


def smooth_field(b: int, c: int, h: int, w: int) -> torch.Tensor:
    torch.manual_seed(0)
    coarse = torch.randn(b, c, h // 16, w // 16)  # (B, C, h/16, w/16)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False) + 0.3 * torch.randn(b, c, h, w)


def hard_paste(fn, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """The anti-pattern: each tile's output overwrites what earlier tiles wrote."""
    out = torch.zeros_like(x)  # (B, C, h, w)
    for t in plan(x.shape[0], x.shape[2], x.shape[3], tile, overlap):
        patch = x[t.row : t.row + 1, :, t.y.start : t.y.end, t.x.start : t.x.end]  # (1, C, th, tw)
        out[t.row, :, t.y.start : t.y.end, t.x.start : t.x.end] = fn(patch)[0]
    return out


def overlap_bands(h: int, w: int, tile: int, overlap: int) -> torch.Tensor:
    """Pixels covered by more than one tile: where seams live."""
    mask = torch.zeros(h, w, dtype=torch.bool)  # (h, w)
    for s in spans(h, tile, overlap)[1:]:
        mask[s.start : s.start + s.before] = True
    for s in spans(w, tile, overlap)[1:]:
        mask[:, s.start : s.start + s.before] = True
    return mask


def largest_step(err: torch.Tensor) -> float:
    """Largest difference of the error between neighbouring pixels: a visible line if large."""
    return max(err.diff(dim=2).abs().max().item(), err.diff(dim=3).abs().max().item())


@pytest.mark.parametrize("h, w, tile, overlap", COMBOS)
def test_spans_cover_flush_and_overlap_at_least_asked(h, w, tile, overlap):
    for n in (h, w):
        ss = spans(n, tile, overlap)
        assert ss[0].start == 0 and ss[-1].end == n  # the last span is flush with the edge
        assert {s.size for s in ss} == {min(n, tile)}  # one shape for every tile
        for a, b in zip(ss, ss[1:]):
            assert a.start < b.start and a.end - b.start == a.after == b.before >= overlap


@pytest.mark.parametrize("h, w, tile, overlap", COMBOS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_every_pixel_has_positive_weight(h, w, tile, overlap, weighting):
    total = torch.zeros(h, w, dtype=torch.float64)  # (h, w)
    for t in plan(1, h, w, tile, overlap):
        weight = profile(t.y, weighting=weighting)[:, None] * profile(t.x, weighting=weighting)[None, :]  # (th, tw)
        assert (weight > 0).all()
        total[t.y.start : t.y.end, t.x.start : t.x.end] += weight
    assert total.min() > 0


def test_one_covering_tile_is_exactly_untiled():
    conv = torch.nn.Conv2d(7, 4, 5, padding=2)  # a real receptive field
    x = torch.randn(3, 7, 40, 56)  # (B, 7, h, w)
    rows_seen = []

    def fn(tiles, rows):
        rows_seen.append(rows)
        return conv(tiles) + rows.view(-1, 1, 1, 1)  # per-sample conditioning through rows

    with torch.no_grad():
        untiled = fn(x, torch.arange(3))  # (B, 4, h, w)
        for tile in (56, 64, 1000):
            assert torch.equal(tiled(fn, x, tile=tile, overlap=32, batch=8), untiled)
        assert torch.equal(tiled(fn, x, tile=0, overlap=32, batch=8), untiled)


def test_pointwise_model_makes_tiling_the_identity():
    torch.manual_seed(0)
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):  # a few ulps of normalisation
        gains = torch.tensor([2.0, -0.5, 3.0, 1.25], dtype=dtype).view(1, 4, 1, 1)  # (1, 4, 1, 1)
        x = torch.randn(2, 4, 37, 53, dtype=dtype)  # (B, 4, h, w)
        for weighting in WEIGHTINGS:
            for tile, overlap in ((16, 5), (8, 7), (20, 0)):
                out = tiled(lambda t, r: t * gains, x, tile=tile, overlap=overlap, batch=5, weighting=weighting)
                torch.testing.assert_close(out, x * gains, rtol=rtol, atol=rtol)


def test_scaled_output_blends_in_output_pixels():
    x = torch.randn(1, 3, 21, 30)  # (B, 3, h, w)
    up = lambda t, r: F.interpolate(t, scale_factor=4, mode="nearest")  # noqa: E731  (N, 3, 4th, 4tw)
    out = tiled(up, x, tile=12, overlap=4, batch=2, scale=4)  # (B, 3, 4h, 4w)
    torch.testing.assert_close(out, up(x, None), rtol=1e-6, atol=1e-6)


def test_blending_beats_hard_paste_and_default_beats_gaussian_on_a_blur():
    x = smooth_field(2, 4, 160, 224)  # (B, 4, h, w)
    reference = box_blur(x)  # (B, 4, h, w)
    tile, overlap = 64, 32
    bands = overlap_bands(160, 224, tile, overlap)
    hard = (hard_paste(box_blur, x, tile, overlap) - reference).abs()[..., bands].max()
    errors = {
        w: (tiled(lambda t, r: box_blur(t), x, tile=tile, overlap=overlap, batch=16, weighting=w) - reference).abs()
        for w in WEIGHTINGS
    }
    assert hard > 1.0  # hard pasting shows the tile's fake zero border
    for err in errors.values():
        assert err[..., bands].max() < hard / 1000
    assert errors["cosine"].max() < 1e-5  # measured 2.1e-6 (gaussian 3.2e-5)
    assert errors[DEFAULT_WEIGHTING].max() <= min(e.max() for e in errors.values())


def test_default_gives_the_smallest_step_with_a_per_tile_statistic():
    x = smooth_field(2, 4, 160, 224)  # (B, 4, h, w)
    reference = blur_and_tile_mean(x)  # (B, 4, h, w)
    tile, overlap = 64, 32
    hard = largest_step(hard_paste(blur_and_tile_mean, x, tile, overlap) - reference)
    steps = {
        w: largest_step(
            tiled(lambda t, r: blur_and_tile_mean(t), x, tile=tile, overlap=overlap, batch=16, weighting=w) - reference
        )
        for w in WEIGHTINGS
    }
    assert steps["cosine"] < hard / 20  # measured 0.059 vs 1.6 (gaussian 0.17)
    assert steps[DEFAULT_WEIGHTING] == min(steps.values())


def test_result_and_rows_do_not_depend_on_batch():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(7, 4, 3, padding=1)
    labels = torch.tensor([3.0, -1.0, 0.5])  # per-sample conditioning, gathered with rows
    x = torch.randn(3, 7, 45, 70)  # (B, 7, h, w)
    calls = []

    def fn(tiles, rows):
        calls.append((tiles.shape, rows.clone()))
        return torch.cat([conv(t[None]) for t in tiles]) * labels[rows].view(-1, 1, 1, 1)  # (N, 4, th, tw)

    with torch.no_grad():
        results = {}
        for batch in (1, 2, 5, 7, 100):
            calls.clear()
            results[batch] = tiled(fn, x, tile=24, overlap=8, batch=batch)  # (B, 4, h, w)
            per_sample = len(spans(45, 24, 8)) * len(spans(70, 24, 8))
            rows = torch.cat([r for _, r in calls])
            assert torch.equal(rows, torch.arange(3).repeat_interleave(per_sample))
            assert all(shape[0] <= batch and shape[1:] == (7, 24, 24) for shape, _ in calls)
        batched = [tiled(lambda t, r: conv(t), x, tile=24, overlap=8, batch=b) for b in (1, 7)]  # (B, 4, h, w)
    for out in results.values():
        assert torch.equal(out, results[1])  # fn is per-tile, so grouping cannot change a bit
    # A batched conv is not batch-invariant on CPU (oneDNN): measured 8.3e-7 apart.
    torch.testing.assert_close(batched[0], batched[1], rtol=0, atol=1e-5)


def test_tile_zero_runs_whole_samples_in_batches():
    x = torch.randn(5, 3, 10, 12)  # (B, 3, h, w)
    calls = []

    def fn(t, r):
        calls.append(r.tolist())
        return t * 2

    assert torch.equal(tiled(fn, x, tile=0, overlap=32, batch=2), x * 2)
    assert calls == [[0, 1], [2, 3], [4]]


def test_rejects_bad_arguments():
    x = torch.randn(1, 3, 10, 10)
    with pytest.raises(ValueError):
        tiled(lambda t, r: t, x, tile=8, overlap=8, batch=1)
    with pytest.raises(ValueError):
        tiled(lambda t, r: t, x, tile=8, overlap=2, batch=0)
    with pytest.raises(ValueError):
        tiled(lambda t, r: t[..., :-1], x, tile=8, overlap=2, batch=1)


def test_tiling_never_copies_from_the_host(monkeypatch):
    """On a GPU a blocking copy from the host synchronises the stream, so the host would wait for every
    queued tile; weights and rows must be made on x's device. The meta device stands in for a GPU:
    any CPU tensor moved to it, or built for it from Python data, fails the test."""
    to = torch.Tensor.to

    def guarded_to(self, *args, **kwargs):
        moved = to(self, *args, **kwargs)
        assert not (self.device.type == "cpu" and moved.device.type == "meta"), "a host-to-device copy"
        return moved

    def guarded_tensor(data, *args, device=None, **kwargs):
        raise AssertionError(f"torch.tensor({data!r}, device={device}) copies from the host")

    monkeypatch.setattr(torch.Tensor, "to", guarded_to)
    monkeypatch.setattr(torch, "tensor", guarded_tensor)
    x = torch.empty(2, 7, 40, 56, device="meta")  # (B, 7, h, w)
    for scale in (1, 4):
        out = tiled(lambda tiles, rows: tiles[:, :4].repeat_interleave(scale, 2).repeat_interleave(scale, 3) * rows.view(-1, 1, 1, 1),
                    x, tile=16, overlap=4, batch=3, scale=scale)
        assert out.shape == (2, 4, 40 * scale, 56 * scale) and out.device.type == "meta"
