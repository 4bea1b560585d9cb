//! The end of a delivered file's life: its retrieval by the recipient, its deletion from the
//! outbox by another account, and the purge of delivered and quarantined files when their
//! retention runs out, each recorded as its hop.

use std::time::Duration;

use time::OffsetDateTime;

use super::jobs::{Handover, Job, JobState, StoreError, Transition};
use super::{DELIVERY_COMMIT_WAIT, Inner, PipelineError};
use crate::accounts::{AccountId, CounterpartId};
use crate::boxes::{FileName, file_id_of_outbox_name, outbox_name};
use crate::error::Chain;
use crate::events::{FileEvent, Hop};

impl Inner {
    /// An outbox file was read to its end or deleted: the file's `retrieved` event, once. An
    /// error is the store's: the caller tries again.
    pub(super) fn retrieved(
        &self,
        account: &CounterpartId,
        name: &FileName,
        by: &Handover,
    ) -> Result<(), StoreError> {
        let Some(file_id) = file_id_of_outbox_name(name.as_str()) else {
            return Ok(());
        };
        // The file is visible in the outbox a moment before `delivered` is committed; a
        // retrieval in that moment waits for the commit rather than being lost.
        let mut waited = Duration::ZERO;
        let job = loop {
            match self.store.get(file_id) {
                Ok(Some(job)) if job.state == JobState::Sealed && waited < DELIVERY_COMMIT_WAIT => {
                    std::thread::sleep(Duration::from_millis(50));
                    waited += Duration::from_millis(50);
                }
                Ok(Some(job)) => break job,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::error!(file_id, error = %Chain(&e), "reading job");
                    return Err(e);
                }
            }
        };
        if job.recipient.as_ref() != Some(account)
            || outbox_name(&job.file_id, &job.original_name) != name.as_str()
        {
            return Ok(());
        }
        match self.store.mark_retrieved(file_id, by) {
            Ok(true) => {
                self.count(Hop::Retrieved, account, file_id);
                tracing::info!(file_id, recipient = %account, "retrieved");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(file_id, error = %Chain(&e), "recording retrieval");
                return Err(e);
            }
        }
        Ok(())
    }

    /// A delivered file deleted from its recipient's outbox by another account (a maintainer
    /// or break-glass account): a `purged` receipt naming that account, never a retrieval. An
    /// error is the store's: the caller tries again.
    pub(super) fn deleted_by_other(
        &self,
        recipient: &CounterpartId,
        actor: &AccountId,
        name: &FileName,
    ) -> Result<(), StoreError> {
        let Some(file_id) = file_id_of_outbox_name(name.as_str()) else {
            return Ok(());
        };
        let mut job = match self.store.get(file_id) {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::error!(file_id, error = %Chain(&e), "reading job");
                return Err(e);
            }
        };
        if job.state != JobState::Delivered
            || job.recipient.as_ref() != Some(recipient)
            || outbox_name(&job.file_id, &job.original_name) != name.as_str()
        {
            return Ok(());
        }
        match self.purged_by(&mut job, recipient, Some(actor)) {
            Ok(()) => {
                tracing::warn!(file_id, %recipient, %actor, "deleted by another account");
                Ok(())
            }
            Err(PipelineError::Store(e)) => {
                tracing::error!(file_id, error = %Chain(&e), "recording a deletion");
                Err(e)
            }
            Err(e) => {
                tracing::error!(file_id, error = %Chain(&e), "recording a deletion");
                Ok(())
            }
        }
    }

    /// Purges delivered files past `retention.outbox` and quarantined files past
    /// `retention.quarantine`; updates the oldest-undelivered gauge.
    pub(super) fn retention(&self) -> Result<(), PipelineError> {
        let snapshot = self.live.snapshot();
        let retention = &snapshot.config.gateway.retention;
        let now = OffsetDateTime::now_utc();
        for mut job in self.store.delivered_before(now - retention.outbox)? {
            if let Some(recipient) = job.recipient.clone() {
                self.boxes
                    .purge(&recipient, &outbox_name(&job.file_id, &job.original_name))?;
                self.purged(&mut job, &recipient)?;
            }
        }
        for id in self.spool.expire_quarantine(retention.quarantine)? {
            if let Some(mut job) = self.store.get(&id)? {
                let sender = job.sender.clone();
                self.purged(&mut job, &sender)?;
            }
        }
        let open = self.store.open_jobs()?;
        let oldest = open
            .first()
            .map(|j| (now - j.accepted_at).whole_seconds().max(0))
            .unwrap_or(0);
        self.metrics.oldest_undelivered_seconds.set(oldest);
        Ok(())
    }

    fn purged(&self, job: &mut Job, counterpart: &str) -> Result<(), PipelineError> {
        self.purged_by(job, counterpart, None)
    }

    fn purged_by(
        &self,
        job: &mut Job,
        counterpart: &str,
        actor: Option<&AccountId>,
    ) -> Result<(), PipelineError> {
        job.state = JobState::Purged;
        let mut event: FileEvent = job.event(Hop::Purged, Vec::new());
        event.actor = actor.cloned();
        self.store.transition(&Transition {
            file_id: job.file_id.clone(),
            to: JobState::Purged,
            recipient: None,
            sealed_sha256: None,
            quarantined: false,
            warnings: Vec::new(),
            event: Some(event),
        })?;
        self.count(Hop::Purged, counterpart, &job.file_id);
        tracing::info!(file_id = job.file_id, "purged");
        Ok(())
    }
}
