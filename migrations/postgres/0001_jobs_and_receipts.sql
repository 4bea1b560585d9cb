-- The job store and the receipt ledger of gateway nodes sharing one database.
-- Applied once by `handoff migrate`; the same tables as the single-node SQLite files.

-- One row per file.
CREATE TABLE jobs (
    file_id       TEXT PRIMARY KEY,
    sender        TEXT NOT NULL,
    original_name TEXT NOT NULL,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    inbox_key     TEXT NOT NULL UNIQUE,
    state         TEXT NOT NULL,
    recipient     TEXT,
    sealed_sha256 TEXT,
    accepted_at   BIGINT NOT NULL,
    delivered_at  BIGINT,
    retrieved     BOOLEAN NOT NULL DEFAULT FALSE,
    quarantined   BOOLEAN NOT NULL DEFAULT FALSE,
    warnings      TEXT,
    parent        TEXT,
    channel       TEXT,
    -- The node working on the job, and until when its claim holds.
    owner         TEXT,
    lease_until   TIMESTAMPTZ
);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_recipient ON jobs (recipient, state);
CREATE INDEX jobs_sender_sha256 ON jobs (sender, sha256);

-- The children of sorted archives, planned before they are written.
CREATE TABLE splits (
    parent  TEXT NOT NULL,
    insurer TEXT NOT NULL,
    child   TEXT NOT NULL UNIQUE,
    day     TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (parent, insurer),
    UNIQUE (insurer, day, n)
);

-- Every hop of every file, in the order it was committed (seq is given under an advisory
-- lock held to commit, so it has no gaps and no later-committed smaller number).
CREATE TABLE events (
    seq     BIGINT PRIMARY KEY,
    file_id TEXT NOT NULL,
    hop     TEXT NOT NULL,
    body    TEXT NOT NULL,
    UNIQUE (file_id, hop)
);

-- The receipt chain.
CREATE TABLE receipts (
    seq     BIGINT PRIMARY KEY,
    id      TEXT NOT NULL UNIQUE,
    file_id TEXT NOT NULL,
    hop     TEXT NOT NULL,
    time    TEXT NOT NULL,
    json    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    UNIQUE (file_id, hop)
);
CREATE INDEX receipts_file ON receipts (file_id);
CREATE INDEX receipts_time ON receipts (time);

-- How far into the events receipts were issued.
CREATE TABLE progress (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    event_seq BIGINT NOT NULL
);
INSERT INTO progress (id, event_seq) VALUES (1, 0);
