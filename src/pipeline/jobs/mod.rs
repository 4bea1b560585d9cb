//! The durable job store: one row per file and one event per hop, committed together.
//!
//! Behind the [`JobStore`] trait: SQLite in the state directory for one node (`sqlite.rs`), or
//! PostgreSQL shared by several (`postgres.rs`), as `[gateway.store]` says (`store`). See
//! docs/pipeline.md and docs/cluster.md.

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::ids::Sha256;
use time::OffsetDateTime;

use crate::accounts::{AccountId, CounterpartId};
use crate::events::{Channel, EventLog, FileEvent, Finding, Hop};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store")]
    Sql(#[from] rusqlite::Error),
    #[error("job store")]
    Database(#[from] crate::store::DatabaseError),
    #[error("job store: bad record: {0}")]
    Corrupt(String),
    #[error("job store: no job {0}")]
    NoJob(String),
    /// The job's claim passed to another node (this node's lease ran out): its step is not
    /// recorded, the other node takes the job from its last recorded step.
    #[error("job store: job {file_id} is now worked by node {by}")]
    Taken { file_id: String, by: String },
}

/// Where a job stands. Terminal states are `Delivered`, `Rejected` and `Purged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// In the spool, hashed; not yet validated.
    Accepted,
    /// Validated and routed: the recipient is known.
    Validated,
    /// clamd found it clean.
    Scanned,
    /// Sealed for the recipient; the sealed file is in the spool.
    Sealed,
    /// In the recipient's outbox.
    Delivered,
    /// Refused, with reasons.
    Rejected,
    /// Retention expired; the file is gone.
    Purged,
    /// Sorted into one archive per insurer, each a job of its own (terminal).
    Split,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Accepted => "accepted",
            JobState::Validated => "validated",
            JobState::Scanned => "scanned",
            JobState::Sealed => "sealed",
            JobState::Delivered => "delivered",
            JobState::Rejected => "rejected",
            JobState::Purged => "purged",
            JobState::Split => "split",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "accepted" => JobState::Accepted,
            "validated" => JobState::Validated,
            "scanned" => JobState::Scanned,
            "sealed" => JobState::Sealed,
            "delivered" => JobState::Delivered,
            "rejected" => JobState::Rejected,
            "purged" => JobState::Purged,
            "split" => JobState::Split,
            _ => return None,
        })
    }

    /// Whether the pipeline still has work to do on the job.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            JobState::Accepted | JobState::Validated | JobState::Scanned | JobState::Sealed
        )
    }
}

/// One file's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub file_id: String,
    pub sender: CounterpartId,
    pub original_name: String,
    pub size: u64,
    pub sha256: Sha256,
    /// Identity of the inbox file it was accepted from (device, inode, size, mtime, name):
    /// makes accepting the same hand-off file twice impossible.
    pub inbox_key: String,
    pub state: JobState,
    pub recipient: Option<CounterpartId>,
    pub sealed_sha256: Option<Sha256>,
    pub accepted_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub retrieved: bool,
    /// Set when the job was rejected because clamd found something.
    pub quarantined: bool,
    /// Findings the file was let through with (rules set to warn): they go into the
    /// `delivered` receipt, which both parties receive.
    pub warnings: Vec<Finding>,
    /// The agency-addressed archive this one was sorted out of.
    pub parent: Option<String>,
    /// The account that uploaded the file, when known at accept: it goes into the `accepted`
    /// event (the job row does not keep it; read back it is `None`).
    pub accepted_by: Option<AccountId>,
    /// How the file came in, when known at accept: it goes into the `accepted` event, and an
    /// offline file is opened by the rules for media (kept in the row).
    pub channel: Option<Channel>,
}

impl Job {
    /// The row a newly accepted job is recorded as: accepted, with no recipient or findings yet.
    fn as_accepted(&self) -> Job {
        Job {
            state: JobState::Accepted,
            recipient: None,
            warnings: Vec::new(),
            ..self.clone()
        }
    }

    /// The event of this job reaching `hop`, stamped now.
    pub fn event(&self, hop: Hop, reasons: Vec<Finding>) -> FileEvent {
        FileEvent {
            file_id: self.file_id.clone(),
            hop,
            at: OffsetDateTime::now_utc(),
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            original_name: self.original_name.clone(),
            size: self.size,
            sha256: self.sha256,
            sealed_sha256: self.sealed_sha256,
            reasons,
            parent: self.parent.clone(),
            children: Vec::new(),
            actor: match hop {
                Hop::Accepted => self.accepted_by.clone(),
                _ => None,
            },
            channel: match hop {
                Hop::Accepted => self.channel,
                _ => None,
            },
        }
    }
}

/// Who took a delivered file and how: the recipient over SFTP or HTTPS, or an operator who
/// exported it to a medium for the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub actor: AccountId,
    pub channel: Channel,
}

/// A change of a job's state, with the event it produces (if any), committed atomically.
#[derive(Debug, Clone)]
pub struct Transition {
    pub file_id: String,
    pub to: JobState,
    pub recipient: Option<CounterpartId>,
    pub sealed_sha256: Option<Sha256>,
    pub quarantined: bool,
    /// Findings to keep for the `delivered` receipt (empty: keep what is recorded).
    pub warnings: Vec<Finding>,
    pub event: Option<FileEvent>,
}

