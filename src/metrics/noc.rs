//! What the NOC sees, gathered in one place for both of its views: the HTML status page of the
//! metrics listener and the NOC API over HTTPS. Box counts come from the boxes, receipts from the
//! ledger (the record), never from files read by modification time.

use std::time::SystemTime;

use serde::Serialize;

use crate::accounts::CounterpartId;
use crate::boxes::BoxCounts;
use crate::receipts::ledger::LedgerError;
use crate::services::Services;

/// The gateway's state at one moment.
#[derive(Debug, Serialize)]
pub struct Status {
    pub time: String,
    pub sessions: usize,
    /// Files in the spool and in quarantine.
    pub spool: usize,
    pub quarantine: usize,
    pub scanner: Scanner,
    pub store: StoreStatus,
    pub boxes: Vec<BoxStatus>,
}

/// Where jobs and receipts are kept, and whether it answers.
#[derive(Debug, Serialize)]
pub struct StoreStatus {
    /// `local` or `postgres`.
    pub backend: &'static str,
    /// The local store is always up; a database is up while its health checks pass.
    pub up: bool,
    /// While the database is down: why.
    pub error: Option<String>,
}

impl StoreStatus {
    fn gather(store: &crate::store::Store) -> StoreStatus {
        let health = match store {
            crate::store::Store::Local(_) => Some(Ok(())),
            crate::store::Store::Postgres(db) => db.health(),
        };
        StoreStatus {
            backend: store.backend(),
            up: matches!(health, Some(Ok(()))),
            error: health.and_then(Result::err),
        }
    }
}

/// The clamd pool: `up` and `error` are the pool's, as they were when there was one clamd.
#[derive(Debug, Serialize)]
pub struct Scanner {
    /// At least one endpoint is up: files are scanned.
    pub up: bool,
    /// While none is up: why (each endpoint's last error).
    pub error: Option<String>,
    /// Each endpoint, in the order of `gateway.clamd`.
    pub endpoints: Vec<ScannerEndpoint>,
}

/// One clamd of the pool.
#[derive(Debug, Serialize)]
pub struct ScannerEndpoint {
    /// As written in `gateway.clamd` (relative paths resolved), e.g. `unix:/run/clamav/clamd.ctl`.
    pub endpoint: String,
    pub up: bool,
    /// Why its last check or scan failed, while it is down.
    pub error: Option<String>,
}

impl Scanner {
    fn gather(pool: &crate::scan::ClamdPool) -> Scanner {
        Scanner {
            up: pool.is_up(),
            error: pool.last_error(),
            endpoints: pool
                .endpoints()
                .iter()
                .map(|e| ScannerEndpoint {
                    endpoint: e.clamd().address().to_string(),
                    up: e.health().is_up(),
                    error: e.health().last_error(),
                })
                .collect(),
        }
    }
}

/// One counterpart's box: what waits in it, per folder.
#[derive(Debug, Serialize)]
pub struct BoxStatus {
    pub id: CounterpartId,
    #[serde(flatten)]
    pub counts: BoxCounts,
}

impl Status {
    /// Reads the state now. Touches the file system: call from a blocking context.
    pub fn gather(services: &Services) -> Status {
        let snapshot = services.live.snapshot();
        let queues = crate::spool::counts(&services.layout, services.files.as_ref());
        Status {
            time: crate::audit::clock::rfc3339(SystemTime::now().into()),
            sessions: services.sessions.total(),
            spool: queues.spool,
            quarantine: queues.quarantine,
            scanner: Scanner::gather(&services.clamd),
            store: StoreStatus::gather(&services.store),
            boxes: snapshot
                .config
                .counterparts
                .iter()
                .map(|c| BoxStatus {
                    id: c.id.clone(),
                    counts: services.boxes.counts(&c.id),
                })
                .collect(),
        }
    }
}

/// The receipts issued at or after `since`, oldest first, each as the NOC may see it: without
/// the messages of its findings, which may quote personal data (see
/// [`crate::receipts::redact_for_noc`]).
pub fn receipts_since(
    services: &Services,
    since: time::OffsetDateTime,
) -> Result<Vec<serde_json::Value>, LedgerError> {
    let Some(ledger) = services.store.ledger_read_only()? else {
        return Ok(Vec::new());
    };
    Ok(ledger
        .since(since)?
        .into_iter()
        .filter_map(|r| serde_json::to_value(&r).ok())
        .map(|mut v| {
            crate::receipts::redact_for_noc(&mut v);
            v
        })
        .collect())
}
