//! Uploads written by a fixed pool of threads.
//!
//! Hashing (SHA-256) and sealing (AES-256-GCM) an upload cost more CPU than the transport's own
//! decryption; on the connection's task the two would run one after the other. The writers take
//! them off that task, so both run at once, and the file's blocking writes stay off tokio's
//! workers. They are not tokio's blocking pool, which commits, fsyncs and password checks need
//! and slow uploads must not use up; and they are a fixed number
//! (`upload_writer_threads`), not one thread per upload: each upload is given to the least busy
//! writer for its life, which keeps its pieces in order, and a client that opens many uploads
//! adds work to their queues, not threads. Each upload may have [`QUEUE`] writes queued before
//! its transport waits, so what waits in the queues is bounded per upload.
//!
//! Writes that come ahead of a gap wait in memory until the gap is filled; what the uploads of
//! one account may hold that way together is its [`AheadBudget`] (`max_buffered_per_account`),
//! within one of the whole gateway (`max_buffered_total`), so neither many parallel uploads nor
//! many accounts can hold unbounded memory.
//!
//! A write is queued, not done, when [`UploadWriter::write_at`] returns: an error the writer
//! meets comes back from a later write or from [`UploadWriter::commit`].

use std::collections::HashMap;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{BoxError, Committed, FileName, Upload};

use crate::sync::Recover;

/// Writes an upload may have queued before the transport waits for its writer.
const QUEUE: u32 = 4;

/// Bytes that uploads hold ahead of gaps, against a limit: one account's, within the gateway's.
#[derive(Debug)]
pub(super) struct AheadBudget {
    used: AtomicUsize,
    limit: usize,
    /// Whose uploads, for the refusal.
    whose: &'static str,
    /// The budget this one is part of: an account's is part of the gateway's.
    within: Option<Arc<AheadBudget>>,
    /// The gateway's budget shows what it holds here (`handoff_upload_buffered_bytes`).
    shown: Option<Gauge>,
}

impl AheadBudget {
    fn new(limit: usize, whose: &'static str, within: Option<Arc<AheadBudget>>) -> AheadBudget {
        AheadBudget {
            used: AtomicUsize::new(0),
            limit,
            whose,
            within,
            shown: None,
        }
    }

    /// Takes `n` bytes of this budget and of the one it is part of, or refuses (and takes
    /// nothing) if that would pass either limit.
    pub(super) fn take(&self, n: usize) -> Result<(), BoxError> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .map_err(|_| BoxError::Buffered {
                whose: self.whose,
                limit: self.limit as u64,
            })?;
        if let Some(shown) = &self.shown {
            shown.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(within) = &self.within
            && let Err(e) = within.take(n)
        {
            self.release(n);
            return Err(e);
        }
        Ok(())
    }

    /// Gives back `n` bytes taken before, here and in the budget this one is part of.
    pub(super) fn give(&self, n: usize) {
        self.release(n);
        if let Some(within) = &self.within {
            within.give(n);
        }
    }

    fn release(&self, n: usize) {
        if let Ok(was) = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            })
            && let Some(shown) = &self.shown
        {
            shown.dec_by(i64::try_from(n.min(was)).unwrap_or(i64::MAX));
        }
    }

    /// Bytes taken now.
    fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// An upload as its writer and its transport share it. The transport looks at `failed` on
/// every write, without waiting for the lock the writer holds while it writes.
struct Slot {
    /// `None` once it failed, or was taken back to be committed.
    upload: Mutex<Option<Upload>>,
    /// The error the writer met, until the transport hears of it.
    error: Mutex<Option<BoxError>>,
    failed: AtomicBool,
}

type SharedSlot = Arc<Slot>;

/// Contiguous pieces of one upload from an offset; the permit is its place in the upload's queue.
struct Job {
    slot: SharedSlot,
    offset: u64,
    pieces: Vec<Bytes>,
    _queued: OwnedSemaphorePermit,
}

impl Job {
    fn run(self) {
        let mut upload = self.slot.upload.locked();
        let Some(writing) = upload.as_mut() else {
            return;
        };
        let mut offset = self.offset;
        let mut failed = None;
        for piece in &self.pieces {
            let written = catch_unwind(AssertUnwindSafe(|| writing.write_bytes_at(offset, piece)))
                .unwrap_or_else(|_| {
                    Err(BoxError::Io(io::Error::other("the upload's writer failed")))
                });
            if let Err(e) = written {
                failed = Some(e);
                break;
            }
            offset += piece.len() as u64;
        }
        if let Some(e) = failed {
            // Dropping the upload discards its partial file and gives back its budget.
            *upload = None;
            *self.slot.error.locked() = Some(e);
            self.slot.failed.store(true, Ordering::Release);
        }
    }
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    /// Uploads given to this worker and not yet ended.
    uploads: Arc<AtomicUsize>,
}

/// The upload writer threads and the budgets for data written ahead of gaps.
pub struct Writers {
    workers: Vec<Worker>,
    /// What each account's uploads may hold.
    per_account: usize,
    /// The budget of the whole gateway, which every account's is part of.
    total: Arc<AheadBudget>,
    budgets: Mutex<HashMap<String, Weak<AheadBudget>>>,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers")
            .field("threads", &self.workers.len())
            .field("per_account", &self.per_account)
            .field("total", &self.total.limit)
            .finish_non_exhaustive()
    }
}

