"""Image folders: every fixture is generated here, small; the real files of ../shared/media are read too."""

from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from conftest import shared_media_files
from vsrup.errors import InputDataError, OutputError
from vsrup.media.images import list_images, read_image, write_image

H, W = 6, 10
RNG = np.random.default_rng(0)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def rand8(*shape):
    return RNG.integers(0, 256, (H, W, *shape), dtype=np.uint8)


def rand16(*shape):
    a = RNG.integers(0, 65536, (H, W, *shape), dtype=np.uint16)
    a[0, 0] = 0x1234  # a value whose low byte 8 bits would lose
    return a


def png16(path: Path, a: np.ndarray, colour_type: int, icc: bytes | None = None, orientation: int = 0) -> None:
    """A 16-bit PNG written by hand, for what neither Pillow nor OpenCV writes (gray + alpha, ICC, EXIF)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = a.shape[:2]
    rows = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(h))
    iccp = chunk(b"iCCP", b"icc\0\0" + zlib.compress(icc)) if icc else b""
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    exif_chunk = chunk(b"eXIf", exif.tobytes().removeprefix(b"Exif\0\0")) if orientation else b""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + iccp + exif_chunk + idat + chunk(b"IEND", b""))


def tiff16(path: Path, a: np.ndarray, orientation: int) -> None:
    """A baseline uncompressed 16-bit RGB TIFF with an orientation tag, written by hand (Pillow cannot)."""
    h, w, c = a.shape
    pixels = a.astype("<u2").tobytes()
    bits_at = 8 + 2 + 12 * 10 + 4  # header, IFD of 10 entries, next-IFD offset
    pixels_at = bits_at + 2 * c
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, c, bits_at), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, pixels_at), (274, 3, 1, orientation), (277, 3, 1, c), (278, 3, 1, h), (279, 4, 1, len(pixels))]  # fmt: skip
    ifd = b"".join(struct.pack("<HHII" if kind == 4 or count > 1 else "<HHIHxx", tag, kind, count, value) for tag, kind, count, value in tags)
    path.write_bytes(b"II*\0" + struct.pack("<IH", 8, len(tags)) + ifd + b"\0" * 4 + struct.pack("<3H", 16, 16, 16) + pixels)


# Each maker writes a file and returns (rgb, alpha) as the reader must see them: float in [0, 1].
def make_rgb8_png(p):
    a = rand8(3)
    PILImage.fromarray(a).save(p)
    return a / 255, None


def make_rgb16_png(p):
    a = rand16(3)
    cv2.imwrite(str(p), a[..., ::-1])  # OpenCV is BGR
    return a / 65535, None


def make_rgba16_png(p):
    a = rand16(4)
    cv2.imwrite(str(p), a[..., [2, 1, 0, 3]])
    return a[..., :3] / 65535, a[..., 3:] / 65535


def make_gray16_png(p):
    a = rand16()
    PILImage.fromarray(a).save(p)  # mode I;16
    return np.repeat(a[..., None] / 65535, 3, -1), None


def make_la16_png(p):
    a = rand16(2)
    png16(p, a, colour_type=4)
    return np.repeat(a[..., :1] / 65535, 3, -1), a[..., 1:] / 65535


def make_rgba8_png(p):
    a = rand8(4)
    PILImage.fromarray(a).save(p)
    return a[..., :3] / 255, a[..., 3:] / 255


def make_gray8_png(p):
    a = rand8()
    PILImage.fromarray(a).save(p)
    return np.repeat(a[..., None] / 255, 3, -1), None


def make_la8_png(p):
    a = rand8(2)
    PILImage.fromarray(a, "LA").save(p)
    return np.repeat(a[..., :1] / 255, 3, -1), a[..., 1:] / 255


def make_palette_png(p):
    palette = RNG.integers(0, 256, (4, 3), dtype=np.uint8)
    index = RNG.integers(0, 4, (H, W), dtype=np.uint8)
    im = PILImage.fromarray(index, "P")
    im.putpalette(palette.ravel().tolist())
    im.save(p, transparency=0)  # index 0 fully transparent (tRNS)
    return palette[index] / 255, (index != 0)[..., None].astype(float)


def make_rgb16_tiff(p):
    a = rand16(3)
    cv2.imwrite(str(p), a[..., ::-1])
    return a / 65535, None


def make_gray16_tiff(p):
    a = rand16()
    PILImage.fromarray(a).save(p)
    return np.repeat(a[..., None] / 65535, 3, -1), None


def make_rgb8_tiff(p):
    a = rand8(3)
    PILImage.fromarray(a).save(p)
    return a / 255, None


def make_rgb8_bmp(p):
    a = rand8(3)
    PILImage.fromarray(a).save(p)
    return a / 255, None


def make_rgba8_bmp(p):
    a = rand8(4)
    cv2.imwrite(str(p), a[..., [2, 1, 0, 3]])  # OpenCV writes a BITMAPV5 header with an alpha mask
    return a[..., :3] / 255, a[..., 3:] / 255


def make_rgba_lossless_webp(p):
    a = rand8(4)
    a[0, :, 3] = 0  # colour under fully transparent pixels must survive too
    PILImage.fromarray(a).save(p, lossless=True, exact=True)
    return a[..., :3] / 255, a[..., 3:] / 255


def make_rgb_jpeg(p):
    a = np.kron(RNG.integers(0, 256, (2, 2, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # flat 8x8 blocks: JPEG keeps them well
    PILImage.fromarray(a).save(p, quality=100, subsampling=0)
    return a / 255, None


def make_gray_jpeg(p):
    a = np.kron(RNG.integers(0, 256, (2, 2)), np.ones((8, 8))).astype(np.uint8)
    PILImage.fromarray(a).save(p, quality=100)
    return np.repeat(a[..., None] / 255, 3, -1), None


# maker, file name, bit depth, mode, exact (else a tolerance in 8-bit steps)
CASES = [
    (make_rgb8_png, "rgb8.png", 8, "rgb", True),
    (make_rgb16_png, "rgb16.png", 16, "rgb", True),
    (make_rgba16_png, "rgba16.png", 16, "rgb", True),
    (make_gray16_png, "gray16.png", 16, "gray", True),
    (make_la16_png, "la16.png", 16, "gray", True),
    (make_rgba8_png, "rgba8.png", 8, "rgb", True),
    (make_gray8_png, "gray8.png", 8, "gray", True),
    (make_la8_png, "la8.png", 8, "gray", True),
    (make_palette_png, "palette.png", 8, "rgb", True),
    (make_rgb16_tiff, "rgb16.tif", 16, "rgb", True),
    (make_gray16_tiff, "gray16.tiff", 16, "gray", True),
    (make_rgb8_tiff, "rgb8.tif", 8, "rgb", True),
    (make_rgb8_bmp, "rgb8.bmp", 8, "rgb", True),
    (make_rgba8_bmp, "rgba8.bmp", 8, "rgb", True),
    (make_rgba_lossless_webp, "rgba.webp", 8, "rgb", True),
    (make_rgb_jpeg, "rgb.jpg", 8, "rgb", False),
    (make_gray_jpeg, "gray.jpeg", 8, "gray", False),
]


def upscale2(a):
    return None if a is None else np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)


def assert_pixels(got, want, exact):
    assert got.dtype == np.float32
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want.astype(np.float32))
    else:
        np.testing.assert_allclose(got, want, atol=3 / 255)


@pytest.mark.parametrize("make, name, bit_depth, mode, exact", CASES, ids=[c[1] for c in CASES])
def test_read_then_write_same_size_and_x2(tmp_path, make, name, bit_depth, mode, exact):
    src = tmp_path / name
    rgb, alpha = make(src)
    image = read_image(src)
    assert (image.bit_depth, image.mode) == (bit_depth, mode)
    assert_pixels(image.rgb, rgb, exact)
    assert (image.alpha is None) == (alpha is None)
    if alpha is not None:
        assert_pixels(image.alpha, alpha, exact)

    for scale, up in ((1, lambda a: a), (2, upscale2)):
        out = tmp_path / f"x{scale}" / name
        out.parent.mkdir()
        write_image(out, up(image.rgb), up(image.alpha), like=image)
        back = read_image(out)
        assert back.bit_depth == bit_depth
        # a 16-bit gray + alpha PNG is written as RGBA with gray replicated: nothing writes 16-bit LA (docs/frames.md)
        assert back.mode == ("rgb" if name == "la16.png" else mode)
        assert_pixels(back.rgb, up(rgb), exact)
        assert (back.alpha is None) == (alpha is None)
        if alpha is not None:
            assert_pixels(back.alpha, up(alpha), exact)
        assert os.listdir(out.parent) == [name]  # no temp file left behind


def test_sixteen_bit_is_not_read_through_eight_bits(tmp_path):
    """Pillow alone returns 8-bit RGB for this file; the reader must not."""
    src = tmp_path / "a.png"
    rgb, _ = make_rgb16_png(src)
    assert PILImage.open(src).mode == "RGB"  # the trap
    image = read_image(src)
    assert round(float(image.rgb[0, 0, 0]) * 65535) == 0x1234


def test_written_formats_are_what_they_claim(tmp_path):
    gray8 = tmp_path / "g.png"
    make_gray8_png(gray8)
    la8 = tmp_path / "la.png"
    make_la8_png(la8)
    gray16 = tmp_path / "g16.png"
    make_gray16_png(gray16)
    lossy = tmp_path / "lossy.webp"
    PILImage.fromarray(rand8(3)).save(lossy, quality=80)
    lossless = tmp_path / "lossless.webp"
    make_rgba_lossless_webp(lossless)
    out = tmp_path / "out"
    out.mkdir()
    rgb8_tiff = tmp_path / "t.tif"
    make_rgb8_tiff(rgb8_tiff)
    for src in (gray8, la8, gray16, lossy, lossless, rgb8_tiff):
        image = read_image(src)
        write_image(out / src.name, image.rgb, image.alpha, like=image)
    assert PILImage.open(out / "g.png").mode == "L"
    assert PILImage.open(out / "la.png").mode == "LA"
    assert PILImage.open(out / "g16.png").mode == "I;16"
    assert read_image(lossy).lossless is False and read_image(lossless).lossless is True
    assert b"VP8 " in (out / "lossy.webp").read_bytes()
    assert b"VP8L" in (out / "lossless.webp").read_bytes()
    assert PILImage.open(out / "t.tif").tag_v2[259] == 5  # LZW, not uncompressed


def test_gray_output_is_luma_clipped_and_rounded(tmp_path):
    src = tmp_path / "g.png"
    make_gray8_png(src)
    like = read_image(src)
    rgb = np.empty((2, 2, 3), np.float32)
    rgb[0, 0] = (0.2, 0.4, 0.6)
    rgb[0, 1] = (-0.5, -0.5, -0.5)
    rgb[1, 0] = (1.5, 1.5, 1.5)
    rgb[1, 1] = (0.5, 0.5, 0.5)
    write_image(tmp_path / "o.png", rgb, None, like=like)
    got = np.asarray(PILImage.open(tmp_path / "o.png"))
    luma = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    assert got.tolist() == [[round(luma * 255), 0], [255, 128]]


def make_gray8_trns_png(p):
    a = rand8()
    a[0, 0] = 7
    PILImage.fromarray(a).save(p, transparency=7)  # tRNS: one gray value is transparent
    return np.repeat(a[..., None] / 255, 3, -1), (a != 7)[..., None].astype(float)


def test_gray_with_a_transparent_value_gets_alpha(tmp_path):
    rgb, alpha = make_gray8_trns_png(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.mode == "gray"
    assert_pixels(image.rgb, rgb, exact=True)
    assert_pixels(image.alpha, alpha, exact=True)


def test_multi_picture_jpeg_keeps_the_main_picture_with_a_warning(tmp_path):
    pictures = [PILImage.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    pictures[0].save(tmp_path / "a.jpg", format="MPO", save_all=True, append_images=pictures[1:])
    events = []
    image = read_image(tmp_path / "a.jpg", emit=events.append)
    np.testing.assert_allclose(image.rgb, 10 / 255, atol=1 / 255)
    assert [e.kind for e in events] == ["warning"] and "main picture" in events[0].message
    write_image(tmp_path / "out.jpg", image.rgb, None, like=image)
    assert PILImage.open(tmp_path / "out.jpg").format == "JPEG"


def test_sixteen_bit_like_written_to_jpeg_is_eight_bit(tmp_path):
    src = tmp_path / "a.png"
    make_rgb16_png(src)
    image = read_image(src)
    write_image(tmp_path / "a.jpg", image.rgb, None, like=image)
    assert read_image(tmp_path / "a.jpg").bit_depth == 8


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.webp", "a.tif"])
def test_icc_profile_is_kept(tmp_path, name):
    src = tmp_path / name
    PILImage.fromarray(rand8(3)).save(src, icc_profile=SRGB)
    image = read_image(src)
    assert image.icc_profile == SRGB
    write_image(tmp_path / ("out" + src.suffix), image.rgb, None, like=image)
    assert PILImage.open(tmp_path / ("out" + src.suffix)).info.get("icc_profile") == SRGB


FAKE_GRAY_PROFILE = SRGB[:16] + b"GRAY" + SRGB[20:]  # only the header's colour space matters to the writer


def test_gray_icc_profile_goes_only_where_the_output_is_gray(tmp_path):
    PILImage.fromarray(rand8()).save(tmp_path / "g.png", icc_profile=FAKE_GRAY_PROFILE)
    png16(tmp_path / "la16.png", rand16(2), colour_type=4, icc=FAKE_GRAY_PROFILE)
    for name in ("g.png", "la16.png"):
        image = read_image(tmp_path / name)
        assert image.icc_profile == FAKE_GRAY_PROFILE
        write_image(tmp_path / ("out-" + name), image.rgb, image.alpha, like=image)
    assert PILImage.open(tmp_path / "out-g.png").info.get("icc_profile") == FAKE_GRAY_PROFILE
    assert "icc_profile" not in PILImage.open(tmp_path / "out-la16.png").info  # written as RGBA: a gray profile would lie


def test_icc_profile_is_kept_at_16_bits(tmp_path):
    src = tmp_path / "a.png"
    png16(src, rand16(3), colour_type=2, icc=SRGB)
    image = read_image(src)
    assert image.icc_profile == SRGB and image.bit_depth == 16
    write_image(tmp_path / "out.png", image.rgb, None, like=image)
    back = read_image(tmp_path / "out.png")
    assert back.icc_profile == SRGB and back.bit_depth == 16
    np.testing.assert_array_equal(back.rgb, image.rgb)


def exif_transposed(a: np.ndarray, orientation: int) -> np.ndarray:
    """Pillow's own ImageOps.exif_transpose of (h, w, C) ``a``, channel by channel, in memory (no file quirks)."""
    channels = []
    for k in range(a.shape[-1]):
        channel = PILImage.fromarray(a[..., k])
        channel.getexif()[0x0112] = orientation
        channels.append(np.asarray(ImageOps.exif_transpose(channel)))
    return np.stack(channels, -1)


