-- Datasets owned by a user, their images and the undo history of caption edits.
-- AUTOINCREMENT: an id is never reused, so nothing can land in a new dataset that took a deleted one's id.
CREATE TABLE datasets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    base_model TEXT NOT NULL,
    trigger_word TEXT NOT NULL,
    crop_mode TEXT NOT NULL CHECK (crop_mode IN ('none', 'center', 'focus')),
    crop_width INTEGER NOT NULL CHECK (crop_width > 0),
    crop_height INTEGER NOT NULL CHECK (crop_height > 0),
    tagger TEXT NOT NULL,
    general_threshold REAL NOT NULL CHECK (general_threshold BETWEEN 0 AND 1),
    character_threshold REAL NOT NULL CHECK (character_threshold BETWEEN 0 AND 1),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    UNIQUE (owner_id, name)
);

CREATE TABLE dataset_images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    file_name TEXT NOT NULL,
    original_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    phash INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    caption TEXT NOT NULL DEFAULT '',
    rating TEXT,
    added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    UNIQUE (dataset_id, file_name),
    UNIQUE (dataset_id, sha256)
);
CREATE INDEX dataset_images_by_dataset ON dataset_images (dataset_id, id);

CREATE TABLE caption_edits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

CREATE TABLE caption_edit_items (
    edit_id INTEGER NOT NULL REFERENCES caption_edits (id) ON DELETE CASCADE,
    image_id INTEGER NOT NULL REFERENCES dataset_images (id) ON DELETE CASCADE,
    old_caption TEXT NOT NULL,
    PRIMARY KEY (edit_id, image_id)
);
