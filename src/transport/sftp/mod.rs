//! SFTP drop boxes: an SSH server (russh) that offers the `sftp` subsystem and nothing else.
//!
//! Each TCP connection runs one russh session with a `session::SshSession` handler that
//! authenticates against the live accounts, registers the session for revocation, and serves
//! SFTP over the box view of `view::SftpView`. The algorithms offered are chosen in
//! [`algorithms`] and `[gateway.ssh]`, and listed in docs/sftp.md.

pub mod algorithms;
pub mod packets;
mod requests;
mod session;
mod stream;
mod view;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::{Preferred, compression};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::keys;
use crate::services::Services;
use crate::sync::Recover;
use crate::transport::gate;
use crate::transport::limits::Transport;

/// How long a revoked or shut-down session gets to say goodbye before it is dropped.
const DISCONNECT_GRACE: Duration = Duration::from_millis(300);
/// How long a new connection waits for the slot a silent one was made to give up.
const SLOT_HANDOVER: Duration = Duration::from_secs(2);

/// Connections that have not sent their SSH version line yet, oldest first. A client sends it as
/// soon as it connects, so one still silent when every unauthenticated slot is held is the
/// likeliest to be an idle flood: it gives its slot up to a newcomer.
#[derive(Clone, Default)]
struct Silent(Arc<std::sync::Mutex<SilentList>>);

#[derive(Default)]
struct SilentList {
    next: u64,
    /// By arrival: id, peer, the token that cuts its socket.
    queue: std::collections::VecDeque<(u64, SocketAddr, CancellationToken)>,
}

impl Silent {
    /// Records a new connection as silent until the returned guard is dropped.
    fn add(&self, peer: SocketAddr, cut: CancellationToken) -> Heard {
        let mut list = self.0.locked();
        list.next += 1;
        let id = list.next;
        list.queue.push_back((id, peer, cut));
        Heard {
            silent: self.clone(),
            id,
        }
    }

    /// Takes the oldest silent connection off the list: its peer and the token that cuts it.
    fn displace_oldest(&self) -> Option<(SocketAddr, CancellationToken)> {
        self.0.locked().queue.pop_front().map(|(_, p, c)| (p, c))
    }
}

/// Takes its connection off the silent list when dropped: its version line came, or it ended.
struct Heard {
    silent: Silent,
    id: u64,
}

