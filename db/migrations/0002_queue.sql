-- Stamina (users and their ledger), the job queue with its events, saved epochs and files,
-- and each member's LoRA library.

-- One row per member who ever used the bot. balance is never negative (the CHECK is the last
-- line of defence; debits are conditional updates). reset_period is the local date of the daily
-- reset period the balance was last topped up in, so a bot that was down at reset time still
-- tops up on the next read.
CREATE TABLE users (
    user_id INTEGER PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0),
    reset_period TEXT NOT NULL,
    tier TEXT NOT NULL DEFAULT 'default',
    tier_override TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL REFERENCES users (user_id),
    kind TEXT NOT NULL CHECK (kind IN ('train', 'generate')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'cancelling', 'done', 'failed', 'cancelled')),
    priority INTEGER NOT NULL DEFAULT 0,
    title TEXT NOT NULL,
    dataset_id INTEGER REFERENCES datasets (id) ON DELETE SET NULL,
    base_model TEXT NOT NULL,
    family TEXT NOT NULL CHECK (family IN ('sd15', 'sdxl')),
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
    last_event_at REAL
);
CREATE INDEX jobs_queue ON jobs (kind, state, priority DESC, id);
CREATE INDEX jobs_by_owner ON jobs (owner_id, id);

-- Every change of a balance, with who made it and why. A job is charged once and refunded at
-- most once: the partial unique indexes make a second charge or refund impossible.
CREATE TABLE stamina_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (user_id),
    delta INTEGER NOT NULL,
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    reason TEXT NOT NULL CHECK (reason IN ('allowance', 'daily_reset', 'charge', 'refund', 'grant', 'revoke')),
    job_id INTEGER REFERENCES jobs (id),
    actor_id INTEGER,
    note TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX stamina_ledger_by_user ON stamina_ledger (user_id, id);
CREATE UNIQUE INDEX stamina_one_charge_per_job ON stamina_ledger (job_id) WHERE reason = 'charge';
CREATE UNIQUE INDEX stamina_one_refund_per_job ON stamina_ledger (job_id) WHERE reason = 'refund';

CREATE TABLE job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);

CREATE TABLE job_epochs (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    step INTEGER NOT NULL,
    path TEXT NOT NULL,
    preview_path TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, epoch)
);

-- Generated images and grids (generation jobs); index is the trainer's image index.
CREATE TABLE job_files (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    path TEXT NOT NULL,
    is_grid INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);

-- A member's saved LoRAs, for /generate. The file is the member's copy, not the job's.
CREATE TABLE loras (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    path TEXT NOT NULL,
    base_model TEXT NOT NULL,
    family TEXT NOT NULL,
    job_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    epoch INTEGER,
    trigger_word TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    UNIQUE (owner_id, name)
);

-- Measured training speed, for ETAs: an average of finished jobs per family, resolution and batch.
CREATE TABLE step_rates (
    family TEXT NOT NULL,
    resolution INTEGER NOT NULL,
    batch_size INTEGER NOT NULL,
    steps_per_s REAL NOT NULL CHECK (steps_per_s > 0),
    samples INTEGER NOT NULL,
    PRIMARY KEY (family, resolution, batch_size)
);

-- Flags shared by the bot and the operator CLI (another process), e.g. 'paused'.
CREATE TABLE queue_flags (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    changed_by INTEGER,
    changed_at REAL NOT NULL
);
