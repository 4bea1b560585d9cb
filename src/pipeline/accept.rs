//! Accept: the hand-off from an inbox into the spool.
//!
//! Hash the file into the spool under a new file id, commit the job with its `accepted` event,
//! and only then remove the inbox file. The job is keyed on the inbox file's identity (device,
//! inode, size, mtime, name), unique in the store, so a crash between any two steps, or two
//! accepts of the same file at once, neither lose the file nor make two jobs: a spool file
//! without a job is removed at start-up, and an inbox file whose job exists is just removed.

use time::OffsetDateTime;

use super::PipelineError;
use crate::accounts::CounterpartId;
use crate::boxes::{BoxStore, FileName};
use crate::config::Config;
use crate::pipeline::jobs::{Job, JobState, JobStore};
use crate::spool::Spool;

/// Accepts `inbox/<name>` of `sender`. Returns the new job, or `None` when there was nothing
/// new to accept (no such file, not a regular file, or accepted already).
pub fn accept(
    store: &dyn JobStore,
    spool: &Spool,
    boxes: &dyn BoxStore,
    config: &Config,
    sender: &CounterpartId,
    name: &FileName,
) -> Result<Option<Job>, PipelineError> {
    if config.counterpart(sender).is_none() {
        return Ok(None);
    }
    let Some(waiting) = boxes.take(sender, name)? else {
        return Ok(None);
    };
    if store.by_inbox_key(&waiting.key)?.is_some() {
        // Accepted before a crash that came before the inbox file was removed.
        boxes.handed_off(sender, name)?;
        return Ok(None);
    }
    let file_id = crate::ids::FileId::new().to_string();
    let accepted_by = crate::boxes::committed_actor(&waiting.file);
    let channel = crate::boxes::committed_channel(&waiting.file);
    let key = waiting.key.clone();
    let written = spool.take_upload(&file_id, waiting)?;
    let job = Job {
        file_id: file_id.clone(),
        sender: sender.clone(),
        original_name: name.as_str().to_owned(),
        size: written.size,
        sha256: written.sha256,
        inbox_key: key,
        state: JobState::Accepted,
        recipient: None,
        sealed_sha256: None,
        accepted_at: OffsetDateTime::now_utc(),
        delivered_at: None,
        retrieved: false,
        quarantined: false,
        warnings: Vec::new(),
        parent: None,
        accepted_by,
        channel,
    };
    if !store.insert_accepted(&job)? {
        // Another accept of the same file won the race.
        spool.remove(&file_id)?;
        boxes.handed_off(sender, name)?;
        return Ok(None);
    }
    boxes.handed_off(sender, name)?;
    Ok(Some(job))
}
