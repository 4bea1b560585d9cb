//! The HTTP routes of a drop box: upload, listings, download, acknowledgement. The NOC API
//! answers beside them ([`super::noc`]).
//!
//! ```text
//! PUT    /inbox/{name}        upload (streamed; Content-Length or chunked)      201
//! GET    /inbox/              files waiting to be accepted (JSON)                200
//! GET    /outbox/             files for you: name, size, time, sha256 (JSON)     200
//! GET    /outbox/{name}       download, Range supported; a full read = retrieved 200/206
//! DELETE /outbox/{name}       acknowledge                                        204
//! GET    /receipts/           receipts (JSON)                                    200
//! GET    /receipts/{id}       one receipt                                        200
//! GET    /noc/status          NOC accounts only                                  200
//! GET    /noc/receipts?since= NOC accounts only: receipts as JSON lines         200
//! ```
//! Maintainers address a box in their scope as `/{counterpart-id}/outbox/...`.
//! Errors are `{"error": ..., "detail": ...}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::Shared;
use crate::accounts::{Account, CounterpartId, Role};
use crate::boxes::{BoxError, BoxEvent, DropBox, FileName, Folder};
use crate::events::Channel;
use crate::sync::Recover;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// One TLS connection: who it is, from where.
pub struct Connection {
    pub shared: Arc<Shared>,
    /// `None` when the certificate maps to no active account: every request gets 403.
    pub account: Option<Account>,
    pub peer: SocketAddr,
}

/// An error as the client sees it.
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        detail: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            error,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// A failure of the gateway itself; the detail stays in the log, not in the answer.
    pub(super) fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    fn bad_path(detail: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_path", detail)
    }
}

impl From<BoxError> for ApiError {
    fn from(e: BoxError) -> ApiError {
        let (status, error) = match &e {
            BoxError::BadName { .. } | BoxError::Escape => (StatusCode::BAD_REQUEST, "bad_path"),
            BoxError::PermissionDenied(_) | BoxError::NoBox(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            BoxError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            BoxError::NameTaken => (StatusCode::CONFLICT, "name_taken"),
            BoxError::Empty => (StatusCode::BAD_REQUEST, "empty_file"),
            BoxError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            BoxError::OutOfOrder(_) => (StatusCode::BAD_REQUEST, "out_of_order"),
            BoxError::Buffered { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            BoxError::InsufficientStorage => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            BoxError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            BoxError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let detail = match &e {
            BoxError::Io(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        ApiError::new(status, error, detail)
    }
}

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(super) fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: ApiError) -> Response<Body> {
    let mut r = json_response(e.status, json!({"error": e.error, "detail": e.detail}));
    if let Some(secs) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// Decodes one path segment; refuses anything that could change the path's shape.
pub(super) fn decode_segment(raw: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .ok_or_else(|| ApiError::bad_path("bad percent-encoding"))?;
            let b = u8::from_str_radix(hex, 16)
                .map_err(|_| ApiError::bad_path("bad percent-encoding"))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| ApiError::bad_path("path is not UTF-8"))?;
    if s.contains('/') || s.contains('\\') {
        return Err(ApiError::bad_path("encoded slash in path"));
    }
    if s.contains('\0') {
        return Err(ApiError::bad_path("NUL in path"));
    }
    if s == "." || s == ".." {
        return Err(ApiError::bad_path("dot segments are not allowed"));
    }
    Ok(s)
}

/// The decoded segments of a path; a trailing slash is dropped.
fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed.split('/').map(decode_segment).collect()
}

/// Request body bytes read and discarded before an error answer, so that the client sees the
/// answer instead of a reset caused by unread data.
const DRAIN_LIMIT: usize = 1 << 20;

pub async fn handle(conn: Arc<Connection>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let result = route(&conn, Request::from_parts(parts, ()), &mut body).await;
    let (response, bytes) = match result {
        Ok((r, bytes)) => (r, bytes),
        Err(e) => {
            if let Some(mut unread) = body.take() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    let mut seen = 0;
                    while seen < DRAIN_LIMIT {
                        match unread.frame().await {
                            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                            _ => break,
                        }
                    }
                })
                .await;
            }
            (error_response(e), 0)
        }
    };
    let services = &conn.shared.services;
    services.audit.record(
        crate::audit::Event::HttpsRequest,
        conn.account.as_ref().map(|a| a.id.as_str()),
        Some(conn.peer),
        json!({"method": method.as_str(), "path": path, "status": response.status().as_u16(), "bytes": bytes, "ms": started.elapsed().as_millis() as u64}),
    );
    response
}

