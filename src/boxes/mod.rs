//! The drop box of one counterpart (`inbox/`, `outbox/`, `receipts/`), shared by every
//! transport: SFTP and HTTPS call this layer and nothing else to touch box files, so the rules
//! of ARCHITECTURE.md, *Confinement*, hold the same way over both.
//!
//! Confinement is done once, here, against directory handles: folder and file names are checked
//! by [`VirtualPath`], then opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` beneath
//! the box's directory, so neither a crafted name nor a planted symlink leads outside.
//!
//! Uploads are written to an exclusive new file in the account's staging directory and only on
//! [`Upload::commit`] fsynced and linked into `inbox/` (never over an existing name): the
//! pipeline sees complete files only, and a dropped upload leaves nothing it would process.
//! They are encrypted at rest from their first byte (the spool's format, under the master key),
//! so the plaintext of an upload never reaches the disk, not even before it is accepted, and
//! they are hashed as they are written: a committed upload carries the SHA-256 of its
//! plaintext, so the pipeline takes it into the spool as it is, without reading it again.

mod fsops;
mod path;
mod store;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use path::{FileName, Folder, MAX_NAME_BYTES, VirtualPath};
pub use store::{
    BoxCounts, BoxStore, InboxWatch, LocalBoxes, Waiting, file_id_of_outbox_name, outbox_name,
};
pub use writer::{UploadWriter, Writers};

