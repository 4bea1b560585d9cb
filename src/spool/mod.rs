//! The spool: accepted files waiting for their stages, the sealed files waiting for delivery,
//! and the quarantine. Every file is written under a deterministic name through a temporary
//! file, fsynced, renamed into place and its directory fsynced, so a crash leaves either the
//! whole file or none, and redoing a step overwrites its own earlier attempt.
//!
//! Accepted and quarantined files are encrypted at rest with a key derived from the master key
//! and the file id ([`crate::seal::at_rest`]); plaintext never touches the disk. Sealed files
//! (CMS for the recipient) are stored as they are.
//!
//! Where the store is a database, every file written here is also put there before the step
//! that wrote it is committed, and one this node lacks is fetched from there before it is
//! opened ([`SharedFiles`]): any node can take a job up where another left it.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::boxes::Waiting;
use crate::direct_io::SequentialFile;
use crate::keys::MasterKey;
use crate::seal::at_rest::{self, AtRestReader, AtRestWriter};
use crate::state::StateLayout;
use crate::store::files::{Put, SharedFiles};

/// Suffix of files being written; never read back, removed at start-up.
const TMP: &str = ".tmp";
/// Suffix of a sealed file in the spool.
const SEALED: &str = ".sealed";
/// Suffix of the content of an upload that came encrypted for the gateway, once opened.
const OPENED: &str = ".opened";

/// What a durable write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    /// SHA-256 of the bytes read from the source.
    pub sha256: crate::ids::Sha256,
}

/// How long a file stays in a shared spool before a sweep may take it for an orphan: longer
/// than any node takes between writing a file and recording its job.
pub const SHARED_ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// A readable, seekable stream of a spooled file's plaintext (validators walk zip directories).
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// The spool and quarantine directories.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    quarantine: PathBuf,
    master: Arc<MasterKey>,
    shared: Option<SharedFiles>,
    /// Where the spool is shared: whether each file this node has written, fetched or looked up
    /// is in the database. Only the node holding a job's claim touches its files, so what it
    /// learnt stays true while it holds the job, and each step does not ask the database again;
    /// a job taken over from another node is forgotten ([`Spool::forget`]).
    known: Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, bool>>>,
}

impl Spool {
    pub fn new(layout: &StateLayout, master: Arc<MasterKey>, shared: Option<SharedFiles>) -> Spool {
        Spool {
            dir: layout.spool(),
            quarantine: layout.quarantine(),
            master,
            shared,
            known: Default::default(),
        }
    }

    /// Whether the spool is shared with other nodes through the database.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Forgets what this node knew of a job's files: another node may have changed them.
    pub fn forget(&self, file_id: &str) {
        for path in [
            self.plain_path(file_id),
            self.opened_path(file_id),
            self.sealed_path(file_id),
            self.quarantine.join(file_id),
        ] {
            self.learn(&path, None);
        }
    }

    /// Where the spool's files are made durable: the database's, if it is shared.
    fn durable(&self) -> Durable {
        Durable::of(&self.shared)
    }

    fn learn(&self, path: &Path, there: Option<bool>) {
        use crate::sync::Recover;
        let mut known = self.known.locked();
        match there {
            Some(there) => known.insert(path.to_path_buf(), there),
            None => known.remove(path),
        };
    }

    /// Puts a file this node has just written durably into the database, if there is one.
    fn publish(&self, path: &Path) -> io::Result<()> {
        if let Some(shared) = &self.shared {
            self.learn(path, None);
            shared.publish(path, Put::Replace)?;
            self.learn(path, Some(true));
        }
        Ok(())
    }

    /// Whether the file is there to open: on this node, or fetched from the database.
    fn present(&self, path: &Path) -> io::Result<bool> {
        let Some(shared) = &self.shared else {
            return Ok(path.exists());
        };
        use crate::sync::Recover;
        if let Some(&there) = self.known.locked().get(path) {
            return Ok(there);
        }
        let there = shared.fetch(path)?.is_some();
        self.learn(path, Some(there));
        Ok(there)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn plain_path(&self, file_id: &str) -> PathBuf {
        self.dir.join(file_id)
    }

    fn sealed_path(&self, file_id: &str) -> PathBuf {
        self.dir.join(format!("{file_id}{SEALED}"))
    }

    fn opened_path(&self, file_id: &str) -> PathBuf {
        self.dir.join(format!("{file_id}{OPENED}"))
    }

    /// Stores an accepted file's bytes under its id, encrypted; returns size and SHA-256 of the
    /// plaintext.
    pub fn store(&self, file_id: &str, mut src: impl Read) -> io::Result<Written> {
        let mut hash = Sha256::new();
        let mut size = 0u64;
        write_whole_with(&self.dir, file_id, self.durable(), |w| {
            let mut enc = AtRestWriter::new(&self.master, file_id, w).map_err(io::Error::other)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                size += n as u64;
                enc.write_all(&buf[..n])?;
            }
            enc.finish().map_err(io::Error::other)?;
            Ok(())
        })?;
        self.publish(&self.plain_path(file_id))?;
        Ok(Written {
            size,
            sha256: crate::ids::Sha256::from_hasher(hash),
        })
    }

