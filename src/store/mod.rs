//! Where the gateway's durable state lives (DESIGN §8): in SQLite files under the state
//! directory for one node (the default), or in PostgreSQL shared by several nodes. The job
//! store ([`JobStore`]) and the receipt ledger ([`Ledger`]) are opened here, by the config's
//! `[gateway.store]`, and nowhere else.

pub mod files;
pub mod import;
pub mod postgres;

use std::sync::Arc;

use crate::config::{Gateway, StoreBackend};
use crate::pipeline::jobs::{JobStore, PgStore, SqliteStore, StoreError};
use crate::receipts::ledger::{Ledger, LedgerError};
use crate::state::StateLayout;
pub use files::SharedFiles;
pub use postgres::{Database, DatabaseError};

/// The store of a config: the state directory's files, or a database.
#[derive(Clone)]
pub enum Store {
    Local(StateLayout),
    Postgres(Arc<Database>),
}

impl Store {
    /// The store `[gateway.store]` names; a database is not connected until first used.
    pub fn of(gateway: &Gateway) -> Result<Store, DatabaseError> {
        Ok(match gateway.store.backend {
            StoreBackend::Local => Store::Local(StateLayout::new(&gateway.state_dir)),
            StoreBackend::Postgres => Store::Postgres(Database::new(&gateway.store)?),
        })
    }

    /// Takes the store for a starting daemon: a database must answer and have this gateway's
    /// schema. The returned watch turns `true` when this node is to do what one node does for
    /// all (`Pipeline::coordinate`, the receipts, the alerts): at once for the local store (the
    /// state directory is locked already), when no other node does for a database ([`Database::hold_for_node`]; should the node lose it to another, `shutdown`
    /// is cancelled).
    pub fn take_for_node(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<tokio::sync::watch::Receiver<bool>, DatabaseError> {
        match self {
            Store::Local(_) => Ok(tokio::sync::watch::channel(true).1),
            Store::Postgres(db) => {
                db.check_schema()?;
                db.hold_for_node(shutdown)
            }
        }
    }

    /// Whether this node coordinates now (see [`Store::take_for_node`]).
    pub fn coordinates(&self) -> bool {
        match self {
            Store::Local(_) => true,
            Store::Postgres(db) => db.coordinates(),
        }
    }

    /// The files every node reaches through the database (box files, spool, quarantine of
    /// `layout`), where the store is one; `None` for the local store, whose files are the state
    /// directory's alone.
    pub fn shared_files(&self, layout: &StateLayout) -> Option<SharedFiles> {
        match self {
            Store::Local(_) => None,
            Store::Postgres(db) => Some(SharedFiles::new(db.clone(), layout.root())),
        }
    }

    /// The name of the backend, as `[gateway.store] backend` says it.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Local(_) => "local",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Whether the store answers, as far as its last health check knows: the local store always
    /// does; a database until a check finds it down.
    pub fn is_up(&self) -> bool {
        match self {
            Store::Local(_) => true,
            Store::Postgres(db) => !matches!(db.health(), Some(Err(_))),
        }
    }

    /// The job store the pipeline writes.
    pub fn jobs(&self) -> Result<Arc<dyn JobStore>, StoreError> {
        Ok(match self {
            Store::Local(layout) => Arc::new(SqliteStore::open(&layout.store())?),
            Store::Postgres(db) => Arc::new(PgStore::open(db.clone())?),
        })
    }

    /// The job store for reading beside a running gateway (the command line); `None` before
    /// the gateway has made one.
    pub fn jobs_read_only(&self) -> Result<Option<Arc<dyn JobStore>>, StoreError> {
        Ok(Some(match self {
            Store::Local(layout) => {
                if !layout.store().join(SqliteStore::FILE).exists() {
                    return Ok(None);
                }
                Arc::new(SqliteStore::open_read_only(&layout.store())?)
            }
            Store::Postgres(db) => Arc::new(PgStore::open(db.clone())?),
        }))
    }

    /// The receipt ledger the issuer writes.
    pub fn ledger(&self) -> Result<Ledger, LedgerError> {
        match self {
            Store::Local(layout) => Ledger::open(&layout.receipt_ledger()),
            Store::Postgres(db) => Ok(Ledger::postgres(db.clone())),
        }
    }

    /// The receipt ledger for reading (the command line, metrics, the NOC); `None` before the
    /// gateway has made one.
    pub fn ledger_read_only(&self) -> Result<Option<Ledger>, LedgerError> {
        match self {
            Store::Local(layout) => {
                let path = layout.receipt_ledger();
                if !path.exists() {
                    return Ok(None);
                }
                Ledger::open_read_only(&path).map(Some)
            }
            Store::Postgres(db) => Ok(Some(Ledger::postgres(db.clone()))),
        }
    }
}
