"""One uploaded file's bytes to checked RGB images: decoding, duplicate hashes, crops.

Everything here is a pure function over bytes and PIL images: nothing is written anywhere. Bad user
input never raises; it comes back as a :class:`Skipped` whose reason tells the person what to do.

Decoding order matters for safety: the file size is checked first, then ``Image.open`` reads only the
header so ``width * height`` is checked against :attr:`Limits.max_pixels` before any pixel is
allocated (decompression bombs), and only then is the image loaded. Truncated files are errors.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFile, ImageOps, ImageStat, UnidentifiedImageError

from ..i18n import N_
from .phrases import Phrase

# A cut-off upload must be reported, never padded with grey (this is Pillow's default; we rely on it).
ImageFile.LOAD_TRUNCATED_IMAGES = False

NOT_AN_IMAGE = Phrase(N_("not an image (PIL cannot read it): upload PNG, JPEG, WEBP, BMP or GIF"))
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# Formats whose loading runs an external program (EPS runs Ghostscript): never loaded from uploads.
UNSAFE_FORMATS = frozenset({"EPS"})
WHITE = (255, 255, 255)

# pHash (DCT) bits that may differ between two uploads still called the same picture. Re-encoding
# (JPEG q75..95), small resizes and light sharpening move a pHash by 0-4 bits; unrelated pictures
# differ by about 32 of 64. 6 flags re-saves and re-sizes without pairing merely similar pictures.
NEAR_DUPLICATE_DISTANCE = 6
PHASH_SIZE = 32  # the grayscale thumbnail the DCT runs on
PHASH_LOW = 8  # the top-left 8x8 low frequencies make the 64 bits
# A picture whose low-band DCT terms all stay under this has no structure to hash (about a quarter of a
# grey level: a flat color, a noisy or recompressed flat color); its bits would be rounding noise. Such a
# picture hashes to FLAT_MARK | its mean color instead, and two of them are alike when their colors are.
FLAT_AC_LIMIT = 64.0
FLAT_MARK = 0x2A5A5A5A5A << 24  # bit 63 clear: a structured pHash always sets it (the DC term is largest)
FLAT_COLOR_TOLERANCE = 6  # per channel, 0-255: re-encoding moves a flat color by 1-2

CROP_MODES = ("none", "center", "focus")
SIZE_STEP, MIN_SIDE, MAX_SIDE = 64, 256, 2048
FOCUS_SHORT_SIDE, FOCUS_LONG_SIDE = 128, 2048  # the edge map is computed at about this resolution
FOCUS_TOLERANCE = 0.03  # windows within 3% of the most detailed one count as ties; nearest the center wins


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 50 * 2**20  # one uploaded file (image or zip), and one entry of a zip
    max_pixels: int = 40_000_000  # width*height of one image, checked from the header before decoding
    max_zip_entries: int = 1000
    max_zip_total_bytes: int = 500 * 2**20  # sum of uncompressed sizes in one zip (zip bombs)


@dataclass
class DecodedImage:
    name: str  # the file name as uploaded (zip: the entry's base name)
    image: Image.Image  # RGB, EXIF orientation applied, alpha composited on white, first frame
    caption: str | None  # from a same-named .txt in a zip (stripped); None otherwise
    sha256: str  # of the normalized RGB pixels and size: the same picture in PNG and BMP is equal
    phash: int  # 64-bit perceptual hash (DCT, or a flat picture's color): compare with is_near_duplicate()


@dataclass
class Skipped:
    name: str
    reason: str  # short, and says what the person can do (a Phrase: said in the member's language)


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size % 2**20 else f"{size // 2**20} MB"


def too_big_reason(size: int, limit: int) -> Phrase:
    return Phrase(
        N_(
            "the file is {size}, over the {limit} limit per file: "
            "upload a smaller file (downscale the image, or split the zip)"
        ),
        size=megabytes(size),
        limit=megabytes(limit),
    )


def is_zip(data: bytes) -> bool:
    return data[:4] in ZIP_MAGIC


def decode_image(name: str, data: bytes, limits: Limits) -> DecodedImage | Skipped:
    """Decode, check and normalize one file; any problem with it comes back as a :class:`Skipped`."""
    if not data:
        return Skipped(name, Phrase(N_("the file is empty: upload it again")))
    if len(data) > limits.max_file_bytes:
        return Skipped(name, too_big_reason(len(data), limits.max_file_bytes))
    opened = _open_checked(name, data, limits)
    if isinstance(opened, Skipped):
        return opened
    try:
        rgb = _to_rgb(_upright(opened))
    except (ValueError, OSError):  # a color mode PIL cannot convert (LAB, odd TIFF layouts)
        return Skipped(
            name,
            Phrase(
                N_("its color mode {mode} cannot be converted to RGB: export it as an 8-bit PNG or JPEG"),
                mode=opened.mode,
            ),
        )
    rgb.info = {}  # drop ICC/EXIF of the source: the pixels are now plain RGB, upright
    return DecodedImage(name, rgb, None, _pixels_sha256(rgb), perceptual_hash(rgb))


Transform = Callable[[DecodedImage], None]


def expand_upload(
    name: str, data: bytes, limits: Limits, transform: Transform | None = None
) -> tuple[list[DecodedImage], list[Skipped]]:
    """One attachment: a zip (recognized by its magic bytes, or its name) is expanded, anything else decoded.

    ``transform`` (optional) runs on each decoded image right away, e.g. to crop it."""
    if len(data) > limits.max_file_bytes:
        return [], [Skipped(name, too_big_reason(len(data), limits.max_file_bytes))]
    if is_zip(data) or name.lower().endswith(".zip"):
        from .zips import expand_zip  # zips imports this module

        return expand_zip(name, data, limits, transform)
    result = decode_image(name, data, limits)
    if not isinstance(result, DecodedImage):
        return [], [result]
    if transform is not None:
        transform(result)
    return [result], []


def _pixels_reason(size: tuple[int, int] | None, limits: Limits) -> Phrase:
    limit = f"{limits.max_pixels / 1e6:g}"
    if size is None:
        return Phrase(
            N_(
                "the image is far too large, over the {limit} megapixel limit: downscale it and upload it again"
            ),
            limit=limit,
        )
    return Phrase(
        N_(
            "the image is {width}x{height} ({megapixels} megapixels), over the {limit} megapixel limit: "
            "downscale it and upload it again"
        ),
        width=size[0], height=size[1], megapixels=f"{size[0] * size[1] / 1e6:.0f}", limit=limit,
    )  # fmt: skip


def _open_checked(name: str, data: bytes, limits: Limits) -> Image.Image | Skipped:
    """Open the header, check the pixel count, then load the pixels (the first frame of animations)."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Skipped(name, NOT_AN_IMAGE)
    except Image.DecompressionBombError:  # Pillow's own guard, at twice Image.MAX_IMAGE_PIXELS
        return Skipped(name, _pixels_reason(None, limits))
    except Exception as exc:  # plugins raise SyntaxError, struct.error, ValueError... on broken headers
        return Skipped(name, _damaged_reason(exc))
    if image.format in UNSAFE_FORMATS:
        reason = N_("{format} files are not opened for safety: export it as PNG or JPEG")
        return Skipped(name, Phrase(reason, format=image.format))
    width, height = image.size
    if width * height > limits.max_pixels:
        return Skipped(name, _pixels_reason((width, height), limits))
    try:
        image.load()
    except Exception as exc:  # truncated data (OSError), bad chunks (SyntaxError), bad codes (ValueError)...
        return Skipped(name, _damaged_reason(exc))
    return image


