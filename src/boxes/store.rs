//! The gateway's side of the boxes: what the pipeline, the receipt issuer and the NOC do with
//! box files, as opposed to what a counterpart's session does ([`super::DropBox`]).
//!
//! [`BoxStore`] is the one way the rest of the gateway reaches box files: take an upload waiting
//! in an inbox, deliver a sealed file into an outbox, purge it, write a receipt file, count what
//! a box holds. Nothing outside `boxes/` joins a path under a box. [`LocalBoxes`] keeps boxes as
//! folders of the state directory, and, where the store is a database, keeps them there too
//! ([`SharedFiles`]): the folders are then this node's copy, and what is in a box is what the
//! database says.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FileName, Folder, MAX_NAME_BYTES};
use crate::accounts::CounterpartId;
use crate::spool::Durable;
use crate::state::StateLayout;
use crate::store::files::{Put, SharedFiles};

/// What the gateway itself does with box files.
pub trait BoxStore: Send + Sync {
    /// The names waiting in a counterpart's inbox (empty if it has no box).
    fn waiting(&self, owner: &CounterpartId) -> io::Result<Vec<FileName>>;

    /// Opens an upload waiting in an inbox for the hand-off into the spool; `None` if there is
    /// no such file or it is not a regular file.
    fn take(&self, owner: &CounterpartId, name: &FileName) -> io::Result<Option<Waiting>>;

    /// Removes a file handed off to the spool from its inbox, durably. A file already gone is
    /// not an error (a crash may have come after the removal).
    fn handed_off(&self, owner: &CounterpartId, name: &FileName) -> io::Result<()>;

    /// Writes the file at `sealed` (in the spool) durably into the recipient's outbox under
    /// `name`, all at once or not at all: it is staged at `scratch` (a path of the spool, on the
    /// same file system) first. Returns the SHA-256 of what was written.
    fn deliver(
        &self,
        recipient: &CounterpartId,
        name: &str,
        sealed: &Path,
        scratch: &Path,
    ) -> io::Result<crate::ids::Sha256>;

    /// Removes a delivered file from the recipient's outbox, durably; gone already is fine.
    fn purge(&self, recipient: &CounterpartId, name: &str) -> io::Result<()>;

    /// Writes a receipt file into a box, atomically. `false` if the counterpart has no box any
    /// more (it was removed from the config; the ledger keeps the record).
    fn write_receipt(
        &self,
        owner: &CounterpartId,
        receipt_id: &str,
        body: &[u8],
    ) -> io::Result<bool>;

    /// How many files each folder of a box holds, for the NOC.
    fn counts(&self, owner: &CounterpartId) -> BoxCounts;

    /// Calls `on_file` for every file that appears in the inboxes of `owners` until the
    /// returned guard is dropped.
    fn watch_inboxes(
        &self,
        owners: &[CounterpartId],
        on_file: Box<dyn Fn(CounterpartId, FileName) + Send + Sync>,
    ) -> io::Result<InboxWatch>;
}

/// The files of one box, by folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BoxCounts {
    pub inbox: usize,
    pub outbox: usize,
    pub receipts: usize,
}

/// An upload waiting in an inbox, open for the hand-off into the spool.
#[derive(Debug)]
pub struct Waiting {
    pub file: File,
    /// Identifies this very file (device, inode, size, modification time, name), so a job is
    /// made once per upload even if it is taken twice, or again after a crash.
    pub key: String,
    path: PathBuf,
    /// Where the file is shared through the database: the spool's link to it is made there too.
    shared: Option<SharedFiles>,
}

impl Waiting {
    /// Links the upload, as it is, to `to` (a path of the spool), so the hand-off copies nothing.
    /// Fails where the two are not on one file system; the caller then copies.
    pub fn link_to(&self, to: &Path) -> io::Result<()> {
        fs::hard_link(&self.path, to)?;
        if let Some(shared) = &self.shared
            && shared.link(&self.path, to)?.is_none()
        {
            let _ = fs::remove_file(to);
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the upload left its inbox",
            ));
        }
        Ok(())
    }
}

