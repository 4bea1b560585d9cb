//! The job store of one node: SQLite in the state directory (WAL, `synchronous=FULL`):
//! embedded, transactional, fsynced at every commit, and readable with standard tools after an
//! incident.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{
    Channel, Handover, Job, JobState, JobStore, MAX_SEND_COUNT, PlannedChild, StoreError,
    Transition, from_nanos, nanos, sql, warnings_json,
};
use crate::accounts::CounterpartId;
use crate::error::Chain;
use crate::events::{EventLog, EventLogError, FileEvent, Hop};
use crate::ids::Sha256;
use crate::sync::Recover;

/// The SQLite job store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    latest: watch::Sender<u64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    file_id       TEXT PRIMARY KEY,
    sender        TEXT NOT NULL,
    original_name TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    inbox_key     TEXT NOT NULL UNIQUE,
    state         TEXT NOT NULL,
    recipient     TEXT,
    sealed_sha256 TEXT,
    accepted_at   INTEGER NOT NULL,
    delivered_at  INTEGER,
    retrieved     INTEGER NOT NULL DEFAULT 0,
    quarantined   INTEGER NOT NULL DEFAULT 0,
    warnings      TEXT,
    parent        TEXT,
    channel       TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS splits (
    parent  TEXT NOT NULL,
    insurer TEXT NOT NULL,
    child   TEXT NOT NULL UNIQUE,
    day     TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (parent, insurer),
    UNIQUE (insurer, day, n)
);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id TEXT NOT NULL,
    hop     TEXT NOT NULL,
    body    TEXT NOT NULL,
    UNIQUE(file_id, hop)
);
";

/// Brings a job store written by an earlier version up to [`SCHEMA`].
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    if conn.prepare("SELECT warnings FROM jobs LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN warnings TEXT")?;
    }
    if conn.prepare("SELECT parent FROM jobs LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN parent TEXT")?;
    }
    if conn.prepare("SELECT channel FROM jobs LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN channel TEXT")?;
    }
    Ok(())
}

/// Counterpart ids are stored as their text and checked again when read.
impl rusqlite::types::ToSql for CounterpartId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::types::FromSql for CounterpartId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        CounterpartId::new(value.as_str()?)
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

fn row_to_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Job, StoreError>> {
    let state: String = row.get(6)?;
    let Some(state) = JobState::parse(&state) else {
        return Ok(Err(StoreError::Corrupt(format!("state {state:?}"))));
    };
    Ok(Ok(Job {
        file_id: row.get(0)?,
        sender: row.get(1)?,
        original_name: row.get(2)?,
        size: row.get::<_, i64>(3)?.max(0) as u64,
        sha256: row.get(4)?,
        inbox_key: row.get(5)?,
        state,
        recipient: row.get(7)?,
        sealed_sha256: row.get(8)?,
        accepted_at: from_nanos(row.get(9)?),
        delivered_at: row.get::<_, Option<i64>>(10)?.map(from_nanos),
        retrieved: row.get::<_, i64>(11)? != 0,
        quarantined: row.get::<_, i64>(12)? != 0,
        warnings: match row.get::<_, Option<String>>(13)? {
            Some(json) => match serde_json::from_str(&json) {
                Ok(w) => w,
                Err(e) => return Ok(Err(StoreError::Corrupt(format!("warnings: {e}")))),
            },
            None => Vec::new(),
        },
        parent: row.get(14)?,
        accepted_by: None,
        channel: row
            .get::<_, Option<String>>(15)?
            .as_deref()
            .and_then(Channel::parse),
    }))
}

fn append_event(tx: &rusqlite::Transaction<'_>, ev: &FileEvent) -> Result<bool, StoreError> {
    let body = serde_json::to_string(ev).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let n = tx.execute(
        "INSERT OR IGNORE INTO events (file_id, hop, body) VALUES (?1, ?2, ?3)",
        params![ev.file_id, ev.hop.as_str(), body],
    )?;
    Ok(n == 1)
}

impl SqliteStore {
    /// The store's file in its folder.
    pub const FILE: &str = "jobs.sqlite";

