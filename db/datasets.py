"""Repository functions for datasets, their images and caption-edit history.

Small typed functions over one connection. Callers that write several rows that
belong together wrap them in :func:`db.database.transaction`.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

_U64 = 1 << 64


def to_signed64(value: int) -> int:
    """SQLite integers are signed 64-bit; perceptual hashes are unsigned."""
    return value - _U64 if value >= 1 << 63 else value


def to_unsigned64(value: int) -> int:
    return value + _U64 if value < 0 else value


@dataclass(frozen=True)
class DatasetRow:
    id: int
    owner_id: int
    name: str
    base_model: str
    trigger_word: str
    crop_mode: str
    crop_width: int
    crop_height: int
    tagger: str
    general_threshold: float
    character_threshold: float
    created_at: str


@dataclass(frozen=True)
class ImageRow:
    id: int
    dataset_id: int
    file_name: str
    original_name: str
    sha256: str
    phash: int
    width: int
    height: int
    caption: str
    caption_source: str  # 'tagger', 'zip' (came with the upload) or 'hand' (edited by the member)


#: Where a caption came from; 'zip' and 'hand' are the member's own words, which a re-tag replaces.
CAPTION_SOURCES = ("tagger", "zip", "hand")
#: What a member may change on a dataset after creating it (:func:`update_dataset`).
EDITABLE = ("name", "trigger_word", "general_threshold", "tagger", "crop_mode", "crop_width", "crop_height")


@dataclass(frozen=True)
class NewImage:
    file_name: str
    original_name: str
    sha256: str
    phash: int
    width: int
    height: int
    caption: str
    rating: str | None = None
    source: str = "tagger"


_DATASET_COLUMNS = ", ".join(DatasetRow.__dataclass_fields__)
_IMAGE_COLUMNS = ", ".join(ImageRow.__dataclass_fields__)


def _dataset(row: aiosqlite.Row) -> DatasetRow:
    return DatasetRow(**dict(row))


def _image(row: aiosqlite.Row) -> ImageRow:
    values = dict(row)
    values["phash"] = to_unsigned64(values["phash"])
    return ImageRow(**values)


async def insert_dataset(
    conn: aiosqlite.Connection,
    *,
    owner_id: int,
    name: str,
    base_model: str,
    trigger_word: str,
    crop_mode: str,
    crop_width: int,
    crop_height: int,
    tagger: str,
    general_threshold: float,
    character_threshold: float,
) -> DatasetRow:
    """Insert a dataset; sqlite3.IntegrityError when the owner already has one of that name."""
    async with conn.execute(
        f"""INSERT INTO datasets (owner_id, name, base_model, trigger_word, crop_mode, crop_width, crop_height,
                                  tagger, general_threshold, character_threshold)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_DATASET_COLUMNS}""",
        (owner_id, name, base_model, trigger_word, crop_mode, crop_width, crop_height, tagger,
         general_threshold, character_threshold),
    ) as cur:  # fmt: skip
        row = await cur.fetchone()
    return _dataset(row)


async def get_dataset(conn: aiosqlite.Connection, owner_id: int, name: str) -> DatasetRow | None:
    async with conn.execute(
        f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE owner_id = ? AND name = ?", (owner_id, name)
    ) as cur:
        row = await cur.fetchone()
    return _dataset(row) if row else None


async def get_dataset_by_id(conn: aiosqlite.Connection, dataset_id: int) -> DatasetRow | None:
    async with conn.execute(f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE id = ?", (dataset_id,)) as cur:
        row = await cur.fetchone()
    return _dataset(row) if row else None


async def list_datasets(conn: aiosqlite.Connection, owner_id: int) -> list[tuple[DatasetRow, int]]:
    """The owner's datasets, by name, with their image counts."""
    async with conn.execute(
        f"""SELECT {", ".join("d." + c for c in DatasetRow.__dataclass_fields__)}, COUNT(i.id) AS images
            FROM datasets d LEFT JOIN dataset_images i ON i.dataset_id = d.id
            WHERE d.owner_id = ? GROUP BY d.id ORDER BY d.name""",
        (owner_id,),
    ) as cur:
        rows = await cur.fetchall()
    out = []
    for row in rows:
        values = dict(row)
        count = values.pop("images")
        out.append((DatasetRow(**values), count))
    return out