@pytest.mark.parametrize("name", ["rgba.png", "rgb.tif", "rgba.webp", "gray16.tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path, orientation, name):
    """Applied once: Pillow already transposes TIFFs while loading, other formats are transposed by the reader."""
    a = rand16(1) if name == "gray16.tif" else rand8(4 if name.startswith("rgba") else 3)
    im = PILImage.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / name, exif=exif, **({"lossless": True, "exact": True} if name.endswith("webp") else {}))
    want = exif_transposed(a, orientation) / (65535 if a.dtype == np.uint16 else 255)
    image = read_image(tmp_path / name)
    colour = np.repeat(want, 3, -1) if name == "gray16.tif" else want[..., :3]
    np.testing.assert_array_equal(image.rgb, colour.astype(np.float32))
    if name.startswith("rgba"):
        np.testing.assert_array_equal(image.alpha, want[..., 3:].astype(np.float32))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_16_bit_colour(tmp_path, orientation, suffix):
    """Pixels come from OpenCV here, which ignores the orientation of a PNG but applies a TIFF's itself."""
    a = rand16(3)
    src = tmp_path / ("o" + suffix)
    png16(src, a, 2, orientation=orientation) if suffix == ".png" else tiff16(src, a, orientation)
    image = read_image(src)
    assert image.bit_depth == 16
    np.testing.assert_array_equal(image.rgb, (exif_transposed(a, orientation) / 65535).astype(np.float32))


def test_jpeg_orientation_6_is_rotated_clockwise_and_written_upright(tmp_path):
    a = np.zeros((16, 32, 3), np.uint8)  # landscape as stored
    a[:8, :8] = 255  # white block at the stored top-left
    im = PILImage.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    src = tmp_path / "o.jpg"
    im.save(src, exif=exif, quality=100)
    image = read_image(src)
    assert image.rgb.shape == (32, 16, 3)  # portrait as displayed
    assert image.rgb[:8, 8:].min() > 0.9  # the block is now at the top-right
    assert image.rgb[:, :8].max() < 0.1 and image.rgb[8:].max() < 0.1
    write_image(tmp_path / "out.jpg", image.rgb, None, like=image)
    assert read_image(tmp_path / "out.jpg").rgb.shape == (32, 16, 3)  # no orientation tag copied: not rotated twice


FAKE_CMYK_PROFILE = SRGB[:16] + b"CMYK" + SRGB[20:]  # says CMYK, cannot build a transform: the fallback path


@pytest.mark.parametrize("icc", [None, FAKE_CMYK_PROFILE], ids=["no-profile", "broken-profile"])
def test_cmyk_jpeg_is_read_as_rgb_with_a_warning(tmp_path, icc):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[:8, :8] = (255, 0, 0, 0)  # cyan
    cmyk[:8, 8:] = (0, 255, 0, 0)  # magenta
    cmyk[8:, :8] = (0, 0, 255, 0)  # yellow
    cmyk[8:, 8:] = (0, 0, 0, 255)  # black
    src = tmp_path / "c.jpg"
    PILImage.fromarray(cmyk, "CMYK").save(src, quality=100, **({"icc_profile": icc} if icc else {}))
    assert PILImage.open(src).info.get("icc_profile") == icc
    events = []
    image = read_image(src, emit=events.append)
    want = np.zeros((16, 16, 3))
    want[:8, :8] = (0, 1, 1)
    want[:8, 8:] = (1, 0, 1)
    want[8:, :8] = (1, 1, 0)
    np.testing.assert_allclose(image.rgb, want, atol=3 / 255)
    np.testing.assert_allclose(image.rgb, cv2.imread(str(src))[..., ::-1] / 255, atol=2 / 255)  # OpenCV agrees
    assert image.mode == "rgb" and image.icc_profile is None  # a CMYK profile does not describe RGB pixels
    assert [e.kind for e in events] == ["warning"] and "CMYK" in events[0].message
    write_image(tmp_path / "out.jpg", image.rgb, None, like=image)
    assert PILImage.open(tmp_path / "out.jpg").mode == "RGB"


def test_natural_sort_and_skipped_files(tmp_path):
    names = ["10.png", "2.png", "1.jpg", "frame2.webp", "Frame10.tif", "frame1.bmp", "b.jpeg", "A.PNG"]
    for n in names:
        (tmp_path / n).write_bytes(b"")  # listing does not decode
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".DS_Store").write_bytes(b"")
    (tmp_path / "._2.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    events = []
    got = list_images(tmp_path, emit=events.append)
    assert [p.name for p in got] == ["1.jpg", "2.png", "10.png", "A.PNG", "b.jpeg", "frame1.bmp", "frame2.webp", "Frame10.tif"]
    assert sorted(Path(e.path).name for e in events) == [".DS_Store", "._2.png", "notes.txt", "sub"]
    assert all(e.kind == "warning" and e.message.startswith("skipped") for e in events)


def test_natural_sort_is_total_for_equal_numbers(tmp_path):
    for n in ["01.png", "1.png", "001.png"]:
        (tmp_path / n).write_bytes(b"")
    first = [p.name for p in list_images(tmp_path)]
    assert first == ["001.png", "01.png", "1.png"]


def test_missing_or_imageless_folder(tmp_path):
    with pytest.raises(InputDataError, match="cannot list"):
        list_images(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputDataError, match="no images"):
        list_images(tmp_path)


@pytest.mark.parametrize("name", ["garbage.png", "truncated.png", "truncated.jpg", "empty.webp", "text.tif"])
def test_corrupt_images_raise_input_data_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    if name.startswith("truncated"):
        PILImage.fromarray(rand8(3)).save(path)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif name.startswith("empty"):
        path.write_bytes(b"")
    else:
        path.write_bytes(b"this is not an image\n" * 10)
    with pytest.raises(InputDataError) as caught:
        read_image(path)
    assert str(caught.value).startswith(str(path) + ": cannot read the image: ") and "\n" not in str(caught.value)
    assert "BufferedReader" not in str(caught.value)  # no Python object in a user-facing message
    assert caught.value.exit_code == 65


def test_float_tiff_is_refused(tmp_path):
    PILImage.fromarray(np.zeros((2, 2), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(InputDataError, match="32-bit samples"):
        read_image(tmp_path / "f.tif")


@pytest.mark.parametrize("name", ["anim.webp", "anim.png", "pages.tif"])
def test_animated_and_multi_page_images_are_refused(tmp_path, name):
    frames = [PILImage.fromarray(rand8(3)) for _ in range(3)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    with pytest.raises(InputDataError, match="3 frames"):
        read_image(tmp_path / name)


def test_failed_write_raises_output_error_removes_temp_and_keeps_old_file(tmp_path, monkeypatch):
    src = tmp_path / "a.png"
    make_rgb8_png(src)
    image = read_image(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match="No space left") as caught:
        write_image(out / "a.png", image.rgb, None, like=image)
    assert caught.value.exit_code == 74
    assert os.listdir(out) == ["a.png"] and (out / "a.png").read_bytes() == b"old"


def test_write_onto_a_folder_raises_output_error(tmp_path):
    src = tmp_path / "a.png"
    make_rgb8_png(src)
    image = read_image(src)
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    with pytest.raises(OutputError):
        write_image(tmp_path / "out" / "a.png", image.rgb, None, like=image)
    assert os.listdir(tmp_path / "out") == ["a.png"]


SHARED_IMAGES = shared_media_files(".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


@pytest.mark.skipif(not SHARED_IMAGES, reason="../shared/media is not present")
@pytest.mark.parametrize("path", SHARED_IMAGES, ids=[p.name for p in SHARED_IMAGES])
def test_shared_media_images(tmp_path, path):
    events = []
    image = read_image(path, emit=events.append)
    h, w = image.rgb.shape[:2]
    assert image.rgb.shape == (h, w, 3) and image.rgb.dtype == np.float32
    assert 0 <= image.rgb.min() and image.rgb.max() <= 1
    assert image.alpha is None or image.alpha.shape == (h, w, 1)
    write_image(tmp_path / path.name, image.rgb, image.alpha, like=image)
    back = read_image(tmp_path / path.name)
    assert (back.bit_depth, back.mode, back.alpha is None) == (image.bit_depth, image.mode, image.alpha is None)
    if image.lossless:
        np.testing.assert_array_equal(back.rgb, image.rgb)
    expected = {  # what MANIFEST.tsv says these files are
        "torchcodec_gradient_16bit.png": (16, "rgb", False),
        "torchcodec_grayscale_alpha.png": (8, "gray", True),
        "torchcodec_rgba.webp": (8, "rgb", True),
        "torchcodec_cmyk.jpg": (8, "rgb", False),
    }.get(path.name)
    if expected:
        assert (image.bit_depth, image.mode, image.alpha is not None) == expected
    if path.name == "torchcodec_gradient_16bit.png":
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
        assert (raw % 257 != 0).any()  # really 16-bit content
        np.testing.assert_array_equal(image.rgb, (raw / 65535).astype(np.float32))
    if path.name == "torchcodec_cmyk.jpg":
        assert [e.kind for e in events] == ["warning"]
        np.testing.assert_allclose(image.rgb, cv2.imread(str(path))[..., ::-1] / 255, atol=2 / 255)
