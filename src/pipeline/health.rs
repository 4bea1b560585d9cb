//! The health checks of what the pipeline cannot work without: the clamd pool and the database
//! of a shared store.
//!
//! The database is pinged every [`HEALTH_EVERY`]; while it does not answer, nothing is accepted
//! (files wait in the inboxes) and jobs wait, and the NOC has the `store_down` alert once per
//! outage, `store.up` in the audit log when it answers again, and `handoff_store_up`.
//!
//! The clamd pool (docs/scanning.md). Each endpoint is pinged every
//! [`HEALTH_EVERY`] on a task of its own, so a clamd that hangs holds up no other's check. A
//! check sets the endpoint's health, which the scans follow ([`ClamdPool::scan`]), and its
//! `handoff_scanner_endpoint_up` gauge. The NOC hears of changes once each: with several
//! endpoints, one going down or coming back is logged and audited (`scanner.endpoint_down`,
//! `scanner.endpoint_up`); none up at all is the `scanner_down` alert and `handoff_scanner_up 0`,
//! exactly as one clamd going down has always been.
//!
//! [`ClamdPool::scan`]: crate::scan::ClamdPool::scan

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::audit::{Alert, Event};
use crate::error::Chain;
use crate::scan::{Endpoint, ScanError};
use crate::services::Services;
use crate::sync::Recover;

/// How often each clamd is pinged.
const HEALTH_EVERY: Duration = Duration::from_secs(3);

/// Starts the check of each endpoint of the services' pool, and of the store's database.
pub(super) fn start(services: &Services, shutdown: &CancellationToken) {
    match &services.store {
        crate::store::Store::Local(_) => {
            services.metrics.pipeline.store_up.set(1);
        }
        crate::store::Store::Postgres(db) => {
            tokio::spawn(check_database(
                db.clone(),
                services.clone(),
                shutdown.clone(),
            ));
        }
    }
    let endpoints = services.clamd.endpoints();
    let seen = Arc::new(Mutex::new(Seen::new(endpoints.len())));
    for (index, endpoint) in endpoints.iter().enumerate() {
        tokio::spawn(check(
            index,
            endpoint.clone(),
            seen.clone(),
            services.clone(),
            shutdown.clone(),
        ));
    }
}

/// Pings one endpoint until shutdown and reports what changed.
async fn check(
    index: usize,
    endpoint: Arc<Endpoint>,
    seen: Arc<Mutex<Seen>>,
    services: Services,
    shutdown: CancellationToken,
) {
    let address = endpoint.clamd().address().to_string();
    // Created now, so each endpoint is exported (as down) before its first answer.
    let gauge = services
        .metrics
        .pipeline
        .scanner_endpoint_up
        .get_or_create(&vec![("endpoint", address.clone())])
        .clone();
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let e = endpoint.clone();
        let result = match tokio::task::spawn_blocking(move || e.clamd().ping()).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        endpoint.health().record(&result);
        gauge.set(i64::from(result.is_ok()));
        // Under the lock: the pool's state is decided from all endpoints' last checks at once.
        let mut seen = seen.locked();
        let (changes, pool_up) = seen.record(index, result.is_ok());
        if let Some(up) = pool_up {
            services.metrics.pipeline.scanner_up.set(i64::from(up));
        }
        for change in changes {
            report(change, &address, &result, &services);
        }
    }
}

/// Pings the database until shutdown; reports it going down and coming back, once each.
async fn check_database(
    db: Arc<crate::store::Database>,
    services: Services,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut was_up = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let d = db.clone();
        let Ok(result) = tokio::task::spawn_blocking(move || d.ping()).await else {
            continue;
        };
        let up = result.is_ok();
        services.metrics.pipeline.store_up.set(i64::from(up));
        let before = was_up.replace(up);
        if before == Some(up) {
            continue;
        }
        let database = db.describe();
        match result {
            Ok(()) if before.is_some() => {
                tracing::info!(database, "the database answers again");
                services.audit.record(
                    Event::StoreUp,
                    None,
                    None,
                    serde_json::json!({ "database": database }),
                );
            }
            Ok(()) => {}
            Err(e) => {
                let error = Chain(&e).to_string();
                let alert = Alert::StoreDown;
                tracing::warn!(
                    alert = alert.as_str(),
                    database,
                    error,
                    "ALERT: the database does not answer: nothing is accepted and files wait"
                );
                services.audit.record(
                    Event::Alert(alert),
                    None,
                    None,
                    serde_json::json!({ "database": database, "error": error }),
                );
                services
                    .metrics
                    .alerts
                    .get_or_create(&vec![("kind", alert.as_str().to_owned())])
                    .inc();
            }
        }
    }
}

