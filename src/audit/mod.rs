//! The audit log: every login, failure, file operation, config change and admin action.
//!
//! Callers describe what happened with [`Audit::record`]; entries are appended in order by a
//! writer thread to `STATE/audit/audit.log` as JSON lines, each carrying the time, the clock's
//! sync state as the kernel reports it, and the hash of the line before — so a changed, removed
//! or reordered line breaks the chain (`handoff audit verify`). Every entry also goes to the
//! tracing log. Never pass secrets: passwords, keys and file contents do not belong here.

pub mod clock;
mod event;
pub mod ship;

pub use event::{Alert, Event};

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::receipts::canonical::{self, GENESIS};
use crate::state::StateLayout;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}", path.display())]
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

/// Test-only failure injection: while the file this variable names exists, every write of the
/// audit log fails as a full or broken disk would make it fail, so a test can show against the
/// real daemon that the gateway fails closed and resumes. Never set it in production.
#[doc(hidden)]
pub const FAIL_WHILE_ENV: &str = "HANDOFF_TEST_AUDIT_FAIL_WHILE";

/// How often a failing audit log is tried again.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Lines kept in memory while the log cannot be written; more are counted as lost (and the
/// count recorded once it can be written again). The gateway refuses new sessions and uploads
/// meanwhile, so only the sessions already open add to them.
const MAX_PENDING: usize = 100_000;

/// Handle to the audit log; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Msg>>,
    /// Cleared while the log cannot be written: the transports then refuse new sessions and
    /// uploads (fail closed), and the NOC is alerted.
    writable: Arc<AtomicBool>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit::to_log()
    }
}

/// A torn last line found at start (a crash in the middle of a write), cut off and kept aside.
struct Repair {
    torn_bytes: u64,
    torn_sha256: String,
    kept_in: PathBuf,
}

impl Audit {
    /// An audit handle that only forwards to the tracing log (for tests and tools).
    pub fn to_log() -> Audit {
        Audit {
            tx: None,
            writable: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Opens (or creates) the hash-chained audit log of a state directory and starts its writer.
    /// A torn last line (a crash mid-write) is cut off, kept beside the log and recorded as
    /// `audit.repaired`; a damaged line before the last is refused (`handoff audit verify`).
    pub fn open(layout: &StateLayout) -> Result<Audit, AuditError> {
        let path = layout.audit().join("audit.log");
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let (seq, prev, repair) = last_link(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        let writable = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel::<Msg>();
        let state = Writer {
            file,
            path: path.clone(),
            seq,
            prev,
            pending: VecDeque::new(),
            lost: 0,
            failing_since: None,
            writable: writable.clone(),
            fail_while: std::env::var_os(FAIL_WHILE_ENV).map(PathBuf::from),
        };
        if state.fail_while.is_some() {
            tracing::warn!("test-only audit failure injection is on");
        }
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(state, rx))
            .map_err(|source| AuditError::Io {
                path: layout.audit(),
                source,
            })?;
        let audit = Audit {
            tx: Some(tx),
            writable,
        };
        if let Some(r) = repair {
            tracing::warn!(
                torn_bytes = r.torn_bytes,
                kept_in = %r.kept_in.display(),
                "the audit log ended in a torn line (a crash mid-write): cut off and kept aside"
            );
            audit.record(
                crate::audit::Event::AuditRepaired,
                None,
                None,
                json!({"torn_bytes": r.torn_bytes, "torn_sha256": r.torn_sha256, "kept_in": r.kept_in.file_name().map(|n| n.to_string_lossy().into_owned())}),
            );
        }
        Ok(audit)
    }

    /// Whether the audit log is being written. While it is not, nothing may happen that it
    /// would have to record: new sessions and uploads are refused.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Records one event, e.g. [`Event::SftpLogin`] or [`Event::BoxUpload`].
    pub fn record(
        &self,
        event: Event,
        account: Option<&str>,
        peer: Option<SocketAddr>,
        detail: Value,
    ) {
        let event = event.as_str();
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

/// Sequence number and hash of the last line of an existing log; a torn last line (no newline
/// or not JSON) is cut off and kept beside the log.
fn last_link(path: &Path) -> Result<(u64, String, Option<Repair>), AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((0, GENESIS.to_owned(), None));
        }
        Err(source) => return Err(io_err(source)),
        Ok(f) => f,
    };
    let mut reader = BufReader::new(f);
    let mut last: Option<Value> = None;
    // End of the last good line; the last line, if it is torn.
    let (mut good_end, mut offset, mut lines) = (0u64, 0u64, 0u64);
    let mut bad: Option<u64> = None;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err)? as u64;
        if n == 0 {
            break;
        }
        lines += 1;
        offset += n;
        // A damaged line before the last is not a torn write: left for `handoff audit verify`.
        bad = None;
        let whole = buf.ends_with(b"\n");
        let text = std::str::from_utf8(&buf).unwrap_or("");
        if whole && text.trim().is_empty() {
            good_end = offset;
            continue;
        }
        match serde_json::from_str::<Value>(text.trim_end()) {
            Ok(v) if whole && v.get("hash").is_some() => {
                last = Some(v);
                good_end = offset;
            }
            // Only a bad last line is cut off; one before it keeps the end where it is.
            _ => {
                bad = Some(lines);
                good_end = offset - n;
            }
        }
    }
    let repair = if bad.is_some() {
        Some(cut_torn_tail(path, good_end, offset)?)
    } else {
        None
    };
    Ok(match last {
        None => (0, GENESIS.to_owned(), repair),
        Some(v) => (
            v["seq"].as_u64().unwrap_or(0),
            v["hash"].as_str().unwrap_or(GENESIS).to_owned(),
            repair,
        ),
    })
}

