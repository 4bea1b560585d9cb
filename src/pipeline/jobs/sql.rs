//! The statements both job stores run, written once with SQLite's `?N` placeholders, which the
//! PostgreSQL store numbers as `$N` ([`numbered`]). Flags are written so that SQLite's integers
//! and PostgreSQL's booleans answer alike (`NOT retrieved`, `quarantined OR ?6`).

/// The columns every store reads a [`super::Job`] from, in this order.
macro_rules! job_columns {
    () => {
        "file_id, sender, original_name, size, sha256, inbox_key, state, recipient, \
         sealed_sha256, accepted_at, delivered_at, retrieved, quarantined, warnings, parent, \
         channel"
    };
}

/// A query of whole jobs.
macro_rules! select_jobs {
    ($rest:literal) => {
        concat!("SELECT ", job_columns!(), " FROM jobs ", $rest)
    };
}

/// The states of the jobs the pipeline has not finished ([`super::JobState::is_open`]).
macro_rules! open_states {
    () => {
        "('accepted', 'validated', 'scanned', 'sealed')"
    };
}

pub(super) const BY_INBOX_KEY: &str = select_jobs!("WHERE inbox_key = ?1");
pub(super) const GET: &str = select_jobs!("WHERE file_id = ?1");
pub(super) const OPEN_JOBS: &str = concat!(
    select_jobs!("WHERE state IN "),
    open_states!(),
    " ORDER BY accepted_at"
);
pub(super) const DELIVERED_TO: &str = select_jobs!(
    "WHERE state = 'delivered' AND recipient = ?1 AND (NOT retrieved OR ?2) ORDER BY delivered_at"
);
pub(super) const SAME_CONTENT: &str =
    select_jobs!("WHERE sender = ?1 AND sha256 = ?2 AND state != 'rejected' ORDER BY accepted_at");
pub(super) const DELIVERED_BEFORE: &str = select_jobs!(
    "WHERE state = 'delivered' AND NOT retrieved AND delivered_at < ?1 ORDER BY delivered_at"
);
pub(super) const HAS_JOB: &str = "SELECT 1 FROM jobs WHERE file_id = ?1";

/// A new job; nothing when its file id or inbox key is known already.
pub(super) const INSERT_JOB: &str = "INSERT INTO jobs (file_id, sender, original_name, size, \
    sha256, inbox_key, state, recipient, accepted_at, warnings, parent, channel) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT DO NOTHING";
pub(super) const TRANSITION: &str = "UPDATE jobs SET state = ?2, \
    recipient = COALESCE(?3, recipient), sealed_sha256 = COALESCE(?4, sealed_sha256), \
    delivered_at = COALESCE(?5, delivered_at), quarantined = quarantined OR ?6, \
    warnings = COALESCE(?7, warnings) WHERE file_id = ?1";
pub(super) const MARK_RETRIEVED: &str =
    "UPDATE jobs SET retrieved = TRUE WHERE file_id = ?1 AND NOT retrieved";
pub(super) const SET_STATE: &str = "UPDATE jobs SET state = ?2 WHERE file_id = ?1";

pub(super) const PLANNED: &str =
    "SELECT insurer, child, day, n FROM splits WHERE parent = ?1 ORDER BY insurer";
pub(super) const NEXT_SEND: &str =
    "SELECT COALESCE(MAX(n) + 1, 0) FROM splits WHERE insurer = ?1 AND day = ?2";
pub(super) const PLAN: &str =
    "INSERT INTO splits (parent, insurer, child, day, n) VALUES (?1, ?2, ?3, ?4, ?5)";

pub(super) const EVENTS_AFTER: &str =
    "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2";

// Claims, on PostgreSQL only (docs/cluster.md, *Jobs*): `?1` is this node, `?2` the lease
// in seconds. A claim is this node's while its lease runs, and anybody's once it has run out.

/// Claims one open job and reads it, with whether its claim was another's before.
pub(super) const CLAIM: &str = concat!(
    "UPDATE jobs SET owner = ?1, lease_until = now() + make_interval(secs => ?2) \
     FROM (SELECT owner AS before FROM jobs WHERE file_id = ?3 FOR UPDATE) AS held \
     WHERE file_id = ?3 AND state IN ",
    open_states!(),
    " AND (owner IS NULL OR owner = ?1 OR lease_until < now()) RETURNING ",
    job_columns!(),
    ", held.before IS DISTINCT FROM ?1"
);
/// Claims up to `?3` open jobs nobody holds, oldest first, but those in `?4` (this node's
/// queue); rows another node is claiming at the same moment are skipped, not waited for.
pub(super) const CLAIM_WAITING: &str = concat!(
    "UPDATE jobs SET owner = ?1, lease_until = now() + make_interval(secs => ?2) \
     WHERE file_id IN (SELECT file_id FROM jobs WHERE state IN ",
    open_states!(),
    " AND (owner IS NULL OR owner = ?1 OR lease_until < now()) \
     AND NOT (file_id = ANY(?4)) ORDER BY accepted_at LIMIT ?3 FOR UPDATE SKIP LOCKED) \
     RETURNING file_id"
);
pub(super) const RENEW: &str = "UPDATE jobs SET lease_until = now() + make_interval(secs => ?2) \
    WHERE owner = ?1 AND file_id = ANY(?3)";
pub(super) const OWNER: &str = "SELECT owner FROM jobs WHERE file_id = ?1";

/// A statement for PostgreSQL: `?N` becomes `$N`.
pub(super) fn numbered(sql: &str) -> String {
    sql.replace('?', "$")
}

/// `sql` (a statement changing one job) for PostgreSQL, changing an open job only where this
/// node, bound as `$node`, holds its claim.
pub(super) fn claimed(sql: &str, node: usize) -> String {
    format!(
        "{} AND (owner = ${node} OR state NOT IN {})",
        numbered(sql),
        open_states!()
    )
}
