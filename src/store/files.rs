//! The files several nodes share (DESIGN §8): box files, the spool and the quarantine, kept in
//! the database, with the state directory of each node as its cache.
//!
//! A file is named by its place under the state directory (`boxes/clinic-1/outbox`, `name`),
//! so the code that writes and reads files keeps its paths and its confinement: it writes the
//! file durably on the node as before, then [`SharedFiles::put`] copies it into the database in
//! one transaction, before the step is acknowledged or committed; a node that does not have a
//! file, or has an older one of the same name, [`SharedFiles::fetch`]es it before opening it.
//! Listings come from the database alone. The bytes are those the node wrote: sealed at rest,
//! CMS for the recipient, or a signed receipt, so the database never sees plaintext.
//!
//! Each version of a file is a blob of its own, in chunks of 1 MiB, written and read in a
//! stream; a node's copy carries the blob's number in an extended attribute, so it is known to
//! be current without reading it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Database, DatabaseError};

/// Bytes per row of `blob_chunks`.
const CHUNK: usize = 1 << 20;
/// Chunks of a large file written in one call to the database (each call has a time limit).
const CHUNKS_PER_CALL: usize = 16;
/// The extended attribute in which a node's copy carries the blob it was made from.
const BLOB_XATTR: &str = "user.handoff.blob";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0} exists already")]
    Exists(String),
    #[error("{} is not a file of the state directory", .0.display())]
    Outside(PathBuf),
    #[error("{}", .0.display())]
    Io(PathBuf, #[source] io::Error),
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

impl From<tokio_postgres::Error> for FilesError {
    fn from(e: tokio_postgres::Error) -> FilesError {
        FilesError::Database(e.into())
    }
}

impl From<FilesError> for io::Error {
    fn from(e: FilesError) -> io::Error {
        let kind = match &e {
            FilesError::Exists(_) => io::ErrorKind::AlreadyExists,
            FilesError::Io(_, inner) => inner.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, crate::error::Chain(&e).to_string())
    }
}

/// What an upload carries from its transport (the extended attributes of `boxes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    pub sha256: Option<String>,
    pub actor: Option<String>,
    pub channel: Option<String>,
}

/// A file as the database knows it.
#[derive(Debug, Clone)]
pub struct SharedFile {
    pub name: String,
    /// Changes with every version of the file: an upload's identity across nodes.
    pub blob: i64,
    /// The size a listing shows (of an upload waiting in an inbox, its plaintext).
    pub shown_size: u64,
    pub modified: SystemTime,
    pub carried: Carried,
    /// The bytes kept.
    size: u64,
}

/// Whether [`SharedFiles::put`] may replace a file of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Never over another file: an upload into an inbox.
    New,
    /// The gateway's own files: a step done again replaces its earlier attempt.
    Replace,
}

/// The shared files of one state directory's layout.
#[derive(Clone)]
pub struct SharedFiles {
    db: Arc<Database>,
    root: PathBuf,
}

impl std::fmt::Debug for SharedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFiles")
            .field("db", &self.db.describe())
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str =
    "f.name, f.blob, f.shown_size, f.modified, f.sha256, f.actor, f.channel, b.size";

impl SharedFiles {
    pub fn new(db: Arc<Database>, root: &Path) -> SharedFiles {
        SharedFiles {
            db,
            root: root.to_path_buf(),
        }
    }

