-- Each member's saved training presets: a name and a set of /train options (a JSON object of
-- key -> value, checked against the trainer's contract before it is saved). Names are unique per
-- member, case-insensitively, like dataset names.
CREATE TABLE presets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    options TEXT NOT NULL CHECK (json_valid(options) AND json_type(options) = 'object'),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (owner_id, name)
);
