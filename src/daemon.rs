//! `handoff serve`: brings the gateway up, keeps it running, and takes it down cleanly.
//!
//! Start-up order matters: the config is validated and the state directory prepared before any
//! socket is bound, and systemd is told READY only once every listener is bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::live::LiveConfig;
use crate::state::StateLayout;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("preparing the state directory: {0}")]
    State(std::io::Error),
    #[error("binding {what} on {addr}: {source}")]
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

    for (what, addr) in [
        ("sftp", gateway.sftp_listen),
        ("https", gateway.https_listen),
        ("metrics", gateway.metrics_listen),
    ] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { what, addr, source })?;
        tracing::info!(listener = what, addr = %listener.local_addr().unwrap_or(addr), "listening");
        tokio::spawn(placeholder_accept(listener, shutdown.clone()));
    }

    tokio::spawn(live.clone().run(shutdown.clone()));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(interval) = watchdog_interval() {
        tokio::spawn(watchdog(interval, shutdown.clone()));
    }
    tracing::info!(config = %live.path().display(), "handoff is up");

    wait_for_stop(&shutdown).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    tracing::info!("handoff stopped");
    Ok(())
}

/// Accepts and closes connections on a listener whose protocol is not wired in yet.
async fn placeholder_accept(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => if let Err(e) = r {
                tracing::warn!(error = %e, "accept failed");
            }
        }
    }
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