async def delete_dataset(conn: aiosqlite.Connection, dataset_id: int) -> None:
    await conn.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))


async def list_images(conn: aiosqlite.Connection, dataset_id: int) -> list[ImageRow]:
    async with conn.execute(
        f"SELECT {_IMAGE_COLUMNS} FROM dataset_images WHERE dataset_id = ? ORDER BY id", (dataset_id,)
    ) as cur:
        return [_image(r) for r in await cur.fetchall()]


async def delete_images(conn: aiosqlite.Connection, dataset_id: int, image_ids: list[int]) -> list[str]:
    """Delete images of the dataset; returns their file names (the caller removes the files after commit)."""
    names = []
    for image_id in image_ids:
        async with conn.execute(
            "DELETE FROM dataset_images WHERE id = ? AND dataset_id = ? RETURNING file_name",
            (image_id, dataset_id),
        ) as cur:
            row = await cur.fetchone()
        if row is not None:
            names.append(row[0])
    return names


async def count_images(conn: aiosqlite.Connection, dataset_id: int) -> int:
    async with conn.execute("SELECT COUNT(*) FROM dataset_images WHERE dataset_id = ?", (dataset_id,)) as cur:
        return int((await cur.fetchone())[0])


async def insert_images(
    conn: aiosqlite.Connection, dataset_id: int, images: list[NewImage]
) -> list[int | None]:
    """Insert the images in order: the id of each, or None where the dataset already holds that
    picture (same sha256; the row is not inserted, the others are)."""
    ids: list[int | None] = []
    for i in images:
        async with conn.execute(
            """INSERT INTO dataset_images (dataset_id, file_name, original_name, sha256, phash, width, height,
                                           caption, rating, caption_source)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (dataset_id, sha256) DO NOTHING RETURNING id""",
            (dataset_id, i.file_name, i.original_name, i.sha256, to_signed64(i.phash), i.width, i.height,
             i.caption, i.rating, i.source),
        ) as cur:  # fmt: skip
            row = await cur.fetchone()
        ids.append(int(row[0]) if row else None)
    return ids


async def image_by_sha256(conn: aiosqlite.Connection, dataset_id: int, sha256: str) -> ImageRow | None:
    async with conn.execute(
        f"SELECT {_IMAGE_COLUMNS} FROM dataset_images WHERE dataset_id = ? AND sha256 = ?",
        (dataset_id, sha256),
    ) as cur:
        row = await cur.fetchone()
    return _image(row) if row else None


async def record_caption_edit(
    conn: aiosqlite.Connection,
    dataset_id: int,
    description: str,
    changes: dict[int, tuple[str, str]],
    source: str = "hand",
) -> int:
    """Apply caption changes {image_id: (old, new)}, now from ``source``, and remember the old
    captions and their sources for undo."""
    async with conn.execute(
        "INSERT INTO caption_edits (dataset_id, description) VALUES (?, ?) RETURNING id",
        (dataset_id, description),
    ) as cur:
        edit_id = int((await cur.fetchone())[0])
    await conn.executemany(
        """INSERT INTO caption_edit_items (edit_id, image_id, old_caption, old_source)
           SELECT ?, id, ?, caption_source FROM dataset_images WHERE id = ? AND dataset_id = ?""",
        [(edit_id, old, image_id, dataset_id) for image_id, (old, _new) in changes.items()],
    )
    await conn.executemany(
        "UPDATE dataset_images SET caption = ?, caption_source = ? WHERE id = ? AND dataset_id = ?",
        [(new, source, image_id, dataset_id) for image_id, (_old, new) in changes.items()],
    )
    return edit_id


