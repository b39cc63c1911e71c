"""``python -m bot dataset ...``: members' datasets, over :class:`bot.datasets.service.DatasetService`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..services import Services

EXIT_ERROR = 1


def add_parser(groups: argparse._SubParsersAction) -> None:
    """The ``dataset`` group and its commands."""
    group = groups.add_parser("dataset", help="members' datasets")
    ds = group.add_subparsers(dest="command", required=True, parser_class=type(group))

    def cmd(name: str, help_: str, *, named: bool = True) -> argparse.ArgumentParser:
        sub = ds.add_parser(name, help=help_)
        if named:
            sub.add_argument("name", help="dataset name")
        sub.add_argument("--user", type=int, required=True, help="the member's Discord user id")
        return sub

    new = cmd("new", "create an empty dataset")
    new.add_argument("--base-model", required=True, help="a key of the model registry (e.g. tiny-sd15)")
    new.add_argument("--trigger", required=True, help="the trigger word, first tag of every caption")
    new.add_argument("--crop-mode", default="none", choices=["none", "center", "focus"])
    new.add_argument("--crop-size", help="e.g. 512x512, 1024, 832x1216 (default by model family)")
    new.add_argument("--tagger", help="'tiny', a WD14 folder or hub id (default from settings)")
    new.add_argument("--threshold", type=float, help="general tag threshold (default 0.35)")
    new.add_argument("--character-threshold", type=float, help="character tag threshold (default 0.85)")
    cmd("list", "the member's datasets", named=False)
    cmd("info", "one dataset's settings and counts")
    cmd("delete", "delete a dataset and its images")
    add = cmd("add", "add images or zips (prints the batch report)")
    add.add_argument("files", nargs="+", type=Path)
    tags = cmd("tags", "tag frequency table")
    tags.add_argument("--json", action="store_true", help="machine-readable output")
    tags.add_argument("--captions", action="store_true", help="also list each image's caption")
    for name, help_ in (
        ("remove-tags", "remove tags from every caption"),
        ("add-tags", "add tags to every caption"),
    ):
        sub = cmd(name, help_)
        sub.add_argument("tags", nargs="+")
        sub.add_argument("--image", type=int, help="only this image id")
    rep = cmd("replace-tag", "replace one tag with another")
    rep.add_argument("old")
    rep.add_argument("new")
    rep.add_argument("--image", type=int, help="only this image id")
    cmd("undo", "undo the last tag edit")
    remove_images = cmd("remove-images", "remove images from a dataset (ids from 'tags --captions')")
    remove_images.add_argument("ids", nargs="+", type=int)
    export = cmd("export", "write images + .txt captions for the trainer")
    export.add_argument("--out", type=Path, required=True)


async def run(services: Services, args: argparse.Namespace) -> int:
    """Run one ``dataset`` command."""
    return await DATASET_COMMANDS[args.command](services.datasets, args)


async def _new(svc, a) -> int:
    ds = await svc.create(
        a.user,
        a.name,
        a.base_model,
        a.trigger,
        a.crop_mode,
        a.crop_size,
        a.tagger,
        a.threshold,
        a.character_threshold,
    )
    print(f"created dataset '{ds.name}' (base model {ds.base_model}, trigger '{ds.trigger_word}', "
          f"crop {ds.crop_mode} {ds.crop_width}x{ds.crop_height})")  # fmt: skip
    return 0


async def _list(svc, a) -> int:
    rows = await svc.list(a.user)
    if not rows:
        print("no datasets yet: create one with 'python -m bot dataset new'")
    for ds, count in rows:
        print(f"{ds.name:<24} {count:>4} images  {ds.base_model:<14} trigger '{ds.trigger_word}'")
    return 0


async def _info(svc, a) -> int:
    info = await svc.info(a.user, a.name)
    ds = info.dataset
    print(f"{ds.name}: {info.images} images, {info.tags} distinct tags, {info.undo_steps} undoable edits")
    print(f"  base model {ds.base_model}, trigger '{ds.trigger_word}', crop {ds.crop_mode} "
          f"{ds.crop_width}x{ds.crop_height}, tagger {ds.tagger} "
          f"(thresholds {ds.general_threshold:g} / {ds.character_threshold:g})")  # fmt: skip
    print(f"  folder {info.folder}")
    return 0


async def _delete(svc, a) -> int:
    await svc.delete(a.user, a.name)
    print(f"deleted dataset '{a.name}'")
    return 0


async def _add(svc, a) -> int:
    from ..datasets.images import Skipped, too_big_reason

    limit = svc.settings.limits().max_file_bytes
    files, too_big = [], []
    for path in a.files:
        try:
            size = path.stat().st_size
            if size > limit:  # not even read
                too_big.append(Skipped(path.name, too_big_reason(size, limit)))
                continue
            files.append((path.name, path.read_bytes()))
        except OSError as exc:
            print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR

    def progress(stage: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{stage} {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    report = await svc.add_files(a.user, a.name, files, progress)
    report.skipped = too_big + report.skipped
    print(report.summary())
    return 0


async def _tags(svc, a) -> int:
    table = await svc.tag_table(a.user, a.name)
    images = await svc.images(a.user, a.name) if a.captions or a.json else []
    if a.json:
        print(json.dumps({
            "tags": [{"tag": t.tag, "count": t.count, "share": round(t.share, 4)} for t in table],
            "images": [{"id": i.id, "file": i.file_name, "name": i.original_name, "caption": i.caption} for i in images],
        }, indent=2))  # fmt: skip
        return 0
    width = max([len(t.tag) for t in table] + [3])
    print(f"{'tag':<{width}}  {'images':>6}  share")
    for t in table:
        print(f"{t.tag:<{width}}  {t.count:>6}  {t.share:>5.0%}  {'#' * round(t.share * 20)}")
    for i in images:
        print(f"[{i.id}] {i.original_name}: {i.caption}")
    return 0


async def _remove_tags(svc, a) -> int:
    result = await svc.remove_tags(a.user, a.name, a.tags, a.image)
    print(f"{result.description}: {result.changed} captions changed")
    return 0


async def _add_tags(svc, a) -> int:
    result = await svc.add_tags(a.user, a.name, a.tags, a.image)
    print(f"{result.description}: {result.changed} captions changed")
    return 0


async def _replace_tag(svc, a) -> int:
    result = await svc.replace_tag(a.user, a.name, a.old, a.new, a.image)
    print(f"{result.description}: {result.changed} captions changed")
    return 0


async def _undo(svc, a) -> int:
    result = await svc.undo(a.user, a.name)
    print(f"{result.description}: {result.changed} captions restored")
    return 0


async def _remove_images(svc, a) -> int:
    removed = await svc.remove_images(a.user, a.name, a.ids)
    print(f"removed {removed} images from '{a.name}'")
    return 0


async def _export(svc, a) -> int:
    out = await svc.export(a.user, a.name, a.out)
    print(f"exported to {out}")
    return 0


DATASET_COMMANDS = {
    "new": _new, "list": _list, "info": _info, "delete": _delete, "add": _add, "tags": _tags,
    "remove-tags": _remove_tags, "add-tags": _add_tags, "replace-tag": _replace_tag, "undo": _undo,
    "export": _export, "remove-images": _remove_images,
}  # fmt: skip
