"""The training set: images and captions, aspect-ratio buckets, cached latents, epoch batches.

Buckets follow sd-scripts: resolutions in 64-pixel steps whose area is at most
``resolution``², between half and twice the side (256..1024 at 512, as sd-scripts'
defaults); each image goes to the bucket nearest its aspect ratio, is resized to
cover it and center-cropped. Latents are computed once and kept in memory.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import TrainerError
from .text import split_tags

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
BUCKET_STEP = 64
RESIZE_INTERPOLATION = "lanczos"  # sd-scripts' name of the filter resize_and_crop uses, up or down


class DatasetError(TrainerError, ValueError):
    """The dataset folder cannot be trained on; the message says why."""


@dataclass
class TrainItem:
    image_path: Path
    caption: str
    bucket: tuple[int, int] = (0, 0)  # (width, height)
    original_size: tuple[int, int] = (0, 0)  # (height, width)
    crop_top_left: tuple[int, int] = (0, 0)
    latent: torch.Tensor | None = field(default=None, repr=False)
    time_ids: torch.Tensor | None = field(default=None, repr=False)  # SDXL micro-conditioning


def scan_dataset(folder: str | Path) -> list[TrainItem]:
    """Images of ``folder`` (sorted by name) with their same-named .txt captions."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    items = []
    for path in sorted(root.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        caption_file = path.with_suffix(".txt")
        caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
        if not caption:
            log.warning("%s has no caption; it trains on an empty prompt", path.name)
        items.append(TrainItem(path, caption))
    if not items:
        raise DatasetError(f"dataset folder {root} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return items


def bucket_side_range(resolution: int, step: int = BUCKET_STEP) -> tuple[int, int]:
    """The shortest and longest bucket side (sd-scripts' min_bucket_reso, max_bucket_reso)."""
    return max(step, resolution // 2 // step * step), resolution * 2


def make_buckets(resolution: int, step: int = BUCKET_STEP) -> list[tuple[int, int]]:
    """(width, height) buckets of about ``resolution``² pixels, sides in ``step``-pixel steps."""
    max_area = resolution * resolution
    min_side, max_side = bucket_side_range(resolution, step)
    buckets = {(resolution, resolution)}
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, (max_area // width) // step * step)
        if height >= min_side:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    aspect = width / height
    return min(buckets, key=lambda b: (abs(b[0] / b[1] - aspect), -b[0] * b[1]))


def open_rgb(path: Path) -> Image.Image:
    """An image as RGB: EXIF orientation applied, first frame of animations, alpha on white."""
    with Image.open(path) as img:
        img.seek(0)
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


def resize_and_crop(img: Image.Image, bucket: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Resize to cover ``bucket`` and center-crop; returns the crop and its (top, left)."""
    bw, bh = bucket
    scale = max(bw / img.width, bh / img.height)
    size = (max(bw, math.ceil(img.width * scale)), max(bh, math.ceil(img.height * scale)))
    resized = img.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - bw) // 2, (size[1] - bh) // 2
    return resized.crop((left, top, left + bw, top + bh)), (top, left)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def assign_buckets(items: list[TrainItem], resolution: int) -> dict[tuple[int, int], int]:
    buckets = make_buckets(resolution)
    for item in items:
        try:
            with Image.open(item.image_path) as img:
                w, h = ImageOps.exif_transpose(img).size
        except (OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(
                f"{item.image_path.name} is not a readable image ({exc}); remove or replace it"
            ) from exc
        item.original_size = (h, w)
        item.bucket = nearest_bucket(w, h, buckets)
    return dict(Counter(item.bucket for item in items))


@torch.no_grad()
def cache_latents(
    items: list[TrainItem],
    vae: torch.nn.Module,
    device: torch.device,
    generator: torch.Generator,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    place: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> None:
    """Encode every image once with the VAE; ``place`` puts each latent where the job keeps it."""
    dtype = next(vae.parameters()).dtype
    scale = vae.config.scaling_factor
    shift = vae.config.get("shift_factor") or 0.0  # Flux's VAE: (x - shift) * scale
    by_bucket: dict[tuple[int, int], list[TrainItem]] = {}
    for item in items:
        by_bucket.setdefault(item.bucket, []).append(item)
    done = 0
    for group in by_bucket.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            pixels = []
            for item in chunk:
                cropped, item.crop_top_left = resize_and_crop(open_rgb(item.image_path), item.bucket)
                pixels.append(to_tensor(cropped))
            batch = torch.stack(pixels).to(device, dtype)
            dist = vae.encode(batch).latent_dist
            noise = torch.randn(dist.mean.shape, generator=generator, device=generator.device)
            latents = (dist.mean + dist.std * noise.to(device, dist.mean.dtype) - shift) * scale
            for item, latent in zip(chunk, latents, strict=True):
                item.latent = place(latent.float())
            done += len(chunk)
            if progress:
                progress(done, len(items))


def epoch_batches(
    items: list[TrainItem], repeats: int, batch_size: int, steps: int, rng: random.Random
) -> list[list[int]]:
    """Exactly ``steps`` batches of item indices, each from one bucket.

    Every image appears ``repeats`` times in shuffled order, grouped by bucket. When
    buckets leave partial batches and there are more batches than ``steps``
    (= ceil(images x repeats / batch_size)), the smallest partial batches are dropped
    for this epoch so the job's step count is exactly the promised one.
    """
    order = [i for i in range(len(items)) for _ in range(repeats)]
    rng.shuffle(order)
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for i in order:
        by_bucket.setdefault(items[i].bucket, []).append(i)
    batches = [
        group[start : start + batch_size]
        for group in by_bucket.values()
        for start in range(0, len(group), batch_size)
    ]
    if len(batches) > steps:
        batches.sort(key=len, reverse=True)
        batches = batches[:steps]
    rng.shuffle(batches)
    return batches


def tag_frequency(items: list[TrainItem]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for item in items:
        counts.update(split_tags(item.caption))
    return dict(counts.most_common())


def default_preview_prompt(items: list[TrainItem], top: int = 6) -> str:
    """The trigger word (the most common first tag) and the dataset's most frequent other tags."""
    firsts = Counter(split_tags(i.caption)[0] for i in items if split_tags(i.caption))
    trigger = firsts.most_common(1)[0][0] if firsts else ""
    others = [t for t in tag_frequency(items) if t != trigger][:top]
    return ", ".join([trigger, *others] if trigger else others)
