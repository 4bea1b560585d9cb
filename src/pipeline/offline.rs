//! The gateway's side of offline media ([`crate::offline`]): the audit line of a file an operator
//! ingested, and the hand-over of exported files, applied from the requests `handoff export`
//! leaves, each file's `retrieved` event naming the operator and the `offline` channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::jobs::{Handover, Job, JobState};
use crate::error::Chain;
use crate::events::{Channel, Hop};
use crate::offline::{self, ExportRequest};

/// How often the queue of export requests is looked at.
const REQUEST_POLL: Duration = Duration::from_millis(250);

impl Inner {
    /// Audits a file an operator ingested from a medium, once it is accepted.
    pub(super) fn audit_ingest(&self, job: &Job) {
        if job.channel != Some(Channel::Offline) {
            return;
        }
        self.audit.record(
            crate::audit::Event::OfflineIngest,
            job.accepted_by.as_deref(),
            None,
            json!({
                "box": job.sender,
                "name": job.original_name,
                "size": job.size,
                "sha256": job.sha256,
                "file_id": job.file_id,
            }),
        );
    }

    /// Records an export's hand-over and audits it, once, whatever came of it. The operator is
    /// checked against the config in force now, as it was by the command.
    fn hand_over(&self, request: &ExportRequest) {
        let snapshot = self.live.snapshot();
        let outcome = match offline::operator(&snapshot, &request.operator, &request.counterpart) {
            Err(e) => json!({"files": request.files, "refused": e.to_string()}),
            Ok(_) => self.retrieved_offline(request),
        };
        let mut detail = json!({
            "box": request.counterpart,
            "to": request.to.display().to_string(),
            "system_user": request.system_user,
        });
        if let (Some(detail), serde_json::Value::Object(outcome)) =
            (detail.as_object_mut(), outcome)
        {
            detail.extend(outcome);
        }
        self.audit.record(
            crate::audit::Event::OfflineExport,
            Some(&request.operator),
            None,
            detail,
        );
    }

    /// Marks each named file delivered to the counterpart retrieved by the operator, offline
    /// (once: a file retrieved before keeps its receipt); says which were, which had been, and
    /// which were not the counterpart's delivered files.
    fn retrieved_offline(&self, request: &ExportRequest) -> serde_json::Value {
        let by = Handover {
            actor: request.operator.clone(),
            channel: Channel::Offline,
        };
        let (mut handed, mut before, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for file_id in &request.files {
            let job = match self.store.get(file_id) {
                Ok(Some(job))
                    if job.state == JobState::Delivered
                        && job.recipient.as_ref() == Some(&request.counterpart) =>
                {
                    job
                }
                Ok(_) => {
                    skipped.push(file_id.as_str());
                    continue;
                }
                Err(e) => {
                    tracing::error!(file_id, error = %Chain(&e), "reading job");
                    skipped.push(file_id.as_str());
                    continue;
                }
            };
            match self.store.mark_retrieved(&job.file_id, &by) {
                Ok(true) => {
                    self.count(Hop::Retrieved, &request.counterpart, file_id);
                    handed.push(file_id.as_str());
                }
                Ok(false) => before.push(file_id.as_str()),
                Err(e) => {
                    tracing::error!(file_id, error = %Chain(&e), "recording a hand-over");
                    skipped.push(file_id.as_str());
                }
            }
        }
        json!({"handed_over": handed, "retrieved_before": before, "skipped": skipped})
    }
}

/// Applies export requests as they arrive, until `shutdown`.
pub(super) async fn serve_export_requests(
    inner: Arc<Inner>,
    dir: PathBuf,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(REQUEST_POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let inner = inner.clone();
        let dir = dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (path, request) in offline::take_requests(&dir) {
                match request {
                    Some(request) => inner.hand_over(&request),
                    None => tracing::warn!(
                        file = %path.display(),
                        "ignoring an export request that does not parse"
                    ),
                }
                offline::done(&path);
            }
        })
        .await;
    }
}