/// Keeps an inbox watch running; dropping it stops the watch.
pub struct InboxWatch(#[allow(dead_code)] Box<dyn Send>);

/// Boxes as folders of the state directory (`boxes/<counterpart>/{inbox,outbox,receipts}`),
/// shared through the database where the store is one.
#[derive(Debug, Clone)]
pub struct LocalBoxes {
    layout: StateLayout,
    shared: Option<SharedFiles>,
}

impl LocalBoxes {
    pub fn new(layout: &StateLayout, shared: Option<SharedFiles>) -> LocalBoxes {
        LocalBoxes {
            layout: layout.clone(),
            shared,
        }
    }

    fn folder(&self, owner: &CounterpartId, folder: Folder) -> PathBuf {
        self.layout.box_dir(owner).join(folder.as_str())
    }
}

impl BoxStore for LocalBoxes {
    fn waiting(&self, owner: &CounterpartId) -> io::Result<Vec<FileName>> {
        if let Some(shared) = &self.shared {
            let inbox = self.folder(owner, Folder::Inbox);
            adopt_placed_by_hand(shared, &inbox);
            let files = shared.list(&inbox)?;
            return Ok(files
                .into_iter()
                .filter_map(|f| FileName::new(&f.name).ok())
                .collect());
        }
        let entries = match fs::read_dir(self.folder(owner, Folder::Inbox)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(entries
            .flatten()
            .filter_map(|e| FileName::new(e.file_name().to_str()?).ok())
            .collect())
    }

    fn take(&self, owner: &CounterpartId, name: &FileName) -> io::Result<Option<Waiting>> {
        let path = self.folder(owner, Folder::Inbox).join(name.as_str());
        if let Some(shared) = &self.shared {
            adopt(shared, &path);
            // The same upload has the same blob on every node, and a new one another.
            let Some(upload) = shared.fetch(&path)? else {
                return Ok(None);
            };
            let file = File::open(&path)?;
            let key = format!("blob:{}:{name}", upload.blob);
            return Ok(Some(Waiting {
                file,
                key,
                path,
                shared: Some(shared.clone()),
            }));
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
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
        Ok(Some(Waiting {
            file,
            key,
            path,
            shared: None,
        }))
    }

    fn handed_off(&self, owner: &CounterpartId, name: &FileName) -> io::Result<()> {
        let inbox = self.folder(owner, Folder::Inbox);
        match &self.shared {
            Some(shared) => Ok(shared.remove(&inbox.join(name.as_str()))?),
            None => remove_durably(&inbox, name.as_str()),
        }
    }

    fn deliver(
        &self,
        recipient: &CounterpartId,
        name: &str,
        sealed: &Path,
        scratch: &Path,
    ) -> io::Result<crate::ids::Sha256> {
        let name = checked(name)?;
        let outbox = self.folder(recipient, Folder::Outbox);
        let mut from = File::open(sealed)?;
        let durable = Durable::of(&self.shared);
        let written =
            crate::spool::write_new_with(scratch, durable, |w| io::copy(&mut from, w).map(drop))?;
        let path = outbox.join(name.as_str());
        fs::rename(scratch, &path).map_err(|e| in_dir(e, &outbox))?;
        if durable == Durable::Here {
            crate::spool::sync_dir(&outbox)?;
        }
        // The same bytes as the spool's sealed file: the database names its blob twice.
        if let Some(shared) = &self.shared
            && shared.link(sealed, &path)?.is_none()
        {
            shared.publish(&path, Put::Replace)?;
        }
        Ok(written.sha256)
    }

    fn purge(&self, recipient: &CounterpartId, name: &str) -> io::Result<()> {
        let name = checked(name)?;
        let outbox = self.folder(recipient, Folder::Outbox);
        match &self.shared {
            Some(shared) => Ok(shared.remove(&outbox.join(name.as_str()))?),
            None => remove_durably(&outbox, name.as_str()),
        }
    }

    fn write_receipt(
        &self,
        owner: &CounterpartId,
        receipt_id: &str,
        body: &[u8],
    ) -> io::Result<bool> {
        let dir = self.folder(owner, Folder::Receipts);
        if !dir.is_dir() {
            return Ok(false);
        }
        let name = checked(&format!("{receipt_id}.json"))?;
        // A hidden temporary name: listings show complete receipts only.
        let tmp = dir.join(format!(".{name}.tmp"));
        let durable = Durable::of(&self.shared);
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(body)?;
            if durable == Durable::Here {
                f.sync_all()?;
            }
            fs::rename(&tmp, dir.join(name.as_str()))?;
            match durable {
                Durable::Here => crate::spool::sync_dir(&dir),
                Durable::InDatabase => Ok(()),
            }
        };
        write().map_err(|e| in_dir(e, &dir))?;
        if let Some(shared) = &self.shared {
            shared.publish(&dir.join(name.as_str()), Put::Replace)?;
        }
        Ok(true)
    }

    fn counts(&self, owner: &CounterpartId) -> BoxCounts {
        // Names starting with '.' are temporaries (a receipt being written).
        let count = |folder| {
            if let Some(shared) = &self.shared {
                return shared.count(&self.folder(owner, folder)).unwrap_or(0);
            }
            fs::read_dir(self.folder(owner, folder))
                .map(|d| {
                    d.flatten()
                        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                        .count()
                })
                .unwrap_or(0)
        };
        BoxCounts {
            inbox: count(Folder::Inbox),
            outbox: count(Folder::Outbox),
            receipts: count(Folder::Receipts),
        }
    }

    fn watch_inboxes(
        &self,
        owners: &[CounterpartId],
        on_file: Box<dyn Fn(CounterpartId, FileName) + Send + Sync>,
    ) -> io::Result<InboxWatch> {
        let on_file: Arc<dyn Fn(CounterpartId, FileName) + Send + Sync> = Arc::from(on_file);
        let here = self.watch_here(owners, on_file.clone())?;
        match &self.shared {
            // Files placed by hand on this node, and the uploads of every node.
            Some(shared) => {
                let everywhere = self.poll_inboxes(shared.clone(), owners, on_file)?;
                Ok(InboxWatch(Box::new((here, everywhere))))
            }
            None => Ok(here),
        }
    }
}

impl LocalBoxes {
    /// The file-system watch of this node's inbox folders.
    fn watch_here(
        &self,
        owners: &[CounterpartId],
        on_file: Arc<dyn Fn(CounterpartId, FileName) + Send + Sync>,
    ) -> io::Result<InboxWatch> {
        use notify::{EventKind, RecursiveMode, Watcher};
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, EventKind::Remove(_) | EventKind::Access(_)) {
                return;
            }
            for path in ev.paths {
                if let Some((owner, name)) = inbox_file(&path) {
                    on_file(owner, name);
                }
            }
        })
        .map_err(io::Error::other)?;
        for owner in owners {
            watcher
                .watch(
                    &self.folder(owner, Folder::Inbox),
                    RecursiveMode::NonRecursive,
                )
                .map_err(io::Error::other)?;
        }
        Ok(InboxWatch(Box::new(watcher)))
    }
}