use crate::accounts::{AccountId, CounterpartId};
use crate::config::{Access, live::Snapshot};
use crate::direct_io::SequentialFile;
use crate::events::Channel;
use crate::keys::MasterKey;
use crate::seal::at_rest::{self, AtRestWriter};
use crate::state::StateLayout;
use crate::store::files::{Carried, FilesError, Put, SharedFiles};

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("invalid name: {why}")]
    BadName { why: &'static str },
    #[error("path leaves the box")]
    Escape,
    #[error("no such file or folder")]
    NotFound,
    #[error("not permitted: {0}")]
    PermissionDenied(&'static str),
    #[error(
        "a file of this name is already waiting in the inbox; upload under another name or wait until it is accepted"
    )]
    NameTaken,
    #[error("empty files are not accepted")]
    Empty,
    #[error("upload exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("uploads are written front to back: {0}")]
    OutOfOrder(&'static str),
    /// The uploads of the account, or of the whole gateway, together hold as much data written
    /// ahead of gaps as they may (`max_buffered_per_account`, `max_buffered_total`).
    #[error(
        "{whose} uploads hold {limit} bytes written ahead of gaps, as much as they may; write files front to back or fewer at once, and send this one again"
    )]
    Buffered { whose: &'static str, limit: u64 },
    #[error("the gateway is short of disk space; try again later")]
    InsufficientStorage,
    /// The audit log cannot be written: uploads are refused until it can (fail closed).
    #[error("the gateway cannot take files now; try again later")]
    Unavailable,
    #[error("no box for account {0}")]
    NoBox(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The extended attribute in which a committed upload carries the hex SHA-256 of its plaintext.
const SHA256_XATTR: &str = "user.handoff.sha256";

/// The SHA-256 a committed upload carries, if the file has one (a file placed in an inbox by
/// hand, or on a file system without extended attributes, has none).
pub fn committed_sha256(file: &File) -> Option<String> {
    let value = fsops::get_xattr(file, SHA256_XATTR, 64)?;
    let hex = String::from_utf8(value).ok()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Sets an extended attribute on a file of the state directory.
pub(crate) fn set_attribute(file: &File, name: &str, value: &[u8]) -> io::Result<()> {
    fsops::set_xattr(file, name, value)
}

/// An extended attribute of a file of the state directory, if it has one of at most `max` bytes.
pub(crate) fn attribute(file: &File, name: &str, max: usize) -> Option<Vec<u8>> {
    fsops::get_xattr(file, name, max)
}

/// Sets on `file` what an upload carries from its transport; where the file system has no
/// extended attributes, the pipeline hashes the file and the receipt names the box's owner.
pub(crate) fn carry(file: &File, carried: &Carried) {
    for (name, value) in [
        (SHA256_XATTR, &carried.sha256),
        (ACTOR_XATTR, &carried.actor),
        (CHANNEL_XATTR, &carried.channel),
    ] {
        if let Some(value) = value {
            let _ = fsops::set_xattr(file, name, value.as_bytes());
        }
    }
}

/// What a file in an inbox carries from its transport, and the size a listing shows of it (of
/// a committed upload, the length of its plaintext).
pub(crate) fn carried_by(file: &File) -> io::Result<(Carried, u64)> {
    let size = file.metadata()?.len();
    let carried = Carried {
        sha256: committed_sha256(file),
        actor: committed_actor(file).map(|a| a.to_string()),
        channel: committed_channel(file).map(|c| c.as_str().to_owned()),
    };
    let shown = carried
        .sha256
        .as_ref()
        .and_then(|_| at_rest::plaintext_len(size))
        .unwrap_or(size);
    Ok((carried, shown))
}

/// What the database says of a box file for reading; `None` while it does not answer, when
/// this node's copy is read instead: downloads go on through an outage wherever their bytes
/// are on the node (docs/cluster.md).
fn shared_or_away<T>(result: Result<T, FilesError>) -> Result<Option<T>, BoxError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(FilesError::Database(e)) => {
            tracing::debug!(error = %crate::error::Chain(&e), "box files read from this node's copy");
            Ok(None)
        }
        Err(e) => Err(shared_error(e)),
    }
}

/// A database error where a box file is shared through it: the step is refused as the gateway
/// being unable to take files now (fail closed), and the cause is logged.
fn shared_error(e: FilesError) -> BoxError {
    match e {
        FilesError::Io(_, inner) => BoxError::Io(inner),
        e => {
            tracing::warn!(error = %crate::error::Chain(&e), "box file in the database");
            BoxError::Unavailable
        }
    }
}

/// A committed upload: the event for the pipeline and the SHA-256 of what was uploaded.
#[derive(Debug)]
pub struct Committed {
    pub event: BoxEvent,
    pub sha256: String,
}

/// The extended attribute in which a committed upload carries the account that uploaded it
/// (the counterpart, or a maintainer or break-glass account acting in its box: ARCHITECTURE.md,
/// *Who acted*), so the `accepted` receipt names who acted even when the file is found by a
/// rescan.
const ACTOR_XATTR: &str = "user.handoff.actor";

/// The account that uploaded a committed file, if it carries one.
pub fn committed_actor(file: &File) -> Option<AccountId> {
    let value = fsops::get_xattr(file, ACTOR_XATTR, 64)?;
    AccountId::new(std::str::from_utf8(&value).ok()?).ok()
}

/// Beside the actor, the channel a committed upload came by: the `accepted` receipt says how
/// the file came in, and an offline file is opened by the rules for media.
const CHANNEL_XATTR: &str = "user.handoff.channel";

/// The channel a committed file came by, if it carries one.
pub fn committed_channel(file: &File) -> Option<Channel> {
    let value = fsops::get_xattr(file, CHANNEL_XATTR, 16)?;
    Channel::parse(std::str::from_utf8(&value).ok()?)
}

/// What transports tell the pipeline about box files. `account` is the counterpart whose box
/// it is; `actor` the account of the session that did it (the same, or a maintainer or
/// break-glass account acting in that box).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxEvent {
    /// A complete upload is now in `inbox/` (the accept event).
    Uploaded {
        account: CounterpartId,
        actor: AccountId,
        name: FileName,
    },
    /// The whole of an outbox file was read.
    Retrieved {
        account: CounterpartId,
        actor: AccountId,
        channel: Channel,
        name: FileName,
    },
    /// An outbox file was deleted (acknowledged, when its counterpart did it).
    Acknowledged {
        account: CounterpartId,
        actor: AccountId,
        channel: Channel,
        name: FileName,
    },
}

impl BoxEvent {
    /// The counterpart whose box it happened in.
    pub fn owner(&self) -> &CounterpartId {
        match self {
            BoxEvent::Uploaded { account, .. }
            | BoxEvent::Retrieved { account, .. }
            | BoxEvent::Acknowledged { account, .. } => account,
        }
    }
}

/// One file in a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: FileName,
    pub size: u64,
    pub modified: SystemTime,
}

/// How often, in bytes written, an upload re-checks free space.
const SPACE_CHECK_EVERY: u64 = 64 << 20;
/// Bytes of an upload that may arrive ahead of a gap (SFTP clients may send writes out of
/// order) and wait in memory until the gap is filled. OpenSSH's client keeps at most 64 requests
/// of 255 KiB in flight, just under this.
const AHEAD_LIMIT: usize = 16 << 20;

