//! `handoff serve`: brings the gateway up, keeps it running, and takes it down cleanly.
//!
//! Start-up order matters: the config is validated and the state directory prepared before any
//! socket is bound, and systemd is told READY only once every listener is bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::live::LiveConfig;
use crate::error::Chain;
use crate::services::Services;
use crate::state::StateLayout;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("preparing the state directory")]
    State(#[source] std::io::Error),
    /// The lock's errors say whose it is.
    #[error(transparent)]
    StateLock(#[from] crate::state::LockError),
    /// The database's errors say which setting or what the database answered.
    #[error(transparent)]
    Store(#[from] crate::store::DatabaseError),
    #[error("starting the pipeline")]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("receipt key")]
    ReceiptKey(#[from] crate::keys::KeyError),
    #[error("master key")]
    MasterKey(#[source] crate::keys::KeyError),
    /// The ledger's errors name it.
    #[error(transparent)]
    Ledger(#[from] crate::receipts::ledger::LedgerError),
    #[error("starting the copy of the audit log to the database")]
    AuditCopy(#[source] std::io::Error),
    #[error("starting the upload writer threads")]
    Writers(#[source] std::io::Error),
    #[error("starting SFTP")]
    Sftp(#[from] crate::transport::sftp::SftpError),
    #[error("starting HTTPS")]
    Https(#[from] crate::transport::https::TlsError),
    #[error("binding {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the daemon until SIGTERM/SIGINT or `shutdown` is cancelled.
pub async fn serve(live: Arc<LiveConfig>, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let snapshot = live.snapshot();
    let gateway = &snapshot.config.gateway;
    let layout = StateLayout::new(&gateway.state_dir);
    layout
        .create(&snapshot.config)
        .map_err(DaemonError::State)?;
    let _lock = layout.lock()?;
    let store = crate::store::Store::of(gateway)?;
    let mut coordinating = store.take_for_node(shutdown.clone())?;
    if let crate::store::Store::Postgres(_) = &store {
        let dropped: usize = crate::store::files::folders(&layout)
            .unwrap_or_default()
            .iter()
            .filter_map(|dir| crate::store::SharedFiles::drop_copies(dir).ok())
            .sum();
        if dropped > 0 {
            tracing::info!(
                removed = dropped,
                "copies of shared files left from the last run removed"
            );
        }
    }
    let audit = Audit::open(&layout)?;
    audit.record(crate::audit::Event::DaemonStart, None, None, serde_json::json!({"config": live.path().display().to_string(), "version": env!("CARGO_PKG_VERSION")}));
    let master =
        crate::keys::load_master_key(&gateway.master_key).map_err(DaemonError::MasterKey)?;
    let (services, box_events) =
        Services::new(live.clone(), audit.clone(), Arc::new(master), store)
            .map_err(DaemonError::Writers)?;
    tokio::spawn(audit_account_events(
        audit.clone(),
        live.subscribe(),
        shutdown.clone(),
    ));
    tokio::spawn(
        services
            .sessions
            .clone()
            .enforce(live.subscribe(), shutdown.clone()),
    );
    tokio::spawn(housekeeping(services.clone(), shutdown.clone()));
    // Bans survive a restart; a ban list that cannot be read is replaced, not a reason to stay down.
    match services.limiter.persist_to(layout.ban_list()) {
        Ok(n) if n > 0 => tracing::info!(bans = n, "bans still in force taken over"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %Chain(&e), "ban list unreadable; starting without it"),
    }
    crate::transport::bans::apply_requests(&services, &layout.unban_requests());
    tokio::spawn(crate::transport::bans::serve_requests(
        services.clone(),
        shutdown.clone(),
    ));
    let pipeline = crate::pipeline::Pipeline::start(&services, box_events, shutdown.clone())?;
    let receipt_key = crate::keys::load_receipt_key(&gateway.receipt_key)?;
    let ledger = services.store.ledger()?;
    let issuer = crate::receipts::issuer::Issuer::new(ledger, receipt_key, services.boxes.clone());
    // What one node does for all: the inboxes' watch and retention, the receipts, the alerts.
    // With the local store this node is the only one and starts it now; on a database, the
    // coordinating node, once no other node is.
    let work = {
        let (services, shutdown) = (services.clone(), shutdown.clone());
        move || -> Result<(), DaemonError> {
            pipeline.coordinate(shutdown.clone())?;
            issuer.spawn(pipeline.event_log(), shutdown.clone());
            tokio::spawn(crate::metrics::alerts::watch(services, shutdown));
            Ok(())
        }
    };
    if *coordinating.borrow() {
        work()?;
    } else {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                up = coordinating.wait_for(|now| *now) => if up.is_ok() && let Err(e) = work() {
                    tracing::error!(error = %Chain(&e), "starting the coordination: this node stops");
                    shutdown.cancel();
                }
            }
        });
    }
    if let crate::store::Store::Postgres(db) = &services.store {
        crate::audit::ship::spawn(
            layout.audit().join("audit.log"),
            db.clone(),
            gateway.store.node_name(),
            shutdown.clone(),
        )
        .map_err(DaemonError::AuditCopy)?;
    }

    if let Some(listener) = bind("sftp", gateway.sftp_listen).await? {
        let server = crate::transport::sftp::SftpServer::new(services.clone())?;
        tokio::spawn(server.serve(listener, shutdown.clone()));
    }
    if let Some(listener) = bind("https", gateway.https_listen).await? {
        let server = crate::transport::https::HttpsServer::new(services.clone())?;
        tokio::spawn(server.serve(listener, shutdown.clone()));
    }
    if let Some(listener) = bind("metrics", gateway.metrics_listen).await? {
        tokio::spawn(crate::metrics::server::serve(
            services.clone(),
            listener,
            shutdown.clone(),
        ));
    }

    // `run` listens for SIGHUP and watches the file from this call on, before READY: a SIGHUP
    // after READY is never lost nor fatal (the default action).
    tokio::spawn(live.clone().run(audit.clone(), shutdown.clone()));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(interval) = watchdog_interval() {
        tokio::spawn(watchdog(interval, shutdown.clone()));
    }
    tracing::info!(config = %live.path().display(), "handoff is up");

    wait_for_stop(&shutdown).await;
    services.audit.record(
        crate::audit::Event::DaemonStop,
        None,
        None,
        serde_json::json!({}),
    );
    services.audit.flush(Duration::from_secs(5));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    tracing::info!("handoff stopped");
    if let crate::store::Store::Postgres(db) = &services.store
        && let Some(why) = db.lost()
    {
        return Err(DaemonError::Store(why));
    }
    Ok(())
}

/// Records every account event (removed, changed, expired, added) in the audit log.
async fn audit_account_events(
    audit: Audit,
    mut events: tokio::sync::broadcast::Receiver<crate::accounts::AccountEvent>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv() => match ev {
                Ok(ev) => audit.record(crate::audit::Event::AccountChanged, Some(&ev.account), None, serde_json::json!({"change": ev.change.to_string()})),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => audit.record(crate::audit::Event::AccountEventsLost, None, None, serde_json::json!({"missed": n})),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Periodic chores: partial uploads past their age, idle limiter state.
async fn housekeeping(services: Services, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let max_age = services
            .live
            .snapshot()
            .config
            .gateway
            .retention
            .partial_upload;
        let layout = services.layout.clone();
        match tokio::task::spawn_blocking(move || crate::boxes::sweep_partials(&layout, max_age))
            .await
        {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "removed stale partial uploads"),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping partial uploads"),
            _ => {}
        }
        services.limiter.housekeeping();
        if let Some(files) = services.files.clone() {
            let layout = services.layout.clone();
            let collect = services.store.coordinates();
            let pruned = tokio::task::spawn_blocking(move || {
                if collect {
                    match files.collect_orphans(ORPHAN_BLOB_AGE) {
                        Ok(n) if n > 0 => {
                            tracing::info!(removed = n, "blobs of files never completed removed")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %Chain(&e), "collecting blobs of files never completed")
                        }
                    }
                }
                prune_copies(&files, &layout)
            });
            match pruned.await {
                Ok(n) if n > 0 => tracing::info!(
                    removed = n,
                    "removed this node's copies of files gone from the database"
                ),
                _ => {}
            }
        }
    }
}

/// How old a blob that names no file must be before the coordinating node removes it: a large file
/// being written has no file yet, for as long as its writing takes.
const ORPHAN_BLOB_AGE: Duration = Duration::from_secs(24 * 3600);

/// How long a node keeps its copy of a file the database no longer has: long enough that a
/// copy just written is never taken for one left behind.
const STALE_COPY_AGE: Duration = Duration::from_secs(600);

/// Removes the node's copies of box files, spool and quarantine files that are gone from the
/// database (docs/cluster.md, "What stays on a node"). Returns how many.
fn prune_copies(files: &crate::store::SharedFiles, layout: &StateLayout) -> usize {
    crate::store::files::folders(layout)
        .unwrap_or_default()
        .iter()
        .map(|dir| match files.prune_copies(dir, STALE_COPY_AGE) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %Chain(&e), "pruning this node's copies");
                0
            }
        })
        .sum()
}

/// Binds one listener of the config, if it is configured.
async fn bind(
    what: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, DaemonError> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { what, addr, source })?;
    tracing::info!(listener = what, addr = %listener.local_addr().unwrap_or(addr), "listening");
    Ok(Some(listener))
}

async fn wait_for_stop(shutdown: &CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        shutdown.cancelled().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
        _ = shutdown.cancelled() => {}
    }
}

/// Half the interval systemd expects pings at, as sd_watchdog_enabled(3) advises.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

async fn watchdog(interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
        }
    }
}
