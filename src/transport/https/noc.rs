//! The NOC API over HTTPS, for NOC accounts only and read-only: the gateway's status and the
//! receipts since a time, both as the NOC may see them (no finding messages, which may quote
//! personal data), gathered by [`crate::metrics::noc`] like the status page.

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::api::{ApiError, Connection, Routed, decode_segment, full, json_response};
use crate::error::Chain;
use crate::metrics::noc;

pub(super) async fn route(conn: &Arc<Connection>, req: &Request<()>, segs: &[String]) -> Routed {
    if req.method() != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the NOC API is read-only",
        ));
    }
    let services = conn.shared.services.clone();
    match segs
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["noc", "status"] => {
            let status = tokio::task::spawn_blocking(move || noc::Status::gather(&services))
                .await
                .map_err(|_| ApiError::internal())?;
            Ok((json_response(StatusCode::OK, json!(status)), 0))
        }
        ["noc", "receipts"] => {
            let since = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")))
                .map(|v| decode_segment(v).unwrap_or_default())
                .filter(|v| !v.is_empty());
            let since = match since {
                None => time::OffsetDateTime::UNIX_EPOCH,
                Some(v) => {
                    time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "bad_since",
                                "since must be an RFC 3339 time, e.g. 2026-11-25T00:00:00Z",
                            )
                        })?
                }
            };
            let receipts = tokio::task::spawn_blocking(move || {
                noc::receipts_since(&services, since)
            })
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(|e| {
                tracing::error!(error = %Chain(&e), "reading the receipt ledger for the NOC");
                ApiError::internal()
            })?;
            let mut body = String::new();
            for receipt in receipts {
                body.push_str(&receipt.to_string());
                body.push('\n');
            }
            let len = body.len() as u64;
            let mut r = Response::new(full(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            Ok((r, len))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "NOC endpoints: /noc/status, /noc/receipts?since=RFC3339",
        )),
    }
}