impl Writers {
    /// Starts `threads` writers (at least one); each account's uploads may hold `per_account`
    /// bytes ahead of gaps together, and all uploads `total`, which `shown` shows.
    pub fn new(threads: u32, per_account: u64, total: u64, shown: Gauge) -> io::Result<Writers> {
        let workers = (0..threads.max(1))
            .map(|i| {
                let (jobs, queue) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("upload-{i}"))
                    .spawn(move || {
                        while let Ok(job) = queue.recv() {
                            job.run();
                        }
                    })?;
                Ok(Worker {
                    jobs,
                    uploads: Arc::new(AtomicUsize::new(0)),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Writers {
            workers,
            per_account: usize::try_from(per_account).unwrap_or(usize::MAX),
            total: Arc::new(AheadBudget {
                shown: Some(shown),
                ..AheadBudget::new(
                    usize::try_from(total).unwrap_or(usize::MAX),
                    "the gateway's",
                    None,
                )
            }),
            budgets: Mutex::new(HashMap::new()),
        })
    }

    /// The budget the uploads of `account` share; it lives as long as one of them does.
    fn budget(&self, account: &str) -> Arc<AheadBudget> {
        let mut budgets = self.budgets.locked();
        if let Some(b) = budgets.get(account).and_then(Weak::upgrade) {
            return b;
        }
        budgets.retain(|_, b| b.strong_count() > 0);
        let b = Arc::new(AheadBudget::new(
            self.per_account,
            "this account's",
            Some(self.total.clone()),
        ));
        budgets.insert(account.to_owned(), Arc::downgrade(&b));
        b
    }

    /// Bytes the uploads of `account` hold ahead of gaps now.
    pub fn buffered(&self, account: &str) -> usize {
        let budgets = self.budgets.locked();
        budgets
            .get(account)
            .and_then(Weak::upgrade)
            .map_or(0, |b| b.used())
    }

    /// Bytes all uploads hold ahead of gaps now.
    pub fn buffered_total(&self) -> usize {
        self.total.used()
    }

    /// Gives `upload` to the least busy writer, under its account's budget.
    pub fn spawn(&self, mut upload: Upload) -> UploadWriter {
        upload.budget = Some(self.budget(upload.actor()));
        let (name, limit) = (upload.name().clone(), upload.limit);
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.uploads.load(Ordering::Relaxed))
            .unwrap_or(&self.workers[0]);
        worker.uploads.fetch_add(1, Ordering::Relaxed);
        UploadWriter {
            slot: Arc::new(Slot {
                upload: Mutex::new(Some(upload)),
                error: Mutex::new(None),
                failed: AtomicBool::new(false),
            }),
            jobs: worker.jobs.clone(),
            queue: Arc::new(Semaphore::new(QUEUE as usize)),
            worker_uploads: worker.uploads.clone(),
            failed: false,
            name,
            limit,
            size: 0,
        }
    }
}

/// An [`Upload`] whose bytes are hashed, sealed and written by one of the [`Writers`]. Dropping
/// it without [`UploadWriter::commit`] discards the upload, as dropping the upload does.
pub struct UploadWriter {
    slot: SharedSlot,
    jobs: mpsc::Sender<Job>,
    /// [`QUEUE`] permits; a queued write holds one until it is written.
    queue: Arc<Semaphore>,
    worker_uploads: Arc<AtomicUsize>,
    /// Whether the transport has been told of an error already.
    failed: bool,
    name: FileName,
    limit: u64,
    /// Highest byte offset queued so far.
    size: u64,
}

impl std::fmt::Debug for UploadWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadWriter")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl UploadWriter {
    pub fn name(&self) -> &FileName {
        &self.name
    }

    /// Changes the name the upload will be handed off under (see [`Upload::rename`]).
    pub fn rename(&mut self, name: FileName) {
        self.name = name;
    }

    /// Bytes written so far (the highest offset reached).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The writer's error, once: later calls get [`failed_earlier`].
    fn error(&mut self) -> Option<BoxError> {
        if self.failed {
            return Some(failed_earlier());
        }
        if !self.slot.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failed = true;
        Some(
            self.slot
                .error
                .locked()
                .take()
                .unwrap_or_else(failed_earlier),
        )
    }

    /// Queues `pieces`, contiguous from `offset`, as SFTP writes them. The size limit is
    /// checked here; everything else [`Upload::write_at`] checks comes back from a later call.
    pub async fn write_at(&mut self, offset: u64, pieces: Vec<Bytes>) -> Result<(), BoxError> {
        let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= self.limit)
            .ok_or(BoxError::TooLarge { limit: self.limit })?;
        if let Some(e) = self.error() {
            return Err(e);
        }
        let queued = self
            .queue
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| failed_earlier())?;
        let job = Job {
            slot: self.slot.clone(),
            offset,
            pieces,
            _queued: queued,
        };
        if self.jobs.send(job).is_err() {
            self.failed = true;
            return Err(failed_earlier());
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Appends, as a streamed HTTP body does.
    pub async fn append(&mut self, pieces: Vec<Bytes>) -> Result<(), BoxError> {
        self.write_at(self.size, pieces).await
    }

    /// Waits until everything queued is written, then commits the upload (see
    /// [`Upload::commit`]) on tokio's blocking pool.
    pub async fn commit(mut self) -> Result<Committed, BoxError> {
        let _all_written = self
            .queue
            .clone()
            .acquire_many_owned(QUEUE)
            .await
            .map_err(|_| failed_earlier())?;
        if let Some(e) = self.error() {
            return Err(e);
        }
        let mut upload = self
            .slot
            .upload
            .locked()
            .take()
            .ok_or_else(failed_earlier)?;
        upload.rename(self.name.clone());
        tokio::task::spawn_blocking(move || upload.commit())
            .await
            .map_err(|_| failed_earlier())?
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        self.worker_uploads.fetch_sub(1, Ordering::Relaxed);
    }
}

fn failed_earlier() -> BoxError {
    BoxError::Io(io::Error::other("the upload's writer stopped"))
}
