"""``python -m bot dataset ...``: members' datasets, over :class:`bot.datasets.service.DatasetService`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import discord_id, for_operator, positive_int

if TYPE_CHECKING:
    from ..datasets.images import Limits, Skipped
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
        sub.add_argument("--user", type=discord_id, required=True, help="the member's Discord user id")
        return sub

    _dataset_options(cmd("new", "create an empty dataset"))
    imp = cmd("import", "a new dataset from a folder or zip of images + same-named .txt captions")
    _dataset_options(imp)
    imp.add_argument("path", type=Path, help="a folder ('dataset export' writes one) or a .zip")
    imp.epilog = "example:\n  python -m bot dataset import chara --user 1234 --base-model tiny-sd15 --trigger tkchar exported/"
    imp.formatter_class = argparse.RawDescriptionHelpFormatter
    cmd("list", "the member's datasets", named=False)
    cmd("info", "one dataset's settings and counts")
    cmd("delete", "delete a dataset and its images")
    add = cmd("add", "add images or zips (prints the batch report)")
    add.add_argument(
        "files", nargs="+", type=Path, help="image files (PNG, JPEG, WEBP, ...) and zips of them"
    )
    tags = cmd("tags", "tag frequency table")
    tags.add_argument("--json", action="store_true", help="machine-readable output")
    tags.add_argument("--captions", action="store_true", help="also list each image's caption")
    for name, help_ in (
        ("remove-tags", "remove tags from every caption"),
        ("add-tags", "add tags to every caption"),
    ):
        sub = cmd(name, help_)
        sub.add_argument("tags", nargs="+", help="the tags, as 'dataset tags' shows them")
        sub.add_argument("--image", type=positive_int, help="only this image id")
    rep = cmd("replace-tag", "replace one tag with another")
    rep.add_argument("old", help="the tag to replace")
    rep.add_argument("new", help="the tag to put in its place")
    rep.add_argument("--image", type=positive_int, help="only this image id")
    cmd("undo", "undo the last tag edit")
    remove_images = cmd("remove-images", "remove images from a dataset (ids from 'tags --captions')")
    remove_images.add_argument("ids", nargs="+", type=positive_int, help="image ids")
    export = cmd("export", "write images + .txt captions for the trainer")
    export.add_argument("--out", type=Path, required=True, help="a new (or empty) folder to write into")


def _dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-model", required=True, help="a key of the model registry (e.g. tiny-sd15)")
    p.add_argument("--trigger", required=True, help="the trigger word, first tag of every caption")
    p.add_argument("--crop-mode", default="none", choices=["none", "center", "focus"],
                   help="none: keep the aspect (bucketing); center; focus: the most detailed window (default none)")  # fmt: skip
    p.add_argument("--crop-size", help="e.g. 512x512, 1024, 832x1216 (default by model family)")
    p.add_argument("--tagger", help="'tiny', a WD14 folder or hub id (default from settings)")
    p.add_argument("--threshold", type=float, help="general tag threshold (default 0.35)")
    p.add_argument("--character-threshold", type=float, help="character tag threshold (default 0.85)")


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

    report = await _add_files(svc, a.user, a.name, files)
    report.skipped = too_big + report.skipped
    print(for_operator(report.summary(), a.user))
    return 0


class _ProgressLine:
    """The ingest's progress on a terminal; :meth:`end` closes a line a failed upload left open, so
    the error is printed on a line of its own."""

    def __init__(self) -> None:
        self.open = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{stage} {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
            self.open = done < total

    def end(self) -> None:
        if self.open:
            print(" - stopped", file=sys.stderr, flush=True)
            self.open = False


async def _add_files(svc, user: int, name: str, files: list[tuple[str, bytes]]):
    progress = _ProgressLine()
    try:
        return await svc.add_files(user, name, files, progress)
    finally:
        progress.end()


async def _import(svc, a) -> int:
    """Read everything first, then create the dataset; any failure after that deletes it again."""
    files, left_out = read_import(a.path, svc.settings.limits())
    await _new(svc, a)
    try:
        report = await _add_files(svc, a.user, a.name, files)
    except BaseException:
        await asyncio.shield(svc.delete(a.user, a.name))
        raise
    report.skipped = left_out + report.skipped
    print(for_operator(report.summary(), a.user))
    if not report.added:
        await svc.delete(a.user, a.name)
        print(
            f"error: nothing in {a.path} could be added, so dataset '{a.name}' was not kept", file=sys.stderr
        )
        return EXIT_ERROR
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


def read_import(path: Path, limits: Limits) -> tuple[list[tuple[str, bytes]], list[Skipped]]:
    """Upload-shaped files for ``path``: a zip as it is; a folder packed into zips (stored, under the
    upload limits) whose images keep their same-named .txt captions, and the files left out."""
    from ..datasets.images import megabytes
    from ..datasets.service import ServiceError

    if path.is_file():
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise ServiceError(f"{path} is {megabytes(size)}, over the {megabytes(limits.max_file_bytes)} "
                               "limit per file: unzip it and import the folder")  # fmt: skip
        return [(path.name, path.read_bytes())], []
    if not path.is_dir():
        raise ServiceError(f"{path} is neither a folder nor a zip")
    groups, left_out = _import_groups(path, limits)
    budget = min(limits.max_file_bytes, limits.max_zip_total_bytes) - 2**16  # room for the zip's own records
    chunks: list[list[Path]] = [[]]
    size = 0
    for members in groups.values():
        grown = sum(m.stat().st_size + 128 + 2 * len(str(m)) for m in members)
        if chunks[-1] and (size + grown > budget or len(chunks[-1]) + len(members) > limits.max_zip_entries):
            chunks.append([])
            size = 0
        chunks[-1] += members
        size += grown
    return [(path.name or "import", _zip(path, chunk)) for chunk in chunks if chunk], left_out


def _import_groups(folder: Path, limits: Limits) -> tuple[dict[str, list[Path]], list[Skipped]]:
    """Images with their captions, by the caption key of a zip entry (folder + lower-case stem)."""
    from PIL import Image

    from ..datasets.images import Skipped, too_big_reason
    from ..datasets.zips import _caption_key

    image_suffixes = set(Image.registered_extensions())
    groups: dict[str, list[Path]] = {}
    left_out: list[Skipped] = []
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not file.is_file():
            continue
        suffix = file.suffix.lower()
        if suffix != ".txt" and suffix not in image_suffixes:
            left_out.append(Skipped(rel.as_posix(), "not an image or a .txt caption: left out"))
        elif (size := file.stat().st_size) > limits.max_file_bytes:
            left_out.append(Skipped(rel.as_posix(), too_big_reason(size, limits.max_file_bytes)))
        else:
            groups.setdefault(_caption_key(rel.as_posix()), []).append(file)
    return {k: v for k, v in groups.items() if any(m.suffix.lower() != ".txt" for m in v)}, left_out


def _zip(folder: Path, files: list[Path]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for file in files:
            archive.write(file, file.relative_to(folder).as_posix())
    return buffer.getvalue()


DATASET_COMMANDS = {
    "new": _new, "list": _list, "info": _info, "delete": _delete, "add": _add, "tags": _tags,
    "remove-tags": _remove_tags, "add-tags": _add_tags, "replace-tag": _replace_tag, "undo": _undo,
    "export": _export, "remove-images": _remove_images, "import": _import,
}  # fmt: skip