def _damaged_reason(exc: BaseException) -> Phrase:
    detail = str(exc).split("\n")[0][:80] or type(exc).__name__
    return Phrase(
        N_("the image is damaged or cut off ({detail}): export it again or upload the original file"),
        detail=detail,
    )


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB of any mode: high bit depths scaled to 8 bits, transparency composited on white."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit_gray(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*WHITE, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """16-bit and float grayscale to 8 bits by range (a plain convert would clip nearly all to white)."""
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16") or 255 < peak <= 65535:
        values = values / 257
    elif image.mode == "F" and peak <= 1.0:
        values = values * 255
    elif peak > 65535:
        values = values * (255 / peak)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def _pixels_sha256(image: Image.Image) -> str:
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@lru_cache(maxsize=1)
def _dct_matrix(size: int = PHASH_SIZE) -> np.ndarray:
    n = np.arange(size)
    return np.cos(np.pi * np.outer(n, 2 * n + 1) / (2 * size))


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT pHash (imagehash's recipe): 32x32 grayscale, 2-D DCT, 8x8 low band above its median.

    Robust to re-encoding, resizing and small color changes; bit 63 is the DC term, then row-major.
    A picture without structure (see FLAT_AC_LIMIT) gets FLAT_MARK | its mean RGB instead, so flat
    pictures of different colors stay apart. Compare hashes with :func:`is_near_duplicate`.
    """
    gray = image.convert("L").resize((PHASH_SIZE, PHASH_SIZE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    dct = _dct_matrix()
    coefficients = dct @ np.asarray(gray, dtype=np.float64) @ dct.T
    low = coefficients[:PHASH_LOW, :PHASH_LOW].ravel()
    if np.abs(low[1:]).max() <= FLAT_AC_LIMIT:
        red, green, blue = (min(255, round(c)) for c in ImageStat.Stat(image.convert("RGB")).mean)
        return FLAT_MARK | red << 16 | green << 8 | blue
    value = 0
    for bit in low > np.median(low):
        value = (value << 1) | int(bit)
    return value


def flat_color(phash: int) -> tuple[int, int, int] | None:
    """The mean color of a picture that hashed flat; None for a structured picture's hash."""
    if phash >> 24 != FLAT_MARK >> 24:
        return None
    return (phash >> 16) & 0xFF, (phash >> 8) & 0xFF, phash & 0xFF


def is_near_duplicate(a: int, b: int) -> bool:
    """Whether two perceptual hashes are the same picture: close bits, or (both flat) close colors.

    A flat hash is never near a structured one."""
    color_a, color_b = flat_color(a), flat_color(b)
    if color_a is None and color_b is None:
        return hamming(a, b) <= NEAR_DUPLICATE_DISTANCE
    if color_a is None or color_b is None:
        return False
    return max(abs(x - y) for x, y in zip(color_a, color_b, strict=True)) <= FLAT_COLOR_TOLERANCE


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


_SIZE_RE = re.compile(r"\s*(\d{1,5})\s*(?:[x×*]\s*(\d{1,5}))?\s*", re.IGNORECASE)


def parse_size(text: str) -> tuple[int, int]:
    """``"512"``, ``"512x512"`` or ``"832x1216"`` to ``(width, height)``; ValueError says what is allowed."""
    match = _SIZE_RE.fullmatch(text or "")
    if match is None:
        raise ValueError(
            Phrase(
                N_("crop size {size} is not understood: give one number (512) or width x height (832x1216)"),
                size=repr(text),
            )
        )
    width = int(match[1])
    height = int(match[2] or match[1])
    if all(side % SIZE_STEP == 0 and MIN_SIDE <= side <= MAX_SIDE for side in (width, height)):
        return width, height
    nearest = [min(MAX_SIDE, max(MIN_SIDE, round(side / SIZE_STEP) * SIZE_STEP)) for side in (width, height)]
    raise ValueError(
        Phrase(
            N_(
                "crop size {size} is not allowed: each side must be a multiple of {step} "
                "between {low} and {high} (nearest allowed: {nearest})"
            ),
            size=f"{width}x{height}",
            step=SIZE_STEP,
            low=MIN_SIDE,
            high=MAX_SIDE,
            nearest=f"{nearest[0]}x{nearest[1]}",
        )  # fmt: skip
    )


def crop_image(image: Image.Image, mode: str, size: tuple[int, int]) -> tuple[Image.Image, bool]:
    """Crop ``image`` for training at ``size`` = (width, height); returns (result, upscaled).

    ``none`` keeps the aspect ratio and only downscales to about ``size``'s area (the trainer buckets
    it); ``center`` and ``focus`` resize to cover ``size`` and cut exactly ``size``: from the middle,
    or where the edge energy is highest. ``upscaled`` says the source had to be enlarged.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}: use one of {', '.join(CROP_MODES)}")
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"crop size must be positive, got {width}x{height}")
    if mode == "none":
        return _fit_area(image, width * height), False
    scale = max(width / image.width, height / image.height)
    window = (min(image.width, width / scale), min(image.height, height / scale))  # in source pixels
    if mode == "focus":
        left, top = _focus_origin(image, window)
    else:
        left, top = (image.width - window[0]) / 2, (image.height - window[1]) / 2
    box = (left, top, left + window[0], top + window[1])
    return image.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0), scale > 1


def _fit_area(image: Image.Image, area: int) -> Image.Image:
    if image.width * image.height <= area:
        return image.copy()
    scale = math.sqrt(area / (image.width * image.height))
    new_size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _focus_origin(image: Image.Image, window: tuple[float, float]) -> tuple[float, float]:
    """Top-left (source pixels) of the ``window`` holding the most edge energy, on a reduced edge map."""
    factor = min(1.0, FOCUS_SHORT_SIDE / min(image.size), FOCUS_LONG_SIDE / max(image.size))
    small = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    gray = image.convert("L").resize(small, Image.Resampling.BOX, reducing_gap=2.0)
    fx, fy = small[0] / image.width, small[1] / image.height
    cells = (min(small[0], max(1, round(window[0] * fx))), min(small[1], max(1, round(window[1] * fy))))
    x, y = _best_window(edge_energy(np.asarray(gray, dtype=np.float32)), cells)
    left = min(max(0.0, x / fx), image.width - window[0])
    top = min(max(0.0, y / fy), image.height - window[1])
    return left, top


def edge_energy(gray: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a 2-D grayscale array (same shape; borders replicated)."""
    p = np.pad(gray.astype(np.float32), 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy)


def _best_window(energy: np.ndarray, cells: tuple[int, int]) -> tuple[int, int]:
    """(x, y) of the cells[0] x cells[1] window with the most energy, via an integral image.

    Near-ties (within FOCUS_TOLERANCE of the best) go to the window nearest the center, so a flat
    or evenly detailed picture is cut like ``center``.
    """
    ww, wh = cells
    total = np.zeros((energy.shape[0] + 1, energy.shape[1] + 1), dtype=np.float64)
    total[1:, 1:] = energy.cumsum(axis=0, dtype=np.float64).cumsum(axis=1)
    sums = total[wh:, ww:] - total[:-wh, ww:] - total[wh:, :-ww] + total[:-wh, :-ww]
    best = float(sums.max())
    candidates = np.argwhere(sums >= best * (1 - FOCUS_TOLERANCE))  # rows of (y, x)
    center = np.array([(sums.shape[0] - 1) / 2, (sums.shape[1] - 1) / 2])
    y, x = candidates[np.argmin(((candidates - center) ** 2).sum(axis=1))]
    return int(x), int(y)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of ``image`` without metadata (no ICC profile, no EXIF)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", icc_profile=None)
    return buffer.getvalue()
