//! SFTP requests mapped onto the box view (ARCHITECTURE.md, *Confinement*), through
//! [`crate::boxes`] only.
//!
//! A counterpart sees `/inbox`, `/outbox`, `/receipts` of its own box; a maintainer or
//! break-glass account sees `/<counterpart>/inbox|outbox|receipts` for each box in its scope.
//! Everything outside that tree — `..`, links, directories, attribute changes, extensions other
//! than `limits@openssh.com` — is refused with `SSH_FX_PERMISSION_DENIED` and audited.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File as StdFile;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use russh_sftp::extensions;
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use serde_json::json;

use crate::accounts::{AccountId, CounterpartId};
use crate::boxes::{
    BoxError, BoxEvent, DropBox, Entry, FileName, Folder, UploadWriter, VirtualPath,
};
use crate::error::Chain;
use crate::events::Channel;
use crate::services::Services;

/// Largest SFTP packet accepted from a client, as OpenSSH's server allows.
pub const MAX_SFTP_PACKET: u32 = 256 * 1024;
/// Largest read answered at once, and largest write asked of clients, as OpenSSH's server caps
/// them: room for the header within the 256 KiB frame.
const MAX_READ: u32 = 256 * 1024 - 1024;
/// Most entries in one `readdir` answer, as OpenSSH's server sends.
const READDIR_ENTRIES: usize = 100;
/// Most bytes of names and attributes in one `readdir` answer: OpenSSH's client refuses a reply
/// over 256 KiB, so a large folder is listed in pages well under that.
const READDIR_BYTES: usize = 64 * 1024;

/// Which boxes a session sees, and how they are named.
pub enum BoxView {
    /// A counterpart's own box at the root.
    Own(DropBox),
    /// Boxes by counterpart id under the root (maintainers, break-glass).
    Scoped(BTreeMap<CounterpartId, DropBox>),
}

