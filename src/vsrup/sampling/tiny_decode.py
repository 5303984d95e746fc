"""The tiny temporal autoencoder (``models/temporal_tiny.py``) tile by tile, equal to the whole-frame computation.

Every layer of it is a 3x3 convolution (or a 2x nearest upsample) except each decoder block's TPM,
which mixes the whole frame: a 1-D convolution along the raster-ordered 4x4-pooled positions of
this frame followed by the previous frame's. So:

* ``previous_features`` (the encoder; no TPM runs there): each tile is computed with a halo of
  ``HALO`` latent px and each block's output is cut to the tile, pooled and written into the
  frame's pooled map, which is all the decoder's TPMs read.
* ``decode``: block k's TPM needs block k's pooled features over the whole frame, and they depend on
  the TPMs of the blocks before it. One pass over the tiles per block collects them (recomputing
  each tile up to that block: the low-resolution layers run up to 7 times, the full-resolution ones
  twice; the decoder is ~1% of a frame's FLOPs), the TPM runs once on the frame's maps, and a last
  pass decodes every tile with each block's fused map, bilinearly upsampled, cut to it.

Tiles start at multiples of 4 latent px, so at every level the 4x4 pooling cells and the stride-2
samples of a tile fall on the frame's own grid. A whole frame is one tile and one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vsrup.models.temporal_tiny import POOL, TEMPORAL_GAIN, TemporalAutoencoderTiny, TemporalBlock, pool

# Receptive radius in latent px: decoder 10 + 10/2 + 5/4 = 16.25 (3x3 convs per level, latent to 4x),
# encoder 64 high-resolution px = 16; rounded up to a multiple of 4 so a tile's computed rows stay on the grid.
HALO = 20
FACTOR = 4  # high-resolution px per latent px


def regions(size: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one side of ``size`` latent px: (start, stop) of the tile and (start, stop) it is computed on."""
    if tile <= 0 or tile >= size:
        return [(0, size, 0, size)]
    if tile % POOL:
        raise ValueError(f"the tiny decoder's tiles must be a multiple of {POOL} latent px, got {tile}")
    return [(a, min(a + tile, size), max(0, a - HALO), min(size, a + tile + HALO)) for a in range(0, size, tile)]