async def undo_last_edit(conn: aiosqlite.Connection, dataset_id: int) -> tuple[str, int] | None:
    """Restore the captions of the latest edit and forget it: (its description, images restored)."""
    async with conn.execute(
        "SELECT id, description FROM caption_edits WHERE dataset_id = ? ORDER BY id DESC LIMIT 1",
        (dataset_id,),
    ) as cur:
        edit = await cur.fetchone()
    if edit is None:
        return None
    async with conn.execute(
        "SELECT image_id, old_caption, old_source FROM caption_edit_items WHERE edit_id = ?", (edit["id"],)
    ) as cur:
        items = await cur.fetchall()
    await conn.executemany(
        """UPDATE dataset_images SET caption = ?, caption_source = coalesce(?, caption_source)
           WHERE id = ? AND dataset_id = ?""",
        [(row["old_caption"], row["old_source"], row["image_id"], dataset_id) for row in items],
    )
    await conn.execute("DELETE FROM caption_edits WHERE id = ?", (edit["id"],))
    return edit["description"], len(items)


async def count_edits(conn: aiosqlite.Connection, dataset_id: int) -> int:
    async with conn.execute("SELECT COUNT(*) FROM caption_edits WHERE dataset_id = ?", (dataset_id,)) as cur:
        return int((await cur.fetchone())[0])


async def update_dataset(conn: aiosqlite.Connection, dataset_id: int, **fields: object) -> DatasetRow:
    """Change the :data:`EDITABLE` settings given; sqlite3.IntegrityError when a new name clashes
    with another of the owner's datasets."""
    unknown = set(fields) - set(EDITABLE)
    if unknown or not fields:
        raise ValueError(f"not an editable dataset setting: {sorted(unknown) or 'none given'}")
    columns = ", ".join(f"{name} = ?" for name in fields)
    async with conn.execute(
        f"UPDATE datasets SET {columns} WHERE id = ? RETURNING {_DATASET_COLUMNS}",
        (*fields.values(), dataset_id),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        raise LookupError(f"no dataset {dataset_id}")
    return _dataset(row)


async def rewrite_captions(conn: aiosqlite.Connection, dataset_id: int, captions: dict[int, str]) -> None:
    """Set captions {image_id: caption} without an undo step and keeping their source (a rewrite the
    bot does for the member, such as a new trigger word)."""
    await conn.executemany(
        "UPDATE dataset_images SET caption = ? WHERE id = ? AND dataset_id = ?",
        [(caption, image_id, dataset_id) for image_id, caption in captions.items()],
    )


async def history_captions(conn: aiosqlite.Connection, dataset_id: int) -> list[tuple[int, int, str]]:
    """(edit id, image id, old caption) of every caption the undo history of the dataset keeps."""
    async with conn.execute(
        """SELECT i.edit_id, i.image_id, i.old_caption FROM caption_edit_items i
           JOIN caption_edits e ON e.id = i.edit_id WHERE e.dataset_id = ? ORDER BY i.edit_id""",
        (dataset_id,),
    ) as cur:
        return [(int(r[0]), int(r[1]), r[2]) for r in await cur.fetchall()]


async def rewrite_history_captions(conn: aiosqlite.Connection, items: list[tuple[int, int, str]]) -> None:
    """Replace old captions in the undo history: (edit id, image id, caption)."""
    await conn.executemany(
        "UPDATE caption_edit_items SET old_caption = ? WHERE edit_id = ? AND image_id = ?",
        [(caption, edit_id, image_id) for edit_id, image_id, caption in items],
    )


async def set_ratings(conn: aiosqlite.Connection, dataset_id: int, ratings: dict[int, str]) -> None:
    await conn.executemany(
        "UPDATE dataset_images SET rating = ? WHERE id = ? AND dataset_id = ?",
        [(rating, image_id, dataset_id) for image_id, rating in ratings.items()],
    )