/// The box of one counterpart, opened for one account's session.
#[derive(Debug)]
pub struct DropBox {
    owner: CounterpartId,
    /// The account of the session that opened it.
    actor: AccountId,
    /// How that account reached the box.
    channel: Channel,
    folders: [OwnedFd; 3],
    /// The box's folder in the state directory.
    dir: PathBuf,
    /// Where the store is a database: the box's files are there, and `dir` is this node's copy.
    shared: Option<SharedFiles>,
    staging: OwnedFd,
    state_root: PathBuf,
    min_free: u64,
    max_upload: u64,
    writable: bool,
    master: Arc<MasterKey>,
}

impl DropBox {
    /// Opens the box of counterpart `owner` for `account` (the owner itself, or a maintainer
    /// or operator whose scope includes it), reached by `channel`. With `shared`, the box's
    /// files are those of the database.
    pub fn open(
        layout: &StateLayout,
        shared: Option<&SharedFiles>,
        snapshot: &Snapshot,
        master: &Arc<MasterKey>,
        account: &AccountId,
        owner: &CounterpartId,
        channel: Channel,
    ) -> Result<DropBox, BoxError> {
        let acct = snapshot
            .accounts
            .get(account)
            .ok_or_else(|| BoxError::NoBox(account.to_string()))?;
        if !acct.boxes.iter().any(|b| b == owner) || snapshot.config.counterpart(owner).is_none() {
            return Err(BoxError::NoBox(owner.to_string()));
        }
        let root = fsops::open_dir(&layout.box_dir(owner))?;
        let folders = [
            fsops::open_beneath_dir(&root, Folder::Inbox.as_str())?,
            fsops::open_beneath_dir(&root, Folder::Outbox.as_str())?,
            fsops::open_beneath_dir(&root, Folder::Receipts.as_str())?,
        ];
        let staging_path = layout.staging(account);
        crate::state::private_dir(&staging_path)?;
        Ok(DropBox {
            owner: owner.to_owned(),
            actor: account.to_owned(),
            channel,
            folders,
            dir: layout.box_dir(owner),
            shared: shared.cloned(),
            staging: fsops::open_dir(&staging_path)?,
            state_root: layout.root().to_path_buf(),
            min_free: snapshot.config.gateway.limits.min_free_space.bytes(),
            max_upload: snapshot.config.max_upload_size(owner).bytes(),
            writable: acct.access == Access::ReadWrite,
            master: master.clone(),
        })
    }

    /// The counterpart whose box this is.
    pub fn owner(&self) -> &CounterpartId {
        &self.owner
    }

    /// The account acting in the box: its owner, or a maintainer or break-glass account.
    pub fn actor(&self) -> &AccountId {
        &self.actor
    }

