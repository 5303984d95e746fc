"""Image folders: read a folder of images as one sequence, write each result under the same name.

Pillow decodes everything it can decode without loss: it reads EXIF orientation, ICC profiles,
palettes and CMYK. Pillow has no 16-bit colour mode, though (a 16-bit RGB PNG comes back as 8-bit
RGB), so 16-bit colour PNG/TIFF pixels come from OpenCV (``IMREAD_UNCHANGED`` keeps uint16) and
16-bit files are written with OpenCV. EXIF orientation is applied exactly once: Pillow does it
for TIFFs while loading, numpy does it for the rest, and OpenCV's decode is checked against Pillow's.
Choices and their reasons: docs/frames.md.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms

from vsrup.errors import InputDataError, OutputError
from vsrup.events import Emit, Event, ignore

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
JPEG_QUALITY = 95  # with 4:4:4 chroma: upscaled detail is the product, so keep it
LOSSY_WEBP_QUALITY = 95
PNG_COMPRESSION = 6  # zlib level, Pillow's default; also used for 16-bit PNGs written by OpenCV
ORIENTATION = 0x0112  # EXIF tag
GRAY_MODES = ("1", "L", "LA", "La", "I;16", "I;16L", "I;16B")  # Pillow modes that are written back as gray
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's convert("L")


@dataclass(frozen=True, eq=False)
class Image:
    rgb: np.ndarray  # (h, w, 3) float32 in [0, 1], orientation applied, gray replicated to 3 channels
    alpha: np.ndarray | None  # (h, w, 1) float32 in [0, 1], or None
    bit_depth: int  # 8 or 16 bits per sample in the source
    mode: str  # "gray" or "rgb": what write_image writes back
    format: str  # Pillow's name of the source format: PNG, JPEG, WEBP, TIFF, BMP (MPO for multi-picture JPEG)
    icc_profile: bytes | None  # the source's embedded ICC profile, re-embedded where the output can carry it
    lossless: bool  # the source was stored losslessly (decides lossless or quality-95 WebP)


def _natural_key(path: Path) -> tuple[list[str | int], str]:
    """``2.png`` before ``10.png``; case-insensitive; the exact name breaks ties, so the order is total."""
    parts = re.split(r"(\d+)", path.name)  # text at even positions, digit runs at odd ones
    return [int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)], path.name


def list_images(folder: str | Path, emit: Emit = ignore) -> list[Path]:
    """The images directly inside ``folder``, in natural order. Everything else is skipped with a warning."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        raise InputDataError(f"{folder}: cannot list the folder: {e.strerror or e}") from None
    images = []
    for entry in sorted(entries, key=_natural_key):
        if entry.name.startswith("."):
            reason = "hidden file"  # also catches macOS "._x.png" resource forks and our own temp files
        elif not entry.is_file():
            reason = "not a file (sub-folders are not searched)"
        elif entry.suffix.lower() not in IMAGE_SUFFIXES:
            reason = "not an image of a supported type (" + ", ".join(s[1:] for s in IMAGE_SUFFIXES) + ")"
        else:
            images.append(entry)
            continue
        emit(Event("warning", path=str(entry), message=f"skipped: {reason}"))
    if not images:
        raise InputDataError(f"{folder}: no images found (" + ", ".join(s[1:] for s in IMAGE_SUFFIXES) + ")")
    return images