    /// Stores the bytes `fill` writes under `file_id`, encrypted, replacing an earlier copy
    /// whole; returns size and SHA-256 of the plaintext. For files the gateway makes itself
    /// (the archives sorted out of an agency-addressed one).
    pub fn store_with(
        &self,
        file_id: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Written> {
        let mut hashed = None;
        write_whole_with(&self.dir, file_id, self.durable(), |w| {
            let enc = AtRestWriter::new(&self.master, file_id, w).map_err(io::Error::other)?;
            let mut plain = HashingWriter {
                inner: enc,
                hasher: Sha256::new(),
                size: 0,
            };
            fill(&mut plain)?;
            plain.inner.finish().map_err(io::Error::other)?;
            hashed = Some(Written {
                size: plain.size,
                sha256: crate::ids::Sha256::from_hasher(plain.hasher),
            });
            Ok(())
        })?;
        self.publish(&self.plain_path(file_id))?;
        hashed.ok_or_else(|| io::Error::other("nothing was written"))
    }

    /// Takes an upload waiting in an inbox into the spool as `file_id`. An upload the
    /// transports sealed and hashed as it arrived is linked in as it is: the same file, neither
    /// read nor copied. One sealed without its hash is opened (a changed or cut file fails, and
    /// stays in the inbox) and stored again; any other file — one an operator placed in an inbox
    /// by hand — is read as it is.
    pub fn take_upload(&self, file_id: &str, waiting: Waiting) -> io::Result<Written> {
        if !at_rest::is_sealed_upload(&self.master, &waiting.file) {
            return self.store(file_id, io::BufReader::with_capacity(1 << 17, waiting.file));
        }
        // A hash that does not read as one is not trusted: the upload is stored again below.
        if let Some(sha256) = crate::boxes::committed_sha256(&waiting.file)
            .and_then(|s| crate::ids::Sha256::from_hex(&s).ok())
        {
            let size = at_rest::plaintext_len(waiting.file.metadata()?.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "truncated upload"))?;
            // The boxes and the spool share a file system in the state directory; should they
            // not, the upload is copied below instead.
            if waiting.link_to(&self.plain_path(file_id)).is_ok() {
                self.learn(
                    &self.plain_path(file_id),
                    self.shared.as_ref().map(|_| true),
                );
                if self.durable() == Durable::Here {
                    sync_dir(&self.dir)?;
                }
                return Ok(Written { size, sha256 });
            }
        }
        let file = io::BufReader::with_capacity(1 << 17, waiting.file);
        let upload = AtRestReader::new(&self.master, file_id, file)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.store(file_id, upload)
    }

    /// Opens the content of an accepted file, decrypting the at-rest layer as it is read: the
    /// opened content where the upload came encrypted for the gateway ([`Spool::store_opened`]),
    /// otherwise the upload itself.
    pub fn open(&self, file_id: &str) -> io::Result<Box<dyn ReadSeek>> {
        let opened = self.opened_path(file_id);
        if self.present(&opened)? {
            self.read_at_rest(&opened, &format!("{file_id}{OPENED}"))
        } else {
            self.open_upload(file_id)
        }
    }

    /// Opens the bytes of an upload as they were received.
    pub fn open_upload(&self, file_id: &str) -> io::Result<Box<dyn ReadSeek>> {
        let path = self.plain_path(file_id);
        self.present(&path)?;
        self.read_at_rest(&path, file_id)
    }