impl Drop for Heard {
    fn drop(&mut self) {
        self.silent
            .0
            .locked()
            .queue
            .retain(|(id, _, _)| *id != self.id);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error("loading host key")]
    HostKey(#[from] keys::KeyError),
    #[error("no host key configured")]
    NoHostKey,
    #[error("gateway.ssh: {0}")]
    Algorithms(String),
    #[error(transparent)]
    Unimplemented(#[from] algorithms::Unimplemented),
}

fn server_config(services: &Services) -> Result<russh::server::Config, SftpError> {
    let snapshot = services.live.snapshot();
    let gateway = &snapshot.config.gateway;
    let host_keys = gateway
        .host_keys
        .iter()
        .map(|p| keys::load_host_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    if host_keys.is_empty() {
        return Err(SftpError::NoHostKey);
    }
    // The config check refused bad names already; this is for a config that skipped it.
    let effective = algorithms::Effective::of(&gateway.ssh).map_err(|errors| {
        let text: Vec<String> = errors
            .iter()
            .map(|(kind, e)| format!("{}: {e}", kind.key()))
            .collect();
        SftpError::Algorithms(text.join("; "))
    })?;
    let types: Vec<_> = host_keys.iter().map(|k| k.algorithm()).collect();
    if effective.host_keys_for(&types).is_empty() {
        return Err(SftpError::Algorithms(
            "no host key algorithm offered matches a key in host_keys".to_owned(),
        ));
    }
    let offered = effective.to_russh()?;
    // Password is offered per account, in each refusal (session.rs, `methods_for`).
    let mut methods = russh::MethodSet::empty();
    methods.push(russh::MethodKind::PublicKey);
    Ok(russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-handoff")),
        methods,
        // Failed attempts wait this long, whatever failed; the first `none` probe does not.
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: host_keys,
        window_size: 16 << 20,
        maximum_packet_size: 65535,
        channel_buffer_size: 256,
        preferred: Preferred {
            kex: Cow::Owned(offered.kex),
            key: Cow::Owned(offered.key),
            cipher: Cow::Owned(offered.cipher),
            mac: Cow::Owned(offered.mac),
            compression: Cow::Borrowed(&[compression::NONE]),
            ..Preferred::DEFAULT
        },
        max_auth_attempts: 6,
        inactivity_timeout: Some(Duration::from_secs(900)),
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    })
}

/// Closes the connection unless the client authenticates within `grace` of connecting
/// (OpenSSH's `LoginGraceTime`).
async fn login_grace(
    services: Services,
    peer: std::net::SocketAddr,
    grace: Duration,
    authenticated: CancellationToken,
    connection_end: CancellationToken,
) {
    tokio::select! {
        biased;
        _ = authenticated.cancelled() => {}
        _ = connection_end.cancelled() => {}
        _ = tokio::time::sleep(grace) => {
            services.audit.record(
                crate::audit::Event::SftpTimeout,
                None,
                Some(peer),
                serde_json::json!({"phase": "authentication", "seconds": grace.as_secs()}),
            );
            connection_end.cancel();
        }
    }
}

/// The SFTP server, ready to serve: host keys loaded, algorithms chosen.
pub struct SftpServer {
    services: Services,
    config: Arc<russh::server::Config>,
}

impl SftpServer {
    pub fn new(services: Services) -> Result<SftpServer, SftpError> {
        let config = Arc::new(server_config(&services)?);
        Ok(SftpServer { services, config })
    }

    /// Serves SFTP on `listener` until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        serve(self.services, self.config, listener, shutdown).await
    }
}

async fn serve(
    services: Services,
    config: Arc<russh::server::Config>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let silent = Silent::default();
    while let Some(admitted) = gate::admit(&listener, &services, Transport::Sftp, &shutdown).await {
        let gate::Admitted { socket, peer, slot } = admitted;
        let refuse = |reason: String| {
            services.audit.record(
                crate::audit::Event::SftpConnectionRefused,
                None,
                Some(peer),
                serde_json::json!({"reason": reason}),
            );
        };
        // When every slot is held, the oldest connection that has not even sent its version
        // line gives its slot up to this one: idle connections cannot keep clients out.
        let unauthenticated = match services.limiter.unauthenticated_slot() {
            Ok(s) => Some(s),
            Err(full) => match silent.displace_oldest() {
                Some((victim, cut)) => {
                    cut.cancel();
                    services.audit.record(
                        crate::audit::Event::SftpConnectionRefused,
                        None,
                        Some(victim),
                        serde_json::json!({"reason": format!("{full}; silent, its slot given to a new connection")}),
                    );
                    None
                }
                None => {
                    refuse(full.to_string());
                    continue;
                }
            },
        };
        let limits = services.live.limits();
        let connection_end = shutdown.child_token();
        let config = config.clone();
        let services = services.clone();
        let cut = CancellationToken::new();
        let socket = stream::Cuttable::new(socket, cut.clone());
        let not_yet_heard = silent.add(peer, cut.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let unauthenticated = match unauthenticated {
                Some(s) => s,
                None => match services
                    .limiter
                    .unauthenticated_slot_within(SLOT_HANDOVER)
                    .await
                {
                    Some(s) => s,
                    None => return,
                },
            };
            let authenticated = CancellationToken::new();
            let login = session::Login {
                unauthenticated,
                authenticated: authenticated.clone(),
            };
            let handler =
                session::SshSession::new(services.clone(), peer, connection_end.clone(), login);
            tokio::spawn(login_grace(
                services.clone(),
                peer,
                limits.login_grace_time,
                authenticated,
                connection_end.clone(),
            ));
            // The session task reads the socket until it ends; cutting the socket ends it even
            // where russh would not act on a disconnect (a key exchange the client stalls).
            let _cut_on_exit = cut.clone().drop_guard();
            let started = tokio::select! {
                r = tokio::time::timeout(
                    limits.ssh_version_timeout,
                    russh::server::run_stream(config, socket, handler),
                ) => r,
                _ = connection_end.cancelled() => return,
            };
            drop(not_yet_heard);
            let running = match started {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = ?e, "ssh handshake failed");
                    return;
                }
                Err(_) => {
                    services.audit.record(
                        crate::audit::Event::SftpTimeout,
                        None,
                        Some(peer),
                        serde_json::json!({"phase": "version", "seconds": limits.ssh_version_timeout.as_secs()}),
                    );
                    return;
                }
            };
            let handle = running.handle();
            tokio::pin!(running);
            tokio::select! {
                r = &mut running => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = ?e, "ssh session ended with an error");
                    }
                }
                _ = connection_end.cancelled() => {
                    let bye = handle.disconnect(russh::Disconnect::ByApplication, "session closed by the gateway".into(), "en".into());
                    // The session sends the goodbye and ends; if it does not within the grace
                    // (the client stalls), the socket is cut on the way out.
                    let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
                        let _ = bye.await;
                        let _ = (&mut running).await;
                    })
                    .await;
                }
            }
            connection_end.cancel();
        });
    }
}