    /// How the acting account reached the box.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    pub fn max_upload(&self) -> u64 {
        self.max_upload
    }

    /// Whether the session may upload and acknowledge (read-only maintainers may not).
    pub fn writable(&self) -> bool {
        self.writable
    }

    fn folder(&self, f: Folder) -> &OwnedFd {
        match f {
            Folder::Inbox => &self.folders[0],
            Folder::Outbox => &self.folders[1],
            Folder::Receipts => &self.folders[2],
        }
    }

    fn path(&self, folder: Folder, name: &FileName) -> PathBuf {
        self.dir.join(folder.as_str()).join(name.as_str())
    }

    /// The visible files of a folder: regular files whose names pass [`FileName`].
    pub fn list(&self, folder: Folder) -> Result<Vec<Entry>, BoxError> {
        if let Some(shared) = &self.shared
            && let Some(files) = shared_or_away(shared.list(&self.dir.join(folder.as_str())))?
        {
            return Ok(files
                .into_iter()
                .filter_map(|f| {
                    Some(Entry {
                        name: FileName::new(&f.name).ok()?,
                        size: f.shown_size,
                        modified: f.modified,
                    })
                })
                .collect());
        }
        let dir = self.folder(folder);
        let mut entries = Vec::new();
        for name in fsops::read_dir_names(dir)? {
            let Ok(name) = FileName::new(&name) else {
                continue;
            };
            if let Some(meta) = fsops::stat_beneath(dir, name.as_str())? {
                entries.push(Entry {
                    size: self.visible_size(folder, &name, meta.size),
                    name,
                    modified: meta.modified,
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    pub fn stat(&self, folder: Folder, name: &FileName) -> Result<Entry, BoxError> {
        if let Some(shared) = &self.shared
            && let Some(file) = shared_or_away(shared.stat(&self.path(folder, name)))?
        {
            let file = file.ok_or(BoxError::NotFound)?;
            return Ok(Entry {
                name: name.clone(),
                size: file.shown_size,
                modified: file.modified,
            });
        }
        let meta =
            fsops::stat_beneath(self.folder(folder), name.as_str())?.ok_or(BoxError::NotFound)?;
        Ok(Entry {
            name: name.clone(),
            size: self.visible_size(folder, name, meta.size),
            modified: meta.modified,
        })
    }

    /// The size a counterpart sees: for a file waiting in the inbox, the length of what was
    /// uploaded rather than of its sealed form.
    fn visible_size(&self, folder: Folder, name: &FileName, on_disk: u64) -> u64 {
        if folder != Folder::Inbox {
            return on_disk;
        }
        let plain = fsops::open_file_beneath(self.folder(folder), name.as_str())
            .ok()
            .filter(|file| at_rest::is_sealed_upload(&self.master, file))
            .and_then(|_| at_rest::plaintext_len(on_disk));
        plain.unwrap_or(on_disk)
    }

    /// Opens an outbox file or a receipt for reading. Inbox files cannot be read back.
    pub fn open_read(&self, folder: Folder, name: &FileName) -> Result<(File, Entry), BoxError> {
        if folder == Folder::Inbox {
            return Err(BoxError::PermissionDenied(
                "inbox files cannot be read back",
            ));
        }
        if let Some(shared) = &self.shared
            && let Some(fetched) = shared_or_away(shared.fetch(&self.path(folder, name)))?
        {
            fetched.ok_or(BoxError::NotFound)?;
        }
        let file =
            fsops::open_file_beneath(self.folder(folder), name.as_str()).map_err(not_found)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(BoxError::NotFound);
        }
        let entry = Entry {
            name: name.clone(),
            size: meta.len(),
            modified: meta.modified()?,
        };
        Ok((file, entry))
    }

    /// Deletes an outbox file: the counterpart acknowledges it has the file.
    pub fn acknowledge(&self, folder: Folder, name: &FileName) -> Result<Entry, BoxError> {
        if folder != Folder::Outbox {
            return Err(BoxError::PermissionDenied(
                "only outbox files can be deleted",
            ));
        }
        if !self.writable {
            return Err(BoxError::PermissionDenied("read-only access"));
        }
        let entry = self.stat(folder, name)?;
        if let Some(shared) = &self.shared {
            shared
                .remove(&self.path(folder, name))
                .map_err(shared_error)?;
            return Ok(entry);
        }
        fsops::unlink_beneath(self.folder(folder), name.as_str()).map_err(not_found)?;
        fsops::sync_dir(self.folder(folder))?;
        Ok(entry)
    }

    /// Starts an upload into `inbox/` under `name`.
    pub fn begin_upload(&self, name: FileName) -> Result<Upload, BoxError> {
        if !self.writable {
            return Err(BoxError::PermissionDenied("read-only access"));
        }
        self.check_space()?;
        let taken = match &self.shared {
            Some(shared) => shared
                .stat(&self.path(Folder::Inbox, &name))
                .map_err(shared_error)?
                .is_some(),
            None => fsops::stat_beneath(self.folder(Folder::Inbox), name.as_str())?.is_some(),
        };
        if taken {
            return Err(BoxError::NameTaken);
        }
        let staged = format!("{}.part", uuid::Uuid::now_v7());
        let file = fsops::create_exclusive(&self.staging, &staged)?;
        let sealer = AtRestWriter::for_upload(&self.master, SequentialFile::new(file))
            .map_err(|e| BoxError::Io(io::Error::other(e)))?;
        Ok(Upload {
            sealer: Some(sealer),
            hash: Sha256::new(),
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
            budget: None,
            sealed: 0,
            staged: Some(staged),
            staging: self.staging.try_clone()?,
            inbox: self.folder(Folder::Inbox).try_clone()?,
            shared: self
                .shared
                .clone()
                .map(|s| (s, self.dir.join(Folder::Inbox.as_str()))),
            name,
            owner: self.owner.clone(),
            actor: self.actor.clone(),
            channel: self.channel,
            limit: self.max_upload,
            size: 0,
            next_space_check: SPACE_CHECK_EVERY,
            state_root: self.state_root.clone(),
            min_free: self.min_free,
        })
    }

    fn check_space(&self) -> Result<(), BoxError> {
        check_space(&self.state_root, self.min_free)
    }
}

/// A name that does not resolve to a regular file beneath the folder — absent, or a symlink
/// refused by the resolver — is reported as not found, never as an I/O failure.
fn not_found(e: io::Error) -> BoxError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => {
            BoxError::NotFound
        }
        _ => BoxError::Io(e),
    }
}

fn check_space(root: &std::path::Path, min_free: u64) -> Result<(), BoxError> {
    if fsops::free_space(root)? < min_free {
        return Err(BoxError::InsufficientStorage);
    }
    Ok(())
}

/// An upload in progress. Dropping it without [`Upload::commit`] discards the partial file.
pub struct Upload {
    /// The staging file, sealed front to back; `None` once committed.
    sealer: Option<AtRestWriter<SequentialFile>>,
    /// Of the bytes sealed so far.
    hash: Sha256,
    /// Pieces that came ahead of a gap, by offset, until the gap is filled.
    ahead: BTreeMap<u64, Bytes>,
    ahead_bytes: usize,
    /// What the acting account's uploads may hold ahead of gaps together, once the upload is
    /// given to the [`Writers`]; `ahead_bytes` of it are this upload's.
    budget: Option<Arc<writer::AheadBudget>>,
    /// Bytes sealed so far: every byte before this offset has been written once.
    sealed: u64,
    /// Name in the staging directory; `None` once committed or discarded.
    staged: Option<String>,
    staging: OwnedFd,
    inbox: OwnedFd,
    /// Where box files are in the database: it, and the inbox's folder on this node.
    shared: Option<(SharedFiles, PathBuf)>,
    name: FileName,
    owner: CounterpartId,
    actor: AccountId,
    channel: Channel,
    limit: u64,
    /// Highest byte offset written so far.
    size: u64,
    next_space_check: u64,
    state_root: PathBuf,
    min_free: u64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("size", &self.size)
            .field("sealed", &self.sealed)
            .field("ahead_bytes", &self.ahead_bytes)
            .finish_non_exhaustive()
    }
}

