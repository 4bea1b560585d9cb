//! The NOC's alerts: files overdue at a hop, an unsynchronised clock, a broken receipt chain
//! (signatures and links of the ledger, checked incrementally).
//! Checked periodically; each newly raised alert is logged, audited (`alert.*`) and counted, and
//! the current overdue counts are kept as gauges.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{Alert, Event};
use crate::error::Chain;
use crate::services::Services;

const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Overdue files as of now, from the receipt ledger.
pub struct Overdue {
    pub accepted: Vec<crate::receipts::Receipt>,
    pub delivered: Vec<crate::receipts::Receipt>,
}

pub fn overdue(services: &Services) -> Option<Overdue> {
    let ledger = services.store.ledger_read_only().ok()??;
    let retention = services.live.snapshot().config.gateway.retention.clone();
    let now = time::OffsetDateTime::now_utc();
    let (accepted, delivered) = ledger
        .overdue(now - retention.accept_overdue, now - retention.retrieve_sla)
        .ok()?;
    Some(Overdue {
        accepted,
        delivered,
    })
}

fn raise(services: &Services, kind: Alert, detail: serde_json::Value) {
    raise_for(services, kind, None, None, detail);
}

/// Raises an alert about an account's action (e.g. `break_glass` at login): logged, audited as
/// `alert.{kind}` with the account and peer, and counted.
pub fn raise_for(
    services: &Services,
    kind: Alert,
    account: Option<&str>,
    peer: Option<std::net::SocketAddr>,
    detail: serde_json::Value,
) {
    tracing::warn!(alert = kind.as_str(), account, ?peer, %detail, "ALERT");
    services
        .audit
        .record(Event::Alert(kind), account, peer, detail);
    services
        .metrics
        .alerts
        .get_or_create(&vec![("kind", kind.as_str().to_owned())])
        .inc();
}

/// How often the chain check starts again from the first receipt, so a receipt changed after
/// it was verified is found too.
const FULL_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Check of the receipt ledger: each round verifies only the receipts added since the last
/// verified one, linked to it; the whole chain again every [`FULL_CHECK_EVERY`].
#[derive(Default)]
struct ChainCheck {
    /// The last receipt verified.
    last: Option<crate::receipts::Receipt>,
    /// When the chain was last verified from its start.
    full_at: Option<std::time::Instant>,
    /// Set once a break is found: raised once, not re-checked until restart.
    broken: bool,
}

impl ChainCheck {
    /// Returns the first break newly found, if any.
    fn check(&mut self, services: &Services) -> Option<String> {
        if self.broken {
            return None;
        }
        let ledger = services.store.ledger_read_only().ok()??;
        if self.full_at.is_none_or(|t| t.elapsed() >= FULL_CHECK_EVERY) {
            self.last = None;
            self.full_at = Some(std::time::Instant::now());
        }
        let after = self.last.as_ref().map_or(0, |r| r.seq);
        let fresh = match ledger.after(after) {
            Ok(fresh) => fresh,
            // A database that does not answer is the `store_down` alert, not a broken chain.
            Err(crate::receipts::ledger::LedgerError::Database(_)) => return None,
            Err(e) => {
                self.broken = true;
                return Some(Chain(&e).to_string());
            }
        };
        if fresh.is_empty() {
            return None;
        }
        let gateway = &services.live.snapshot().config.gateway;
        let key = crate::keys::load_receipt_key(&gateway.receipt_key)
            .ok()?
            .verifying_key();
        let chain = self.last.iter().chain(fresh.iter());
        match crate::receipts::verify_chain(chain, &key) {
            Ok(_) => {
                self.last = fresh.last().cloned();
                None
            }
            Err(e) => {
                self.broken = true;
                Some(e.to_string())
            }
        }
    }
}

/// Watches for alert conditions until `shutdown`.
pub async fn watch(services: Services, shutdown: CancellationToken) {
    let mut raised: HashSet<String> = HashSet::new();
    let mut clock_ok = true;
    let mut audit_ok = true;
    let mut chain = ChainCheck::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let clock = crate::audit::clock::status();
        services
            .metrics
            .clock_synchronised
            .set(i64::from(clock.synchronised));
        if clock_ok && !clock.synchronised {
            raise(
                &services,
                crate::audit::Alert::ClockUnsynchronised,
                json!({"maxerror_us": clock.maxerror_us}),
            );
        }
        clock_ok = clock.synchronised;

        // Raised once per outage; the line reaches the audit log once it can be written.
        let audit_now = services.audit.writable();
        services.metrics.audit_writable.set(i64::from(audit_now));
        if audit_ok && !audit_now {
            raise(
                &services,
                crate::audit::Alert::AuditUnwritable,
                json!({"effect": "new sessions and uploads are refused until the audit log can be written"}),
            );
        }
        audit_ok = audit_now;

        let s = services.clone();
        let (check, broken) = tokio::task::spawn_blocking(move || {
            let broken = chain.check(&s);
            (chain, broken)
        })
        .await
        .unwrap_or_else(|_| (ChainCheck::default(), None));
        chain = check;
        if let Some(error) = broken {
            raise(
                &services,
                crate::audit::Alert::ReceiptChainBroken,
                json!({"error": error}),
            );
        }

        let s = services.clone();
        let Ok(Some(o)) = tokio::task::spawn_blocking(move || overdue(&s)).await else {
            continue;
        };
        services
            .metrics
            .overdue
            .get_or_create(&vec![("kind", "accept".to_owned())])
            .set(o.accepted.len() as i64);
        services
            .metrics
            .overdue
            .get_or_create(&vec![("kind", "retrieve".to_owned())])
            .set(o.delivered.len() as i64);
        let mut now_overdue = HashSet::new();
        for (kind, list) in [
            (Alert::AcceptOverdue, &o.accepted),
            (Alert::RetrieveOverdue, &o.delivered),
        ] {
            for r in list {
                let key = format!("{kind}:{}", r.file_id);
                if !raised.contains(&key) {
                    raise(
                        &services,
                        kind,
                        json!({"file_id": r.file_id, "sender": r.sender, "recipient": r.recipient, "since": r.time}),
                    );
                }
                now_overdue.insert(key);
            }
        }
        raised = now_overdue;
    }
}