    fn read_at_rest(&self, path: &Path, key_id: &str) -> io::Result<Box<dyn ReadSeek>> {
        let file = io::BufReader::with_capacity(1 << 17, File::open(path)?);
        let reader = AtRestReader::new(&self.master, key_id, file)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Box::new(reader))
    }

    /// Whether the content of an upload that came encrypted for the gateway is stored.
    pub fn has_opened(&self, file_id: &str) -> io::Result<bool> {
        self.present(&self.opened_path(file_id))
    }

    /// Stores, encrypted at rest under a key of its own, the content `fill` writes: an upload
    /// that came encrypted for the gateway, opened. From then on [`Spool::open`] reads it.
    pub fn store_opened<E>(
        &self,
        file_id: &str,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), E>,
    ) -> Result<Result<(), E>, io::Error> {
        let name = format!("{file_id}{OPENED}");
        let mut outcome = None;
        let written = write_whole_with(&self.dir, &name, self.durable(), |w| {
            let mut enc = AtRestWriter::new(&self.master, &name, w).map_err(io::Error::other)?;
            match fill(&mut enc) {
                Ok(()) => {
                    enc.finish().map_err(io::Error::other)?;
                    Ok(())
                }
                Err(e) => {
                    outcome = Some(e);
                    Err(io::Error::other("the content could not be opened"))
                }
            }
        });
        match (written, outcome) {
            (_, Some(e)) => {
                remove_if_exists(&self.dir.join(format!("{name}{TMP}")))?;
                Ok(Err(e))
            }
            (Ok(_), None) => {
                self.publish(&self.dir.join(&name))?;
                Ok(Ok(()))
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Stores the sealed form of a file, as `fill` writes it.
    pub fn store_sealed(
        &self,
        file_id: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Written> {
        let written = write_whole_with(
            &self.dir,
            &format!("{file_id}{SEALED}"),
            self.durable(),
            fill,
        )?;
        self.publish(&self.sealed_path(file_id))?;
        Ok(written)
    }

    /// A temporary path in the spool for `file_id` (same file system as the boxes, so a rename
    /// into an outbox is atomic; removed at start-up if a crash leaves it).
    pub fn tmp_path(&self, file_id: &str, what: &str) -> PathBuf {
        self.dir.join(format!("{file_id}.{what}{TMP}"))
    }

    /// The sealed form of a file, on this node (fetched if need be), for its delivery.
    pub fn sealed(&self, file_id: &str) -> io::Result<PathBuf> {
        let path = self.sealed_path(file_id);
        if !self.present(&path)? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not in the spool", path.display()),
            ));
        }
        Ok(path)
    }

    /// Moves an accepted file into quarantine (idempotent).
    pub fn quarantine(&self, file_id: &str) -> io::Result<()> {
        let kept = self.quarantine.join(file_id);
        if self.present(&kept)? {
            return Ok(());
        }
        // The spool file is already encrypted under a key bound to its file id: copy it as is.
        let plain = self.plain_path(file_id);
        self.present(&plain)?;
        let mut src = File::open(plain)?;
        write_whole_with(&self.quarantine, file_id, self.durable(), |w| {
            io::copy(&mut src, w).map(drop)
        })?;
        self.publish(&kept)
    }

    /// Removes every spool file of a job (plaintext and sealed). Missing files are fine.
    pub fn remove(&self, file_id: &str) -> io::Result<()> {
        let paths = [
            self.plain_path(file_id),
            self.opened_path(file_id),
            self.sealed_path(file_id),
        ];
        let Some(shared) = &self.shared else {
            return paths.iter().try_for_each(|p| remove_if_exists(p));
        };
        use crate::sync::Recover;
        let shared_ones: Vec<&Path> = {
            let known = self.known.locked();
            paths
                .iter()
                .filter(|p| known.get(p.as_path()) != Some(&false))
                .map(PathBuf::as_path)
                .collect()
        };
        shared.remove_all(&shared_ones)?;
        for path in &paths {
            remove_if_exists(path)?;
            self.learn(path, None);
        }
        Ok(())
    }

    /// Removes temporary files, spool files whose job is not open (left by a crash between
    /// writing the spool file and committing the job, or between finishing a job and removing
    /// its files) and quarantined files whose job the store does not know. Returns how many.
    ///
    /// A shared spool is swept while other nodes work: only files there for
    /// [`SHARED_ORPHAN_AGE`] are taken, and this node's copies are left to the pruning of
    /// copies.
    pub fn sweep_orphans(
        &self,
        open: impl Fn(&str) -> bool,
        known: impl Fn(&str) -> bool,
    ) -> io::Result<usize> {
        let mut removed = 0;
        for (dir, keep) in [
            (&self.dir, &open as &dyn Fn(&str) -> bool),
            (&self.quarantine, &known),
        ] {
            if let Some(shared) = &self.shared {
                let settled = std::time::SystemTime::now() - SHARED_ORPHAN_AGE;
                let orphans: Vec<PathBuf> = shared
                    .list(dir)?
                    .into_iter()
                    .filter(|file| file.modified < settled && !keep(job_of(&file.name)))
                    .map(|file| dir.join(&file.name))
                    .collect();
                let orphans: Vec<&Path> = orphans.iter().map(PathBuf::as_path).collect();
                shared.remove_all(&orphans)?;
                removed += orphans.len();
                continue;
            }
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(TMP) || !keep(job_of(&name)) {
                    remove_if_exists(&entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Removes quarantined files older than `max_age`; returns their ids.
    pub fn expire_quarantine(&self, max_age: std::time::Duration) -> io::Result<Vec<String>> {
        let now = std::time::SystemTime::now();
        let mut gone = Vec::new();
        if let Some(shared) = &self.shared {
            for file in shared.list(&self.quarantine)? {
                if now
                    .duration_since(file.modified)
                    .is_ok_and(|age| age >= max_age)
                {
                    shared.remove(&self.quarantine.join(&file.name))?;
                    gone.push(file.name);
                }
            }
            return Ok(gone);
        }
        for entry in fs::read_dir(&self.quarantine)? {
            let entry = entry?;
            let old = entry
                .metadata()?
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= max_age);
            if old {
                remove_if_exists(&entry.path())?;
                gone.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(gone)
    }
}

/// The file id a spool or quarantine file belongs to.
fn job_of(name: &str) -> &str {
    [SEALED, OPENED]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `src` to `dir/name` durably: `dir/name.tmp`, fsync, rename, fsync `dir`. Streams.
pub fn write_durable(dir: &Path, name: &str, mut src: impl Read) -> io::Result<Written> {
    write_whole_with(dir, name, Durable::Here, |w| {
        io::copy(&mut src, w).map(drop)
    })
}

/// Where a file the gateway writes is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// On this node's disk: the file and its folder are fsynced.
    Here,
    /// In the database, by the caller, once written ([`crate::store::SharedFiles`]): the file on
    /// the node is only its copy, and fsyncing it would double the disk's work for nothing.
    InDatabase,
}

impl Durable {
    /// Where the files of a store that is `shared` (or not) are made durable.
    pub fn of<T>(shared: &Option<T>) -> Durable {
        match shared {
            Some(_) => Durable::InDatabase,
            None => Durable::Here,
        }
    }
}

/// Writes the bytes of `fill` to `dir/name` whole: `dir/name.tmp`, then renamed; with
/// [`Durable::Here`], the file is fsynced before the rename and the folder after it.
pub fn write_whole_with(
    dir: &Path,
    name: &str,
    durable: Durable,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Written> {
    let tmp = dir.join(format!("{name}{TMP}"));
    let written = write_new_with(&tmp, durable, fill)?;
    fs::rename(&tmp, dir.join(name))?;
    if durable == Durable::Here {
        sync_dir(dir)?;
    }
    Ok(written)
}

/// Writes the bytes of `fill` to a new file at `path` (replacing a stale one), fsynced with
/// [`Durable::Here`].
pub fn write_new_with(
    path: &Path,
    durable: Durable,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Written> {
    use std::os::unix::fs::OpenOptionsExt;
    let out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let mut w = HashingWriter {
        inner: SequentialFile::new(out),
        hasher: Sha256::new(),
        size: 0,
    };
    fill(&mut w)?;
    let file = w.inner.finish()?;
    if durable == Durable::Here {
        file.sync_all()?;
    }
    Ok(Written {
        size: w.size,
        sha256: crate::ids::Sha256::from_hasher(w.hasher),
    })
}

/// Hashes and counts what passes through to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How many files wait in the spool and in quarantine, for the NOC.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub spool: usize,
    pub quarantine: usize,
}

/// Counts the files of the spool and the quarantine, temporaries not included: the database's,
/// where the store shares them.
pub fn counts(layout: &StateLayout, shared: Option<&SharedFiles>) -> Counts {
    let count = |dir: PathBuf| {
        if let Some(shared) = shared {
            return shared.count(&dir).unwrap_or(0);
        }
        fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(TMP))
                    .count()
            })
            .unwrap_or(0)
    };
    Counts {
        spool: count(layout.spool()),
        quarantine: count(layout.quarantine()),
    }
}

/// SHA-256 of a stream.
pub fn sha256_of(mut src: impl Read) -> io::Result<crate::ids::Sha256> {
    let mut w = HashingWriter {
        inner: io::sink(),
        hasher: Sha256::new(),
        size: 0,
    };
    io::copy(&mut src, &mut w)?;
    Ok(crate::ids::Sha256::from_hasher(w.hasher))
}
