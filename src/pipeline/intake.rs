//! Intake: how files reach [`accept`](super::accept). The transports' box events, a watch on
//! every inbox and a periodic rescan all lead to the same idempotent accept; the box events of
//! reads and deletions lead to the hops that end a delivered file's life ([`super::retention`]).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Inner, Pipeline, PipelineError};
use crate::accounts::CounterpartId;
use crate::boxes::{BoxEvent, FileName, InboxWatch};
use crate::error::Chain;
use crate::events::Hop;
use crate::pipeline::jobs::Handover;

impl Pipeline {
    /// Queues every file waiting in an inbox.
    pub(super) async fn rescan(&self) {
        let snapshot = self.inner.live.snapshot();
        for c in &snapshot.config.counterparts {
            let waiting = match self.inner.boxes.waiting(&c.id) {
                Ok(names) => names,
                Err(e) => {
                    tracing::warn!(counterpart = %c.id, error = %e, "listing the inbox");
                    continue;
                }
            };
            for name in waiting {
                let _ = self.accept.send((c.id.clone(), name)).await;
            }
        }
    }

    /// Watches every configured inbox; new files lead to accept.
    pub(super) fn watch_inboxes(&self) -> Result<InboxWatch, PipelineError> {
        let tx = self.accept.clone();
        let snapshot = self.inner.live.snapshot();
        let owners: Vec<CounterpartId> = snapshot
            .config
            .counterparts
            .iter()
            .map(|c| c.id.clone())
            .collect();
        let on_file = Box::new(move |owner, name| {
            let _ = tx.blocking_send((owner, name));
        });
        Ok(self.inner.boxes.watch_inboxes(&owners, on_file)?)
    }

    pub(super) async fn box_events(
        self,
        mut rx: mpsc::Receiver<BoxEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = rx.recv() => match ev { Some(ev) => ev, None => return },
            };
            match ev {
                BoxEvent::Uploaded { account, name, .. } => {
                    let _ = self.accept.send((account, name)).await;
                }
                // A file read by anyone but its recipient (a maintainer) is not retrieved
                // (ARCHITECTURE.md, *Who acted*); the transport's audit line records the read.
                BoxEvent::Retrieved {
                    account,
                    actor,
                    channel,
                    name,
                }
                | BoxEvent::Acknowledged {
                    account,
                    actor,
                    channel,
                    name,
                } if actor == account => {
                    let inner = self.inner.clone();
                    let by = Handover { actor, channel };
                    let _ =
                        tokio::task::spawn_blocking(move || inner.retrieved(&account, &name, &by))
                            .await;
                }
                BoxEvent::Retrieved { .. } => {}
                BoxEvent::Acknowledged {
                    account,
                    actor,
                    name,
                    ..
                } => {
                    let inner = self.inner.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        inner.deleted_by_other(&account, &actor, &name)
                    })
                    .await;
                }
            }
        }
    }
}

pub(super) async fn acceptor(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<(CounterpartId, FileName)>,
    shutdown: CancellationToken,
) {
    loop {
        let (sender, name) = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let i = inner.clone();
        let (s, n) = (sender.clone(), name.clone());
        match tokio::task::spawn_blocking(move || i.accept(&s, &n)).await {
            Ok(Ok(Some(id))) => inner.enqueue(id).await,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(%sender, %name, error = %Chain(&e), "accept failed; retried on the next rescan")
            }
            Err(e) => tracing::error!(error = %e, "accept task failed"),
        }
    }
}

impl Inner {
    fn accept(
        &self,
        sender: &CounterpartId,
        name: &FileName,
    ) -> Result<Option<String>, PipelineError> {
        let snapshot = self.live.snapshot();
        let job = super::accept::accept(
            &*self.store,
            &self.spool,
            &*self.boxes,
            &snapshot.config,
            sender,
            name,
        )?;
        Ok(job.map(|job| {
            self.count(Hop::Accepted, sender, &job.file_id);
            self.audit_ingest(&job);
            tracing::info!(
                file_id = job.file_id,
                %sender,
                %name,
                size = job.size,
                "accepted"
            );
            job.file_id
        }))
    }
}
