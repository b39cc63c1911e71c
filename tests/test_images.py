"""Uploads to checked images: formats, bad files, bombs, zips, duplicate hashes and crops (real files)."""

from __future__ import annotations

import io
import random
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from bot.datasets.images import (
    CROP_MODES,
    NEAR_DUPLICATE_DISTANCE,
    NOT_AN_IMAGE,
    DecodedImage,
    Limits,
    Skipped,
    crop_image,
    decode_image,
    encode_png,
    expand_upload,
    hamming,
    parse_size,
    perceptual_hash,
)

LIMITS = Limits()


def picture(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    """A smooth, photo-like test picture: a gradient with a few colored shapes."""
    rng = random.Random(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    c1, c2 = (np.array([rng.randint(0, 255) for _ in range(3)]) for _ in range(2))
    t = x * rng.random() + y * (1 - rng.random())
    img = Image.fromarray((c1 * (1 - t) + c2 * t).clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randint(0, w - 20), rng.randint(0, h - 20)
        box = (x0, y0, x0 + rng.randint(20, w // 2), y0 + rng.randint(20, h // 2))
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return img


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def decoded(name: str, data: bytes, limits: Limits = LIMITS) -> DecodedImage:
    result = decode_image(name, data, limits)
    assert isinstance(result, DecodedImage), result
    assert result.image.mode == "RGB"
    return result


def skipped(name: str, data: bytes, limits: Limits = LIMITS) -> Skipped:
    result = decode_image(name, data, limits)
    assert isinstance(result, Skipped), result
    assert result.name == name and result.reason
    return result


def make_zip(entries: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items() if isinstance(entries, dict) else entries:
            zf.writestr(name, data)
    return buf.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR claims width x height (with a valid CRC)."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- formats -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM"])
def test_every_format_decodes_to_rgb(fmt):
    img = picture(1)
    result = decoded(f"a.{fmt.lower()}", encode(img, fmt))
    assert result.image.size == img.size
    assert result.caption is None
    assert len(result.sha256) == 64 and 0 <= result.phash < 2**64
    assert result.image.info == {}


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (32, 32), color) for color in ("red", "blue", "green")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixel = decoded("anim.gif", data).image.getpixel((5, 5))
    assert pixel[0] > 200 and pixel[2] < 50


def test_cmyk_jpeg_becomes_rgb():
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    r, g, b = decoded("print.jpg", data).image.getpixel((16, 16))
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "white")
    img.paste((0, 0, 0), (0, 0, 20, 20))  # stored: left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    result = decoded("phone.jpg", encode(img, "JPEG", exif=exif, quality=95)).image
    assert result.size == (20, 40)
    assert sum(result.getpixel((10, 5))) < 100  # the stored left edge is now on top
    assert sum(result.getpixel((10, 35))) > 600


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    result = decoded("alpha.png", encode(rgba, "PNG")).image
    assert result.getpixel((0, 0)) == (255, 255, 255)
    assert all(120 <= c <= 135 for c in result.getpixel((1, 0)))  # half black over white
    assert result.getpixel((2, 2)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_other_transparent_modes_composite_on_white(mode):
    if mode == "LA":
        img = Image.new("LA", (4, 4), (0, 255))
        img.putpixel((0, 0), (0, 0))
        data = encode(img, "PNG")
    else:
        img = Image.new("P", (4, 4), 1)
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        img.putpixel((0, 0), 0)
        data = encode(img, "GIF", transparency=0)
    result = decoded(f"t.{mode}", data).image
    assert result.getpixel((0, 0)) == (255, 255, 255)
    assert result.getpixel((3, 3)) != (255, 255, 255)


def test_16_bit_grayscale_keeps_its_tones():
    img = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    value = decoded("deep.png", encode(img, "PNG")).image.getpixel((0, 0))
    assert all(120 <= c <= 135 for c in value)


def test_one_pixel_image_is_accepted_and_crop_reports_upscaling():
    result = decoded("dot.png", encode(Image.new("RGB", (1, 1), "blue"), "PNG"))
    assert result.image.size == (1, 1)
    cropped, upscaled = crop_image(result.image, "center", (512, 512))
    assert cropped.size == (512, 512) and upscaled


# --- bad files ---------------------------------------------------------------------------------------


def test_decompression_bomb_header_is_rejected_before_decoding():
    started = time.perf_counter()
    bomb = skipped("bomb.png", png_with_header_size(20000, 20000))
    assert time.perf_counter() - started < 1
    assert "megapixel" in bomb.reason and "downscale" in bomb.reason
    under_pillow_guard = skipped("big.png", png_with_header_size(8000, 8000))  # 64 MP: our limit
    assert "8000x8000" in under_pillow_guard.reason
    assert "40 megapixel" in under_pillow_guard.reason


def test_file_over_the_size_limit_is_skipped():
    data = encode(picture(2), "BMP")
    reason = skipped("huge.bmp", data, Limits(max_file_bytes=len(data) - 1)).reason
    assert "limit per file" in reason
    images, skips = expand_upload("huge.bmp", data, Limits(max_file_bytes=1000))
    assert not images and "limit per file" in skips[0].reason


def test_text_renamed_png_is_not_an_image():
    assert skipped("notes.png", b"this is not an image, just some text\n" * 10).reason == NOT_AN_IMAGE
    assert "empty" in skipped("empty.png", b"").reason


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_not_silently_accepted(fmt):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    data = encode(noise, fmt)
    reason = skipped(f"cut.{fmt.lower()}", data[: len(data) // 2]).reason
    assert "damaged or cut off" in reason


def test_garbage_never_raises():
    rng = random.Random(7)
    sources = [encode(picture(3, (64, 48)), fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP")]
    for _ in range(150):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(1, len(data))] if rng.random() < 0.3 else data
        result = decode_image("fuzz.png", bytes(data), LIMITS)
        assert isinstance(result, (DecodedImage, Skipped))
        images, skips = expand_upload("fuzz.zip", b"PK\x03\x04" + bytes(data), LIMITS)
        assert not images and skips


# --- duplicates --------------------------------------------------------------------------------------


def test_same_pixels_in_png_and_bmp_are_exact_duplicates():
    img = picture(12)
    png, bmp = decoded("a.png", encode(img, "PNG")), decoded("a.bmp", encode(img, "BMP"))
    assert png.sha256 == bmp.sha256 and png.phash == bmp.phash
    jpeg = decoded("a.jpg", encode(img, "JPEG", quality=85))
    assert jpeg.sha256 != png.sha256
    assert decoded("b.png", encode(picture(13), "PNG")).sha256 != png.sha256


def test_phash_is_near_for_reencodes_and_resizes_and_far_for_other_pictures():
    for seed in range(20):
        img = picture(seed)
        original = perceptual_hash(img)
        jpeg = decoded("a.jpg", encode(img, "JPEG", quality=75)).phash
        assert hamming(original, jpeg) <= NEAR_DUPLICATE_DISTANCE
        assert hamming(original, perceptual_hash(img.resize((200, 150)))) <= NEAR_DUPLICATE_DISTANCE
    hashes = [perceptual_hash(picture(seed)) for seed in range(20)]
    distances = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distances) > 2 * NEAR_DUPLICATE_DISTANCE


def test_hamming():
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64


def test_encode_png_round_trips_pixels():
    result = decoded("a.jpg", encode(picture(14), "JPEG"))
    again = decoded("a.png", encode_png(result.image))
    assert again.sha256 == result.sha256


# --- sizes and crops ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", (512, 512)), ("512x512", (512, 512)), ("832x1216", (832, 1216)), (" 768 X 1024 ", (768, 1024))],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "512x", "500", "512x500", "128", "4096x512", "-512", "1e3"])
def test_parse_size_rejects_with_a_clear_message(text):
    with pytest.raises(ValueError, match="crop size"):
        parse_size(text)


def test_parse_size_suggests_the_nearest_allowed():
    with pytest.raises(ValueError, match="multiple of 64 between 256 and 2048.*512x512"):
        parse_size("500x520")


def test_center_crop_is_exact_and_reports_upscaling():
    cropped, upscaled = crop_image(picture(15, (2000, 1000)), "center", (512, 768))
    assert cropped.size == (512, 768) and not upscaled
    cropped, upscaled = crop_image(picture(15, (300, 200)), "center", (512, 512))
    assert cropped.size == (512, 512) and upscaled
    cropped, upscaled = crop_image(picture(15, (600, 300)), "center", (512, 512))
    assert cropped.size == (512, 512) and upscaled  # the short side had to grow


def test_none_keeps_aspect_and_never_upscales():
    small = picture(16, (300, 200))
    result, upscaled = crop_image(small, "none", (512, 512))
    assert result.size == (300, 200) and not upscaled
    result, upscaled = crop_image(picture(16, (2048, 1024)), "none", (512, 512))
    assert not upscaled
    assert result.width * result.height <= 512 * 512
    assert result.width * result.height > 0.95 * 512 * 512
    assert abs(result.width / result.height - 2) < 0.01


def edge_mean(img: Image.Image) -> float:
    return float(np.asarray(img.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float64).mean())


def test_focus_keeps_the_detailed_side():
    noise = np.random.default_rng(1).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    img = Image.new("RGB", (1024, 512), (120, 140, 160))  # flat on the left
    img.paste(Image.fromarray(noise), (512, 0))  # detail on the right
    focus, upscaled = crop_image(img, "focus", (512, 512))
    center, _ = crop_image(img, "center", (512, 512))
    assert focus.size == center.size == (512, 512) and not upscaled
    assert edge_mean(focus) > 1.5 * edge_mean(center)
    assert np.asarray(focus)[:, :32].std() > 30  # even its left edge is in the noise
    tall = img.rotate(90, expand=True)  # detail at the top of a tall picture
    focus, _ = crop_image(tall, "focus", (512, 512))
    assert edge_mean(focus) > 1.5 * edge_mean(crop_image(tall, "center", (512, 512))[0])


def test_focus_on_a_flat_picture_cuts_the_center():
    img = Image.new("RGB", (900, 400), "gray")
    focus, _ = crop_image(img, "focus", (256, 256))
    center, _ = crop_image(img, "center", (256, 256))
    assert np.array_equal(np.asarray(focus), np.asarray(center))


def test_unknown_crop_mode_is_an_error():
    assert CROP_MODES == ("none", "center", "focus")
    with pytest.raises(ValueError, match="unknown crop mode"):
        crop_image(picture(17), "smart", (512, 512))


def test_transform_runs_on_each_image_as_it_is_decoded():
    seen: list[tuple[int, int]] = []

    def shrink(image: DecodedImage) -> None:
        seen.append(image.image.size)
        image.image = image.image.resize((8, 8))

    data = make_zip({f"{i}.png": encode(picture(40 + i), "PNG") for i in range(3)})
    images, skips = expand_upload("set.zip", data, LIMITS, shrink)
    assert not skips and seen == [(256, 192)] * 3
    assert [i.image.size for i in images] == [(8, 8)] * 3
    single, _ = expand_upload("one.png", encode(picture(50), "PNG"), LIMITS, shrink)
    assert single[0].image.size == (8, 8) and len(seen) == 4
