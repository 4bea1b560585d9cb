//! What the pipeline tells the rest of the gateway: one [`FileEvent`] per hop of a file,
//! persisted with the job before it is published, so receipts can be rebuilt from the store.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::receipts::{Child, Hop, Reason};

/// A file reached a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEvent {
    /// The gateway's id of the file, unique for its whole life.
    pub file_id: String,
    pub hop: Hop,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Counterpart id of the sender.
    pub sender: String,
    /// Counterpart id of the recipient, once known.
    pub recipient: Option<String>,
    /// The name the sender gave the file.
    pub original_name: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Lower-case hex SHA-256 of the sealed file, for `delivered`.
    pub sealed_sha256: Option<String>,
    /// Why, for `rejected`.
    pub reasons: Vec<Reason>,
    /// The agency-addressed archive this one was sorted out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For `split`: the archives sorted out of this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
    /// The account that caused the hop (DESIGN §10): who uploaded (`accepted`), retrieved, or
    /// deleted a delivered file (`purged`); absent where the gateway itself acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// The durable, ordered log of file events: the job store appends one entry per hop of a file
/// (at most one per file and hop) in the same transaction as the job's state change. Receipts
/// are issued from this log, so after a crash they resume where they stopped and are never
/// issued twice or missed.
pub trait EventLog: Send + Sync {
    /// Events with sequence number greater than `seq`, oldest first, at most `limit`.
    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<(u64, FileEvent)>, EventLogError>;

    /// The highest sequence number so far; changes whenever an event is appended.
    fn watch(&self) -> tokio::sync::watch::Receiver<u64>;
}

#[derive(Debug, thiserror::Error)]
#[error("event log: {0}")]
pub struct EventLogError(pub String);
