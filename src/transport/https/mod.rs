//! Mutual-TLS HTTPS drop boxes (hyper on tokio-rustls), and the read-only NOC API.
//!
//! A connection is admitted only with a client certificate that chains to a configured CA and is
//! not revoked; the certificate is then mapped to one account by subject or fingerprint. The box
//! operations go through [`crate::boxes`], exactly as SFTP's do; see `api` for the routes and
//! docs/https.md for the protocol.

mod api;
mod identity;
mod noc;
pub(crate) mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use identity::CertIdentity;
pub use tls::TlsError;

use crate::accounts::{AccountId, CounterpartId};
use crate::config::crl::{Crl, CrlError};
use crate::error::Chain;

use crate::services::Services;
use crate::transport::gate;

/// Time allowed for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP/2 frame a client may send. The protocol's default of 16 KiB made curl send an
/// upload in 16 KiB DATA frames; with this it sends its whole 64 KiB upload buffer per frame, and
/// an HTTP/2 upload ran ~20 % faster. It also bounds the one frame hyper holds per connection.
const H2_MAX_FRAME: u32 = 256 << 10;

/// Time a connection without an account has to take its 403 before it is dropped.
const UNMAPPED_LINGER: Duration = Duration::from_secs(5);

/// A valid certificate that maps to no account counts as a failed login of its source, as a
/// wrong SSH key does: a client that keeps trying is banned (docs/https.md).
fn score_unmapped(services: &Services, peer: SocketAddr) {
    let bans = services.limiter.record_failure(
        peer.ip(),
        None,
        crate::transport::limits::Failure::WrongCredential,
    );
    for b in &bans {
        services
            .metrics
            .bans
            .get_or_create(&vec![
                ("transport", "https".to_owned()),
                ("kind", b.kind().to_owned()),
            ])
            .inc();
        services.audit.record(
            crate::audit::Event::AuthBan,
            None,
            Some(peer),
            serde_json::json!({"ban": b.to_string()}),
        );
    }
}

/// A cached SHA-256 of an outbox file: size and time it was computed for, and the digest.
type CachedDigest = (u64, std::time::SystemTime, String);

/// The CRLs in force, sent to every connection whenever they change or one of them runs out
/// of grace, so that each connection checks its own certificate again.
#[derive(Clone)]
struct CrlState {
    crls: Arc<Vec<Crl>>,
    grace: Duration,
}

impl CrlState {
    fn of(snapshot: &crate::config::live::Snapshot) -> Result<CrlState, CrlError> {
        let mut crls = Vec::new();
        for p in &snapshot.config.gateway.crl {
            crls.extend(crate::config::crl::read(p)?);
        }
        Ok(CrlState {
            crls: Arc::new(crls),
            grace: snapshot.config.gateway.crl_grace,
        })
    }

    /// Why a certificate (its issuer's name, DER, and serial) may not be connected, if so.
    fn refuses(&self, issuer: &[u8], serial: &[u8], now: time::OffsetDateTime) -> Option<String> {
        self.crls.iter().find_map(|c| {
            if c.revokes(issuer, serial) {
                Some(format!("revoked by the CRL in {}", c.path.display()))
            } else if c.issuer_der == issuer && c.next_update.is_some_and(|t| t + self.grace < now)
            {
                Some(format!(
                    "the CRL of {} is past its nextUpdate and crl_grace",
                    c.issuer
                ))
            } else {
                None
            }
        })
    }
}

/// State shared by all HTTPS connections.
pub(crate) struct Shared {
    services: Services,
    tls: tls::TlsConfigs,
    crl: tokio::sync::watch::Sender<CrlState>,
    /// Requests in flight per account, bounded by `max_requests_per_account`.
    in_flight: Mutex<HashMap<AccountId, Arc<Semaphore>>>,
    /// SHA-256 of outbox files by (box, name), valid while size and mtime are unchanged.
    digests: Mutex<HashMap<(CounterpartId, String), CachedDigest>>,
}

pub struct HttpsServer {
    shared: Arc<Shared>,
}

