//! Intake: how files reach [`accept`](super::accept). The transports' box events, a watch on
//! every inbox and a periodic rescan all lead to the same idempotent accept; the box events of
//! reads and deletions lead to the hops that end a delivered file's life ([`super::retention`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Inner, Pipeline, PipelineError};
use crate::accounts::CounterpartId;
use crate::boxes::{BoxEvent, FileName, InboxWatch};
use crate::error::Chain;
use crate::events::Hop;
use crate::pipeline::jobs::{Handover, StoreError};

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
                // Each node accepts its own sessions' uploads; the coordinating node also finds
                // those a node took but did not accept in the database's inboxes.
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
                    let by = Handover { actor, channel };
                    record(self.inner.clone(), &shutdown, move |inner| {
                        inner.retrieved(&account, &name, &by)
                    })
                    .await;
                }
                BoxEvent::Retrieved { .. } => {}
                BoxEvent::Acknowledged {
                    account,
                    actor,
                    name,
                    ..
                } => {
                    record(self.inner.clone(), &shutdown, move |inner| {
                        inner.deleted_by_other(&account, &actor, &name)
                    })
                    .await;
                }
            }
        }
    }
}

/// How often a hop the store could not take is offered to it again.
const RECORD_AGAIN_EVERY: Duration = Duration::from_secs(3);

/// A retrieval or deletion to record; `Err` when the store could not take it.
type Recording = Arc<dyn Fn(&Inner) -> Result<(), StoreError> + Send + Sync>;

/// Records a retrieval or a deletion, in the order the transports reported them. While the
/// store cannot take it (a database away), it is tried again on a task of its own until it is
/// recorded, so the events after it are not held up and the hop is not lost.
async fn record(
    inner: Arc<Inner>,
    shutdown: &CancellationToken,
    hop: impl Fn(&Inner) -> Result<(), StoreError> + Send + Sync + 'static,
) {
    let hop: Recording = Arc::new(hop);
    if recorded(inner.clone(), hop.clone()).await {
        return;
    }
    tracing::warn!("the store cannot record a retrieval or deletion now; trying again");
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECORD_AGAIN_EVERY) => {}
            }
            if recorded(inner.clone(), hop.clone()).await {
                return;
            }
        }
    });
}

/// One attempt: whether the hop is recorded (or had nothing to record).
async fn recorded(inner: Arc<Inner>, hop: Recording) -> bool {
    !matches!(
        tokio::task::spawn_blocking(move || hop(&inner)).await,
        Ok(Err(_))
    )
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