/// Where a path points after resolution.
enum Location<'a> {
    Root,
    BoxRoot(&'a DropBox),
    Folder(&'a DropBox, Folder),
    File(&'a DropBox, Folder, FileName),
}

enum OpenHandle {
    Read {
        file: StdFile,
        owner: CounterpartId,
        folder: Folder,
        name: FileName,
        size: u64,
        /// End of the contiguous range read from offset 0.
        covered: u64,
        bytes: u64,
    },
    Write(UploadWriter),
    /// A listing taken at `opendir`, handed out a page at a time ([`page`]).
    Dir {
        entries: VecDeque<File>,
    },
}

pub struct SftpView {
    services: Services,
    account: AccountId,
    peer: Option<SocketAddr>,
    view: BoxView,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
    retrieved: HashSet<(CounterpartId, FileName)>,
    downloaded: Counter,
    /// Files and directories this session may hold open at once (`max_handles_per_session`).
    max_handles: usize,
}

/// A refusal as the client sees it: a status code and a message it can act on.
pub struct Refusal(StatusReply);

impl From<Refusal> for StatusReply {
    fn from(r: Refusal) -> StatusReply {
        r.0
    }
}

fn refuse(code: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(StatusReply::new(code).with_message(message))
}

impl From<BoxError> for Refusal {
    fn from(e: BoxError) -> Refusal {
        let code = match &e {
            BoxError::BadName { .. }
            | BoxError::Escape
            | BoxError::PermissionDenied(_)
            | BoxError::NoBox(_) => StatusCode::PermissionDenied,
            BoxError::NotFound => StatusCode::NoSuchFile,
            BoxError::NameTaken
            | BoxError::Empty
            | BoxError::TooLarge { .. }
            | BoxError::OutOfOrder(_)
            | BoxError::Buffered { .. }
            | BoxError::InsufficientStorage
            | BoxError::Unavailable => StatusCode::Failure,
            BoxError::Io(_) => StatusCode::Failure,
        };
        let message = match &e {
            // I/O details stay in the server log.
            BoxError::Io(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        refuse(code, message)
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

fn epoch_secs(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

fn dir_attrs(writable: bool) -> FileAttributes {
    FileAttributes {
        size: Some(0),
        permissions: Some(if writable { 0o40700 } else { 0o40500 }),
        mtime: Some(epoch_secs(SystemTime::now())),
        atime: Some(epoch_secs(SystemTime::now())),
        ..FileAttributes::default()
    }
}

fn file_attrs(entry: &Entry, folder: Folder) -> FileAttributes {
    let mode = match folder {
        Folder::Inbox => 0o100200,
        Folder::Outbox => 0o100600,
        Folder::Receipts => 0o100400,
    };
    let t = epoch_secs(entry.modified);
    FileAttributes {
        size: Some(entry.size),
        permissions: Some(mode),
        mtime: Some(t),
        atime: Some(t),
        ..FileAttributes::default()
    }
}

/// Bytes an entry takes in a `SSH_FXP_NAME` answer, attributes counted at their largest.
fn encoded_len(f: &File) -> usize {
    8 + f.filename.len() + f.longname.len() + 64
}

/// The next page of a listing: at most [`READDIR_ENTRIES`] entries and [`READDIR_BYTES`]
/// bytes, and always at least one entry, so that every call makes progress.
fn page(entries: &mut VecDeque<File>) -> Vec<File> {
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some(next) = entries.front() {
        let len = encoded_len(next);
        if !out.is_empty() && (out.len() >= READDIR_ENTRIES || bytes + len > READDIR_BYTES) {
            break;
        }
        bytes += len;
        out.extend(entries.pop_front());
    }
    out
}

impl SftpView {
    pub fn new(
        services: Services,
        account: AccountId,
        peer: Option<SocketAddr>,
        view: BoxView,
    ) -> SftpView {
        let downloaded = services.metrics.transferred("sftp", "download");
        let max_handles = services.live.limits().max_handles_per_session as usize;
        SftpView {
            max_handles,
            services,
            account,
            peer,
            view,
            handles: HashMap::new(),
            next_handle: 0,
            retrieved: HashSet::new(),
            downloaded,
        }
    }

    fn audit(&self, event: crate::audit::Event, detail: serde_json::Value) {
        self.services
            .audit
            .record(event, Some(&self.account), self.peer, detail);
    }

    /// Audits a refused path and returns the refusal.
    fn denied(&self, op: &str, path: &str, e: BoxError) -> Refusal {
        if matches!(
            e,
            BoxError::Escape
                | BoxError::BadName { .. }
                | BoxError::PermissionDenied(_)
                | BoxError::NoBox(_)
                | BoxError::Unavailable
        ) {
            self.audit(
                crate::audit::Event::BoxDenied,
                json!({"op": op, "path": path, "reason": Chain(&e).to_string()}),
            );
        }
        e.into()
    }

    fn resolve(&self, path: &str) -> Result<Location<'_>, BoxError> {
        match &self.view {
            BoxView::Own(b) => Ok(match VirtualPath::parse(path.as_bytes())? {
                VirtualPath::Root => Location::BoxRoot(b),
                VirtualPath::Folder(f) => Location::Folder(b, f),
                VirtualPath::File(f, n) => Location::File(b, f, n),
            }),
            BoxView::Scoped(boxes) => {
                let trimmed = path.trim_start_matches('/');
                let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
                if first.is_empty() || first == "." {
                    if rest.trim_matches('/').is_empty() || rest.trim_matches('/') == "." {
                        return Ok(Location::Root);
                    }
                    return self.resolve(rest);
                }
                if first == ".." {
                    return Err(BoxError::Escape);
                }
                let b = boxes.get(first).ok_or(BoxError::NotFound)?;
                Ok(match VirtualPath::parse(rest.as_bytes())? {
                    VirtualPath::Root => Location::BoxRoot(b),
                    VirtualPath::Folder(f) => Location::Folder(b, f),
                    VirtualPath::File(f, n) => Location::File(b, f, n),
                })
            }
        }
    }

    /// The canonical absolute path of a location, as `realpath` answers it.
    fn display(&self, loc: &Location<'_>) -> String {
        let prefix = |b: &DropBox| match &self.view {
            BoxView::Own(_) => String::new(),
            BoxView::Scoped(_) => format!("/{}", b.owner()),
        };
        match loc {
            Location::Root => "/".to_owned(),
            Location::BoxRoot(b) => {
                let p = prefix(b);
                if p.is_empty() { "/".to_owned() } else { p }
            }
            Location::Folder(b, f) => format!("{}/{f}", prefix(b)),
            Location::File(b, f, n) => format!("{}/{f}/{n}", prefix(b)),
        }
    }

    /// Refuses another handle once the session holds as many as the limits extension announced.
    fn check_handles(&self) -> Result<(), Refusal> {
        if self.handles.len() >= self.max_handles {
            return Err(refuse(
                StatusCode::Failure,
                format!(
                    "too many open files (at most {} per session); close some first",
                    self.max_handles
                ),
            ));
        }
        Ok(())
    }

    fn new_handle(&mut self, h: OpenHandle) -> String {
        self.next_handle += 1;
        let id = self.next_handle.to_string();
        self.handles.insert(id.clone(), h);
        id
    }

    fn folder_writable(b: &DropBox, f: Folder) -> bool {
        f == Folder::Inbox && b.writable()
    }

    fn attrs_of(&self, loc: &Location<'_>) -> Result<FileAttributes, BoxError> {
        Ok(match loc {
            Location::Root | Location::BoxRoot(_) => dir_attrs(false),
            Location::Folder(b, f) => dir_attrs(Self::folder_writable(b, *f)),
            Location::File(b, f, n) => file_attrs(&b.stat(*f, n)?, *f),
        })
    }

    fn listing(&self, loc: &Location<'_>) -> Result<Vec<File>, BoxError> {
        let folders = |b: &DropBox| {
            Folder::ALL
                .iter()
                .map(|f| File::new(f.as_str(), dir_attrs(Self::folder_writable(b, *f))))
                .collect::<Vec<_>>()
        };
        Ok(match loc {
            Location::Root => match &self.view {
                BoxView::Own(b) => folders(b),
                BoxView::Scoped(boxes) => boxes
                    .keys()
                    .map(|id| File::new(id.as_str(), dir_attrs(false)))
                    .collect(),
            },
            Location::BoxRoot(b) => folders(b),
            Location::Folder(b, f) => b
                .list(*f)?
                .iter()
                .map(|e| File::new(e.name.as_str(), file_attrs(e, *f)))
                .collect(),
            Location::File(..) => return Err(BoxError::NotFound),
        })
    }

    fn emit(&self, ev: BoxEvent) {
        if self.services.box_events.try_send(ev.clone()).is_err() {
            // The queue is full or closed: the pipeline's start-up rescan and the outbox state
            // still carry the fact, so log rather than block the session.
            tracing::warn!(?ev, "box event queue full");
        }
    }

    fn finish_read(
        &mut self,
        owner: &CounterpartId,
        folder: Folder,
        name: &FileName,
        size: u64,
        covered: u64,
        bytes: u64,
    ) {
        self.audit(crate::audit::Event::BoxClose, json!({"box": owner, "folder": folder.as_str(), "name": name.as_str(), "bytes_read": bytes, "size": size}));
        if folder == Folder::Outbox
            && covered >= size
            && self.retrieved.insert((owner.clone(), name.clone()))
        {
            // Only the box's own counterpart retrieves; anyone else read it (ARCHITECTURE.md,
            // *Who acted*).
            let event = if self.account == *owner {
                crate::audit::Event::BoxRetrieved
            } else {
                crate::audit::Event::BoxRead
            };
            self.audit(
                event,
                json!({"box": owner, "name": name.as_str(), "size": size}),
            );
            self.emit(BoxEvent::Retrieved {
                account: owner.clone(),
                actor: self.account.clone(),
                channel: Channel::Sftp,
                name: name.clone(),
            });
        }
    }
}

impl SftpView {
    /// A write request, its data as it came off the channel (the request loop does not copy
    /// it: `requests.rs`).
    pub async fn write_bytes(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Bytes,
    ) -> Result<Status, Refusal> {
        let Some(OpenHandle::Write(writer)) = self.handles.get_mut(&handle) else {
            return Err(refuse(StatusCode::Failure, "invalid handle"));
        };
        writer
            .write_at(offset, vec![data])
            .await
            .map_err(Refusal::from)?;
        Ok(ok(id))
    }
}

impl russh_sftp::server::Handler for SftpView {
    type Error = Refusal;

    fn unimplemented(&self) -> Self::Error {
        refuse(StatusCode::OpUnsupported, "not supported by this server")
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        // Only limits@openssh.com is offered: with it the OpenSSH client reads and writes in
        // 255 KiB requests instead of 32 KiB ones. No copy-data, hardlink, posix-rename, statvfs.
        let mut version = Version::new();
        version
            .extensions
            .insert(extensions::LIMITS.to_owned(), "1".to_owned());
        Ok(version)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        self.check_handles()?;
        let loc = self
            .resolve(&filename)
            .map_err(|e| self.denied("open", &filename, e))?;
        let Location::File(b, folder, name) = loc else {
            return Err(self.denied("open", &filename, BoxError::PermissionDenied("not a file")));
        };
        let writing = pflags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        let handle = if writing {
            if folder != Folder::Inbox {
                return Err(self.denied(
                    "open",
                    &filename,
                    BoxError::PermissionDenied("only the inbox accepts uploads"),
                ));
            }
            if pflags.contains(OpenFlags::APPEND) || pflags.contains(OpenFlags::READ) {
                return Err(refuse(
                    StatusCode::OpUnsupported,
                    "uploads cannot be resumed or read back; upload the whole file",
                ));
            }
            if !self.services.takes_uploads() {
                return Err(self.denied("open", &filename, BoxError::Unavailable));
            }
            let upload = b
                .begin_upload(name.clone())
                .map_err(|e| self.denied("open", &filename, e))?;
            let owner = b.owner().clone();
            self.audit(
                crate::audit::Event::BoxOpen,
                json!({"box": owner, "folder": "inbox", "name": name.as_str(), "mode": "write"}),
            );
            OpenHandle::Write(self.services.writers.spawn(upload))
        } else {
            let (file, entry) = b
                .open_read(folder, &name)
                .map_err(|e| self.denied("open", &filename, e))?;
            let owner = b.owner().clone();
            self.audit(crate::audit::Event::BoxOpen, json!({"box": owner, "folder": folder.as_str(), "name": name.as_str(), "mode": "read"}));
            OpenHandle::Read {
                file,
                owner,
                folder,
                name,
                size: entry.size,
                covered: 0,
                bytes: 0,
            }
        };
        let handle = self.new_handle(handle);
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            None => Err(refuse(StatusCode::Failure, "invalid handle")),
            Some(OpenHandle::Dir { .. }) => Ok(ok(id)),
            Some(OpenHandle::Read {
                owner,
                folder,
                name,
                size,
                covered,
                bytes,
                ..
            }) => {
                self.finish_read(&owner, folder, &name, size, covered, bytes);
                Ok(ok(id))
            }
            Some(OpenHandle::Write(writer)) => {
                let name = writer.name().clone();
                let size = writer.size();
                // Fail closed: an upload the audit log cannot record, or the store cannot take,
                // is not handed off (the writer is dropped, discarding the partial file); the
                // client may send it again.
                let committed = if self.services.takes_uploads() {
                    writer.commit().await
                } else {
                    Err(BoxError::Unavailable)
                };
                match committed {
                    Ok(committed) => {
                        self.audit(
                            crate::audit::Event::BoxUpload,
                            json!({"box": committed.event.owner(), "name": name.as_str(), "bytes": size, "sha256": committed.sha256}),
                        );
                        self.services
                            .metrics
                            .transferred("sftp", "upload")
                            .inc_by(size);
                        if self
                            .services
                            .box_events
                            .send(committed.event)
                            .await
                            .is_err()
                        {
                            tracing::warn!("box event queue closed");
                        }
                        Ok(ok(id))
                    }
                    Err(e) => {
                        self.audit(
                            crate::audit::Event::BoxUploadRefused,
                            json!({"name": name.as_str(), "bytes": size, "reason": Chain(&e).to_string()}),
                        );
                        Err(e.into())
                    }
                }
            }
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let Some(OpenHandle::Read {
            file,
            size,
            covered,
            bytes,
            ..
        }) = self.handles.get_mut(&handle)
        else {
            return Err(refuse(StatusCode::Failure, "invalid handle"));
        };
        if offset >= *size {
            return Err(refuse(StatusCode::Eof, "end of file"));
        }
        let want = len.min(MAX_READ) as usize;
        let mut buf = vec![0u8; want.min(usize::try_from(*size - offset).unwrap_or(want))];
        let n = file
            .read_at(&mut buf, offset)
            .map_err(|_| refuse(StatusCode::Failure, "read failed"))?;
        if n == 0 {
            return Err(refuse(StatusCode::Eof, "end of file"));
        }
        buf.truncate(n);
        if offset <= *covered {
            *covered = (*covered).max(offset + n as u64);
        }
        *bytes += n as u64;
        self.downloaded.inc_by(n as u64);
        Ok(Data { id, data: buf })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        self.write_bytes(id, handle, offset, data.into()).await
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let loc = self
            .resolve(&path)
            .map_err(|e| self.denied("stat", &path, e))?;
        let attrs = self.attrs_of(&loc).map_err(Refusal::from)?;
        Ok(Attrs { id, attrs })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let attrs = match self.handles.get(&handle) {
            Some(OpenHandle::Read { file, folder, .. }) => {
                let meta = file
                    .metadata()
                    .map_err(|_| refuse(StatusCode::Failure, "stat failed"))?;
                let entry_time = meta.modified().unwrap_or(UNIX_EPOCH);
                let t = epoch_secs(entry_time);
                FileAttributes {
                    size: Some(meta.len()),
                    permissions: Some(if *folder == Folder::Receipts {
                        0o100400
                    } else {
                        0o100600
                    }),
                    mtime: Some(t),
                    atime: Some(t),
                    ..FileAttributes::default()
                }
            }
            Some(OpenHandle::Write(u)) => FileAttributes {
                size: Some(u.size()),
                permissions: Some(0o100200),
                ..FileAttributes::default()
            },
            Some(OpenHandle::Dir { .. }) => dir_attrs(false),
            None => return Err(refuse(StatusCode::Failure, "invalid handle")),
        };
        Ok(Attrs { id, attrs })
    }

    async fn setstat(
        &mut self,
        _id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        Err(self.denied(
            "setstat",
            &path,
            BoxError::PermissionDenied("attributes cannot be changed"),
        ))
    }

    async fn fsetstat(
        &mut self,
        _id: u32,
        _handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        Err(self.denied(
            "fsetstat",
            "",
            BoxError::PermissionDenied("attributes cannot be changed"),
        ))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        self.check_handles()?;
        let loc = self
            .resolve(&path)
            .map_err(|e| self.denied("opendir", &path, e))?;
        let entries = self.listing(&loc).map_err(Refusal::from)?;
        self.audit(
            crate::audit::Event::BoxList,
            json!({"path": self.display(&loc), "entries": entries.len()}),
        );
        let handle = self.new_handle(OpenHandle::Dir {
            entries: entries.into(),
        });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(OpenHandle::Dir { entries }) if entries.is_empty() => {
                Err(refuse(StatusCode::Eof, "end of directory"))
            }
            Some(OpenHandle::Dir { entries }) => Ok(Name {
                id,
                files: page(entries),
            }),
            _ => Err(refuse(StatusCode::Failure, "invalid handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let loc = self
            .resolve(&filename)
            .map_err(|e| self.denied("remove", &filename, e))?;
        let Location::File(b, folder, name) = loc else {
            return Err(self.denied(
                "remove",
                &filename,
                BoxError::PermissionDenied("not a file"),
            ));
        };
        let owner = b.owner().to_owned();
        let entry = b
            .acknowledge(folder, &name)
            .map_err(|e| self.denied("remove", &filename, e))?;
        self.audit(
            crate::audit::Event::BoxRemove,
            json!({"box": owner, "name": name.as_str(), "size": entry.size}),
        );
        self.emit(BoxEvent::Acknowledged {
            account: owner,
            actor: self.account.clone(),
            channel: Channel::Sftp,
            name,
        });
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        _id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        Err(self.denied(
            "mkdir",
            &path,
            BoxError::PermissionDenied("folders cannot be created"),
        ))
    }

    async fn rmdir(&mut self, _id: u32, path: String) -> Result<Status, Self::Error> {
        Err(self.denied(
            "rmdir",
            &path,
            BoxError::PermissionDenied("folders cannot be removed"),
        ))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let loc = self
            .resolve(&path)
            .map_err(|e| self.denied("realpath", &path, e))?;
        Ok(Name {
            id,
            files: vec![File::dummy(self.display(&loc))],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        // Only an upload still open in this session may be renamed (clients that upload under a
        // temporary name); anything already handed off belongs to the pipeline.
        let (old, new) = match (self.resolve(&oldpath), self.resolve(&newpath)) {
            (Ok(Location::File(a, Folder::Inbox, o)), Ok(Location::File(b, Folder::Inbox, n)))
                if a.owner() == b.owner() =>
            {
                (o, n)
            }
            (Err(e), _) | (_, Err(e)) => return Err(self.denied("rename", &oldpath, e)),
            _ => {
                return Err(self.denied(
                    "rename",
                    &oldpath,
                    BoxError::PermissionDenied(
                        "files can only be renamed within the inbox while uploading",
                    ),
                ));
            }
        };
        let upload = self.handles.values_mut().find_map(|h| match h {
            OpenHandle::Write(u) if *u.name() == old => Some(u),
            _ => None,
        });
        match upload {
            Some(u) => {
                u.rename(new);
                Ok(ok(id))
            }
            None => Err(self.denied(
                "rename",
                &oldpath,
                BoxError::PermissionDenied("only an upload in progress can be renamed"),
            )),
        }
    }

    async fn readlink(&mut self, _id: u32, path: String) -> Result<Name, Self::Error> {
        Err(self.denied(
            "readlink",
            &path,
            BoxError::PermissionDenied("no links in a box"),
        ))
    }

    async fn symlink(
        &mut self,
        _id: u32,
        linkpath: String,
        _targetpath: String,
    ) -> Result<Status, Self::Error> {
        Err(self.denied(
            "symlink",
            &linkpath,
            BoxError::PermissionDenied("links cannot be created"),
        ))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        _data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        if request == extensions::LIMITS {
            // Four uint64: largest packet, read, write, open handles (OpenSSH's PROTOCOL file).
            let limits = [
                MAX_SFTP_PACKET as u64,
                MAX_READ as u64,
                MAX_READ as u64,
                self.max_handles as u64,
            ]
            .into_iter()
            .flat_map(u64::to_be_bytes)
            .collect();
            return Ok(Packet::ExtendedReply(ExtendedReply { id, data: limits }));
        }
        self.audit(
            crate::audit::Event::BoxDenied,
            json!({"op": "extended", "request": request}),
        );
        Err(refuse(
            StatusCode::OpUnsupported,
            "extensions are not supported",
        ))
    }
}

impl Drop for SftpView {
    fn drop(&mut self) {
        let open_uploads: Vec<_> = self
            .handles
            .values()
            .filter_map(|h| match h {
                OpenHandle::Write(u) => Some((u.name().clone(), u.size())),
                _ => None,
            })
            .collect();
        for (name, bytes) in open_uploads {
            // The Upload's own Drop removes the partial file.
            self.audit(
                crate::audit::Event::BoxUploadDiscarded,
                json!({"name": name.as_str(), "bytes": bytes}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize, name_len: usize) -> VecDeque<File> {
        (0..n)
            .map(|i| {
                let name = format!("{i:05}{}", "x".repeat(name_len));
                File::new(name, FileAttributes::default())
            })
            .collect()
    }

    #[test]
    fn pages_are_bounded_in_entries_and_bytes_and_lose_nothing() {
        for (n, name_len) in [(0, 1), (1, 250), (5_000, 40), (2_000, 250)] {
            let mut all = entries(n, name_len);
            let mut seen = 0;
            for _ in 0..=n {
                let page = page(&mut all);
                if page.is_empty() {
                    break;
                }
                assert!(page.len() <= READDIR_ENTRIES);
                let bytes: usize = page.iter().map(encoded_len).sum();
                assert!(bytes <= READDIR_BYTES, "{bytes}");
                seen += page.len();
            }
            assert_eq!(seen, n);
            assert!(all.is_empty());
        }
    }
}
