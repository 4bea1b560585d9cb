-- The files every node must reach: box files (inbox, outbox, receipts), the spool and the
-- quarantine, by their place under the state directory. Their bytes are kept as each node
-- wrote them: sealed at rest, CMS for the recipient, or a signed receipt; never plaintext.
-- A blob may be named by two files (an upload taken into the spool is the same bytes).
CREATE TABLE blobs (
    id      BIGSERIAL PRIMARY KEY,
    size    BIGINT NOT NULL,
    -- A large file's blob is written in several transactions, then named by its file: one that
    -- names no file a day later was cut short, and is collected.
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE blob_chunks (
    blob BIGINT NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    n    INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob, n)
);
-- Sealed bytes do not compress: stored as they are, without the attempt.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- `dir` is the folder under the state directory (`boxes/clinic-1/inbox`, `spool`); `shown_size`
-- the size a listing shows (of an upload, its plaintext); sha256, actor and channel what an
-- upload carries from its transport.
CREATE TABLE files (
    dir        TEXT NOT NULL,
    name       TEXT NOT NULL,
    blob       BIGINT NOT NULL REFERENCES blobs (id),
    shown_size BIGINT NOT NULL,
    modified   TIMESTAMPTZ NOT NULL DEFAULT now(),
    sha256     TEXT,
    actor      TEXT,
    channel    TEXT,
    PRIMARY KEY (dir, name)
);

CREATE INDEX files_blob ON files (blob);

-- The working node reads every inbox twice a second: uploads taken by any node.
CREATE INDEX files_inboxes ON files (dir) WHERE dir LIKE 'boxes/%/inbox';
