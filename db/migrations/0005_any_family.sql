-- rebuilds tables: foreign keys are off while this runs (db/database.py), checked before commit.
-- A job's family may be any family of the trainer's table (trainer/contract/families.py; Flux.1 is
-- the third): the CHECK that listed SD1.5 and SDXL goes. SQLite changes a CHECK only by rebuilding
-- the table (its documented 12 steps); ids, the AUTOINCREMENT counter and the indexes are kept.
CREATE TEMP TABLE _jobs_seq AS SELECT seq FROM sqlite_sequence WHERE name = 'jobs';

CREATE TABLE jobs_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL REFERENCES users (user_id),
    kind TEXT NOT NULL CHECK (kind IN ('train', 'generate')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'cancelling', 'done', 'failed', 'cancelled')),
    priority INTEGER NOT NULL DEFAULT 0,
    title TEXT NOT NULL,
    dataset_id INTEGER REFERENCES datasets (id) ON DELETE SET NULL,
    base_model TEXT NOT NULL,
    family TEXT NOT NULL,  -- a family of the trainer's table, checked by the bot
    resolution INTEGER NOT NULL,
    batch_size INTEGER NOT NULL DEFAULT 1,
    total_steps INTEGER NOT NULL CHECK (total_steps > 0),
    cost INTEGER NOT NULL CHECK (cost >= 0),
    spec TEXT NOT NULL,
    folder TEXT NOT NULL,
    channel_id INTEGER,
    message_id INTEGER,
    step INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    loss REAL,
    steps_per_s REAL,
    device TEXT,
    pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    refunded INTEGER NOT NULL DEFAULT 0,
    refund_expired INTEGER NOT NULL DEFAULT 0,  -- refund withheld: stamina that expired at a daily reset
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    last_event_at REAL,
    announced INTEGER NOT NULL DEFAULT 0
);

INSERT INTO jobs_new SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM _jobs_seq), 0)) WHERE name = 'jobs';
DROP TABLE _jobs_seq;

CREATE INDEX jobs_queue ON jobs (kind, state, priority DESC, id);
CREATE INDEX jobs_by_owner ON jobs (owner_id, id);
CREATE INDEX jobs_unannounced ON jobs (id) WHERE announced = 0 AND state IN ('done', 'failed', 'cancelled');