def read_image(path: str | Path, emit: Emit = ignore) -> Image:
    """Decode one still image. Unreadable, corrupt or animated files raise InputDataError naming the file."""
    path = Path(path)
    try:
        # A file object, not the path: for a path Pillow 13 memory-maps uncompressed L, I;16 and
        # RGBA TIFFs and then transposes orientations 5..8 with the wrong size (measured: garbage).
        with open(path, "rb") as f, PILImage.open(f) as im:
            return _decode(im, path, emit)
    except PILImage.UnidentifiedImageError:
        raise InputDataError(f"{path}: cannot read the image: unknown or corrupt image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, PILImage.DecompressionBombError) as e:
        message = getattr(e, "strerror", None) or " ".join(str(e).split()) or type(e).__name__  # one line
        raise InputDataError(f"{path}: cannot read the image: {message}") from None


def _decode(im: PILImage.Image, path: Path, emit: Emit) -> Image:
    if getattr(im, "n_frames", 1) > 1:
        if im.format != "MPO":  # APNG, animated WebP, multi-page TIFF: refuse rather than drop frames
            raise InputDataError(
                f"{path}: has {im.n_frames} frames; animated and multi-page images are not supported "
                "(extract the frames first, e.g. ffmpeg -i IN frame%04d.png)"
            )
        emit(Event("warning", path=str(path), message="multi-picture JPEG: only the main picture is kept"))
    orientation = im.getexif().get(ORIENTATION, 1)  # before load(), which drops a TIFF's tag once applied
    im.load()  # decodes and validates
    pillow_oriented = im.format == "TIFF"  # Pillow transposes TIFFs while loading (PR #4063); the rest is done here
    icc = im.info.get("icc_profile")
    bits, gray = _sample_format(im, path)
    if bits > 16:
        raise InputDataError(f"{path}: {bits}-bit samples are not supported (8 or 16 bits per channel)")
    if bits == 16 and not im.mode.startswith("I;16"):  # Pillow decoded this colour or gray+alpha file to 8 bits
        eight_bit = np.asarray(im) if pillow_oriented else _orient(np.asarray(im), orientation)
        pixels = _decode_16bit_colour(path, eight_bit, orientation)
    else:
        pixels = _pillow_pixels(im, path, emit)
        if not pillow_oriented:
            pixels = _orient(pixels, orientation)
        if im.mode == "CMYK":
            icc = None  # the pixels are sRGB now; the CMYK profile no longer describes them
    values = pixels.astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)
    colour = values[..., :3] if pixels.shape[-1] >= 3 else np.repeat(values[..., :1], 3, axis=-1)
    alpha = values[..., -1:] if pixels.shape[-1] in (2, 4) else None
    return Image(
        rgb=np.ascontiguousarray(colour),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        mode="gray" if gray else "rgb",
        format=im.format,
        icc_profile=icc,
        lossless=_is_lossless(im, path),
    )


