//! The receipt ledger: every receipt in chain order, durable (SQLite, WAL, synchronous=FULL),
//! together with the position in the pipeline's event log up to which receipts were issued —
//! in the same transaction, so a crash can neither lose nor repeat a receipt.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::canonical::GENESIS;
use super::receipt::Receipt;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("receipt ledger")]
    Sql(#[from] rusqlite::Error),
    #[error("receipt ledger: stored receipt {0} is unreadable")]
    Corrupt(String),
}

pub struct Ledger {
    db: Connection,
}

impl Ledger {
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS receipts (
                 seq INTEGER PRIMARY KEY,
                 id TEXT NOT NULL UNIQUE,
                 file_id TEXT NOT NULL,
                 hop TEXT NOT NULL,
                 time TEXT NOT NULL,
                 json TEXT NOT NULL,
                 hash TEXT NOT NULL,
                 UNIQUE (file_id, hop)
             );
             CREATE INDEX IF NOT EXISTS receipts_file ON receipts (file_id);
             CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY CHECK (id = 1), event_seq INTEGER NOT NULL);
             INSERT OR IGNORE INTO progress (id, event_seq) VALUES (1, 0);",
        )?;
        Ok(Ledger { db })
    }

    /// Opens an existing ledger for reading only (the CLI, beside a running daemon).
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(Ledger { db })
    }

    /// The last event-log position receipts were issued for.
    pub fn event_seq(&self) -> Result<u64, LedgerError> {
        let n: i64 = self
            .db
            .query_row("SELECT event_seq FROM progress WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The head of the chain: (seq, hash) of the last receipt, or (0, genesis).
    pub fn head(&self) -> Result<(u64, String), LedgerError> {
        let row: Option<(i64, String)> = self
            .db
            .query_row(
                "SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map_or((0, GENESIS.to_owned()), |(s, h)| {
            (u64::try_from(s).unwrap_or(0), h)
        }))
    }

    /// The hash of the receipt of `file_id` at its latest hop, if any.
    pub fn file_head(&self, file_id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .db
            .query_row(
                "SELECT hash FROM receipts WHERE file_id = ?1 ORDER BY seq DESC LIMIT 1",
                params![file_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn has(&self, id: &str) -> Result<bool, LedgerError> {
        Ok(self
            .db
            .query_row("SELECT 1 FROM receipts WHERE id = ?1", params![id], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// Appends a receipt (if its id is new) and records `event_seq` as done, atomically.
    pub fn append(&mut self, receipt: Option<&Receipt>, event_seq: u64) -> Result<(), LedgerError> {
        let tx = self.db.transaction()?;
        if let Some(r) = receipt {
            tx.execute(
                "INSERT OR IGNORE INTO receipts (seq, id, file_id, hop, time, json, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![r.seq as i64, r.id, r.file_id, r.hop.as_str(), r.time, r.to_canonical_json(), r.hash()],
            )?;
        }
        tx.execute(
            "UPDATE progress SET event_seq = ?1 WHERE id = 1",
            params![event_seq as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn collect(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Receipt>, LedgerError> {
        let mut stmt = self.db.prepare(sql)?;
        let rows = stmt.query_map(args, |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            let json = json?;
            let r: Receipt = serde_json::from_str(&json)
                .map_err(|_| LedgerError::Corrupt(json.chars().take(80).collect()))?;
            out.push(r);
        }
        Ok(out)
    }

    /// Every receipt in chain order.
    pub fn all(&self) -> Result<Vec<Receipt>, LedgerError> {
        self.collect("SELECT json FROM receipts ORDER BY seq", [])
    }

    /// The last `n` receipts, oldest first.
    pub fn last(&self, n: usize) -> Result<Vec<Receipt>, LedgerError> {
        let mut v = self.collect(
            "SELECT json FROM receipts ORDER BY seq DESC LIMIT ?1",
            params![n as i64],
        )?;
        v.reverse();
        Ok(v)
    }

    pub fn after(&self, seq: u64) -> Result<Vec<Receipt>, LedgerError> {
        self.collect(
            "SELECT json FROM receipts WHERE seq > ?1 ORDER BY seq",
            params![seq as i64],
        )
    }

    /// Receipts of hops at or after `t`. Times are compared as the text receipts store, which
    /// sorts in time order because every receipt time is written by `clock::rfc3339`.
    pub fn since(&self, t: time::OffsetDateTime) -> Result<Vec<Receipt>, LedgerError> {
        self.collect(
            "SELECT json FROM receipts WHERE time >= ?1 ORDER BY seq",
            params![crate::audit::clock::rfc3339(t)],
        )
    }

    pub fn by_id(&self, id: &str) -> Result<Option<Receipt>, LedgerError> {
        Ok(self
            .collect("SELECT json FROM receipts WHERE id = ?1", params![id])?
            .into_iter()
            .next())
    }

    /// Files overdue at their current hop: accepted before `accepted_before` with no later hop,
    /// and delivered before `delivered_before` and not yet retrieved (or purged).
    pub fn overdue(
        &self,
        accepted_before: time::OffsetDateTime,
        delivered_before: time::OffsetDateTime,
    ) -> Result<(Vec<Receipt>, Vec<Receipt>), LedgerError> {
        let stuck = |hop: &str, before: time::OffsetDateTime, later: &str| {
            self.collect(
                &format!(
                    "SELECT r.json FROM receipts r WHERE r.hop = '{hop}' AND r.time < ?1 \
                     AND NOT EXISTS (SELECT 1 FROM receipts l WHERE l.file_id = r.file_id AND l.hop IN ({later})) ORDER BY r.seq"
                ),
                params![crate::audit::clock::rfc3339(before)],
            )
        };
        Ok((
            stuck("accepted", accepted_before, "'delivered','rejected'")?,
            stuck("delivered", delivered_before, "'retrieved','purged'")?,
        ))
    }

    /// Every hop of one file, in order.
    pub fn trace(&self, file_id: &str) -> Result<Vec<Receipt>, LedgerError> {
        self.collect(
            "SELECT json FROM receipts WHERE file_id = ?1 ORDER BY seq",
            params![file_id],
        )
    }
}