    fn dir_key(&self, dir: &Path) -> Result<String, FilesError> {
        dir.strip_prefix(&self.root)
            .ok()
            .and_then(Path::to_str)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| FilesError::Outside(dir.to_path_buf()))
    }

    fn key(&self, path: &Path) -> Result<(String, String), FilesError> {
        let outside = || FilesError::Outside(path.to_path_buf());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(outside)?;
        let dir = self.dir_key(path.parent().ok_or_else(outside)?)?;
        Ok((dir, name.to_owned()))
    }

    /// Copies the node's file at `path` into the database under its place, in one transaction:
    /// when this returns, every node can read it. Returns its blob.
    pub fn publish(&self, path: &Path, how: Put) -> Result<i64, FilesError> {
        let file = File::open(path).map_err(|e| FilesError::Io(path.to_path_buf(), e))?;
        let size = file
            .metadata()
            .map_err(|e| FilesError::Io(path.to_path_buf(), e))?
            .len();
        self.put(path, &file, size, &Carried::default(), how)
    }

    /// Copies `from` into the database as the file at `place`, in one transaction: when this
    /// returns, every node can read it. Returns its blob.
    pub fn put(
        &self,
        place: &Path,
        from: &File,
        shown_size: u64,
        carried: &Carried,
        how: Put,
    ) -> Result<i64, FilesError> {
        let (dir, name) = self.key(place)?;
        let io_err = |e| FilesError::Io(place.to_path_buf(), e);
        let size = from.metadata().map_err(io_err)?.len();
        let on_conflict = match how {
            Put::New => "NOTHING",
            Put::Replace => {
                "UPDATE SET blob = EXCLUDED.blob, shown_size = EXCLUDED.shown_size, \
                 modified = now(), sha256 = EXCLUDED.sha256, actor = EXCLUDED.actor, \
                 channel = EXCLUDED.channel"
            }
        };
        let (blob, old) = if size <= CHUNK as u64 {
            // Most files (receipts, archives of a few hundred persons): one statement.
            let mut data = vec![0u8; size as usize];
            let got = read_full_at(from, 0, &mut data).map_err(io_err)?;
            data.truncate(got);
            self.db.with(async |c| -> Result<_, FilesError> {
                let row = c
                    .query_one(
                        &format!(
                            "WITH old AS (SELECT blob FROM files WHERE dir = $3 AND name = $4 FOR UPDATE), \
                             b AS (INSERT INTO blobs (size) VALUES ($1) RETURNING id), \
                             c AS (INSERT INTO blob_chunks (blob, n, data) SELECT id, 0, $2 FROM b), \
                             f AS (INSERT INTO files (dir, name, blob, shown_size, sha256, actor, channel) \
                                   SELECT $3, $4, id, $5, $6, $7, $8 FROM b \
                                   ON CONFLICT (dir, name) DO {on_conflict} RETURNING 1) \
                             SELECT (SELECT id FROM b), (SELECT blob FROM old), (SELECT count(*) FROM f)"
                        ),
                        &[
                            &(data.len() as i64),
                            &data,
                            &dir,
                            &name,
                            &(shown_size as i64),
                            &carried.sha256,
                            &carried.actor,
                            &carried.channel,
                        ],
                    )
                    .await?;
                let (blob, old, placed): (i64, Option<i64>, i64) = (row.get(0), row.get(1), row.get(2));
                if placed == 0 {
                    c.execute("DELETE FROM blobs WHERE id = $1", &[&blob]).await?;
                    return Err(FilesError::Exists(format!("{dir}/{name}")));
                }
                Ok((blob, old))
            })?
        } else {
            // A large file: its chunks in calls of CHUNKS_PER_CALL, each well within a call's
            // time limit, then the file in one statement. A blob cut short by a failure or a
            // crash names no file and is collected ([`SharedFiles::collect_orphans`]).
            let blob = self.db.with(async |c| -> Result<i64, FilesError> {
                Ok(c.query_one(
                    "INSERT INTO blobs (size) VALUES ($1) RETURNING id",
                    &[&(size as i64)],
                )
                .await?
                .get(0))
            })?;
            let placed = self.write_chunks(blob, from).and_then(|()| {
                self.db.with(async |c| -> Result<_, FilesError> {
                    let row = c
                        .query_one(
                            &format!(
                                "WITH old AS (SELECT blob FROM files WHERE dir = $1 AND name = $2 FOR UPDATE), \
                                 f AS (INSERT INTO files (dir, name, blob, shown_size, sha256, actor, channel) \
                                       VALUES ($1, $2, $3, $4, $5, $6, $7) \
                                       ON CONFLICT (dir, name) DO {on_conflict} RETURNING 1) \
                                 SELECT (SELECT blob FROM old), (SELECT count(*) FROM f)"
                            ),
                            &[
                                &dir,
                                &name,
                                &blob,
                                &(shown_size as i64),
                                &carried.sha256,
                                &carried.actor,
                                &carried.channel,
                            ],
                        )
                        .await?;
                    let (old, placed): (Option<i64>, i64) = (row.get(0), row.get(1));
                    if placed == 0 {
                        return Err(FilesError::Exists(format!("{dir}/{name}")));
                    }
                    Ok(old)
                })
            });
            match placed {
                Ok(old) => (blob, old),
                Err(e) => {
                    // Best effort: what is left is collected later.
                    let _ = self.db.with(async |c| -> Result<(), FilesError> {
                        c.execute(COLLECT, &[&blob]).await?;
                        Ok(())
                    });
                    return Err(e);
                }
            }
        };
        if let Some(old) = old {
            // Replaced: its blob goes unless another file names it.
            self.db.with(async |c| -> Result<(), FilesError> {
                c.execute(COLLECT, &[&old]).await?;
                Ok(())
            })?;
        }
        mark(from, blob);
        Ok(blob)
    }

    /// Writes the bytes of `from` as the chunks of `blob`, CHUNKS_PER_CALL to a call.
    fn write_chunks(&self, blob: i64, from: &File) -> Result<(), FilesError> {
        let io_err = |e| FilesError::Io(PathBuf::from(format!("blob {blob}")), e);
        let mut buf = vec![0u8; CHUNK];
        let (mut n, mut at) = (0i32, 0u64);
        loop {
            let more = self.db.with(async |c| -> Result<bool, FilesError> {
                for _ in 0..CHUNKS_PER_CALL {
                    let got = read_full_at(from, at, &mut buf).map_err(io_err)?;
                    if got == 0 {
                        return Ok(false);
                    }
                    c.execute(
                        "INSERT INTO blob_chunks (blob, n, data) VALUES ($1, $2, $3)",
                        &[&blob, &n, &&buf[..got]],
                    )
                    .await?;
                    n += 1;
                    at += got as u64;
                }
                Ok(true)
            })?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Removes blobs that name no file and are older than `age`: those of large files whose
    /// writing failed or was cut by a crash. Returns how many.
    pub fn collect_orphans(&self, age: Duration) -> Result<u64, FilesError> {
        let seconds = age.as_secs_f64();
        self.db.with(async |c| -> Result<u64, FilesError> {
            Ok(c.execute(
                "DELETE FROM blobs b WHERE b.created < now() - make_interval(secs => $1) \
                 AND NOT EXISTS (SELECT 1 FROM files f WHERE f.blob = b.id)",
                &[&seconds],
            )
            .await?)
        })
    }

    /// Gives the file at `from` a second place, `to` (replacing what was there), as a hard link
    /// does on the node: the same blob, nothing copied; the node's file at `to`, if there is
    /// one, is marked as its copy. Returns the blob, or `None` if there is no file at `from`.
    pub fn link(&self, from: &Path, to: &Path) -> Result<Option<i64>, FilesError> {
        let (from_dir, from_name) = self.key(from)?;
        let (to_dir, to_name) = self.key(to)?;
        let blob = self.db.with(async |c| -> Result<Option<i64>, FilesError> {
            Ok(c.query_opt(
                "INSERT INTO files (dir, name, blob, shown_size, sha256, actor, channel) \
                 SELECT $3, $4, blob, shown_size, sha256, actor, channel FROM files \
                 WHERE dir = $1 AND name = $2 \
                 ON CONFLICT (dir, name) DO UPDATE SET blob = EXCLUDED.blob, \
                 shown_size = EXCLUDED.shown_size, modified = now(), sha256 = EXCLUDED.sha256, \
                 actor = EXCLUDED.actor, channel = EXCLUDED.channel RETURNING blob",
                &[&from_dir, &from_name, &to_dir, &to_name],
            )
            .await?
            .map(|r| r.get(0)))
        })?;
        if let Some(blob) = blob
            && let Ok(copy) = File::open(to)
        {
            mark(&copy, blob);
        }
        Ok(blob)
    }

    /// Removes the file at `path` from the database (gone already is fine) and the node's copy.
    pub fn remove(&self, path: &Path) -> Result<(), FilesError> {
        self.remove_all(&[path])
    }

    /// Removes the files at `paths` from the database in one transaction (those gone already
    /// are fine), then the node's copies.
    pub fn remove_all(&self, paths: &[&Path]) -> Result<(), FilesError> {
        let (dirs, names): (Vec<String>, Vec<String>) = paths
            .iter()
            .map(|p| self.key(p))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        self.db.with(async |c| -> Result<(), FilesError> {
            c.execute(
                "WITH gone AS (DELETE FROM files WHERE (dir, name) IN \
                     (SELECT * FROM unnest($1::text[], $2::text[])) RETURNING blob) \
                 DELETE FROM blobs b WHERE b.id IN (SELECT blob FROM gone) \
                 AND NOT EXISTS (SELECT 1 FROM files f WHERE f.blob = b.id \
                     AND (f.dir, f.name) NOT IN (SELECT * FROM unnest($1::text[], $2::text[])))",
                &[&dirs, &names],
            )
            .await?;
            Ok(())
        })?;
        paths.iter().try_for_each(|p| remove_copy(p))
    }

    /// The files of a folder, by name.
    pub fn list(&self, dir: &Path) -> Result<Vec<SharedFile>, FilesError> {
        let dir = self.dir_key(dir)?;
        self.db.with(async |c| -> Result<_, FilesError> {
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM files f JOIN blobs b ON b.id = f.blob \
                         WHERE f.dir = $1 ORDER BY f.name"
                    ),
                    &[&dir],
                )
                .await?;
            Ok(rows.iter().map(shared_file).collect())
        })
    }

    /// The uploads waiting in every inbox under `boxes` (the state directory's `boxes/`) for at
    /// least `settled`: the path of each and its blob, in one query however many boxes there are.
    pub fn inboxes(
        &self,
        boxes: &Path,
        settled: std::time::Duration,
    ) -> Result<Vec<(PathBuf, i64)>, FilesError> {
        self.dir_key(boxes)?;
        let settled = settled.as_secs_f64();
        let rows = self.db.with(async |c| -> Result<_, FilesError> {
            let rows = c
                .query(
                    "SELECT dir, name, blob FROM files WHERE dir LIKE 'boxes/%/inbox' \
                     AND modified < now() - make_interval(secs => $1)",
                    &[&settled],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get(2)))
                .collect::<Vec<(String, String, i64)>>())
        })?;
        Ok(rows
            .into_iter()
            .map(|(dir, name, blob)| (self.root.join(dir).join(name), blob))
            .collect())
    }

    /// How many files a folder holds.
    pub fn count(&self, dir: &Path) -> Result<usize, FilesError> {
        let dir = self.dir_key(dir)?;
        self.db.with(async |c| -> Result<_, FilesError> {
            let n: i64 = c
                .query_one("SELECT count(*) FROM files WHERE dir = $1", &[&dir])
                .await?
                .get(0);
            Ok(n as usize)
        })
    }

    /// The file at `path`, if the database has one.
    pub fn stat(&self, path: &Path) -> Result<Option<SharedFile>, FilesError> {
        let (dir, name) = self.key(path)?;
        self.db.with(async |c| -> Result<_, FilesError> {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM files f JOIN blobs b ON b.id = f.blob \
                         WHERE f.dir = $1 AND f.name = $2"
                    ),
                    &[&dir, &name],
                )
                .await?;
            Ok(row.as_ref().map(shared_file))
        })
    }

    /// Makes the node's copy at `path` the database's file: fetched if the node has none or an
    /// older one, with what the upload carries set on it; removed if the database has no such
    /// file (a file here that is no copy is left). Returns the file, or `None`.
    pub fn fetch(&self, path: &Path) -> Result<Option<SharedFile>, FilesError> {
        let Some(shared) = self.stat(path)? else {
            // Only a copy: a file written here and not yet shared is not this call's to remove.
            if File::open(path).is_ok_and(|copy| copy_blob(&copy).is_some()) {
                remove_copy(path)?;
            }
            return Ok(None);
        };
        if let Ok(copy) = File::open(path)
            && copy_blob(&copy) == Some(shared.blob)
        {
            return Ok(Some(shared));
        }
        let io_err = |e| FilesError::Io(path.to_path_buf(), e);
        let tmp = path.with_file_name(format!(
            ".{}.{}.fetch",
            shared.name,
            uuid::Uuid::now_v7().simple()
        ));
        let complete = self.download(&shared, &tmp);
        let done = complete.and_then(|complete| {
            if !complete {
                return Ok(false);
            }
            std::fs::rename(&tmp, path).map_err(io_err)?;
            Ok(true)
        });
        if !matches!(done, Ok(true)) {
            let _ = std::fs::remove_file(&tmp);
        }
        if done? {
            Ok(Some(shared))
        } else {
            // Replaced or removed while it was read: what the database holds now.
            self.fetch(path)
        }
    }

    /// Removes this node's copies in `dir` of files the database no longer has in that version,
    /// once they are `min_age` old: listings never show them, and the node's disk would
    /// otherwise keep every file it ever read. Files without a copy's mark (written here and not
    /// yet shared) are left alone. Returns how many were removed.
    pub fn prune_copies(&self, dir: &Path, min_age: Duration) -> Result<usize, FilesError> {
        let current: std::collections::HashMap<String, i64> = self
            .list(dir)?
            .into_iter()
            .map(|f| (f.name, f.blob))
            .collect();
        let now = SystemTime::now();
        remove_copies(dir, |name, blob, modified| {
            let old = now.duration_since(modified).is_ok_and(|age| age >= min_age);
            old && current.get(name) != Some(&blob)
        })
    }

    /// Removes every copy in `dir`, at start-up: the node writes its copies without fsyncing
    /// them (the database holds the files), so after a crash of the machine a copy cannot be
    /// trusted; each is fetched again when next used.
    pub fn drop_copies(dir: &Path) -> Result<usize, FilesError> {
        remove_copies(dir, |_, _, _| true)
    }

    /// Writes the blob of `shared` to `tmp`; `false` if it was removed meanwhile.
    fn download(&self, shared: &SharedFile, tmp: &Path) -> Result<bool, FilesError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io_err = |e| FilesError::Io(tmp.to_path_buf(), e);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(io_err)?;
        let mut written = 0u64;
        let mut n = 0i32;
        while written < shared.size {
            let chunk = self.db.with(async |c| -> Result<_, FilesError> {
                Ok(c.query_opt(
                    "SELECT data FROM blob_chunks WHERE blob = $1 AND n = $2",
                    &[&shared.blob, &n],
                )
                .await?
                .map(|r| r.get::<_, Vec<u8>>(0)))
            })?;
            let Some(chunk) = chunk else {
                return Ok(false);
            };
            out.write_all(&chunk).map_err(io_err)?;
            written += chunk.len() as u64;
            n += 1;
        }
        if written != shared.size {
            return Ok(false);
        }
        crate::boxes::carry(&out, &shared.carried);
        mark(&out, shared.blob);
        Ok(true)
    }
}