/// How often the inboxes in the database are looked at for uploads no node accepted.
const INBOX_POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long an upload may wait in a shared inbox before the coordinating node accepts it: the
/// node that took it accepts it at once, unless it died first or its accept failed.
const INBOX_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

impl LocalBoxes {
    /// The watch of inboxes kept in the database: each node accepts what its own sessions
    /// upload, so the coordinating node reads every inbox, in one query, every two seconds, and
    /// reports each upload of `owners` that has waited [`INBOX_SETTLE`] and was not seen before.
    fn poll_inboxes(
        &self,
        shared: SharedFiles,
        owners: &[CounterpartId],
        on_file: Arc<dyn Fn(CounterpartId, FileName) + Send + Sync>,
    ) -> io::Result<InboxWatch> {
        let owners: std::collections::HashSet<CounterpartId> = owners.iter().cloned().collect();
        let boxes = self.layout.boxes();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("handoff-inboxes".into())
            .spawn(move || {
                let mut seen = std::collections::HashSet::new();
                while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                    match shared.inboxes(&boxes, INBOX_SETTLE) {
                        Ok(waiting) => {
                            let mut now = std::collections::HashSet::new();
                            for (path, blob) in waiting {
                                let Some((owner, name)) = inbox_file(&path) else {
                                    continue;
                                };
                                if owners.contains(&owner) && !seen.contains(&blob) {
                                    on_file(owner, name);
                                }
                                now.insert(blob);
                            }
                            seen = now;
                        }
                        Err(e) => {
                            tracing::debug!(error = %crate::error::Chain(&e), "reading the inboxes")
                        }
                    }
                    std::thread::sleep(INBOX_POLL);
                }
            })?;
        Ok(InboxWatch(Box::new(StopOnDrop(stop))))
    }
}

