//! The statements both job stores run, written once with SQLite's `?N` placeholders, which the
//! PostgreSQL store numbers as `$N` ([`numbered`]). Flags are written so that SQLite's integers
//! and PostgreSQL's booleans answer alike (`NOT retrieved`, `quarantined OR ?6`).

/// A query of whole jobs: the columns every store reads a [`super::Job`] from, in this order.
macro_rules! select_jobs {
    ($rest:literal) => {
        concat!(
            "SELECT file_id, sender, original_name, size, sha256, inbox_key, state, recipient, \
             sealed_sha256, accepted_at, delivered_at, retrieved, quarantined, warnings, parent, \
             channel FROM jobs ",
            $rest
        )
    };
}

pub(super) const BY_INBOX_KEY: &str = select_jobs!("WHERE inbox_key = ?1");
pub(super) const GET: &str = select_jobs!("WHERE file_id = ?1");
pub(super) const OPEN_JOBS: &str = select_jobs!(
    "WHERE state IN ('accepted', 'validated', 'scanned', 'sealed') ORDER BY accepted_at"
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

/// A statement for PostgreSQL: `?N` becomes `$N`.
pub(super) fn numbered(sql: &str) -> String {
    sql.replace('?', "$")
}