def _sample_format(im: PILImage.Image, path: Path) -> tuple[int, bool]:
    """(bits per sample, is gray) as stored in the file, which Pillow's mode does not always tell."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            header = f.read(26)  # signature 8, chunk length 4, "IHDR" 4, width 4, height 4, depth 1, colour type 1
        return header[24], header[25] in (0, 4)  # colour types 0: gray, 4: gray + alpha
    if im.format == "TIFF":
        return max(im.tag_v2.get(258, (8,))), im.mode in GRAY_MODES  # tag 258: BitsPerSample
    return 8, im.mode in GRAY_MODES


def _decode_16bit_colour(path: Path, eight_bit: np.ndarray, orientation: int) -> np.ndarray:
    """(h, w, 3 or 4) uint16 RGB(A), oriented. A 16-bit gray + alpha PNG comes back as RGBA, gray replicated.

    OpenCV's PNG decoder ignores the EXIF orientation with IMREAD_UNCHANGED, but (measured, OpenCV 5.0)
    its TIFF decoder applies it anyway. So the result is checked against Pillow's 8-bit decode of the
    same file, already oriented (``eight_bit``): whichever of "as decoded" and "oriented here" agrees
    with it is right; if neither does, the two decoders disagree and the file is refused.
    """
    try:
        pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        pixels = None
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
        raise InputDataError(f"{path}: OpenCV cannot decode this 16-bit image")
    pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[-1] == 4 else cv2.COLOR_BGR2RGB)
    want = eight_bit.astype(np.int32)  # (h, w, C)
    for candidate in (_orient(pixels, orientation), pixels):
        if candidate.shape == want.shape and np.abs((candidate >> 8) - want).max() <= 1:
            return candidate
    raise InputDataError(f"{path}: OpenCV's 16-bit decode disagrees with Pillow's 8-bit one; cannot trust it")


def _pillow_pixels(im: PILImage.Image, path: Path, emit: Emit) -> np.ndarray:
    """(h, w, C) uint8 or uint16 with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)."""
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[..., None]  # native byte order, whatever Pillow's was
    if im.mode == "CMYK":
        emit(Event("warning", path=str(path), message=f"CMYK converted to RGB; written back as an RGB {im.format}"))
        return np.asarray(_cmyk_to_rgb(im))
    alpha = im.has_transparency_data  # RGBA, LA, PA, and palette or RGB images with a transparent colour
    if im.mode in GRAY_MODES:
        return np.asarray(im.convert("LA" if alpha else "L")).reshape(im.height, im.width, -1)
    return np.asarray(im.convert("RGBA" if alpha else "RGB"))  # palette images are expanded: see docs/frames.md


def _cmyk_to_rgb(im: PILImage.Image) -> PILImage.Image:
    """Through the embedded profile when there is one (colour-managed), else Pillow's plain formula."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except ImageCms.PyCMSError:
            pass  # a broken profile: fall back to the formula
    return im.convert("RGB")


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to (h, w, C) pixels, as ImageOps.exif_transpose does; others are 1."""
    return {
        2: lambda a: a[:, ::-1],  # mirrored
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # flipped
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise to display
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
        8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise to display
    }.get(orientation, lambda a: a)(pixels)


def _is_lossless(im: PILImage.Image, path: Path) -> bool:
    if im.format in ("JPEG", "MPO"):
        return False
    if im.format != "WEBP":
        return True
    data = path.read_bytes()  # RIFF chunks: "VP8L" holds lossless pixels, "VP8 " lossy ones
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] in (b"VP8L", b"VP8 "):
            return data[pos : pos + 4] == b"VP8L"
        pos += 8 + size + (size & 1)
    return False


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None, like: Image) -> None:
    """Write (H, W, 3) float32 ``rgb`` (+ (H, W, 1) ``alpha``) atomically, in the format of ``path``'s suffix.

    16-bit where ``like`` was 16-bit and the format has it (PNG, TIFF), gray when ``like`` was gray,
    values clipped to [0, 1] and rounded. An OSError while writing becomes OutputError (exit 74)
    and the temp file is removed; an existing file at ``path`` is left as it was.
    """
    path = Path(path)
    fmt = FORMATS[path.suffix.lower()]
    gray = like.mode == "gray"
    depth = 16 if like.bit_depth == 16 and fmt in ("PNG", "TIFF") else 8
    planes = [rgb @ LUMA[:, None] if gray else rgb]  # (H, W, 1) or (H, W, 3)
    if alpha is not None:
        planes.append(alpha)
    scale = 65535 if depth == 16 else 255
    data = np.round(np.clip(np.concatenate(planes, axis=-1), 0, 1) * scale).astype(np.uint16 if depth == 16 else np.uint8)
    if (depth == 16 or fmt == "BMP") and data.shape[-1] == 2:
        data = data[..., [0, 0, 0, 1]]  # OpenCV writes no gray + alpha (nor does Pillow at 16 bits): RGBA, gray replicated
    icc = like.icc_profile if _icc_fits(like.icc_profile, gray=data.shape[-1] <= 2) else None
    if depth == 16 or fmt == "BMP":
        encoded = _encode_opencv(data, fmt, icc)
    else:
        encoded = _encode_pillow(data, fmt, icc, like.lossless)
    _write_atomic(path, encoded)


def _icc_fits(icc: bytes | None, gray: bool) -> bool:
    """An ICC profile describes one colour space (header bytes 16..20); never attach a CMYK or gray one to RGB."""
    return bool(icc) and icc[16:20] == (b"GRAY" if gray else b"RGB ")


def _encode_pillow(data: np.ndarray, fmt: str, icc: bytes | None, lossless: bool) -> bytes:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[data.shape[-1]]
    im = PILImage.fromarray(data[..., 0] if mode == "L" else data, mode)
    options = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        options.update(quality=JPEG_QUALITY, subsampling=0)
    elif fmt == "WEBP":
        # exact: keep the colour under fully transparent pixels, or the round trip is not lossless
        options.update(lossless=True, exact=True) if lossless else options.update(quality=LOSSY_WEBP_QUALITY)
    elif fmt == "TIFF":
        options.update(compression="tiff_lzw")
    elif fmt == "PNG":
        options.update(compress_level=PNG_COMPRESSION)
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _encode_opencv(data: np.ndarray, fmt: str, icc: bytes | None) -> bytes:
    """16-bit PNG/TIFF (Pillow cannot write 16-bit colour) and BMP (Pillow's RGBA BMP reads back as RGB)."""
    if data.shape[-1] >= 3:
        data = cv2.cvtColor(data, cv2.COLOR_RGBA2BGRA if data.shape[-1] == 4 else cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION] if fmt == "PNG" else []
    ok, buffer = cv2.imencode("." + fmt.lower(), data, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {data.shape} {data.dtype} image as {fmt}")
    encoded = buffer.tobytes()
    if fmt == "PNG" and icc:
        encoded = _png_with_icc(encoded, icc)
    return encoded


def _png_with_icc(png: bytes, icc: bytes) -> bytes:
    """Insert an iCCP chunk right after IHDR (PNG spec: before PLTE and IDAT)."""
    body = b"iCCP" + b"ICC Profile\0" + b"\0" + zlib.compress(icc)  # type, name, NUL, compression method 0
    chunk = (len(body) - 4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")  # length excludes type
    end_of_ihdr = 8 + 4 + 4 + 13 + 4  # signature, length, type, data, CRC
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, os.replace: a file at ``path`` is always a complete one.

    The temp name is hidden (list_images skips it) and unique per process; it is opened with
    open(), not mkstemp, so the result gets the usual umask permissions rather than 0600.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