/// Shares the files an operator placed by hand in this node's copy of an inbox, as the local
/// store takes them (at each rescan, every half minute).
fn adopt_placed_by_hand(shared: &SharedFiles, inbox: &Path) {
    let Ok(entries) = fs::read_dir(inbox) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| FileName::new(n).is_ok());
        if named {
            adopt(shared, &path);
        }
    }
}

/// [`adopt_placed_by_hand`] for one file. A copy of a shared file is not placed by hand: it is
/// left to [`SharedFiles::fetch`], which renews or removes it.
fn adopt(shared: &SharedFiles, path: &Path) {
    let Ok(file) = File::open(path) else {
        return;
    };
    if !file.metadata().is_ok_and(|m| m.is_file())
        || crate::store::files::copy_blob(&file).is_some()
    {
        return;
    }
    let Ok((carried, shown)) = super::carried_by(&file) else {
        return;
    };
    if let Err(e) = shared.put(path, &file, shown, &carried, Put::New) {
        tracing::debug!(file = %path.display(), error = %crate::error::Chain(&e), "sharing a file placed in an inbox");
    }
}

/// Stops a polling thread when dropped.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// `(counterpart, name)` of a path `.../boxes/<counterpart>/inbox/<name>`.
fn inbox_file(path: &Path) -> Option<(CounterpartId, FileName)> {
    let name = FileName::new(path.file_name()?.to_str()?).ok()?;
    let inbox = path.parent()?;
    if inbox.file_name()? != Folder::Inbox.as_str() {
        return None;
    }
    let owner = CounterpartId::new(inbox.parent()?.file_name()?.to_str()?).ok()?;
    Some((owner, name))
}

fn checked(name: &str) -> io::Result<FileName> {
    FileName::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

fn remove_durably(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(in_dir(e, dir)),
        _ => {}
    }
    crate::spool::sync_dir(dir)
}

/// The error with the folder it happened in, for the operator's log.
fn in_dir(e: io::Error, dir: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", dir.display()))
}

/// The deterministic outbox name of a file: `{file-id}_{original-name}.p7m`, or
/// `{file-id}.p7m` when that would be longer than a file name may be. The file id (a UUID)
/// contains no `_`, so the id is everything before the first `_` or `.`.
pub fn outbox_name(file_id: &str, original_name: &str) -> String {
    let full = format!("{file_id}_{original_name}.p7m");
    if full.len() <= MAX_NAME_BYTES {
        full
    } else {
        format!("{file_id}.p7m")
    }
}

/// The file id an outbox name was made from.
pub fn file_id_of_outbox_name(name: &str) -> Option<&str> {
    let end = name.find(['_', '.'])?;
    let id = &name[..end];
    uuid::Uuid::parse_str(id).ok().map(|_| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_paths_name_their_owner_and_nothing_else_counts() {
        let (owner, name) = inbox_file(Path::new("/s/boxes/clinic-a/inbox/x.zip")).unwrap();
        assert_eq!((owner.as_str(), name.as_str()), ("clinic-a", "x.zip"));
        assert!(inbox_file(Path::new("/s/boxes/clinic-a/outbox/x.zip")).is_none());
        assert!(inbox_file(Path::new("/s/boxes/clinic-a/inbox/.x.zip.tmp")).is_none());
    }

    #[test]
    fn outbox_names_carry_their_file_id() {
        let id = "0190a5c4-1b2c-7d3e-8f40-123456789abc";
        let name = outbox_name(id, "a.zip");
        assert_eq!(name, format!("{id}_a.zip.p7m"));
        assert_eq!(file_id_of_outbox_name(&name), Some(id));
        let long = outbox_name(id, &"n".repeat(250));
        assert_eq!(long, format!("{id}.p7m"));
        assert_eq!(file_id_of_outbox_name(&long), Some(id));
        assert_eq!(file_id_of_outbox_name("not-a-uuid_a.zip.p7m"), None);
    }
}