pub(super) type Routed = Result<(Response<Body>, u64), ApiError>;

async fn route(conn: &Arc<Connection>, req: Request<()>, body: &mut Option<Incoming>) -> Routed {
    let Some(account) = conn.account.clone() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the client certificate is not mapped to an active account",
        ));
    };
    let services = &conn.shared.services;
    if let Err(refused) = services.limiter.check_request(conn.peer.ip(), &account.id) {
        let secs = match refused {
            crate::transport::limits::Refused::RateLimited { retry_after } => {
                retry_after.as_secs().max(1)
            }
            crate::transport::limits::Refused::Banned { remaining, .. } => {
                remaining.as_secs().max(1)
            }
        };
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry later",
        );
        e.retry_after = Some(secs);
        return Err(e);
    }
    let _permit = {
        let max = services.live.limits().max_requests_per_account as usize;
        let sem = {
            let mut map = conn.shared.in_flight.locked();
            map.entry(account.id.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max.max(1))))
                .clone()
        };
        sem.try_acquire_owned().map_err(|_| {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many requests in flight for this account",
            );
            e.retry_after = Some(1);
            e
        })?
    };
    let segs = segments(req.uri().path())?;
    if account.role == Role::Noc {
        return super::noc::route(conn, &req, &segs).await;
    }
    if account.role == Role::Operator {
        // Operators have no certificate and work from the gateway's command line; a match
        // here would be a mistake in the directory, refused rather than served.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "operators do not use the HTTPS API",
        ));
    }
    if segs.first().map(String::as_str) == Some("noc") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the NOC API is for NOC accounts",
        ));
    }
    let snapshot = services.live.snapshot();
    let (owner, rest) = if account.is_counterpart() {
        (account.id.as_counterpart(), &segs[..])
    } else {
        match segs.split_first() {
            Some((first, rest)) => (
                // Not an id at all: no box of that name either.
                CounterpartId::new(first).map_err(|_| BoxError::NoBox(first.clone()))?,
                rest,
            ),
            None => {
                return Ok((
                    json_response(StatusCode::OK, json!({"boxes": account.boxes})),
                    0,
                ));
            }
        }
    };
    let dropbox = DropBox::open(
        &services.layout,
        services.files.as_ref(),
        &snapshot,
        &services.master,
        &account.id,
        &owner,
        Channel::Https,
    )?;
    match (req.method().clone(), rest) {
        (Method::GET, []) => Ok((
            json_response(
                StatusCode::OK,
                json!({"folders": ["inbox", "outbox", "receipts"]}),
            ),
            0,
        )),
        (Method::GET, [folder]) => list(conn, &dropbox, folder_named(folder)?).await,
        (Method::PUT, [folder, name]) if folder == "inbox" => {
            let name = FileName::new(name)?;
            upload(conn, &dropbox, name, &req, body).await
        }
        (Method::GET, [folder, name]) => {
            download(
                conn,
                &dropbox,
                folder_named(folder)?,
                FileName::new(name)?,
                &req,
            )
            .await
        }
        (Method::DELETE, [folder, name]) => {
            let folder = folder_named(folder)?;
            let name = FileName::new(name)?;
            dropbox.acknowledge(folder, &name)?;
            emit(
                conn,
                BoxEvent::Acknowledged {
                    account: owner,
                    actor: dropbox.actor().to_owned(),
                    channel: Channel::Https,
                    name,
                },
            );
            Ok((
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(full(Bytes::new()))
                    .unwrap_or_else(|_| Response::new(full(Bytes::new()))),
                0,
            ))
        }
        (Method::PUT, [_, _]) => {
            Err(BoxError::PermissionDenied("only the inbox accepts uploads").into())
        }
        (_, [_] | [_, _]) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed here",
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path",
        )),
    }
}

