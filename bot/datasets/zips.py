"""Safe expansion of a .zip upload: its images with their same-named .txt captions, as data only.

The central directory is sized up before zipfile builds an object per entry; every entry is then
checked before it is read (path, file type, encryption, declared size, compression ratio) and read
through a cap, so a header that lies about sizes still cannot unpack more than the limits allow.
Nothing is ever written to disk here: entries come back as decoded images or skip reasons.
"""

from __future__ import annotations

import io
import posixpath
import re
import stat
import struct
import zipfile
import zlib
from zipfile import ZipFile, ZipInfo

from ..i18n import N_
from .images import DecodedImage, Limits, Skipped, Transform, decode_image, is_zip, megabytes, too_big_reason
from .phrases import Phrase

# Deflate peaks near 1032:1 (long runs of one byte). Flat illustrations saved as BMP can pass 200:1, so
# only the extreme is refused here; the per-file and per-zip caps enforced while reading are the real guard.
ZIP_BOMB_RATIO = 1000
RATIO_CHECK_BYTES = 2**20  # entries smaller than this may compress however they like
CENTRAL_ENTRY_BYTES = 4096  # generous size of one central-directory record (46 bytes + name + extras)
CHUNK_BYTES = 2**20
CAPTION_SUFFIX = ".txt"
IGNORED_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})
IGNORE = ""  # a triage result: leave the entry out without a word (folders, dotfiles, OS clutter)

CORRUPT_ZIP = Phrase(
    N_("not a readable zip (damaged, or not a zip at all): zip the images again and upload it")
)
NO_IMAGES = Phrase(N_("the zip holds no images"))
NESTED_ZIP = Phrase(N_("zips inside zips are not opened: upload it separately"))
NOT_UTF8 = Phrase(N_("the caption is not UTF-8 text: save it as UTF-8 and upload again"))
SYMLINK = Phrase(N_("it is a symbolic link, not a file: put the image itself in the zip"))
NOT_A_FILE = Phrase(N_("it is not a regular file: put only images and .txt captions in the zip"))
PASSWORD = Phrase(N_("it is password-protected: zip it again without a password"))
OVER_BUDGET = Phrase(N_("the zip unpacks to more than its limit in all: split it into smaller zips"))
UNSUPPORTED = Phrase(
    N_("its compression method is not supported: zip it again with standard (deflate) compression")
)
_DRIVE = re.compile(r"^[A-Za-z]:")


def expand_zip(
    name: str, data: bytes, limits: Limits, transform: Transform | None = None
) -> tuple[list[DecodedImage], list[Skipped]]:
    """The images of a zip upload, and a reason for every entry left out (or one for the whole zip).

    ``transform`` runs on each image as soon as it is decoded (the service crops there), so a zip of
    large pictures never holds them all at full size at once.
    """
    if len(data) > limits.max_file_bytes:
        return [], [Skipped(name, too_big_reason(len(data), limits.max_file_bytes))]
    problem = _directory_problem(data, limits)
    if problem is not None:
        return [], [Skipped(name, problem)]
    try:
        archive = ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except Exception:  # BadZipFile, and struct/value/overflow errors on forged directories
        return [], [Skipped(name, CORRUPT_ZIP)]
    with archive:
        problem = _contents_problem(entries, limits)
        if problem is not None:
            return [], [Skipped(name, problem)]
        images, skipped = _read_entries(name, archive, entries, limits, transform)
    if not images and not skipped:
        skipped.append(Skipped(name, NO_IMAGES))
    return images, skipped


def _too_many_entries(count: int | None, limits: Limits) -> Phrase:
    if count is None:
        return Phrase(
            N_("the zip has too long a file list, over the {limit}-entry limit: split it into smaller zips"),
            limit=limits.max_zip_entries,
        )
    return Phrase(
        N_("the zip has {count} entries, over the {limit}-entry limit: split it into smaller zips"),
        count=count,
        limit=limits.max_zip_entries,
    )


