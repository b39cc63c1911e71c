-- Members who asked (/notify on) for a direct message when a job of theirs finishes or fails, with
-- the Discord locale they asked from: the message is written in that language. Turning it off
-- deletes the row.
CREATE TABLE dm_notifications (
    user_id INTEGER PRIMARY KEY,
    locale TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