def bilinear_crop(x: torch.Tensor, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """Rows and columns [a, b) of ``F.interpolate(x, size, mode="bilinear", align_corners=False)``, without the rest.

    (N, C, hp, wp) -> (N, C, rows[1] - rows[0], cols[1] - cols[0]): each output index i samples the
    input at (i + 0.5) * in / out - 0.5, clamped at 0, from its two neighbours (the last repeated).
    """

    def taps(n_in: int, n_out: int, span: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = torch.arange(span[0], span[1], device=x.device, dtype=torch.float32)  # (n,)
        source = ((out + 0.5) * (n_in / n_out) - 0.5).clamp_(min=0)  # (n,)
        low = source.floor().long()  # (n,)
        return low, (low + 1).clamp_(max=n_in - 1), source - low

    r0, r1, rw = taps(x.shape[2], size[0], rows)
    c0, c1, cw = taps(x.shape[3], size[1], cols)
    x = x.float()
    y = x[:, :, r0] * (1 - rw)[:, None] + x[:, :, r1] * rw[:, None]  # (N, C, n_rows, wp)
    return y[..., c0] * (1 - cw) + y[..., c1] * cw  # (N, C, n_rows, n_cols)


def paste(frame: torch.Tensor, part: torch.Tensor, row: int, col: int) -> None:
    """Write ``part`` (N, C, r, c) into ``frame`` (N, C, R, C') at (row, col), in place."""
    if part.numel():
        frame[:, :, row : row + part.shape[2], col : col + part.shape[3]] = part


def previous_features(tae: TemporalAutoencoderTiny, image: torch.Tensor, tile: int) -> list[torch.Tensor]:
    """The decoder blocks' pooled previous-frame features from the warped previous output.

    ``image`` (N, 3, 4h, 4w) in [-1, 1], fed to the encoder's layers as it is (the published feature
    path; see models/temporal_tiny.py) -> one (N, 64, hk // 4, wk // 4) map per decoder block, in the
    decoder's order (the encoder's block outputs reversed; hk x wk is that block's resolution).
    """
    layers = list(tae.encoder.layers)
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, TemporalBlock))
    n, _, height, width = image.shape  # (N, 3, 4h, 4w)
    h, w = height // FACTOR, width // FACTOR
    maps: list[torch.Tensor | None] = [None] * len(tae.blocks(tae.encoder))
    for y0, y1, top, bottom in regions(h, tile):
        for x0, x1, left, right in regions(w, tile):
            x = image[:, :, top * FACTOR : bottom * FACTOR, left * FACTOR : right * FACTOR]  # (N, 3, 4th, 4tw)
            scale, k = FACTOR, 0  # px of this level per latent px
            for layer in layers[: last + 1]:
                x = layer(x)
                if isinstance(layer, torch.nn.Conv2d) and layer.stride[0] == 2:
                    scale //= 2
                if isinstance(layer, TemporalBlock):
                    inner = x[:, :, (y0 - top) * scale : (y1 - top) * scale, (x0 - left) * scale : (x1 - left) * scale]
                    if maps[k] is None:
                        maps[k] = x.new_zeros(n, x.shape[1], h * scale // POOL, w * scale // POOL)
                    paste(maps[k], pool(inner), y0 * scale // POOL, x0 * scale // POOL)
                    k += 1
    return maps[::-1]


def decode(tae: TemporalAutoencoderTiny, latents: torch.Tensor, previous: list[torch.Tensor] | None, tile: int) -> torch.Tensor:
    """(N, 4, h, w) UNet-space latents -> (N, 3, 4h, 4w) in about [-1, 1], not clamped.

    ``previous``: ``previous_features`` of the warped previous output (the TPMs run), or None (a
    restart: the stock decoder). ``tile`` 0 decodes the whole frame at once.
    """
    n, _, h, w = latents.shape  # (N, 4, h, w)
    rows, cols = regions(h, tile), regions(w, tile)
    # 1. Tiles with the TPMs running: one pass per block for the frame's pooled features of block k (from the
    #    fused maps of the blocks before it), then its fused map. One tile (the whole frame) fuses as it goes.
    fused = None
    if previous is not None and len(rows) * len(cols) > 1:
        fused = []
        for k, block in enumerate(tae.blocks(tae.decoder)):
            current = None
            for y0, y1, top, bottom in rows:
                for x0, x1, left, right in cols:
                    c, scale = decode_region(tae, latents, (top, bottom), (left, right), previous, fused, stop=k)  # (N, 64, s*th, s*tw)
                    inner = c[:, :, (y0 - top) * scale : (y1 - top) * scale, (x0 - left) * scale : (x1 - left) * scale]
                    if current is None:
                        current = c.new_zeros(n, c.shape[1], h * scale // POOL, w * scale // POOL)
                    paste(current, pool(inner), y0 * scale // POOL, x0 * scale // POOL)
            fused.append(block.temporal(current, previous[k]))  # (N, 64, hk // 4, wk // 4)

    # 2. Every tile, each block with its fused map (or none, at a restart).
    out = latents.new_empty(n, 3, h * FACTOR, w * FACTOR, dtype=torch.float32)  # (N, 3, 4h, 4w)
    for y0, y1, top, bottom in rows:
        for x0, x1, left, right in cols:
            part = decode_region(tae, latents, (top, bottom), (left, right), previous, fused)  # (N, 3, 4th, 4tw)
            crop = part[:, :, (y0 - top) * FACTOR : (y1 - top) * FACTOR, (x0 - left) * FACTOR : (x1 - left) * FACTOR]
            out[:, :, y0 * FACTOR : y1 * FACTOR, x0 * FACTOR : x1 * FACTOR] = crop
    return out


def decode_region(tae, latents, rows, cols, previous, fused, stop=None):
    """The decoder on latent rows x cols of the frame.

    ``fused``: the frame's fused map of each block so far (cut to the region and upsampled here), or
    None to compute each block's TPM from the region itself (only right when the region is the whole
    frame). Returns (N, 3, 4th, 4tw) in about [-1, 1], or with ``stop`` = k, block k's convolution
    output and its scale (px per latent px) before its TPM.
    """
    h, w = latents.shape[2:]
    x = torch.tanh(latents[:, :, rows[0] : rows[1], cols[0] : cols[1]] / 3) * 3  # DecoderTiny's soft clamp
    scale, k = 1, 0
    for layer in tae.decoder.layers:
        if not isinstance(layer, TemporalBlock):
            x = layer(x)
            scale *= 2 if isinstance(layer, torch.nn.Upsample) else 1
            continue
        c = layer.conv(x)  # (N, 64, s*th, s*tw)
        if k == stop:
            return c, scale
        if previous is not None:
            if fused is None:
                f = F.interpolate(layer.temporal(pool(c), previous[k]), size=c.shape[-2:], mode="bilinear", align_corners=False)
            else:
                span = lambda a, b: (a * scale, b * scale)  # noqa: E731  the region on this level's grid
                f = bilinear_crop(fused[k], (h * scale, w * scale), span(*rows), span(*cols)).to(c.dtype)
            c = c + TEMPORAL_GAIN * f  # (N, 64, s*th, s*tw)
        x = layer.fuse(c + layer.skip(x))
        k += 1
    return x.mul(2).sub(1)  # (N, 3, 4th, 4tw): [0, 1] -> [-1, 1], as DecoderTiny