/// Copies the bytes after `good_end` to a file beside the log, then truncates the log there.
fn cut_torn_tail(path: &Path, good_end: u64, end: u64) -> Result<Repair, AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    f.seek(SeekFrom::Start(good_end)).map_err(io_err)?;
    let mut torn = Vec::new();
    Read::by_ref(&mut f)
        .take(end - good_end)
        .read_to_end(&mut torn)
        .map_err(io_err)?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let kept_in = path.with_file_name(format!("audit.log.torn-{stamp}"));
    let mut keep = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&kept_in)
        .map_err(io_err)?;
    keep.write_all(&torn).map_err(io_err)?;
    keep.sync_all().map_err(io_err)?;
    f.set_len(good_end).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(Repair {
        torn_bytes: torn.len() as u64,
        torn_sha256: hex::encode(Sha256::digest(&torn)),
        kept_in,
    })
}

/// The writer thread's state: the chain's head and the lines not yet written.
struct Writer {
    file: File,
    path: PathBuf,
    seq: u64,
    prev: String,
    /// Chained lines waiting to be written, oldest first.
    pending: VecDeque<String>,
    /// Entries dropped while `pending` was full.
    lost: u64,
    failing_since: Option<time::OffsetDateTime>,
    writable: Arc<AtomicBool>,
    fail_while: Option<PathBuf>,
}

impl Writer {
    fn chain(&mut self, e: Entry) {
        if self.pending.len() >= MAX_PENDING {
            self.lost += 1;
            return;
        }
        self.seq += 1;
        let clock = clock::status();
        let time = clock::rfc3339(time::OffsetDateTime::now_utc());
        let mut v = json!({
            "seq": self.seq,
            "time": time,
            "clock": clock,
            "event": e.event,
            "account": e.account,
            "peer": e.peer.map(|p| p.to_string()),
            "detail": e.detail,
            "prev": self.prev,
        });
        let hash = line_hash(&v);
        v["hash"] = json!(hash);
        self.prev = hash;
        self.pending.push_back(canonical::to_string(&v));
    }

