//! The copy of the audit log in the store's database (docs/audit.md). With `[gateway.store]
//! backend = "postgres"`, each node's lines are copied as written into the `audit` table, under
//! the node's name, so that the audit of every node is kept where the database is replicated and
//! backed up, and is checked from any machine with `handoff audit verify`.
//!
//! The node's own file stays the first record, written and synced before anything it records
//! may happen (fail closed on the node's disk, as always): a database that does not answer
//! holds nothing up, and the copy catches up when it answers again.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AuditError, ChainCheck};
use crate::error::Chain;
use crate::store::postgres::{Client, Database, DatabaseError};

/// How often new lines are copied.
const SHIP_EVERY: Duration = Duration::from_secs(2);
/// Lines copied in one transaction, at most.
const BATCH: usize = 1000;
/// Rows read at once when a node's copy is checked.
const PAGE: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("reading the audit log {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

impl From<tokio_postgres::Error> for ShipError {
    fn from(e: tokio_postgres::Error) -> ShipError {
        ShipError::Database(e.into())
    }
}

/// Where the copy stands: the end of the last line copied in the file, and its number.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    offset: u64,
    seq: u64,
}

/// Copies this node's audit lines into the database, on a thread of its own, until `shutdown`.
pub fn spawn(
    path: PathBuf,
    db: Arc<Database>,
    node: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("audit-copy".into())
        .spawn(move || {
            let mut cursor = None;
            let mut failing = false;
            while !shutdown.is_cancelled() {
                match ship(&path, &db, &node, &mut cursor) {
                    Ok(_) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("the audit log is copied to the database again");
                        }
                    }
                    // The cursor stays where the last copy ended: lines are copied once.
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(error = %Chain(&e), "cannot copy the audit log to the database; it stays in the node's file and is copied later");
                        }
                    }
                }
                let deadline = std::time::Instant::now() + SHIP_EVERY;
                while std::time::Instant::now() < deadline && !shutdown.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            // The last lines, written at shutdown.
            let _ = ship(&path, &db, &node, &mut cursor);
        })
        .map(drop)
}

/// Copies the lines written since the last call; returns how many.
fn ship(
    path: &std::path::Path,
    db: &Database,
    node: &str,
    cursor: &mut Option<Cursor>,
) -> Result<usize, ShipError> {
    let read_err = |e| ShipError::Read(path.to_path_buf(), e);
    let mut at = match *cursor {
        Some(c) => c,
        None => {
            let seq = db.with(async |c: &mut Client| -> Result<u64, ShipError> {
                let seq: Option<i64> = c
                    .query_one("SELECT MAX(seq) FROM audit WHERE node = $1", &[&node])
                    .await?
                    .get(0);
                Ok(seq.unwrap_or(0).max(0) as u64)
            })?;
            Cursor { offset: 0, seq }
        }
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(read_err(e)),
    };
    if file.metadata().map_err(read_err)?.len() < at.offset {
        // Cut back (a torn last line repaired at start): read it again from the start.
        at.offset = 0;
    }
    file.seek(SeekFrom::Start(at.offset)).map_err(read_err)?;
    let mut reader = BufReader::new(file);
    let mut shipped = 0;
    loop {
        let mut batch: Vec<(i64, String)> = Vec::new();
        let mut end = at;
        let mut line = String::new();
        while batch.len() < BATCH {
            line.clear();
            let n = reader.read_line(&mut line).map_err(read_err)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            end.offset += n as u64;
            let text = line.trim_end_matches('\n');
            let seq = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v["seq"].as_u64());
            match seq {
                Some(seq) if seq > end.seq => {
                    end.seq = seq;
                    batch.push((seq as i64, text.to_owned()));
                }
                // Copied before, or not a line of the chain (left for the check of the file).
                _ => {}
            }
        }
        if batch.is_empty() {
            at.offset = end.offset;
            *cursor = Some(at);
            return Ok(shipped);
        }
        db.with(async |c: &mut Client| -> Result<(), ShipError> {
            let tx = c.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO audit (node, seq, line) VALUES ($1, $2, $3) \
                     ON CONFLICT (node, seq) DO NOTHING",
                )
                .await?;
            for (seq, text) in &batch {
                tx.execute(&insert, &[&node, seq, text]).await?;
            }
            tx.commit().await?;
            Ok(())
        })?;
        shipped += batch.len();
        at = end;
        *cursor = Some(at);
    }
}

/// What the check of one node's copy found.
#[derive(Debug)]
pub struct NodeCopy {
    pub node: String,
    pub result: Result<u64, AuditError>,
}

/// Checks the chain of every node's copy in the database, from its first line, in pages.
pub fn verify_copies(db: &Database) -> Result<Vec<NodeCopy>, DatabaseError> {
    let nodes: Vec<String> = db.with(async |c: &mut Client| -> Result<_, DatabaseError> {
        let rows = c
            .query("SELECT DISTINCT node FROM audit ORDER BY node", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    })?;
    let mut out = Vec::new();
    for node in nodes {
        let mut chain = ChainCheck::default();
        let mut after = 0i64;
        let result = loop {
            let page: Vec<(i64, String)> =
                db.with(async |c: &mut Client| -> Result<_, DatabaseError> {
                    let rows = c
                        .query(
                            "SELECT seq, line FROM audit WHERE node = $1 AND seq > $2 \
                             ORDER BY seq LIMIT $3",
                            &[&node, &after, &PAGE],
                        )
                        .await?;
                    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                })?;
            let Some(&(last, _)) = page.last() else {
                break Ok(chain.lines());
            };
            if let Err(e) = page.iter().try_for_each(|(_, line)| chain.next(line)) {
                break Err(e);
            }
            after = last;
        };
        out.push(NodeCopy { node, result });
    }
    Ok(out)
}
