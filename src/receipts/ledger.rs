//! The receipt ledger: every receipt in chain order, durable, together with the position in
//! the pipeline's event log up to which receipts were issued — in the same transaction, so a
//! crash can neither lose nor repeat a receipt.
//!
//! One node keeps it in SQLite (WAL, synchronous=FULL) in the state directory; nodes sharing
//! PostgreSQL keep it there, where an append commits only onto the head it was made for, so the
//! chain stays one whichever node issues. Both run the same statements (`?N` placeholders,
//! numbered as PostgreSQL's `$N`).

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use super::canonical::GENESIS;
use super::receipt::Receipt;
use crate::store::postgres::{Client, Database, locks};
use tokio_postgres::types::{IsNull, ToSql as PgToSql, Type};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("receipt ledger")]
    Sql(#[from] rusqlite::Error),
    #[error("receipt ledger")]
    Database(#[from] crate::store::DatabaseError),
    #[error("receipt ledger: stored receipt {0} is unreadable")]
    Corrupt(String),
    /// Another node extended the chain since this receipt was made: it is made again.
    #[error("receipt ledger: the chain's head moved (receipt {0}); issuing again")]
    HeadMoved(u64),
}

impl From<tokio_postgres::Error> for LedgerError {
    fn from(e: tokio_postgres::Error) -> LedgerError {
        LedgerError::Database(e.into())
    }
}

pub struct Ledger {
    db: Backend,
}

enum Backend {
    Sqlite(Connection),
    Postgres(Arc<Database>),
}

/// A statement's argument, for either backend.
#[derive(Clone, Copy, Debug)]
enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

/// A statement of either backend: SQLite's `?N` placeholders become PostgreSQL's `$N`.
fn postgres_sql(sql: &str) -> String {
    sql.replace('?', "$")
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
        Ok(Ledger {
            db: Backend::Sqlite(db),
        })
    }

    /// Opens an existing ledger for reading only (the CLI, beside a running daemon).
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(Ledger {
            db: Backend::Sqlite(db),
        })
    }

    /// The ledger in a database `handoff migrate` prepared.
    pub fn postgres(db: Arc<Database>) -> Ledger {
        Ledger {
            db: Backend::Postgres(db),
        }
    }

    /// The first column of each row of a query, as text.
    fn texts(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<String>, LedgerError> {
        match &self.db {
            Backend::Sqlite(db) => {
                let mut stmt = db.prepare(sql)?;
                let rows =
                    stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Backend::Postgres(db) => {
                let sql = postgres_sql(sql);
                db.with(async |c: &mut Client| {
                    let rows = c.query(&sql, &pg_args(args)).await?;
                    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
                })
            }
        }
    }

    /// The one number a query gives, if any (no row, or NULL: `None`).
    fn number(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>, LedgerError> {
        match &self.db {
            Backend::Sqlite(db) => Ok(db
                .query_row(sql, rusqlite::params_from_iter(args), |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .optional()?
                .flatten()),
            Backend::Postgres(db) => {
                let sql = postgres_sql(sql);
                db.with(async |c: &mut Client| {
                    let row = c.query_opt(&sql, &pg_args(args)).await?;
                    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)))
                })
            }
        }
    }

    /// The last event-log position receipts were issued for.
    pub fn event_seq(&self) -> Result<u64, LedgerError> {
        let n = self.number("SELECT event_seq FROM progress WHERE id = 1", &[])?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    /// The head of the chain: (seq, hash) of the last receipt, or (0, genesis).
    pub fn head(&self) -> Result<(u64, String), LedgerError> {
        let Some(seq) = self.number("SELECT MAX(seq) FROM receipts", &[])? else {
            return Ok((0, GENESIS.to_owned()));
        };
        let hash = self
            .texts("SELECT hash FROM receipts WHERE seq = ?1", &[Arg::Int(seq)])?
            .pop()
            .ok_or_else(|| LedgerError::Corrupt(format!("receipt {seq}")))?;
        Ok((u64::try_from(seq).unwrap_or(0), hash))
    }

    /// The hash of the receipt of `file_id` at its latest hop, if any.
    pub fn file_head(&self, file_id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .texts(
                "SELECT hash FROM receipts WHERE file_id = ?1 ORDER BY seq DESC LIMIT 1",
                &[Arg::Text(file_id)],
            )?
            .pop())
    }

    pub fn has(&self, id: &str) -> Result<bool, LedgerError> {
        Ok(!self
            .texts("SELECT id FROM receipts WHERE id = ?1", &[Arg::Text(id)])?
            .is_empty())
    }

    /// Appends a receipt (if its id is new) and records `event_seq` as done, atomically. In a
    /// shared database the receipt must extend the head it was made on, or nothing is written
    /// ([`LedgerError::HeadMoved`]).
    pub fn append(&mut self, receipt: Option<&Receipt>, event_seq: u64) -> Result<(), LedgerError> {
        const INSERT: &str = "INSERT INTO receipts (seq, id, file_id, hop, time, json, hash) \
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING";
        const PROGRESS: &str = "UPDATE progress SET event_seq = ?1 WHERE id = 1 AND event_seq < ?1";
        let row = receipt.map(|r| (r.to_canonical_json(), r.hash()));
        match &mut self.db {
            Backend::Sqlite(db) => {
                let tx = db.transaction()?;
                if let (Some(r), Some((json, hash))) = (receipt, &row) {
                    tx.execute(
                        INSERT,
                        rusqlite::params![
                            r.seq as i64,
                            r.id,
                            r.file_id,
                            r.hop.as_str(),
                            r.time,
                            json,
                            hash
                        ],
                    )?;
                }
                tx.execute(PROGRESS, [event_seq as i64])?;
                tx.commit()?;
                Ok(())
            }
            Backend::Postgres(db) => db.with(async |c: &mut Client| {
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::ISSUER])
                    .await?;
                if let (Some(r), Some((json, hash))) = (receipt, &row) {
                    let known = tx
                        .query_opt("SELECT 1 FROM receipts WHERE id = $1", &[&r.id])
                        .await?
                        .is_some();
                    if !known {
                        let head: Option<i64> = tx
                            .query_one("SELECT MAX(seq) FROM receipts", &[])
                            .await?
                            .get(0);
                        if head.unwrap_or(0) + 1 != r.seq as i64 {
                            return Err(LedgerError::HeadMoved(r.seq));
                        }
                        tx.execute(
                            &postgres_sql(INSERT),
                            &[
                                &(r.seq as i64),
                                &r.id,
                                &r.file_id,
                                &r.hop.as_str(),
                                &r.time,
                                json,
                                hash,
                            ],
                        )
                        .await?;
                    }
                }
                tx.execute(&postgres_sql(PROGRESS), &[&(event_seq as i64)])
                    .await?;
                tx.commit().await?;
                Ok(())
            }),
        }
    }

    fn collect(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Receipt>, LedgerError> {
        self.texts(sql, args)?
            .into_iter()
            .map(|json| {
                serde_json::from_str(&json)
                    .map_err(|_| LedgerError::Corrupt(json.chars().take(80).collect()))
            })
            .collect()
    }

    /// Every receipt in chain order.
    pub fn all(&self) -> Result<Vec<Receipt>, LedgerError> {
        self.collect("SELECT json FROM receipts ORDER BY seq", &[])
    }

    /// The last `n` receipts, oldest first.
    pub fn last(&self, n: usize) -> Result<Vec<Receipt>, LedgerError> {
        let mut v = self.collect(
            "SELECT json FROM receipts ORDER BY seq DESC LIMIT ?1",
            &[Arg::Int(n as i64)],
        )?;
        v.reverse();
        Ok(v)
    }

    pub fn after(&self, seq: u64) -> Result<Vec<Receipt>, LedgerError> {
        self.collect(
            "SELECT json FROM receipts WHERE seq > ?1 ORDER BY seq",
            &[Arg::Int(seq as i64)],
        )
    }

    /// Receipts of hops at or after `t`. Times are compared as the text receipts store, which
    /// sorts in time order because every receipt time is written by `clock::rfc3339`.
    pub fn since(&self, t: time::OffsetDateTime) -> Result<Vec<Receipt>, LedgerError> {
        self.collect(
            "SELECT json FROM receipts WHERE time >= ?1 ORDER BY seq",
            &[Arg::Text(&crate::audit::clock::rfc3339(t))],
        )
    }

    pub fn by_id(&self, id: &str) -> Result<Option<Receipt>, LedgerError> {
        Ok(self
            .collect("SELECT json FROM receipts WHERE id = ?1", &[Arg::Text(id)])?
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
                &[Arg::Text(&crate::audit::clock::rfc3339(before))],
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
            &[Arg::Text(file_id)],
        )
    }
}

/// The arguments of a statement, as PostgreSQL's driver takes them.
fn pg_args<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn PgToSql + Sync)> {
    args.iter().map(|a| a as &(dyn PgToSql + Sync)).collect()
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Int(i) => i.into(),
            Arg::Text(s) => s.into(),
        })
    }
}

impl PgToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Arg::Int(i) => i.to_sql(ty, out),
            Arg::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as PgToSql>::accepts(ty) || <&str as PgToSql>::accepts(ty)
    }

    // Each kind checked against the column's type on its own: a number is never sent as text.
    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Arg::Int(i) => i.to_sql_checked(ty, out),
            Arg::Text(s) => s.to_sql_checked(ty, out),
        }
    }
}