fn folder_named(s: &str) -> Result<Folder, ApiError> {
    Folder::from_name(s)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such folder"))
}

fn emit(conn: &Connection, ev: BoxEvent) {
    if conn
        .shared
        .services
        .box_events
        .try_send(ev.clone())
        .is_err()
    {
        tracing::warn!(?ev, "box event queue full");
    }
}

fn rfc3339(t: SystemTime) -> String {
    crate::audit::clock::rfc3339(time::OffsetDateTime::from(t))
}

async fn list(conn: &Arc<Connection>, dropbox: &DropBox, folder: Folder) -> Routed {
    let entries = dropbox.list(folder)?;
    let mut files = Vec::with_capacity(entries.len());
    for e in entries {
        let mut item =
            json!({"name": e.name.as_str(), "size": e.size, "time": rfc3339(e.modified)});
        if folder == Folder::Outbox {
            item["sha256"] = json!(digest(conn, dropbox, &e).await?);
        }
        files.push(item);
    }
    Ok((
        json_response(
            StatusCode::OK,
            json!({"folder": folder.as_str(), "files": files}),
        ),
        0,
    ))
}

/// SHA-256 of an outbox file, cached while its size and time are unchanged.
async fn digest(
    conn: &Arc<Connection>,
    dropbox: &DropBox,
    e: &crate::boxes::Entry,
) -> Result<String, ApiError> {
    let key = (dropbox.owner().to_owned(), e.name.as_str().to_owned());
    if let Some((size, modified, sha)) = conn.shared.digests.locked().get(&key)
        && *size == e.size
        && *modified == e.modified
    {
        return Ok(sha.clone());
    }
    let (file, _) = dropbox.open_read(Folder::Outbox, &e.name)?;
    let sha =
        tokio::task::spawn_blocking(move || crate::spool::sha256_of(file).map(|d| d.to_hex()))
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(|e| ApiError::from(BoxError::Io(e)))?;
    conn.shared
        .digests
        .locked()
        .insert(key, (e.size, e.modified, sha.clone()));
    Ok(sha)
}

async fn upload(
    conn: &Arc<Connection>,
    dropbox: &DropBox,
    name: FileName,
    req: &Request<()>,
    body: &mut Option<Incoming>,
) -> Routed {
    let limit = dropbox.max_upload();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BoxError::TooLarge { limit }.into());
    }
    let idle = conn.shared.services.live.limits().body_idle_timeout;
    if !conn.shared.services.takes_uploads() {
        return Err(BoxError::Unavailable.into());
    }
    let upload = dropbox.begin_upload(name.clone())?;
    let Some(mut body) = body.take() else {
        return Err(ApiError::internal());
    };
    let mut writer = conn.shared.services.writers.spawn(upload);
    let mut batch = Vec::new();
    let mut batched = 0;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the request body stalled; upload discarded",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "incomplete_body",
                    "the request body ended early; upload discarded",
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            batched += data.len();
            batch.push(data);
            if batched >= WRITE_BATCH {
                if let Err(e) = writer.append(std::mem::take(&mut batch)).await {
                    tokio::spawn(drain(body, idle));
                    return Err(e.into());
                }
                batched = 0;
            }
        }
    }
    writer.append(batch).await?;
    let size = writer.size();
    if !conn.shared.services.takes_uploads() {
        // Fail closed: dropping the writer discards the upload; the client may send it again.
        return Err(BoxError::Unavailable.into());
    }
    let committed = writer.commit().await?;
    let services = &conn.shared.services;
    services.audit.record(
        crate::audit::Event::BoxUpload,
        conn.account.as_ref().map(|a| a.id.as_str()),
        Some(conn.peer),
        json!({"box": committed.event.owner(), "name": name.as_str(), "bytes": size, "sha256": committed.sha256}),
    );
    services.metrics.transferred("https", "upload").inc_by(size);
    if services.box_events.send(committed.event).await.is_err() {
        tracing::warn!("box event queue closed");
    }
    Ok((
        json_response(
            StatusCode::CREATED,
            json!({"name": name.as_str(), "size": size, "sha256": committed.sha256}),
        ),
        size,
    ))
}