/// Logs and audits one change the checks found.
fn report(change: Change, address: &str, result: &Result<(), ScanError>, services: &Services) {
    let error = result.as_ref().err().map(|e| Chain(e).to_string());
    match change {
        Change::EndpointDown => {
            tracing::warn!(
                endpoint = address,
                error,
                "a clamd of the pool is down: scans go to the others"
            );
            services.audit.record(
                Event::ScannerEndpointDown,
                None,
                None,
                serde_json::json!({ "endpoint": address, "error": error }),
            );
        }
        Change::EndpointUp => {
            tracing::info!(endpoint = address, "a clamd of the pool is up again");
            services.audit.record(
                Event::ScannerEndpointUp,
                None,
                None,
                serde_json::json!({ "endpoint": address }),
            );
        }
        Change::PoolUp => tracing::info!("clamd is up"),
        Change::PoolDown => {
            // Each endpoint's last error, naming its clamd; this check's if another has just
            // answered meanwhile.
            let error = services.clamd.last_error().or(error);
            let alert = Alert::ScannerDown;
            tracing::warn!(
                alert = alert.as_str(),
                error,
                "ALERT: clamd is down: files wait unscanned"
            );
            services.audit.record(
                Event::Alert(alert),
                None,
                None,
                serde_json::json!({ "error": error }),
            );
            services
                .metrics
                .alerts
                .get_or_create(&vec![("kind", alert.as_str().to_owned())])
                .inc();
        }
    }
}

/// A change found by a check, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The checked endpoint, one of several, stopped answering (or did not answer its first
    /// check).
    EndpointDown,
    /// The checked endpoint, one of several, answers again after it was down.
    EndpointUp,
    /// Some endpoint answers, after none did or at the start.
    PoolUp,
    /// Every endpoint has been checked and none answers.
    PoolDown,
}

/// What the checks last found: each endpoint's state and the pool's (`None`: not known yet).
struct Seen {
    endpoints: Vec<Option<bool>>,
    pool: Option<bool>,
}

impl Seen {
    fn new(endpoints: usize) -> Seen {
        Seen {
            endpoints: vec![None; endpoints],
            pool: None,
        }
    }

    /// Records one endpoint's check: the changes to report, in order, and the pool's state
    /// once it is known. The pool is up as soon as one endpoint answers, and down only once
    /// every endpoint has been checked and none answered, so a start with the first endpoint
    /// checked down and the next not yet checked raises no alert.
    fn record(&mut self, index: usize, up: bool) -> (Vec<Change>, Option<bool>) {
        let mut changes = Vec::new();
        let several = self.endpoints.len() > 1;
        let Some(state) = self.endpoints.get_mut(index) else {
            return (changes, self.pool);
        };
        let before = state.replace(up);
        if several && before != Some(up) {
            match (before, up) {
                (_, false) => changes.push(Change::EndpointDown),
                (Some(false), true) => changes.push(Change::EndpointUp),
                (_, true) => {}
            }
        }
        let pool = if self.endpoints.contains(&Some(true)) {
            true
        } else if self.endpoints.contains(&None) {
            return (changes, self.pool);
        } else {
            false
        };
        if self.pool.replace(pool) != Some(pool) {
            changes.push(if pool {
                Change::PoolUp
            } else {
                Change::PoolDown
            });
        }
        (changes, Some(pool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_clamd_reports_only_the_pool() {
        let mut seen = Seen::new(1);
        assert_eq!(seen.record(0, false), (vec![Change::PoolDown], Some(false)));
        assert_eq!(seen.record(0, false), (vec![], Some(false)));
        assert_eq!(seen.record(0, true), (vec![Change::PoolUp], Some(true)));
        assert_eq!(seen.record(0, true), (vec![], Some(true)));
    }

    #[test]
    fn one_of_several_down_is_no_alert_and_all_down_is() {
        let mut seen = Seen::new(2);
        // The first endpoint is checked down before the second is checked: no pool state yet.
        assert_eq!(seen.record(0, false), (vec![Change::EndpointDown], None));
        assert_eq!(seen.record(1, true), (vec![Change::PoolUp], Some(true)));
        assert_eq!(seen.record(0, false), (vec![], Some(true)));
        assert_eq!(seen.record(0, true), (vec![Change::EndpointUp], Some(true)));
        assert_eq!(
            seen.record(1, false),
            (vec![Change::EndpointDown], Some(true))
        );
        assert_eq!(
            seen.record(0, false),
            (vec![Change::EndpointDown, Change::PoolDown], Some(false))
        );
        assert_eq!(seen.record(1, false), (vec![], Some(false)));
        assert_eq!(
            seen.record(1, true),
            (vec![Change::EndpointUp, Change::PoolUp], Some(true))
        );
    }

    #[test]
    fn every_endpoint_down_at_the_start_is_the_alert_once_all_are_checked() {
        let mut seen = Seen::new(3);
        assert_eq!(seen.record(2, false), (vec![Change::EndpointDown], None));
        assert_eq!(seen.record(0, false), (vec![Change::EndpointDown], None));
        assert_eq!(
            seen.record(1, false),
            (vec![Change::EndpointDown, Change::PoolDown], Some(false))
        );
    }
}