impl HttpsServer {
    pub fn new(services: Services) -> Result<HttpsServer, TlsError> {
        let snapshot = services.live.snapshot();
        let tls = tls::TlsConfigs::new(&snapshot)?;
        let crl = CrlState::of(&snapshot).map_err(|e| TlsError::Crl(Chain(&e).to_string()))?;
        Ok(HttpsServer {
            shared: Arc::new(Shared {
                services,
                tls,
                crl: tokio::sync::watch::Sender::new(crl),
                in_flight: Mutex::new(HashMap::new()),
                digests: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Serves HTTPS on `listener` until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        tokio::spawn(watch_crls(self.shared.clone(), shutdown.clone()));
        let transport = crate::transport::limits::Transport::Https;
        while let Some(admitted) =
            gate::admit(&listener, &self.shared.services, transport, &shutdown).await
        {
            let gate::Admitted {
                socket: tcp,
                peer,
                slot,
            } = admitted;
            let shared = self.shared.clone();
            let end = shutdown.child_token();
            tokio::spawn(async move {
                let _slot = slot;
                connection(shared, tcp, peer, end).await
            });
        }
    }
}

/// Keeps the CRLs of the config in force: re-reads them when a reload swapped the config,
/// alerts when one passes its nextUpdate, and tells the connections when they changed or one
/// ran out of `crl_grace`. Checks once a second until `shutdown`.
async fn watch_crls(shared: Arc<Shared>, shutdown: CancellationToken) {
    use std::collections::HashSet;
    let services = &shared.services;
    let mut seen = Arc::as_ptr(&services.live.snapshot()) as usize;
    // CRLs (file, nextUpdate) already alerted, and already past their grace.
    let mut alerted: HashSet<(std::path::PathBuf, i64)> = HashSet::new();
    let mut past_grace: HashSet<(std::path::PathBuf, i64)> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = services.live.snapshot();
        let ptr = Arc::as_ptr(&snapshot) as usize;
        if ptr != seen {
            seen = ptr;
            match CrlState::of(&snapshot) {
                Ok(state) => {
                    shared.crl.send_replace(state);
                }
                // Validated with the config a moment ago; changed since. The old list stays.
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "CRL unreadable; the previous CRLs stay in force")
                }
            }
        }
        let state = shared.crl.borrow().clone();
        let now = time::OffsetDateTime::now_utc();
        let mut ran_out = false;
        for c in state.crls.iter() {
            let Some(next) = c.next_update.filter(|t| *t < now) else {
                continue;
            };
            let key = (c.path.clone(), next.unix_timestamp());
            if alerted.insert(key.clone()) {
                crate::metrics::alerts::raise_for(
                    services,
                    crate::audit::Alert::CrlStale,
                    None,
                    None,
                    serde_json::json!({"crl": c.path.display().to_string(), "issuer": c.issuer, "next_update": next.unix_timestamp(), "grace_seconds": state.grace.as_secs()}),
                );
            }
            if next + state.grace < now && past_grace.insert(key) {
                tracing::error!(crl = %c.path.display(), issuer = %c.issuer, "CRL past nextUpdate and crl_grace: refusing that CA's clients");
                ran_out = true;
            }
        }
        if ran_out {
            shared.crl.send_modify(|_| {});
        }
    }
}

/// Ends the connection (`end`) as soon as the CRLs in force refuse its certificate: a reloaded
/// CRL that revokes it, or its CA's CRL out of grace.
async fn close_when_crl_refuses(
    shared: Arc<Shared>,
    issuer: Vec<u8>,
    serial: Vec<u8>,
    peer: SocketAddr,
    account: Option<AccountId>,
    end: CancellationToken,
) {
    let mut changes = shared.crl.subscribe();
    loop {
        tokio::select! {
            _ = end.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let refused =
            changes
                .borrow_and_update()
                .refuses(&issuer, &serial, time::OffsetDateTime::now_utc());
        if let Some(reason) = refused {
            shared.services.audit.record(
                crate::audit::Event::HttpsRevoked,
                account.as_deref(),
                Some(peer),
                serde_json::json!({"reason": reason}),
            );
            end.cancel();
            return;
        }
    }
}

/// Issuer name (DER) and serial of a client certificate, as CRLs list them.
fn issuer_and_serial(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some((cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec()))
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, end: CancellationToken) {
    // The tasks watching this connection (revocation, CRLs) end with it.
    let _end_on_exit = end.clone().drop_guard();
    let services = &shared.services;
    let snapshot = services.live.snapshot();
    let (tcp, reset) = crate::transport::Resettable::new(tcp);
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.current(&snapshot));
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // No certificate, an unknown CA, a revoked or expired certificate all end here.
            services.audit.record(
                crate::audit::Event::HttpsHandshakeRefused,
                None,
                Some(peer),
                serde_json::json!({"reason": e.to_string()}),
            );
            services
                .metrics
                .auth_failures
                .get_or_create(&vec![
                    ("transport", "https".to_owned()),
                    ("reason", "certificate".to_owned()),
                ])
                .inc();
            return;
        }
        Err(_) => return,
    };
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    let identity = leaf.and_then(|leaf| CertIdentity::from_der(leaf));
    let issued = leaf.and_then(|leaf| issuer_and_serial(leaf));
    if let Some((issuer, serial)) = &issued {
        let refused = shared
            .crl
            .borrow()
            .refuses(issuer, serial, time::OffsetDateTime::now_utc());
        if let Some(reason) = refused {
            services.audit.record(
                crate::audit::Event::HttpsRefused,
                None,
                Some(peer),
                serde_json::json!({"reason": reason}),
            );
            return;
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let account = identity
        .as_ref()
        .and_then(|id| {
            snapshot
                .accounts
                .by_certificate(&id.subject, &id.fingerprint)
        })
        .filter(|a| a.check_active(now).is_ok())
        .cloned();
    let limits = &snapshot.config.gateway.limits;
    let guard = match &account {
        Some(a) => match services
            .sessions
            .register(&a.id, limits.max_sessions_per_account)
        {
            Ok(g) => Some(g),
            Err(e) => {
                services.audit.record(
                    crate::audit::Event::HttpsRefused,
                    Some(&a.id),
                    Some(peer),
                    serde_json::json!({"reason": e.to_string()}),
                );
                None
            }
        },
        None => {
            services.audit.record(
                crate::audit::Event::HttpsUnmappedCertificate,
                None,
                Some(peer),
                serde_json::json!({"subject": identity.as_ref().map(|i| i.subject.clone()), "sha256": identity.as_ref().map(|i| i.fingerprint.clone())}),
            );
            services
                .metrics
                .auth_failures
                .get_or_create(&vec![
                    ("transport", "https".to_owned()),
                    ("reason", "unmapped".to_owned()),
                ])
                .inc();
            score_unmapped(services, peer);
            None
        }
    };
    let account = if guard.is_some() { account } else { None };
    if let Some((issuer, serial)) = issued {
        tokio::spawn(close_when_crl_refuses(
            shared.clone(),
            issuer,
            serial,
            peer,
            account.as_ref().map(|a| a.id.clone()),
            end.clone(),
        ));
    }
    if let Some(g) = &guard {
        let revoked = g.token().clone();
        let end = end.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = revoked.cancelled() => end.cancel(),
                _ = end.cancelled() => {}
            }
        });
        services
            .metrics
            .sessions
            .get_or_create(&vec![("transport", "https".to_owned())])
            .inc();
    }

    // A connection without an account gets its 403 and is closed: it may not go on asking.
    let answered = CancellationToken::new();
    let close_after_answer = account.is_none();
    let ctx = Arc::new(api::Connection {
        shared: shared.clone(),
        account,
        peer,
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(H2_MAX_FRAME)
        .max_concurrent_streams(limits.max_requests_per_account.max(1))
        .keep_alive_interval(Duration::from_secs(30));
    let answered_by_service = answered.clone();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        let answered = answered_by_service.clone();
        async move {
            let http1 = req.version() < hyper::Version::HTTP_2;
            let mut response = api::handle(ctx, req).await;
            if close_after_answer {
                if http1 {
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                answered.cancel();
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let finished = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = answered.cancelled() => None,
        _ = end.cancelled() => {
            // Revoked or shutting down: reset the connection now, mid-request included, when
            // `conn`, which owns the socket, is dropped just below.
            reset.arm();
            Some(Ok(()))
        }
    };
    let finished = match finished {
        Some(r) => Some(r),
        None => {
            // HTTP/1.1 closes after the `Connection: close` answer; HTTP/2 sends GOAWAY.
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(UNMAPPED_LINGER, conn.as_mut())
                .await
                .ok()
        }
    };
    if let Some(Err(e)) = finished {
        tracing::debug!(%peer, error = %e, "https connection ended with an error");
    }
    if guard.is_some() {
        services
            .metrics
            .sessions
            .get_or_create(&vec![("transport", "https".to_owned())])
            .dec();
    }
}
