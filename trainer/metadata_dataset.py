"""The dataset's ``ss_*`` keys: folder, repeats, buckets and tag frequency, in sd-scripts' shapes.

A job trains one folder of captioned images, like sd-scripts' DreamBooth-style ``train_data_dir``.
Its ``train_network.py`` writes the flat keys (``ss_bucket_info``, ``ss_dataset_dirs``,
``ss_reg_dataset_dirs``, ``ss_min_bucket_reso``...) for such a folder and ``ss_datasets`` (one
dict per dataset, with its subsets) for a dataset config; both describe the same data, so the
file carries both. Values are what ``json.dumps`` makes of sd-scripts' own structures: tuples
become lists, the integer bucket indices become string keys.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import RESIZE_INTERPOLATION, TrainItem, bucket_side_range

if TYPE_CHECKING:
    from .run import Run


def dataset_meta(run: Run) -> dict[str, object]:
    """Every dataset-dependent ``ss_*`` key of ``run`` (values before the final ``str()``)."""
    job = run.job
    folder = Path(job.dataset_dir).name
    min_side, max_side = bucket_side_range(run.resolution)
    tags = {folder: tag_frequency(run.items)}
    buckets = bucket_info(run.items, job.repeats)
    return {
        "ss_enable_bucket": True,
        "ss_bucket_no_upscale": False,  # images smaller than their bucket are scaled up
        "ss_min_bucket_reso": min_side,
        "ss_max_bucket_reso": max_side,
        "ss_color_aug": False,
        "ss_flip_aug": False,
        "ss_random_crop": False,  # center crop
        "ss_resize_interpolation": RESIZE_INTERPOLATION,
        "ss_dataset_dirs": json.dumps({folder: {"n_repeats": job.repeats, "img_count": len(run.items)}}),
        "ss_reg_dataset_dirs": json.dumps({}),
        "ss_tag_frequency": json.dumps(tags),
        "ss_bucket_info": json.dumps(buckets),
        "ss_datasets": json.dumps([_dataset(run, folder, tags, buckets)]),
    }


def bucket_info(items: list[TrainItem], repeats: int) -> dict[str, Any]:
    """sd-scripts' ``bucket_info``: the used buckets in (width, height) order, each with its image
    count including repeats, and the mean |bucket aspect - image aspect| (without repeats)."""
    counts = Counter(item.bucket for item in items)
    buckets = {
        index: {"resolution": reso, "count": counts[reso] * repeats}
        for index, reso in enumerate(sorted(counts))
    }
    errors = [abs(it.bucket[0] / it.bucket[1] - it.original_size[1] / it.original_size[0]) for it in items]
    mean_error = float(np.mean(errors)) if errors else 0
    return {"buckets": buckets, "mean_img_ar_error": mean_error}


def tag_frequency(items: list[TrainItem]) -> dict[str, int]:
    """Comma-separated tags of the captions, lowercased and counted once per image (sd-scripts)."""
    counts: dict[str, int] = {}
    for item in items:
        for tag in item.caption.split(","):
            if tag := tag.strip().lower():
                counts[tag] = counts.get(tag, 0) + 1
    return counts


def _dataset(run: Run, folder: str, tags: dict[str, dict[str, int]], buckets: dict) -> dict[str, Any]:
    """One entry of ``ss_datasets``, as sd-scripts writes a DreamBooth dataset of one subset."""
    job = run.job
    min_side, max_side = bucket_side_range(run.resolution)
    return {
        "is_dreambooth": True,
        "batch_size_per_device": job.batch_size,
        "num_train_images": len(run.items) * job.repeats,
        "num_reg_images": 0,
        "resolution": (run.resolution, run.resolution),
        "enable_bucket": True,
        "min_bucket_reso": min_side,
        "max_bucket_reso": max_side,
        "tag_frequency": tags,
        "bucket_info": buckets,
        "resize_interpolation": RESIZE_INTERPOLATION,
        "subsets": [_subset(run, folder)],
    }


def _subset(run: Run, folder: str) -> dict[str, Any]:
    job = run.job
    return {
        "img_count": len(run.items),
        "num_repeats": job.repeats,
        "color_aug": False,
        "flip_aug": False,
        "random_crop": False,
        "shuffle_caption": job.shuffle_tags,
        "keep_tokens": job.keep_tokens,
        "keep_tokens_separator": "",
        "secondary_separator": None,
        "enable_wildcard": False,
        "caption_prefix": None,
        "caption_suffix": None,
        "resize_interpolation": RESIZE_INTERPOLATION,
        "image_dir": folder,
        "class_tokens": None,  # captions come from .txt files, not from the folder's name
        "is_reg": False,
    }