    /// Opens (creating if needed) `DIR/jobs.sqlite`.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(dir.join(Self::FILE))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let seq: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
        let (latest, _) = watch::channel(seq.max(0) as u64);
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            latest,
        })
    }

    /// Opens an existing store for reading only (the command line, beside a running daemon).
    pub fn open_read_only(dir: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_with_flags(
            dir.join(Self::FILE),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let (latest, _) = watch::channel(0);
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            latest,
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.locked();
        f(&mut conn)
    }

    fn publish(&self, conn: &Connection) {
        if let Ok(seq) = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
            r.get::<_, i64>(0)
        }) {
            self.latest.send_replace(seq.max(0) as u64);
        }
    }

    fn query_jobs(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Job>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map(args, row_to_job)?;
            let mut jobs = Vec::new();
            for r in rows {
                jobs.push(r??);
            }
            Ok(jobs)
        })
    }
}

impl JobStore for SqliteStore {
    fn insert_accepted(&self, job: &Job) -> Result<bool, StoreError> {
        let done = self.with(|conn| {
            let tx = conn.transaction()?;
            if !insert_job(&tx, &job.as_accepted())? {
                return Ok(false);
            }
            append_event(&tx, &job.event(Hop::Accepted, Vec::new()))?;
            tx.commit()?;
            self.publish(conn);
            Ok(true)
        })?;
        Ok(done)
    }

    fn by_inbox_key(&self, key: &str) -> Result<Option<Job>, StoreError> {
        Ok(self
            .query_jobs(sql::BY_INBOX_KEY, [key])?
            .into_iter()
            .next())
    }

    fn get(&self, file_id: &str) -> Result<Option<Job>, StoreError> {
        Ok(self.query_jobs(sql::GET, [file_id])?.into_iter().next())
    }

    fn transition(&self, t: &Transition) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let delivered_at =
                (t.to == JobState::Delivered).then(|| nanos(OffsetDateTime::now_utc()));
            let warnings = warnings_json(&t.warnings)?;
            let n = tx.execute(
                sql::TRANSITION,
                params![
                    t.file_id,
                    t.to.as_str(),
                    t.recipient,
                    t.sealed_sha256,
                    delivered_at,
                    t.quarantined,
                    warnings
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NoJob(t.file_id.clone()));
            }
            if let Some(ev) = &t.event {
                append_event(&tx, ev)?;
            }
            tx.commit()?;
            self.publish(conn);
            Ok(())
        })
    }

    fn mark_retrieved(&self, file_id: &str, by: &Handover) -> Result<bool, StoreError> {
        let Some(job) = self.get(file_id)? else {
            return Ok(false);
        };
        if job.retrieved || job.state != JobState::Delivered {
            return Ok(false);
        }
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(sql::MARK_RETRIEVED, [file_id])?;
            if n == 0 {
                return Ok(false);
            }
            let mut event = job.event(Hop::Retrieved, Vec::new());
            event.actor = Some(by.actor.clone());
            event.channel = Some(by.channel);
            append_event(&tx, &event)?;
            tx.commit()?;
            self.publish(conn);
            Ok(true)
        })
    }

    fn open_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.query_jobs(sql::OPEN_JOBS, [])
    }

    fn delivered_to(
        &self,
        recipient: &CounterpartId,
        with_retrieved: bool,
    ) -> Result<Vec<Job>, StoreError> {
        self.query_jobs(sql::DELIVERED_TO, params![recipient, with_retrieved])
    }

    fn same_content(
        &self,
        sender: &CounterpartId,
        sha256: &Sha256,
    ) -> Result<Vec<Job>, StoreError> {
        self.query_jobs(sql::SAME_CONTENT, params![sender, sha256])
    }

    fn delivered_before(&self, before: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
        self.query_jobs(sql::DELIVERED_BEFORE, [nanos(before)])
    }

    fn plan_split(
        &self,
        parent: &str,
        day: &str,
        insurers: &[&str],
    ) -> Result<Result<Vec<PlannedChild>, String>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let before = SqliteStore::planned(&tx, parent)?;
            if !before.is_empty() {
                return Ok(Ok(before));
            }
            for insurer in insurers {
                let next: i64 =
                    tx.query_row(sql::NEXT_SEND, params![insurer, day], |r| r.get(0))?;
                if next > i64::from(MAX_SEND_COUNT) {
                    return Ok(Err((*insurer).to_owned()));
                }
                tx.execute(
                    sql::PLAN,
                    params![
                        parent,
                        insurer,
                        crate::ids::FileId::new().to_string(),
                        day,
                        next
                    ],
                )?;
            }
            let planned = SqliteStore::planned(&tx, parent)?;
            tx.commit()?;
            Ok(Ok(planned))
        })
    }

    fn commit_split(
        &self,
        parent: &Job,
        children: &[Job],
        split: &FileEvent,
        rejected: Option<&FileEvent>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            for child in children {
                if !insert_job(&tx, child)? {
                    return Err(StoreError::Corrupt(format!(
                        "split child {} recorded before",
                        child.file_id
                    )));
                }
                append_event(&tx, &child.event(Hop::Accepted, Vec::new()))?;
            }
            let n = tx.execute(
                sql::SET_STATE,
                params![parent.file_id, JobState::Split.as_str()],
            )?;
            if n == 0 {
                return Err(StoreError::NoJob(parent.file_id.clone()));
            }
            append_event(&tx, split)?;
            if let Some(ev) = rejected {
                append_event(&tx, ev)?;
            }
            tx.commit()?;
            self.publish(conn);
            Ok(())
        })
    }

    fn has_job(&self, file_id: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .query_row(sql::HAS_JOB, [file_id], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }
}

