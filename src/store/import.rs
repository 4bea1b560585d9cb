//! Moving a node's local store into PostgreSQL (`handoff migrate --import-local`): its jobs,
//! their events and the receipt ledger, copied as they are, with their numbers, in one
//! transaction. The receipt chain goes on where it stopped, receipts are issued from where they
//! were, and a file accepted before the move is finished after it, once. The box files, the
//! spool and the quarantine follow ([`files_into`]), so that every node reaches them.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::files::{Carried, FilesError, Put, SharedFiles};
use super::postgres::{Client, Database, DatabaseError};
use crate::pipeline::jobs::SqliteStore;
use crate::state::StateLayout;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "the database holds jobs, events or receipts already: a local store is imported only into a new database"
    )]
    NotEmpty,
    #[error("there is no local job store in {}", .0.display())]
    NoLocalStore(PathBuf),
    #[error("reading the local store")]
    Local(#[from] rusqlite::Error),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("reading {}", .0.display())]
    Folder(PathBuf, #[source] std::io::Error),
}

impl From<tokio_postgres::Error> for ImportError {
    fn from(e: tokio_postgres::Error) -> ImportError {
        ImportError::Database(e.into())
    }
}

/// What was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub jobs: u64,
    pub events: u64,
    pub receipts: u64,
}

fn read_only(path: PathBuf) -> Result<Connection, ImportError> {
    Ok(Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

/// Copies the local store of `layout` into `db`, which must be migrated and hold no job, event
/// or receipt. Rows are streamed, not gathered: a store of any size moves in bounded memory.
/// The daemon must not be running on `layout` (the caller holds its lock).
pub fn local_into(layout: &StateLayout, db: &Database) -> Result<Imported, ImportError> {
    let jobs_path = layout.store().join(SqliteStore::FILE);
    if !jobs_path.exists() {
        return Err(ImportError::NoLocalStore(layout.store()));
    }
    let jobs = read_only(jobs_path)?;
    let ledger_path = layout.receipt_ledger();
    let ledger = if ledger_path.exists() {
        Some(read_only(ledger_path)?)
    } else {
        None
    };
    db.with(async |c: &mut Client| -> Result<Imported, ImportError> {
        let tx = c.transaction().await?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT COUNT(*) FROM jobs) + (SELECT COUNT(*) FROM events) \
                 + (SELECT COUNT(*) FROM receipts) + (SELECT COUNT(*) FROM splits)",
                &[],
            )
            .await?
            .get(0);
        if held > 0 {
            return Err(ImportError::NotEmpty);
        }
        let mut imported = Imported {
            jobs: 0,
            events: 0,
            receipts: 0,
        };

        let insert = tx
            .prepare(
                "INSERT INTO jobs (file_id, sender, original_name, size, sha256, inbox_key, state, \
                 recipient, sealed_sha256, accepted_at, delivered_at, retrieved, quarantined, \
                 warnings, parent, channel) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .await?;
        let mut stmt = jobs.prepare(
            "SELECT file_id, sender, original_name, size, sha256, inbox_key, state, recipient, \
             sealed_sha256, accepted_at, delivered_at, retrieved, quarantined, warnings, parent, \
             channel FROM jobs",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let text = |i| r.get::<_, String>(i);
            let maybe = |i| r.get::<_, Option<String>>(i);
            tx.execute(
                &insert,
                &[
                    &text(0)?,
                    &text(1)?,
                    &text(2)?,
                    &r.get::<_, i64>(3)?,
                    &text(4)?,
                    &text(5)?,
                    &text(6)?,
                    &maybe(7)?,
                    &maybe(8)?,
                    &r.get::<_, i64>(9)?,
                    &r.get::<_, Option<i64>>(10)?,
                    &(r.get::<_, i64>(11)? != 0),
                    &(r.get::<_, i64>(12)? != 0),
                    &maybe(13)?,
                    &maybe(14)?,
                    &maybe(15)?,
                ],
            )
            .await?;
            imported.jobs += 1;
        }

        let insert = tx
            .prepare(
                "INSERT INTO splits (parent, insurer, child, day, n) VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        let mut stmt = jobs.prepare("SELECT parent, insurer, child, day, n FROM splits")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let n = i32::try_from(r.get::<_, i64>(4)?).unwrap_or(i32::MAX);
            tx.execute(
                &insert,
                &[
                    &r.get::<_, String>(0)?,
                    &r.get::<_, String>(1)?,
                    &r.get::<_, String>(2)?,
                    &r.get::<_, String>(3)?,
                    &n,
                ],
            )
            .await?;
        }

        let insert = tx
            .prepare("INSERT INTO events (seq, file_id, hop, body) VALUES ($1, $2, $3, $4)")
            .await?;
        let mut stmt = jobs.prepare("SELECT seq, file_id, hop, body FROM events ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            tx.execute(
                &insert,
                &[
                    &r.get::<_, i64>(0)?,
                    &r.get::<_, String>(1)?,
                    &r.get::<_, String>(2)?,
                    &r.get::<_, String>(3)?,
                ],
            )
            .await?;
            imported.events += 1;
        }

        if let Some(ledger) = &ledger {
            let insert = tx
                .prepare(
                    "INSERT INTO receipts (seq, id, file_id, hop, time, json, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await?;
            let mut stmt = ledger.prepare(
                "SELECT seq, id, file_id, hop, time, json, hash FROM receipts ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let text = |i| r.get::<_, String>(i);
                tx.execute(
                    &insert,
                    &[
                        &r.get::<_, i64>(0)?,
                        &text(1)?,
                        &text(2)?,
                        &text(3)?,
                        &text(4)?,
                        &text(5)?,
                        &text(6)?,
                    ],
                )
                .await?;
                imported.receipts += 1;
            }
            let issued: i64 =
                ledger.query_row("SELECT event_seq FROM progress WHERE id = 1", [], |r| {
                    r.get(0)
                })?;
            tx.execute(
                "UPDATE progress SET event_seq = $1 WHERE id = 1",
                &[&issued],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(imported)
    })
}

/// Copies the files of `layout` every node must reach into the database: the box files (an
/// upload waiting in an inbox with what it carries), the spool and the quarantine. Returns how
/// many. Temporaries are left out.
pub fn files_into(layout: &StateLayout, files: &SharedFiles) -> Result<u64, ImportError> {
    let folders =
        super::files::folders(layout).map_err(|e| ImportError::Folder(layout.boxes(), e))?;
    let mut copied = 0;
    for folder in folders {
        copied += folder_into(&folder, folder.ends_with("inbox"), files)?;
    }
    Ok(copied)
}

fn folder_into(dir: &Path, inbox: bool, files: &SharedFiles) -> Result<u64, ImportError> {
    let failed = |e| ImportError::Folder(dir.to_path_buf(), e);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(failed(e)),
    };
    let mut copied = 0;
    for entry in entries {
        let path = entry.map_err(failed)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        if name.starts_with('.') || name.ends_with(".tmp") || !path.is_file() {
            continue;
        }
        let file = std::fs::File::open(&path).map_err(failed)?;
        let (carried, shown) = if inbox {
            crate::boxes::carried_by(&file).map_err(failed)?
        } else {
            (Carried::default(), file.metadata().map_err(failed)?.len())
        };
        files.put(&path, &file, shown, &carried, Put::Replace)?;
        copied += 1;
    }
    Ok(copied)
}