    /// Writes and syncs every pending line, or none: a failed write is cut back to where it
    /// began, so the file never holds half a batch.
    fn try_write(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.fail_while.as_deref().is_some_and(Path::exists) {
            return Err(std::io::Error::other("injected audit write failure (test)"));
        }
        if self.failing_since.is_some() {
            // The file may have been replaced or its disk remounted: open it afresh.
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?;
        }
        let start = self.file.metadata()?.len();
        let mut text = String::new();
        for line in &self.pending {
            text.push_str(line);
            text.push('\n');
        }
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(start);
            return Err(e);
        }
        self.pending.clear();
        Ok(())
    }

    fn write(&mut self) {
        match self.try_write() {
            Ok(()) => {
                if let Some(since) = self.failing_since.take() {
                    let lost = std::mem::take(&mut self.lost);
                    let seconds = (time::OffsetDateTime::now_utc() - since).whole_seconds();
                    tracing::warn!(
                        unwritable_seconds = seconds,
                        lost,
                        "the audit log is written again: sessions and uploads resume"
                    );
                    self.chain(Entry {
                        event: Event::AuditResumed.as_str().into(),
                        account: None,
                        peer: None,
                        detail: json!({"unwritable_seconds": seconds, "lost_entries": lost}),
                    });
                    if self.try_write().is_err() {
                        self.failing_since = Some(since);
                        return;
                    }
                    self.writable.store(true, Ordering::Release);
                }
            }
            Err(err) => {
                if self.failing_since.is_none() {
                    self.failing_since = Some(time::OffsetDateTime::now_utc());
                    self.writable.store(false, Ordering::Release);
                    tracing::error!(
                        error = %err,
                        file = %self.path.display(),
                        "cannot write the audit log: new sessions and uploads are refused until it can"
                    );
                }
            }
        }
    }
}

fn writer(mut w: Writer, rx: mpsc::Receiver<Msg>) {
    loop {
        let first = if w.failing_since.is_none() {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    w.write();
                    return;
                }
            }
        };
        let mut acks = Vec::new();
        for msg in first.into_iter().chain(rx.try_iter()) {
            match msg {
                Msg::Entry(e) => w.chain(e),
                Msg::Flush(ack) => acks.push(ack),
            }
        }
        w.write();
        if w.pending.is_empty() {
            for ack in acks {
                let _ = ack.send(());
            }
        }
    }
}

/// Checks the whole chain of an audit log file; returns the number of lines.
pub fn verify(path: &Path) -> Result<u64, AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io_err)?;
    let mut chain = ChainCheck::default();
    for line in BufReader::new(f).lines() {
        chain.next(&line.map_err(io_err)?)?;
    }
    Ok(chain.lines())
}

/// The check of a chain of audit lines, one line after another from the first: a file, or the
/// copy of a node's lines in the database (`ship`).
#[derive(Debug)]
pub struct ChainCheck {
    prev: String,
    n: u64,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            prev: GENESIS.to_owned(),
            n: 0,
        }
    }
}

impl ChainCheck {
    /// Checks the next line: it must follow the one before, carry the next number, and match
    /// its hash.
    pub fn next(&mut self, line: &str) -> Result<(), AuditError> {
        let broken = |reason: &str| AuditError::Broken {
            line: self.n + 1,
            reason: reason.to_owned(),
        };
        let mut v: Value = serde_json::from_str(line).map_err(|_| broken("not JSON"))?;
        let hash = v
            .as_object_mut()
            .and_then(|m| m.remove("hash"))
            .and_then(|h| h.as_str().map(str::to_owned))
            .ok_or_else(|| broken("no hash"))?;
        if v["prev"].as_str() != Some(self.prev.as_str()) {
            return Err(broken(
                "does not follow the line before (removed, inserted or reordered lines)",
            ));
        }
        if v["seq"].as_u64() != Some(self.n + 1) {
            return Err(broken("sequence number out of order"));
        }
        if line_hash(&v) != hash {
            return Err(broken("content does not match its hash (modified)"));
        }
        self.prev = hash;
        self.n += 1;
        Ok(())
    }

    /// Lines checked so far.
    pub fn lines(&self) -> u64 {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, n: usize, total: usize) -> PathBuf {
        let layout = StateLayout::new(dir);
        fs::create_dir_all(layout.audit()).unwrap();
        let audit = Audit::open(&layout).unwrap();
        for i in 0..n {
            audit.record(Event::BoxList, Some("clinic-a"), None, json!({"i": i}));
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