/// Records a job; `false` when its file id or inbox key is known already.
fn insert_job(tx: &rusqlite::Transaction<'_>, job: &Job) -> Result<bool, StoreError> {
    let warnings = warnings_json(&job.warnings)?;
    let n = tx.execute(
        sql::INSERT_JOB,
        params![
            job.file_id,
            job.sender,
            job.original_name,
            job.size as i64,
            job.sha256,
            job.inbox_key,
            job.state.as_str(),
            job.recipient,
            nanos(job.accepted_at),
            warnings,
            job.parent,
            job.channel.map(Channel::as_str),
        ],
    )?;
    Ok(n == 1)
}

impl SqliteStore {
    fn planned(conn: &Connection, parent: &str) -> Result<Vec<PlannedChild>, StoreError> {
        let mut stmt = conn.prepare(sql::PLANNED)?;
        let rows = stmt.query_map([parent], |r| {
            Ok(PlannedChild {
                insurer: r.get(0)?,
                file_id: r.get(1)?,
                day: r.get(2)?,
                n: u8::try_from(r.get::<_, i64>(3)?).unwrap_or(u8::MAX),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl EventLog for SqliteStore {
    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<(u64, FileEvent)>, EventLogError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(sql::EVENTS_AFTER)?;
            let rows = stmt.query_map(params![seq as i64, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (seq, body) = r?;
                let ev: FileEvent =
                    serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                out.push((seq.max(0) as u64, ev));
            }
            Ok(out)
        })
        .map_err(|e| EventLogError(Chain(&e).to_string()))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After ten splits (N = 0–9) to one insurer on one day, the next would need N = 10, which the archive name
    /// cannot hold: it is refused, and the refusal takes nothing from the other insurers.
    #[test]
    fn an_eleventh_split_to_an_insurer_on_one_day_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("store");
        let day = "20261206";
        for k in 0..=MAX_SEND_COUNT {
            let plan = store
                .plan_split(&format!("parent-{k}"), day, &["06130017"])
                .expect("store")
                .expect("within the day's sends");
            assert_eq!(plan.len(), 1);
            assert_eq!(plan[0].n, k);
        }
        // Planned again (a rerun after a crash), a parent keeps its children and its N.
        let again = store
            .plan_split("parent-3", day, &["06130017"])
            .expect("store")
            .expect("the same plan");
        assert_eq!(again[0].n, 3);

        let refused = store
            .plan_split("parent-10", day, &["06270029", "06130017"])
            .expect("store");
        assert_eq!(refused, Err("06130017".to_owned()));
        // Nothing of the refused parent is planned: the other insurer's first send is free.
        let other = store
            .plan_split("parent-11", day, &["06270029"])
            .expect("store")
            .expect("another insurer");
        assert_eq!(other[0].n, 0);
        // The next day counts from 0 again.
        let tomorrow = store
            .plan_split("parent-12", "20261207", &["06130017"])
            .expect("store")
            .expect("a new day");
        assert_eq!(tomorrow[0].n, 0);
    }
}