/// How long the rest of a refused body is read, at most.
const DRAIN_FOR: Duration = Duration::from_secs(30);

/// Reads and discards the rest of a body refused while it was still arriving (over the size
/// limit, say). Closing the connection on a client still sending would reset it, and the reset
/// can destroy the error response before the client reads it; so, like nginx's lingering
/// close, the body is read for a while — until it ends, stalls for `idle`, or [`DRAIN_FOR`]
/// has passed — and then dropped.
async fn drain(mut body: Incoming, idle: Duration) {
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        while let Ok(Some(Ok(_))) = tokio::time::timeout(idle, body.frame()).await {}
    })
    .await;
}

/// Bytes of body frames handed to an upload's writer at once: HTTP/2 frames are small, and a
/// hand-over per frame costs more.
const WRITE_BATCH: usize = 256 << 10;

/// A single byte range: `bytes=a-b`, `bytes=a-`, `bytes=-n`. `None` for no or an ignorable header.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: serve the whole file
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().map_err(|_| ())?, e.parse().map_err(|_| ())?);
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn download(
    conn: &Arc<Connection>,
    dropbox: &DropBox,
    folder: Folder,
    name: FileName,
    req: &Request<()>,
) -> Routed {
    let (file, entry) = dropbox.open_read(folder, &name)?;
    let size = entry.size;
    let range = match req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(v) => match parse_range(v, size) {
            Ok(r) => r,
            Err(()) => {
                let mut r = json_response(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    json!({"error": "range_not_satisfiable", "detail": format!("file has {size} bytes")}),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok((r, 0));
            }
        },
    };
    let (start, len) = match range {
        Some((s, e)) => (s, e - s + 1),
        None => (0, size),
    };
    let mut file = tokio::fs::File::from_std(file);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(BoxError::Io)?;
    let reaches_end = start + len == size;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 << 10);
    let services = conn.shared.services.clone();
    let account = conn.account.as_ref().map(|a| a.id.clone());
    let owner = dropbox.owner().to_owned();
    let actor = dropbox.actor().to_owned();
    let peer = conn.peer;
    let done_name = name.clone();
    let body = stream
        .map(|chunk| Some(chunk.map(Frame::data)))
        .chain(futures::stream::once(async move {
            // The whole range was handed to the connection.
            services
                .metrics
                .transferred("https", "download")
                .inc_by(len);
            if folder == Folder::Outbox && reaches_end {
                // Only the box's own counterpart retrieves; anyone else read it
                // (ARCHITECTURE.md, *Who acted*).
                let event = if actor == owner {
                    crate::audit::Event::BoxRetrieved
                } else {
                    crate::audit::Event::BoxRead
                };
                services.audit.record(
                    event,
                    account.as_deref(),
                    Some(peer),
                    json!({"box": owner, "name": done_name.as_str(), "size": size}),
                );
                let _ = services.box_events.try_send(BoxEvent::Retrieved {
                    account: owner,
                    actor,
                    channel: Channel::Https,
                    name: done_name,
                });
            }
            None
        }))
        .filter_map(|f| async move { f });
    let body = BodyExt::boxed(StreamBody::new(body));
    let mut builder = Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_TYPE,
            if folder == Folder::Receipts {
                "application/json"
            } else {
                "application/octet-stream"
            },
        );
    builder = match range {
        Some((s, e)) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}")),
        None => builder.status(StatusCode::OK),
    };
    let response = builder.body(body).map_err(|_| ApiError::internal())?;
    Ok((response, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_refuse_encoded_traversal() {
        assert!(segments("/inbox/%2e%2e").is_err());
        assert!(segments("/inbox/..%2fx").is_err());
        assert!(segments("/inbox/a%5cb").is_err());
        assert!(segments("/inbox/a%00b").is_err());
        assert!(segments("/inbox/%zz").is_err());
        assert_eq!(segments("/outbox/").ok(), Some(vec!["outbox".to_owned()]));
        assert_eq!(
            segments("/inbox/a%20b.zip").ok(),
            Some(vec!["inbox".to_owned(), "a b.zip".to_owned()])
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=95-200", 100), Ok(Some((95, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("items=1-2", 100), Ok(None));
    }
}