fn shared_file(r: &tokio_postgres::Row) -> SharedFile {
    SharedFile {
        name: r.get(0),
        blob: r.get(1),
        shown_size: r.get::<_, i64>(2).max(0) as u64,
        modified: r.get(3),
        carried: Carried {
            sha256: r.get(4),
            actor: r.get(5),
            channel: r.get(6),
        },
        size: r.get::<_, i64>(7).max(0) as u64,
    }
}

/// Removes a blob ($1) no file names any more.
const COLLECT: &str =
    "DELETE FROM blobs WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM files WHERE blob = $1)";

/// The folders of `layout` whose files are shared: the spool, the quarantine, and the inbox,
/// outbox and receipts of every box in the state directory (of removed counterparts too).
pub fn folders(layout: &crate::state::StateLayout) -> io::Result<Vec<PathBuf>> {
    let mut folders = vec![layout.spool(), layout.quarantine()];
    let boxes = match std::fs::read_dir(layout.boxes()) {
        Ok(boxes) => boxes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(folders),
        Err(e) => return Err(e),
    };
    for owner in boxes {
        let owner = owner?.path();
        for folder in crate::boxes::Folder::ALL {
            folders.push(owner.join(folder.as_str()));
        }
    }
    Ok(folders)
}

/// Removes the copies in `dir` (files with a copy's mark) for which `stale(name, blob, modified)`.
fn remove_copies(
    dir: &Path,
    stale: impl Fn(&str, i64, SystemTime) -> bool,
) -> Result<usize, FilesError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(FilesError::Io(dir.to_path_buf(), e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Ok(copy) = File::open(&path) else {
            continue;
        };
        let Some(blob) = copy_blob(&copy) else {
            continue;
        };
        let modified = copy
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if stale(name, blob, modified) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

fn remove_copy(path: &Path) -> Result<(), FilesError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FilesError::Io(path.to_path_buf(), e)),
        _ => Ok(()),
    }
}

fn mark(file: &File, blob: i64) {
    // Without the attribute the copy is fetched again when next opened: slower, never wrong.
    let _ = crate::boxes::set_attribute(file, BLOB_XATTR, blob.to_string().as_bytes());
}

/// The blob a node's copy was made from; `None` for a file the gateway did not share (one an
/// operator placed in an inbox by hand).
pub fn copy_blob(file: &File) -> Option<i64> {
    let value = crate::boxes::attribute(file, BLOB_XATTR, 20)?;
    std::str::from_utf8(&value).ok()?.parse().ok()
}

/// Reads from `at` until `buf` is full or the file ends.
fn read_full_at(file: &File, at: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
