"""Captions as comma-separated tag lists: building them from tagger output, and editing them.

Pure functions; the dataset service applies them to every caption and records the
old captions so each edit can be undone. The trigger word is always the first tag
and is protected from removal and replacement.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def build_caption(trigger: str, character: list[str], general: list[str]) -> str:
    """Trigger first, then character and general tags in the tagger's confidence order, no repeats."""
    tags = [trigger]
    for tag in [*character, *general]:
        if tag not in tags:
            tags.append(tag)
    return join_tags(tags)


@dataclass(frozen=True)
class TagCount:
    tag: str
    count: int
    share: float  # of the dataset's images that carry the tag, 0..1


def tag_table(captions: list[str], first: str | None = None) -> list[TagCount]:
    """Merged tag frequency: ``first`` (the trigger) on top, then most frequent first, ties by name."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(set(split_tags(caption)))
    total = max(1, len(captions))
    order = sorted(counts.items(), key=lambda kv: (kv[0] != first, -kv[1], kv[0]))
    return [TagCount(t, n, n / total) for t, n in order]


def remove_tags(caption: str, tags: set[str], trigger: str) -> str:
    return join_tags([t for t in split_tags(caption) if t not in tags or t == trigger])


def add_tags(caption: str, tags: list[str], trigger: str) -> str:
    """Append tags the caption lacks; a caption without its trigger gets it back first."""
    current = split_tags(caption)
    if trigger not in current:
        current.insert(0, trigger)
    current += [t for t in tags if t not in current]
    return join_tags(current)


def replace_tag(caption: str, old: str, new: str) -> str:
    """``old`` becomes ``new`` in place; if ``new`` is already there, ``old`` is just dropped."""
    tags = split_tags(caption)
    if old not in tags:
        return caption
    if new in tags:
        return join_tags([t for t in tags if t != old])
    return join_tags([new if t == old else t for t in tags])