impl Upload {
    pub fn name(&self) -> &FileName {
        &self.name
    }

    /// Changes the name the upload will be handed off under (clients that upload under a
    /// temporary name and rename before closing).
    pub fn rename(&mut self, name: FileName) {
        self.name = name;
    }

    /// Bytes written so far (the highest offset reached).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The account that acts: its budget of data held ahead of gaps is shared by its uploads.
    pub fn actor(&self) -> &AccountId {
        &self.actor
    }

    /// Writes at an offset, as SFTP does. Requests may arrive out of order: a piece ahead of a
    /// gap waits in memory (up to `AHEAD_LIMIT`, and within the account's budget once the
    /// upload has one) until the gap is filled. Rewriting bytes
    /// already written is refused — the sealed file cannot be changed in place, and no
    /// upload client needs it.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BoxError> {
        self.write_piece(offset, data, || Bytes::copy_from_slice(data))
    }

    /// As [`Upload::write_at`], keeping `data` itself (not a copy) if it must wait.
    pub fn write_bytes_at(&mut self, offset: u64, data: &Bytes) -> Result<(), BoxError> {
        self.write_piece(offset, data, || data.clone())
    }

    /// Writes `data` at `offset`; `keep` gives what waits in memory if it comes ahead of a gap.
    fn write_piece(
        &mut self,
        offset: u64,
        data: &[u8],
        keep: impl FnOnce() -> Bytes,
    ) -> Result<(), BoxError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(BoxError::TooLarge { limit: self.limit })?;
        if end > self.limit {
            return Err(BoxError::TooLarge { limit: self.limit });
        }
        if data.is_empty() {
            return Ok(());
        }
        if end >= self.next_space_check {
            check_space(&self.state_root, self.min_free)?;
            self.next_space_check = end + SPACE_CHECK_EVERY;
        }
        if offset < self.sealed || self.overlaps_ahead(offset, end) {
            return Err(BoxError::OutOfOrder(
                "bytes already written cannot be written again",
            ));
        }
        if offset > self.sealed {
            if self.ahead_bytes + data.len() > AHEAD_LIMIT {
                return Err(BoxError::OutOfOrder(
                    "too much data written ahead of a gap in the file",
                ));
            }
            if let Some(budget) = &self.budget {
                budget.take(data.len())?;
            }
            self.ahead_bytes += data.len();
            self.ahead.insert(offset, keep());
        } else {
            self.seal(data)?;
            while let Some(piece) = self.ahead.remove(&self.sealed) {
                self.ahead_bytes -= piece.len();
                if let Some(budget) = &self.budget {
                    budget.give(piece.len());
                }
                self.seal(&piece)?;
            }
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Whether `offset..end` meets a piece waiting ahead of a gap.
    fn overlaps_ahead(&self, offset: u64, end: u64) -> bool {
        let before = self
            .ahead
            .range(..=offset)
            .next_back()
            .is_some_and(|(at, piece)| at + piece.len() as u64 > offset);
        let after = self.ahead.range(offset..end).next().is_some();
        before || after
    }

    fn seal(&mut self, data: &[u8]) -> Result<(), BoxError> {
        let sealer = self.sealer.as_mut().ok_or(BoxError::NotFound)?;
        sealer.write_all(data)?;
        self.hash.update(data);
        self.sealed += data.len() as u64;
        Ok(())
    }

    /// Appends, as a streamed HTTP body does.
    pub fn append(&mut self, data: &[u8]) -> Result<(), BoxError> {
        self.write_at(self.size, data)
    }

    /// Makes the upload durable and visible in `inbox/`: seal the last segment, record the
    /// SHA-256, fsync, link under its name (never over an existing file), drop the staging
    /// name, fsync the inbox directory. Blocking: call it from a blocking context.
    pub fn commit(mut self) -> Result<Committed, BoxError> {
        if self.size == 0 {
            return Err(BoxError::Empty);
        }
        if !self.ahead.is_empty() {
            return Err(BoxError::OutOfOrder(
                "the file has a gap: a part before its end was never written",
            ));
        }
        let sealer = self.sealer.take().ok_or(BoxError::NotFound)?;
        let file = sealer
            .finish()
            .map_err(|e| BoxError::Io(io::Error::other(e)))?
            .finish()?;
        let sha256 = hex::encode(std::mem::take(&mut self.hash).finalize());
        let carried = Carried {
            sha256: Some(sha256.clone()),
            actor: Some(self.actor.to_string()),
            channel: Some(self.channel.as_str().to_owned()),
        };
        carry(&file, &carried);
        if self.shared.is_none() {
            // Where box files are shared, the database makes the upload durable.
            file.sync_all()?;
        }
        let staged = self.staged.as_deref().ok_or(BoxError::NotFound)?;
        if let Some((shared, inbox)) = &self.shared {
            // The database holds the upload before it is acknowledged; the staged file goes.
            // The sealer's handle is for writing only.
            let sealed = fsops::open_file_beneath(&self.staging, staged)?;
            let place = inbox.join(self.name.as_str());
            match shared.put(&place, &sealed, self.size, &carried, Put::New) {
                Ok(_) => {}
                Err(FilesError::Exists(_)) => return Err(BoxError::NameTaken),
                Err(e) => return Err(shared_error(e)),
            }
            // This node's copy, marked as the database's version: this node accepts the upload
            // without reading it back.
            let _ = fsops::link_beneath(&self.staging, staged, &self.inbox, self.name.as_str());
            let _ = fsops::unlink_beneath(&self.staging, staged);
            self.staged = None;
            return Ok(self.committed(sha256));
        }
        match fsops::link_beneath(&self.staging, staged, &self.inbox, self.name.as_str()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(BoxError::NameTaken),
            Err(e) => return Err(e.into()),
        }
        let _ = fsops::unlink_beneath(&self.staging, staged);
        self.staged = None;
        fsops::sync_dir(&self.inbox)?;
        Ok(self.committed(sha256))
    }

    fn committed(&self, sha256: String) -> Committed {
        Committed {
            event: BoxEvent::Uploaded {
                account: self.owner.clone(),
                actor: self.actor.clone(),
                name: self.name.clone(),
            },
            sha256,
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(self.ahead_bytes);
        }
        if let Some(staged) = self.staged.take() {
            let _ = fsops::unlink_beneath(&self.staging, &staged);
        }
    }
}

/// Removes staged partial uploads older than `max_age` (left by a crash; a live session removes
/// its own on disconnect). Returns how many were removed.
pub fn sweep_partials(layout: &StateLayout, max_age: std::time::Duration) -> io::Result<usize> {
    let mut removed = 0;
    let staging = layout.root().join("staging");
    let Ok(accounts) = std::fs::read_dir(&staging) else {
        return Ok(0);
    };
    let now = SystemTime::now();
    for account in accounts.flatten() {
        let Ok(files) = std::fs::read_dir(account.path()) else {
            continue;
        };
        for f in files.flatten() {
            let Ok(meta) = f.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok());
            if meta.is_file()
                && age.is_some_and(|a| a >= max_age)
                && std::fs::remove_file(f.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    Ok(removed)
}
