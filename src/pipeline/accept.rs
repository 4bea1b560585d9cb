//! Accept: the hand-off from an inbox into the spool.
//!
//! Hash the file into the spool under a new file id, commit the job with its `accepted` event,
//! and only then remove the inbox file. The job is keyed on the inbox file's identity (device,
//! inode, size, mtime, name), unique in the store, so a crash between any two steps, or two
//! accepts of the same file at once, neither lose the file nor make two jobs: a spool file
//! without a job is removed at start-up, and an inbox file whose job exists is just removed.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use time::OffsetDateTime;

use super::PipelineError;
use crate::boxes::FileName;
use crate::config::Config;
use crate::pipeline::jobs::{Job, JobState, JobStore};
use crate::spool::{self, Spool};
use crate::state::StateLayout;

/// Accepts `inbox/<name>` of `sender`. Returns the new job, or `None` when there was nothing
/// new to accept (no such file, not a regular file, or accepted already).
pub fn accept(
    store: &dyn JobStore,
    spool: &Spool,
    layout: &StateLayout,
    config: &Config,
    sender: &str,
    name: &str,
) -> Result<Option<Job>, PipelineError> {
    if FileName::new(name).is_err() || config.counterpart(sender).is_none() {
        return Ok(None);
    }
    let inbox = layout.inbox(sender);
    let path = inbox.join(name);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let key = format!(
        "{}:{}:{}:{}.{:09}:{name}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    if store.by_inbox_key(&key)?.is_some() {
        // Accepted before a crash that came before the inbox file was removed.
        remove_handed_off(&path, &inbox)?;
        return Ok(None);
    }
    let file_id = uuid::Uuid::now_v7().to_string();
    let accepted_by = crate::boxes::committed_actor(&file);
    let written = spool.take_upload(&file_id, &path, file)?;
    let job = Job {
        file_id: file_id.clone(),
        sender: sender.to_owned(),
        original_name: name.to_owned(),
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
    };
    if !store.insert_accepted(&job)? {
        // Another accept of the same file won the race.
        spool.remove(&file_id)?;
        remove_handed_off(&path, &inbox)?;
        return Ok(None);
    }
    remove_handed_off(&path, &inbox)?;
    Ok(Some(job))
}

/// Removes an accepted file from the inbox and makes the removal durable.
fn remove_handed_off(path: &Path, inbox: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    spool::sync_dir(inbox)
}