/// One child of a split as planned: its file id and its send count N, fixed before any
/// child is written so that a split run again after a crash makes the same children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChild {
    pub insurer: String,
    pub file_id: String,
    /// `YYYYMMDD` at the gateway's offset when the split was planned.
    pub day: String,
    pub n: u8,
}

/// How long a claim on a shared database holds without being renewed: a node that stops
/// leaves its jobs to the others after this.
pub const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(15);

/// An open job this node holds the claim of, read as it stands.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    /// Whether the claim was another's (or nobody's) before: what this node knew of the job's
    /// files may be out of date.
    pub taken_over: bool,
}

/// The highest same-day send count N of an archive name.
pub const MAX_SEND_COUNT: u8 = 9;

/// What the pipeline needs from a durable store. Every method is one transaction.
pub trait JobStore: EventLog {
    /// Records a new job and its `accepted` event. Returns `false` (and changes nothing) when a
    /// job with the same inbox key exists already.
    fn insert_accepted(&self, job: &Job) -> Result<bool, StoreError>;
    /// The job accepted from this inbox file identity, if any.
    fn by_inbox_key(&self, key: &str) -> Result<Option<Job>, StoreError>;
    fn get(&self, file_id: &str) -> Result<Option<Job>, StoreError>;
    /// Claims an open job for this node and reads it: `None` when it is finished, or while
    /// another node's claim on it holds. With one node every open job is its own; on a shared
    /// database a claim is a lease this node renews ([`JobStore::renew`]) and loses when it
    /// stops renewing (docs/cluster.md, *Jobs*).
    fn claim(&self, file_id: &str) -> Result<Option<Claimed>, StoreError> {
        Ok(self
            .get(file_id)?
            .filter(|job| job.state.is_open())
            .map(|job| Claimed {
                job,
                taken_over: false,
            }))
    }
    /// Claims up to `limit` open jobs no live node holds, oldest first and passing over those
    /// `queued` here already, for an idle node to work: jobs accepted by another node, or left
    /// by one that stopped or restarted. With one node: its open jobs not queued (those a
    /// restart left).
    fn claim_waiting(&self, limit: usize, queued: &[String]) -> Result<Vec<String>, StoreError> {
        Ok(self
            .open_jobs()?
            .into_iter()
            .map(|job| job.file_id)
            .filter(|id| !queued.contains(id))
            .take(limit)
            .collect())
    }
    /// Extends this node's claims on `file_ids` (those it has queued or is working on).
    fn renew(&self, file_ids: &[String]) -> Result<(), StoreError> {
        let _ = file_ids;
        Ok(())
    }
    /// Applies a transition and appends its event (at most one per file and hop). On a shared
    /// database an open job's transition is refused with [`StoreError::Taken`] unless this node
    /// holds its claim.
    fn transition(&self, t: &Transition) -> Result<(), StoreError>;
    /// Marks a delivered job retrieved and appends the `retrieved` event naming who took it,
    /// once. Returns whether this call did it.
    fn mark_retrieved(&self, file_id: &str, by: &Handover) -> Result<bool, StoreError>;
    /// Jobs the pipeline has not finished, oldest first.
    fn open_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// Files delivered to `recipient` (and not purged), oldest first: those not retrieved, or
    /// all of them with `with_retrieved`.
    fn delivered_to(
        &self,
        recipient: &CounterpartId,
        with_retrieved: bool,
    ) -> Result<Vec<Job>, StoreError>;
    /// Jobs of `sender` with this content (the SHA-256 of what was handed over) that were not
    /// rejected: a medium ingested twice is found by it.
    fn same_content(&self, sender: &CounterpartId, sha256: &Sha256)
    -> Result<Vec<Job>, StoreError>;
    /// Delivered jobs not retrieved, delivered before `before`.
    fn delivered_before(&self, before: OffsetDateTime) -> Result<Vec<Job>, StoreError>;
    /// Every file id the store knows (for sweeping orphans at start-up).
    fn has_job(&self, file_id: &str) -> Result<bool, StoreError>;
    /// The children of `parent`, one per insurer: those planned before (a split run again), or
    /// new ones with the next send count of `day` for each insurer. `Err(insurer)` (and nothing
    /// recorded) when an insurer has had all of that day's send counts.
    fn plan_split(
        &self,
        parent: &str,
        day: &str,
        insurers: &[&str],
    ) -> Result<Result<Vec<PlannedChild>, String>, StoreError>;
    /// Records a split at once: the child jobs (already in the spool) with their `accepted`
    /// events, and the parent's `split` event (and `rejected` event, for persons returned).
    /// The children's inbox keys are unique, so a split is never recorded twice.
    fn commit_split(
        &self,
        parent: &Job,
        children: &[Job],
        split: &FileEvent,
        rejected: Option<&FileEvent>,
    ) -> Result<(), StoreError>;
}

pub(super) fn nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub(super) fn from_nanos(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The `warnings` column: the findings as JSON, or NULL for none (which also keeps what a
/// transition finds recorded).
pub(super) fn warnings_json(warnings: &[Finding]) -> Result<Option<String>, StoreError> {
    if warnings.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(warnings)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}