def _directory_problem(data: bytes, limits: Limits) -> str | None:
    """Entry count and directory size from the end record, before zipfile parses every record."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535))
    if end < 0 or end + 22 > len(data):
        return None  # zipfile reports it as not a zip
    count, directory_size = struct.unpack_from("<HI", data, end + 10)
    if count != 0xFFFF and count > limits.max_zip_entries:
        return _too_many_entries(count, limits)
    if directory_size != 0xFFFFFFFF and directory_size > limits.max_zip_entries * CENTRAL_ENTRY_BYTES:
        return _too_many_entries(None, limits)
    return None


def _contents_problem(entries: list[ZipInfo], limits: Limits) -> str | None:
    if len(entries) > limits.max_zip_entries:
        return _too_many_entries(len(entries), limits)
    declared = sum(info.file_size for info in entries)
    if declared > limits.max_zip_total_bytes:
        return Phrase(
            N_("the zip unpacks to {size}, over the {limit} limit for one zip: split it into smaller zips"),
            size=megabytes(declared),
            limit=megabytes(limits.max_zip_total_bytes),
        )
    return None


def _read_entries(
    zip_name: str, archive: ZipFile, entries: list[ZipInfo], limits: Limits, transform: Transform | None
) -> tuple[list[DecodedImage], list[Skipped]]:
    images: list[tuple[str, DecodedImage]] = []  # (caption key, image)
    captions: dict[str, tuple[str, bytes]] = {}  # caption key -> (entry name, raw text)
    skipped: list[Skipped] = []
    budget = limits.max_zip_total_bytes
    for info in entries:
        label = f"{zip_name}/{info.filename}"
        reason = _triage(info, limits)
        if reason == IGNORE:
            continue
        data = _read_capped(archive, info, limits, budget) if reason is None else reason
        if isinstance(data, str):
            skipped.append(Skipped(label, data))
            continue
        budget -= len(data)
        key = _caption_key(info.filename)
        if info.filename.lower().endswith(CAPTION_SUFFIX):
            captions[key] = (label, data)
        elif is_zip(data):
            skipped.append(Skipped(label, NESTED_ZIP))
        else:
            result = decode_image(posixpath.basename(info.filename), data, limits)
            if isinstance(result, DecodedImage):
                if transform is not None:
                    transform(result)
                images.append((key, result))
            else:
                skipped.append(Skipped(label, result.reason))
    skipped.extend(_attach_captions(images, captions))
    return [image for _, image in images], skipped


def _caption_key(filename: str) -> str:
    """Same folder, same stem (case-insensitive): ``pics/Cat.PNG`` and ``pics/cat.txt`` share a key."""
    folder, base = posixpath.split(filename)
    return f"{folder}/{posixpath.splitext(base)[0].lower()}"


def _attach_captions(
    images: list[tuple[str, DecodedImage]], captions: dict[str, tuple[str, bytes]]
) -> list[Skipped]:
    """Give each image its caption; captions with no image are ignored, unreadable ones reported."""
    skipped: list[Skipped] = []
    reported: set[str] = set()
    for key, image in images:
        if key not in captions:
            continue
        label, raw = captions[key]
        try:
            image.caption = raw.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            if label not in reported:
                reported.add(label)
                skipped.append(Skipped(label, NOT_UTF8))
    return skipped


def _triage(info: ZipInfo, limits: Limits) -> str | None:
    """A skip reason for an entry, IGNORE to leave it out silently, or None to read it."""
    unsafe = _unsafe_path(info.filename)
    if unsafe is not None:
        return Phrase(
            N_("unsafe path in the zip ({why}): zip the folder's files again with a standard zip tool"),
            why=unsafe,
        )
    parts = [part for part in info.filename.split("/") if part not in ("", ".")]
    if info.is_dir() or not parts or any(p.startswith(".") or p.lower() in IGNORED_NAMES for p in parts):
        return IGNORE
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFDIR:
        return IGNORE
    if kind == stat.S_IFLNK:
        return SYMLINK
    if kind not in (0, stat.S_IFREG):
        return NOT_A_FILE
    if info.filename.lower().endswith(".zip"):
        return NESTED_ZIP
    if info.flag_bits & 0x1:
        return PASSWORD
    return _size_problem(info, limits)


def _unsafe_path(filename: str) -> Phrase | None:
    if "\\" in filename:
        return Phrase(N_("a backslash in the path"))
    if filename.startswith("/"):
        return Phrase(N_("an absolute path"))
    if _DRIVE.match(filename):
        return Phrase(N_("a drive letter in the path"))
    if ".." in filename.split("/"):
        return Phrase(N_("'..' climbs out of the folder"))
    return None


def _size_problem(info: ZipInfo, limits: Limits) -> str | None:
    if info.file_size > limits.max_file_bytes:
        return Phrase(
            N_("it unpacks to {size}, over the {limit} limit per file: downscale it or save it as JPEG/PNG"),
            size=megabytes(info.file_size),
            limit=megabytes(limits.max_file_bytes),
        )
    if _bomb_ratio(info.file_size, info.compress_size):
        return _bomb_reason(info.file_size, info.compress_size)
    return None


def _bomb_ratio(unpacked: int, packed: int) -> bool:
    return unpacked > RATIO_CHECK_BYTES and unpacked > ZIP_BOMB_RATIO * max(1, packed)


def _bomb_reason(unpacked: int, packed: int) -> Phrase:
    ratio = f"{unpacked / max(1, packed):.0f}"
    return Phrase(
        N_("it expands {ratio}:1, like a zip bomb: put the original image files in the zip"), ratio=ratio
    )


def _read_capped(archive: ZipFile, info: ZipInfo, limits: Limits, budget: int) -> bytes | str:
    """The entry's bytes, read in chunks and stopped at the per-file and whole-zip caps (or a reason)."""
    chunks: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limits.max_file_bytes:
                    return Phrase(
                        N_("it unpacks to over {limit}, the limit per file"),
                        limit=megabytes(limits.max_file_bytes),
                    )
                if size > budget:
                    return OVER_BUDGET
                if _bomb_ratio(size, info.compress_size):
                    return _bomb_reason(size, info.compress_size)
                chunks.append(chunk)
    except NotImplementedError:
        return UNSUPPORTED
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError) as exc:
        detail = str(exc).split("\n")[0][:80] or type(exc).__name__
        return Phrase(
            N_("it is damaged in the zip ({detail}): zip the images again and upload it"), detail=detail
        )
    return b"".join(chunks)
