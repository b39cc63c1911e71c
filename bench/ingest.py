"""Upload throughput: 100 mixed images through the dataset service, with the tiny tagger.

ingest: the whole ``add_files`` path (decode and check, de-duplicate, crop, tag,
write PNGs, one transaction), in images per second.
tag: the tagger alone on the same decoded images, in images per second, measured
in the same run so the two numbers share the machine's state.

    python bench/ingest.py [--images 100] [--crop-mode center]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.datasets.images import Limits, expand_upload  # noqa: E402
from bot.services import open_services  # noqa: E402
from bot.settings import load_settings  # noqa: E402

FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "GIF", "PNG-RGBA"]


def mixed_image(i: int) -> tuple[str, bytes]:
    rng = random.Random(i)
    size = (rng.randrange(256, 1025, 32), rng.randrange(256, 1025, 32))
    fmt = FORMATS[i % len(FORMATS)]
    img = Image.new(
        "RGBA" if fmt == "PNG-RGBA" else "RGB", size, (rng.randrange(256), rng.randrange(256), 90)
    )
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.ellipse(
            (x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)), fill=(rng.randrange(256),) * 3
        )
    buf = io.BytesIO()
    img.save(buf, "PNG" if fmt == "PNG-RGBA" else fmt)
    ext = {"JPEG": "jpg", "PNG-RGBA": "png"}.get(fmt, fmt.lower())
    return f"img{i:03d}.{ext}", buf.getvalue()


def uploads(count: int) -> list[tuple[str, bytes]]:
    """Most images as single uploads, the last fifth in one zip."""
    files = [mixed_image(i) for i in range(count)]
    cut = count - count // 5
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files[cut:]:
            zf.writestr(name, data)
    return files[:cut] + [("batch.zip", buf.getvalue())]


async def measure(count: int, crop_mode: str) -> tuple[float, float, int]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    settings = load_settings(data_dir=data_dir, max_images_per_dataset=max(200, count))
    files = uploads(count)
    async with open_services(settings) as services:
        svc = services.datasets
        await svc.create(1, "bench", "tiny-sd15", "tk", crop_mode=crop_mode)
        tagger = services.datasets.taggers.get("tiny")  # built before timing
        t0 = time.perf_counter()
        report = await svc.add_files(1, "bench", files)
        ingest_s = time.perf_counter() - t0
        decoded = [img.image for name, data in files for img in expand_upload(name, data, Limits())[0]]
        t1 = time.perf_counter()
        tagger.predict(decoded, batch_size=settings.tag_batch_size)
        tag_s = time.perf_counter() - t1
    return len(report.added) / ingest_s, len(decoded) / tag_s, len(report.added)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--crop-mode", default="center", choices=["none", "center", "focus"])
    args = ap.parse_args()
    ingest, tag, added = asyncio.run(measure(args.images, args.crop_mode))
    print(f"added {added} of {args.images} images", file=sys.stderr)
    print(f"ingest_images_s={ingest:.1f} tag_images_s={tag:.1f} images={added} crop_mode={args.crop_mode}")


if __name__ == "__main__":
    main()
