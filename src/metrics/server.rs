//! The metrics listener: `GET /metrics` (Prometheus text) and `GET /` or `/status`, a read-only
//! HTML page for the NOC (no JavaScript): health, queues, overdue files and the last receipts.
//! Bind it to a local or management address only; it has no authentication.

use std::convert::Infallible;
use std::fmt::Write;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::services::Services;

pub async fn serve(services: Services, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let services = services.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let services = services.clone();
                async move { Ok::<_, Infallible>(respond(&services, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn respond(services: &Services, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            services.metrics.encode(),
        ),
        "/" | "/status" => {
            let s = services.clone();
            let html = tokio::task::spawn_blocking(move || status_page(&s))
                .await
                .unwrap_or_default();
            (StatusCode::OK, "text/html; charset=utf-8", html)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn status_page(services: &Services) -> String {
    let status = super::noc::Status::gather(services);
    let clock = crate::audit::clock::status();
    let overdue = super::alerts::overdue(services);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\"><title>handoff status</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}.bad{{color:#b00;font-weight:bold}}</style></head><body>\
         <h1>handoff status</h1><p>{} · clock {} (max error {} µs) · live sessions {}</p>",
        esc(&crate::audit::clock::rfc3339(
            time::OffsetDateTime::now_utc()
        )),
        if clock.synchronised {
            "synchronised"
        } else {
            "<span class=\"bad\">NOT synchronised</span>"
        },
        clock.maxerror_us,
        status.sessions
    );
    let _ = write!(
        h,
        "<h2>Queues</h2><table><tr><th>spool</th><td>{}</td></tr><tr><th>quarantine</th><td>{}</td></tr></table>",
        status.spool, status.quarantine
    );
    let _ = write!(
        h,
        "<h2>Store</h2><table><tr><th>backend</th><th>state</th><th>last error</th></tr><tr><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        status.store.backend,
        if status.store.up {
            "up"
        } else {
            "<span class=\"bad\">down</span>"
        },
        esc(status.store.error.as_deref().unwrap_or("-"))
    );
    h.push_str("<h2>Scanner</h2><table><tr><th>clamd</th><th>state</th><th>last error</th></tr>");
    for e in &status.scanner.endpoints {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.endpoint),
            if e.up {
                "up"
            } else {
                "<span class=\"bad\">down</span>"
            },
            esc(e.error.as_deref().unwrap_or("-"))
        );
    }
    h.push_str("</table>");
    if !status.scanner.up {
        h.push_str("<p class=\"bad\">no clamd is up: files wait unscanned</p>");
    }
    let bans = services.limiter.bans();
    if bans.is_empty() {
        h.push_str("<h2>Bans</h2><p>no bans in force</p>");
    } else {
        h.push_str("<h2>Bans</h2><table><tr><th>source</th><th>account</th><th>until</th><th>score</th></tr>");
        for b in &bans {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b.source),
                esc(b.account.as_deref().unwrap_or("-")),
                esc(&crate::audit::clock::rfc3339(b.until().into())),
                b.score
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Boxes</h2><table><tr><th>counterpart</th><th>inbox (waiting)</th><th>outbox (not collected)</th><th>receipts</th></tr>");
    for b in &status.boxes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.id),
            b.counts.inbox,
            b.counts.outbox,
            b.counts.receipts
        );
    }
    h.push_str("</table><h2>Overdue</h2>");
    match &overdue {
        None => h.push_str("<p>no receipts yet</p>"),
        Some(o) if o.accepted.is_empty() && o.delivered.is_empty() => {
            h.push_str("<p>nothing overdue</p>")
        }
        Some(o) => {
            h.push_str("<table><tr><th>file</th><th>stuck at</th><th>since</th><th>sender</th><th>recipient</th></tr>");
            for (what, list) in [
                ("accepted, not delivered", &o.accepted),
                ("delivered, not retrieved", &o.delivered),
            ] {
                for r in list {
                    let _ = write!(
                        h,
                        "<tr class=\"bad\"><td>{}</td><td>{what}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&r.file_id),
                        esc(&r.time),
                        esc(&r.sender),
                        esc(r.recipient.as_deref().unwrap_or("-"))
                    );
                }
            }
            h.push_str("</table>");
        }
    }
    h.push_str("<h2>Last 100 receipts</h2>");
    let last = services
        .store
        .ledger_read_only()
        .and_then(|l| l.map_or(Ok(Vec::new()), |l| l.last(100)));
    match last {
        Ok(list) if !list.is_empty() => {
            h.push_str("<table><tr><th>#</th><th>time</th><th>hop</th><th>file</th><th>name</th><th>sender</th><th>recipient</th><th>note</th></tr>");
            for r in list.iter().rev() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    r.seq,
                    esc(&r.time),
                    r.hop,
                    esc(&r.file_id),
                    esc(&r.original_name),
                    esc(&r.sender),
                    esc(r.recipient.as_deref().unwrap_or("-")),
                    esc(&noc_note(r))
                );
            }
            h.push_str("</table>");
        }
        _ => h.push_str("<p>no receipts yet</p>"),
    }
    h.push_str("</body></html>\n");
    h
}

/// The status page's note on a receipt: its reasons' rules, files and lines, never their
/// messages (they may quote personal data, which only the sender's receipt may carry).
fn noc_note(r: &crate::receipts::Receipt) -> String {
    let Some(first) = r.reasons.first() else {
        return String::new();
    };
    let n = r.reasons.len();
    let kind = if r.hop == crate::events::Hop::Rejected {
        "rejected"
    } else {
        "warnings"
    };
    if n == 1 {
        format!("{kind}: {}", first.redacted())
    } else {
        format!("{kind}: {n} problems; first: {}", first.redacted())
    }
}
