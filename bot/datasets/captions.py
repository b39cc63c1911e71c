"""Captions as comma-separated tag lists: building them from tagger output, and editing them.

Pure functions; the dataset service applies them to every caption and records the
old captions so each edit can be undone. The trigger word is always the first tag
(in tagger captions, in a zip's captions and in captions typed by hand) and is
protected from removal and replacement.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

MAX_CAPTION_CHARS = 2000  # a caption typed by hand; kohya reads at most 225 tokens of it anyway


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


def trigger_first(caption: str, trigger: str) -> str:
    """The caption with ``trigger`` as its first tag: moved to the front when it stands elsewhere,
    added when it is absent. Line breaks separate tags like commas; repeated tags are dropped."""
    tags = list(dict.fromkeys(split_tags(caption.replace("\r", ",").replace("\n", ","))))
    return join_tags([trigger, *(t for t in tags if t != trigger)])


def swap_trigger(caption: str, old: str, new: str) -> str:
    """``new`` first and ``old`` gone (a dataset's trigger word changed)."""
    return trigger_first(join_tags([t for t in split_tags(caption) if t != old]), new)


def add_tags(caption: str, tags: list[str], trigger: str) -> str:
    """Append tags the caption lacks; the trigger stays (or comes back) first."""
    current = split_tags(trigger_first(caption, trigger))
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
