//! The door both transports open connections at: accept, then let in only what the gateway can
//! record and may serve (the audit log writable, the source not banned nor over its rate, a
//! connection slot free), so SFTP and HTTPS refuse the same connections the same way.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::limits::Transport;
use crate::audit::Event;
use crate::services::Services;

/// A connection let in, with the slot it holds until it ends.
pub struct Admitted {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

/// Waits for the next connection the gateway lets in; `None` once `shutdown` is cancelled.
/// Refused connections are closed at once and audited (`<transport>.connection_refused`).
pub async fn admit(
    listener: &TcpListener,
    services: &Services,
    transport: Transport,
    shutdown: &CancellationToken,
) -> Option<Admitted> {
    let refused_event = match transport {
        Transport::Sftp => Event::SftpConnectionRefused,
        Transport::Https => Event::HttpsConnectionRefused,
    };
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, ?transport, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let refuse = |reason: String| {
            services.audit.record(
                refused_event,
                None,
                Some(peer),
                serde_json::json!({ "reason": reason }),
            );
        };
        if !services.audit.writable() {
            // Fail closed: nothing happens that the audit log cannot record (alerted once).
            tracing::debug!(%peer, "connection closed: the audit log cannot be written");
            continue;
        }
        if let Err(refused) = services.limiter.check_connection(peer.ip()) {
            refuse(refused.to_string());
            continue;
        }
        // Closed on arrival when the gateway holds as many connections as it allows; the slot
        // is held until the connection ends.
        match services.limiter.connection_slot(transport) {
            Ok(slot) => {
                let _ = socket.set_nodelay(true);
                return Some(Admitted { socket, peer, slot });
            }
            Err(full) => refuse(full.to_string()),
        }
    }
}
