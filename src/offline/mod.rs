//! Offline media (CD-R, secure courier): files an operator carries between a medium and the
//! boxes, with the same pipeline and receipts as the online channels (docs/offline.md).
//!
//! `handoff ingest` writes a file from a medium into a counterpart's inbox as an upload would
//! (sealed at rest from the first byte, channel `offline`, the operator as the actor), and the
//! running gateway accepts it like any other. `handoff export` copies a recipient's sealed
//! outbox files to a folder and then asks the running gateway to record the hand-over through
//! an [`ExportRequest`]: the gateway alone appends to the job store's events, the receipt chain
//! and the audit log, so a command beside it never forks a chain.

pub mod manifest;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::accounts::{AccountId, CounterpartId, Role};
use crate::config::live::Snapshot;

/// Why an operator may not act for a counterpart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    #[error("{0} is not an operator in the config ([[operator]])")]
    Unknown(String),
    #[error("operator {0} expired")]
    Expired(AccountId),
    #[error("{0} is not a counterpart in the config")]
    NoCounterpart(CounterpartId),
    #[error("operator {operator} may not act for {counterpart} (not in its scope)")]
    OutOfScope {
        operator: AccountId,
        counterpart: CounterpartId,
    },
}

/// The operator `name`, checked against the config: an `[[operator]]` entry, not expired, whose
/// scope holds `counterpart`.
pub fn operator(
    snapshot: &Snapshot,
    name: &str,
    counterpart: &CounterpartId,
) -> Result<AccountId, OperatorError> {
    let account = snapshot
        .accounts
        .get(name)
        .filter(|a| a.role == Role::Operator)
        .ok_or_else(|| OperatorError::Unknown(name.to_owned()))?;
    account
        .check_active(time::OffsetDateTime::now_utc())
        .map_err(|_| OperatorError::Expired(account.id.clone()))?;
    if snapshot.config.counterpart(counterpart).is_none() {
        return Err(OperatorError::NoCounterpart(counterpart.clone()));
    }
    if !account.boxes.contains(counterpart) {
        return Err(OperatorError::OutOfScope {
            operator: account.id.clone(),
            counterpart: counterpart.clone(),
        });
    }
    Ok(account.id.clone())
}

/// The hand-over of exported files, asked of the running gateway: mark each file retrieved by
/// the operator over the `offline` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub operator: AccountId,
    pub counterpart: CounterpartId,
    pub files: Vec<String>,
    /// The folder the files were written to, for the audit log.
    pub to: PathBuf,
    /// The system user who ran the command, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_user: Option<String>,
}

/// A request waiting in the queue: `NAME.json` until the gateway takes it (renames it to
/// `NAME.taken`), gone once it is applied.
#[derive(Debug, Clone)]
pub struct Queued {
    waiting: PathBuf,
    taken: PathBuf,
}

impl Queued {
    /// Whether the gateway has applied the request.
    pub fn applied(&self) -> bool {
        !self.waiting.exists() && !self.taken.exists()
    }

    /// Takes the request back if the gateway has not taken it yet. `Ok(false)`: too late, it is
    /// being (or was) applied.
    pub fn withdraw(&self) -> io::Result<bool> {
        match std::fs::remove_file(&self.waiting) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Leaves `request` in the queue folder `dir`, durably.
pub fn request_export(dir: &Path, request: &ExportRequest) -> io::Result<Queued> {
    let name = uuid::Uuid::now_v7().to_string();
    let tmp = dir.join(format!(".{name}.tmp"));
    let waiting = dir.join(format!("{name}.json"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(request).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &waiting)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(Queued {
        taken: waiting.with_extension("taken"),
        waiting,
    })
}

/// The requests in `dir` for the gateway to apply: each waiting one is taken (renamed) first, so
/// the command can no longer withdraw it; taken ones left by a crash are returned again (the
/// hand-over is idempotent). Call [`done`] with each path once it is applied.
pub fn take_requests(dir: &Path) -> Vec<(PathBuf, Option<ExportRequest>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut taken = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str());
        let path = match ext {
            Some("json") => {
                let to = path.with_extension("taken");
                if std::fs::rename(&path, &to).is_err() {
                    continue; // withdrawn meanwhile
                }
                to
            }
            Some("taken") => path,
            _ => continue,
        };
        let request = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<ExportRequest>(&t).ok());
        taken.push((path, request));
    }
    taken.sort_by(|a, b| a.0.cmp(&b.0));
    taken
}

/// Removes an applied request.
pub fn done(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove an export request");
    }
}

/// The system user running this process, for the audit log: its uid, and the name of the user
/// `sudo` was run by (or the login name) where the environment says so.
pub fn system_user() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let name = std::env::var("SUDO_USER")
        .ok()
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.is_empty() && u.len() <= 64 && !u.chars().any(char::is_control));
    Some(match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ExportRequest {
        ExportRequest {
            operator: AccountId::new("op-tanaka").unwrap(),
            counterpart: CounterpartId::new("insurer-06130017").unwrap(),
            files: vec!["F1".into()],
            to: PathBuf::from("/media/cdr"),
            system_user: None,
        }
    }

    #[test]
    fn a_request_is_withdrawn_until_taken_and_then_only_applied() {
        let dir = tempfile::tempdir().unwrap();
        let q = request_export(dir.path(), &request()).unwrap();
        assert!(!q.applied());
        assert!(q.withdraw().unwrap(), "waiting: can be withdrawn");
        assert!(take_requests(dir.path()).is_empty());

        let q = request_export(dir.path(), &request()).unwrap();
        let taken = take_requests(dir.path());
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.as_ref(), Some(&request()));
        assert!(!q.withdraw().unwrap(), "taken: too late to withdraw");
        assert!(!q.applied());
        // A crash before `done`: the taken request comes back.
        assert_eq!(take_requests(dir.path()).len(), 1);
        done(&taken[0].0);
        assert!(q.applied());
    }
}
