"""Caption edits by the member: tags removed, added or replaced in every caption (or one image),
one caption typed by hand, and undo. Each edit is one undo step and marks the captions it
changed as the member's own (a re-tag says how many of those it would replace)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from db import datasets as repo
from db.database import transaction

from ..i18n import N_
from . import captions as cap
from .base import ServiceBase
from .phrases import Phrase
from .rules import ServiceError

#: What an edit is called in the undo history: stored in English, said again in the member's language.
REMOVED = N_("remove {tags}")
ADDED = N_("add {tags}")
REPLACED = N_("replace {old} with {new}")
CAPTION = N_("caption of image {image}")
RETAGGED = N_("re-tag with {tagger} at {threshold}")
EDIT_NAMES = (REMOVED, ADDED, REPLACED, CAPTION, RETAGGED)


@dataclass(frozen=True)
class EditResult:
    description: str  # a Phrase ("add a, b"): said in the member's language
    changed: int


@dataclass(frozen=True)
class CaptionSaved:
    image_id: int
    caption: str  # as stored: the trigger first, tags trimmed, repeats dropped
    changed: bool
    trigger_moved: bool  # the typed text lacked the trigger word first: the bot put it there


class CaptionEdits(ServiceBase):
    async def tag_table(self, owner_id: int, name: str) -> list[cap.TagCount]:
        dataset = await self.get(owner_id, name)
        captions = [i.caption for i in await repo.list_images(self.conn, dataset.id)]
        return cap.tag_table(captions, first=dataset.trigger_word)

    async def remove_tags(
        self, owner_id: int, name: str, tags: list[str], image_id: int | None = None
    ) -> EditResult:
        dataset = await self.get(owner_id, name)
        wanted = clean_tags(tags)
        if dataset.trigger_word in wanted:
            raise ServiceError(
                "'{tag}' is the trigger word and stays on every image", tag=dataset.trigger_word
            )
        images = await self._edit_targets(dataset, image_id)
        present = {t for i in images for t in cap.split_tags(i.caption)}
        unknown = [t for t in wanted if t not in present]
        if unknown:
            raise ServiceError(
                "no such tag here: {tags} (see /tags view); nothing was changed", tags=", ".join(unknown)
            )
        edit = lambda c: cap.remove_tags(c, set(wanted), dataset.trigger_word)  # noqa: E731
        return await self._apply(dataset, images, edit, Phrase(REMOVED, tags=", ".join(wanted)))

    async def add_tags(
        self, owner_id: int, name: str, tags: list[str], image_id: int | None = None
    ) -> EditResult:
        dataset = await self.get(owner_id, name)
        wanted = clean_tags(tags)
        images = await self._edit_targets(dataset, image_id)
        edit = lambda c: cap.add_tags(c, wanted, dataset.trigger_word)  # noqa: E731
        return await self._apply(dataset, images, edit, Phrase(ADDED, tags=", ".join(wanted)))

    async def replace_tag(
        self, owner_id: int, name: str, old: str, new: str, image_id: int | None = None
    ) -> EditResult:
        dataset = await self.get(owner_id, name)
        olds, news = clean_tags([old]), clean_tags([new])
        if len(olds) != 1 or len(news) != 1:
            raise ServiceError("replace takes one tag and one new tag (no commas)")
        old, new = olds[0], news[0]
        if old == dataset.trigger_word:
            raise ServiceError(
                "'{tag}' is the trigger word; to change it, use /dataset edit with a new trigger", tag=old
            )
        images = await self._edit_targets(dataset, image_id)
        if not any(old in cap.split_tags(i.caption) for i in images):
            raise ServiceError("no such tag here: {tag}; nothing was changed", tag=old)
        return await self._apply(
            dataset, images, lambda c: cap.replace_tag(c, old, new), Phrase(REPLACED, old=old, new=new)
        )

    async def set_caption(
        self, owner_id: int, name: str, image_id: int, text: str, expected: str | None = None
    ) -> CaptionSaved:
        """One image's caption as the member typed it (tags separated by commas or line breaks);
        the trigger word is put first. ``expected``: the caption the member started from; if it
        changed meanwhile, nothing is saved."""
        dataset = await self.get(owner_id, name)
        typed = cap.split_tags(text.replace("\n", ","))
        if not typed:
            raise ServiceError("a caption needs at least one tag: nothing was changed")
        if len(text) > cap.MAX_CAPTION_CHARS:
            raise ServiceError(
                "that caption is {length} characters, over the {limit} limit: "
                "shorten it (the trainer reads at most 225 tokens anyway); nothing was changed",
                length=len(text), limit=cap.MAX_CAPTION_CHARS,
            )  # fmt: skip
        images = await self._edit_targets(dataset, image_id)
        caption = cap.trigger_first(text, dataset.trigger_word)

        def edit(current: str) -> str:  # runs inside the write transaction: checks what is stored now
            if expected is not None and current != expected:
                raise ServiceError(
                    "the caption of image {image} changed since you opened it (another edit): "
                    "open it again; nothing was changed",
                    image=image_id,
                )
            return caption

        result = await self._apply(dataset, images, edit, Phrase(CAPTION, image=image_id))
        moved = typed[0] != dataset.trigger_word
        return CaptionSaved(image_id, caption, result.changed > 0, moved)

    async def undo(self, owner_id: int, name: str) -> EditResult:
        dataset = await self.get(owner_id, name)
        async with transaction(self.conn):
            undone = await repo.undo_last_edit(self.conn, dataset.id)
        if undone is None:
            raise ServiceError("there is no tag edit to undo")
        return EditResult(Phrase(N_("undid: {edit}"), edit=Phrase.parse(undone[0], EDIT_NAMES)), undone[1])

    async def _edit_targets(self, dataset: repo.DatasetRow, image_id: int | None) -> list[repo.ImageRow]:
        images = await repo.list_images(self.conn, dataset.id)
        if image_id is None:
            return images
        chosen = [i for i in images if i.id == image_id]
        if not chosen:
            raise ServiceError("image {image} is not in dataset '{name}'", image=image_id, name=dataset.name)
        return chosen

    async def _apply(
        self,
        dataset: repo.DatasetRow,
        images: list[repo.ImageRow],
        edit: Callable[[str], str],
        description: str,
    ) -> EditResult:
        """Apply ``edit`` to the captions as they are inside the transaction: no lost updates."""
        wanted = {i.id for i in images}
        async with transaction(self.conn):
            current = [i for i in await repo.list_images(self.conn, dataset.id) if i.id in wanted]
            changes = {i.id: (i.caption, new) for i in current if (new := edit(i.caption)) != i.caption}
            if changes:
                await repo.record_caption_edit(self.conn, dataset.id, str(description), changes)
        return EditResult(description, len(changes))


def clean_tags(tags: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(t.strip() for tag in tags for t in tag.split(",") if t.strip()))
    if not cleaned:
        raise ServiceError("name at least one tag")
    return cleaned
