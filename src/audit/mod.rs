//! The audit log: every login, failure, file operation, config change and admin action.
//!
//! Callers describe what happened with [`Audit::record`]; entries are appended in order by a
//! writer thread to `STATE/audit/audit.log` as JSON lines, each carrying the time, the clock's
//! sync state as the kernel reports it, and the hash of the line before — so a changed, removed
//! or reordered line breaks the chain (`handoff audit verify`). Every entry also goes to the
//! tracing log. Never pass secrets: passwords, keys and file contents do not belong here.

pub mod clock;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::receipts::canonical;
use crate::state::StateLayout;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log line {line}: {reason}")]
    Broken { line: u64, reason: String },
}

/// What the writer thread is sent: a line to write, or a request to confirm that every line
/// sent before it is written and synced.
enum Msg {
    Entry(Entry),
    Flush(mpsc::SyncSender<()>),
}

struct Entry {
    event: String,
    account: Option<String>,
    peer: Option<SocketAddr>,
    detail: Value,
}

/// Handle to the audit log; cheap to clone.
#[derive(Clone, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<Msg>>,
}

impl Audit {
    /// An audit handle that only forwards to the tracing log (for tests and tools).
    pub fn to_log() -> Audit {
        Audit { tx: None }
    }

    /// Opens (or creates) the hash-chained audit log of a state directory and starts its writer.
    pub fn open(layout: &StateLayout) -> Result<Audit, AuditError> {
        let path = layout.audit().join("audit.log");
        let (seq, prev) = last_link(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(file, path, seq, prev, rx))
            .map_err(|source| AuditError::Io {
                path: layout.audit(),
                source,
            })?;
        Ok(Audit { tx: Some(tx) })
    }

    /// Records one event. `event` is a dotted name such as `sftp.login` or `box.upload`.
    pub fn record(
        &self,
        event: &str,
        account: Option<&str>,
        peer: Option<SocketAddr>,
        detail: Value,
    ) {
        tracing::info!(target: "audit", event, account, peer = peer.map(|p| p.to_string()), %detail);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Entry(Entry {
                event: event.to_owned(),
                account: account.map(str::to_owned),
                peer,
                detail,
            }));
        }
    }

    /// Waits (at most `timeout`) until every event recorded so far is written and synced: at
    /// shutdown, so the last events are not lost when the process exits.
    pub fn flush(&self, timeout: std::time::Duration) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::sync_channel(1);
            if tx.send(Msg::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(timeout);
            }
        }
    }
}

fn line_hash(value: &Value) -> String {
    hex::encode(Sha256::digest(canonical::to_string(value).as_bytes()))
}

/// Sequence number and hash of the last line of an existing log.
fn last_link(path: &Path) -> Result<(u64, String), AuditError> {
    match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, GENESIS.to_owned())),
        Err(source) => Err(AuditError::Io {
            path: path.to_path_buf(),
            source,
        }),
        Ok(f) => {
            let mut last = None;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|source| AuditError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                if !line.trim().is_empty() {
                    last = Some(line);
                }
            }
            let Some(line) = last else {
                return Ok((0, GENESIS.to_owned()));
            };
            let v: Value = serde_json::from_str(&line).map_err(|_| AuditError::Broken {
                line: 0,
                reason: "last line is not JSON".into(),
            })?;
            Ok((
                v["seq"].as_u64().unwrap_or(0),
                v["hash"].as_str().unwrap_or(GENESIS).to_owned(),
            ))
        }
    }
}

fn writer(mut file: File, path: PathBuf, mut seq: u64, mut prev: String, rx: mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut acks = Vec::new();
        for msg in batch {
            let e = match msg {
                Msg::Entry(e) => e,
                Msg::Flush(ack) => {
                    acks.push(ack);
                    continue;
                }
            };
            seq += 1;
            let clock = clock::status();
            let time = clock::rfc3339(time::OffsetDateTime::now_utc());
            let mut v = json!({
                "seq": seq,
                "time": time,
                "clock": clock,
                "event": e.event,
                "account": e.account,
                "peer": e.peer.map(|p| p.to_string()),
                "detail": e.detail,
                "prev": prev,
            });
            let hash = line_hash(&v);
            v["hash"] = json!(hash);
            if let Err(err) = writeln!(file, "{}", canonical::to_string(&v)) {
                tracing::error!(error = %err, file = %path.display(), "cannot write the audit log");
            }
            prev = hash;
        }
        if let Err(err) = file.sync_data() {
            tracing::error!(error = %err, file = %path.display(), "cannot sync the audit log");
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// Checks the whole chain of an audit log file; returns the number of lines.
pub fn verify(path: &Path) -> Result<u64, AuditError> {
    let f = fs::File::open(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut prev = GENESIS.to_owned();
    let mut n = 0;
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let broken = |reason: &str| AuditError::Broken {
            line: line_no,
            reason: reason.to_owned(),
        };
        let mut v: Value = serde_json::from_str(&line).map_err(|_| broken("not JSON"))?;
        let hash = v
            .as_object_mut()
            .and_then(|m| m.remove("hash"))
            .and_then(|h| h.as_str().map(str::to_owned))
            .ok_or_else(|| broken("no hash"))?;
        if v["prev"].as_str() != Some(prev.as_str()) {
            return Err(broken(
                "does not follow the line before (removed, inserted or reordered lines)",
            ));
        }
        if v["seq"].as_u64() != Some(n + 1) {
            return Err(broken("sequence number out of order"));
        }
        if line_hash(&v) != hash {
            return Err(broken("content does not match its hash (modified)"));
        }
        prev = hash;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, n: usize, total: usize) -> PathBuf {
        let layout = StateLayout::new(dir);
        fs::create_dir_all(layout.audit()).unwrap();
        let audit = Audit::open(&layout).unwrap();
        for i in 0..n {
            audit.record("test.event", Some("clinic-a"), None, json!({"i": i}));
        }
        drop(audit);
        let path = layout.audit().join("audit.log");
        // Wait for the writer thread to drain.
        for _ in 0..100 {
            if fs::read_to_string(&path)
                .map(|s| s.lines().count())
                .unwrap_or(0)
                == total
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        path
    }

    #[test]
    fn chain_verifies_and_continues_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3, 3);
        assert_eq!(verify(&path).unwrap(), 3);
        write_log(dir.path(), 2, 5);
        assert_eq!(
            verify(&path).unwrap(),
            5,
            "a reopened log continues the chain"
        );
        let first: Value =
            serde_json::from_str(fs::read_to_string(&path).unwrap().lines().next().unwrap())
                .unwrap();
        assert!(first["clock"]["synchronised"].is_boolean());
    }

    #[test]
    fn tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 4, 4);
        let lines: Vec<String> = fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();

        let modified = lines
            .iter()
            .map(|l| l.replace("\"i\":2", "\"i\":9"))
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(&path, modified + "\n").unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 3, .. })
        ));

        let removed = [&lines[0], &lines[1], &lines[3]]
            .map(String::as_str)
            .join("\n");
        fs::write(&path, removed + "\n").unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 3, .. })
        ));

        let reordered = [&lines[0], &lines[2], &lines[1], &lines[3]]
            .map(String::as_str)
            .join("\n");
        fs::write(&path, reordered + "\n").unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 2, .. })
        ));
    }
}
