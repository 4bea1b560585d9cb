//! The spool pipeline: accept → validate → scan → seal → deliver (ARCHITECTURE.md, *The life of
//! a file*).
//!
//! Uploads reach the pipeline through the inbox hand-off point: the transport's
//! [`BoxEvent::Uploaded`], a file-system watch on every inbox and a rescan at start-up (and
//! every half minute) all lead to the same idempotent [`accept`](Pipeline). Each job then
//! passes the [`Stage`]s on a bounded pool of workers; every transition is committed to the
//! job store, with its [`FileEvent`](crate::events::FileEvent), before the next side effect. See docs/pipeline.md.

pub mod accept;
pub mod fault;
mod health;
mod intake;
pub mod jobs;
mod offline;
mod retention;
pub mod split;
pub mod stages;

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::accounts::CounterpartId;
use crate::boxes::{BoxEvent, BoxStore, FileName, InboxWatch};
use crate::config::live::LiveConfig;
use crate::error::Chain;
use crate::events::{EventLog, Hop};
use crate::metrics::PipelineMetrics;
use crate::pipeline::jobs::{Job, JobState, JobStore, StoreError, Transition};
use crate::spool::Spool;
use crate::sync::Recover;
use stages::{
    ArchiveValidator, CmsSealer, DeliverStage, Outcome, ScanStage, SealStage, Stage, StageCtx,
    ValidateStage,
};

/// Workers running stages at once.
const WORKERS: usize = 4;
/// Jobs waiting for a worker; accept waits when it is full (back-pressure).
const WORK_QUEUE: usize = 256;
/// Hand-off files waiting to be accepted.
const ACCEPT_QUEUE: usize = 1024;
/// How often inboxes are rescanned and retention applied.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);
/// How often a node with idle workers looks for jobs nobody holds (also whenever a job ends).
const CLAIM_EVERY: Duration = Duration::from_millis(500);
/// How often a node renews its claims: a third of their lease.
const RENEW_EVERY: Duration = Duration::from_secs(jobs::CLAIM_LEASE.as_secs() / 3);
/// How long a retrieval waits for the delivery it follows to be committed.
const DELIVERY_COMMIT_WAIT: Duration = Duration::from_secs(5);
/// Longest wait before retrying a job whose stage could not run.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Attempts a job gets at a stage that panics or fails internally before the file is rejected
/// with `internal.error`: a bug must not hold a file forever, and the sender must learn that
/// the file was not processed.
pub const MAX_INTERNAL_FAILURES: u32 = 3;
/// The rule and message of the receipt of a file the gateway could not process.
const INTERNAL_ERROR_RULE: crate::events::PipelineRule = crate::events::PipelineRule::InternalError;
const INTERNAL_ERROR_MESSAGE: &str = "ゲートウェイ内部で処理できませんでした。再送してください / \
     The gateway could not process this file; please send it again";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("spool")]
    Io(#[from] io::Error),
    #[error("watching the inboxes")]
    Watch(#[from] notify::Error),
    #[error("master key")]
    Key(#[from] crate::keys::KeyError),
}

/// What the running pipeline shares between its tasks.
struct Inner {
    store: Arc<dyn JobStore>,
    spool: Spool,
    boxes: Arc<dyn BoxStore>,
    live: Arc<LiveConfig>,
    stages: Vec<Box<dyn Stage>>,
    metrics: PipelineMetrics,
    audit: crate::audit::Audit,
    work: mpsc::Sender<String>,
    /// Jobs queued, running or waiting to retry: each is in the queue at most once.
    in_flight: Mutex<HashSet<String>>,
    attempts: Mutex<HashMap<String, u32>>,
    /// Panics and internal errors per job since start, against [`MAX_INTERNAL_FAILURES`].
    internal_failures: Mutex<HashMap<String, u32>>,
    /// `handoff_alerts_total`, for the `internal_error` alert.
    alerts: prometheus_client::metrics::family::Family<
        crate::metrics::Labels,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Children of splits, recorded and waiting to be queued by the worker that made them.
    spawned: Mutex<Vec<String>>,
    /// Test-only failure injection ([`fault`]); `None` in production.
    fault: Option<fault::Injection>,
    /// Woken when a job leaves this node, so that an idle worker claims the next at once.
    idle: tokio::sync::Notify,
    /// Set once [`Pipeline::coordinate`] has started.
    coordinating: std::sync::atomic::AtomicBool,
}

/// A running pipeline.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
    accept: mpsc::Sender<(CounterpartId, FileName)>,
}

impl Pipeline {
    /// Opens the job store and starts what every node does: the workers, on the jobs this
    /// node accepts and those it claims ([`JobStore::claim_waiting`]); the box events of its
    /// sessions (uploads accepted, retrievals and deletions recorded); the hand-over of
    /// exported files; the health checks. What one node does for all starts with
    /// [`Pipeline::coordinate`].
    pub fn start(
        services: &crate::services::Services,
        box_events: mpsc::Receiver<BoxEvent>,
        shutdown: CancellationToken,
    ) -> Result<Pipeline, PipelineError> {
        let live = services.live.clone();
        let layout = services.layout.clone();
        let store = services.store.jobs()?;
        let spool = Spool::new(&layout, services.master.clone(), services.files.clone());
        let stages: Vec<Box<dyn Stage>> = vec![
            Box::new(ValidateStage {
                validator: Arc::new(ArchiveValidator),
            }),
            Box::new(ScanStage {
                clamd: services.clamd.clone(),
            }),
            Box::new(split::SplitStage),
            Box::new(SealStage {
                sealer: Arc::new(CmsSealer),
            }),
            Box::new(DeliverStage),
        ];
        let (work_tx, work_rx) = mpsc::channel(WORK_QUEUE);
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
        let inner = Arc::new(Inner {
            store,
            spool,
            boxes: services.boxes.clone(),
            live,
            stages,
            metrics: services.metrics.pipeline.clone(),
            audit: services.audit.clone(),
            work: work_tx,
            in_flight: Mutex::new(HashSet::new()),
            attempts: Mutex::new(HashMap::new()),
            internal_failures: Mutex::new(HashMap::new()),
            spawned: Mutex::new(Vec::new()),
            alerts: services.metrics.alerts.clone(),
            fault: fault::Injection::from_env(),
            idle: tokio::sync::Notify::new(),
            coordinating: std::sync::atomic::AtomicBool::new(false),
        });
        let pipeline = Pipeline {
            inner: inner.clone(),
            accept: accept_tx,
        };
        if services.files.is_none() {
            // The only node: whatever a crash left in the spool goes before anything is taken.
            inner.sweep_orphans()?;
        }
        let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
        for _ in 0..WORKERS {
            tokio::spawn(worker(inner.clone(), work_rx.clone(), shutdown.clone()));
        }
        tokio::spawn(intake::acceptor(inner.clone(), accept_rx, shutdown.clone()));
        tokio::spawn(claims(inner.clone(), shutdown.clone()));
        tokio::spawn(offline::serve_export_requests(
            inner.clone(),
            services.layout.export_requests(),
            shutdown.clone(),
        ));
        tokio::spawn(pipeline.clone().box_events(box_events, shutdown.clone()));
        health::start(services, &shutdown);
        Ok(pipeline)
    }

    /// Starts what one node does for all (the only node, with the local store; the
    /// coordinating node on a database, docs/cluster.md): watching the inboxes, for files
    /// placed there by hand and uploads a node took but did not accept; retention; and on a
    /// database, removing what nodes that died left in the spool. Later calls do nothing.
    pub fn coordinate(&self, shutdown: CancellationToken) -> Result<(), PipelineError> {
        use std::sync::atomic::Ordering;
        if self.inner.coordinating.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let watcher = self.watch_inboxes()?;
        tokio::spawn(self.clone().housekeeping(watcher, shutdown));
        Ok(())
    }

    /// The durable event log receipts are issued from.
    pub fn event_log(&self) -> Arc<dyn EventLog> {
        self.inner.store.clone()
    }

    async fn housekeeping(self, watcher: InboxWatch, shutdown: CancellationToken) {
        let _watcher = watcher;
        let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // What nodes that died left in the shared spool.
            if self.inner.spool.is_shared() {
                let inner = self.inner.clone();
                match tokio::task::spawn_blocking(move || inner.sweep_orphans()).await {
                    Ok(Err(e)) => tracing::warn!(error = %Chain(&e), "sweeping the shared spool"),
                    Err(e) => tracing::warn!(error = %e, "sweeping task failed"),
                    Ok(Ok(())) => {}
                }
            }
            self.rescan().await;
            let inner = self.inner.clone();
            match tokio::task::spawn_blocking(move || inner.retention()).await {
                Ok(Err(e)) => tracing::warn!(error = %Chain(&e), "applying retention"),
                Err(e) => tracing::warn!(error = %e, "retention task failed"),
                Ok(Ok(())) => {}
            }
        }
    }
}

async fn worker(
    inner: Arc<Inner>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<String>>>,
    shutdown: CancellationToken,
) {
    loop {
        let id = {
            let mut rx = rx.lock().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                id = rx.recv() => match id { Some(id) => id, None => return },
            }
        };
        inner.metrics.queue_depth.dec();
        let i = inner.clone();
        let job = id.clone();
        let retry = match tokio::task::spawn_blocking(move || i.process(&job)).await {
            Ok(r) => r,
            Err(_) => {
                // A panic outside a stage (stages' own are caught in `process`).
                let i = inner.clone();
                let job = id.clone();
                tokio::task::spawn_blocking(move || i.internal_failure(&job, "runner"))
                    .await
                    .unwrap_or(Some(MAX_BACKOFF))
            }
        };
        let spawned = std::mem::take(&mut *inner.spawned.locked());
        for child in spawned {
            inner.enqueue(child).await;
        }
        match retry {
            None => {
                inner.forget(&id);
                inner.idle.notify_one();
            }
            Some(delay) => {
                let inner = inner.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {
                            inner.metrics.queue_depth.inc();
                            let _ = inner.work.send(id).await;
                        }
                    }
                });
            }
        }
    }
}

/// Keeps this node's claims and its workers busy: renews the claims of the jobs it holds, and
/// claims jobs nobody holds whenever it has fewer than its workers can take (at start: those
/// a restart left).
async fn claims(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut look = tokio::time::interval(CLAIM_EVERY);
    let mut renew = tokio::time::interval(RENEW_EVERY);
    loop {
        let renewing = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = renew.tick() => true,
            _ = look.tick() => false,
            _ = inner.idle.notified() => false,
        };
        let queued: Vec<String> = inner.in_flight.locked().iter().cloned().collect();
        if !renewing && queued.len() >= WORKERS {
            continue;
        }
        let i = inner.clone();
        let done = tokio::task::spawn_blocking(move || {
            if renewing {
                i.store.renew(&queued).map(|()| Vec::new())
            } else {
                i.store.claim_waiting(WORKERS - queued.len(), &queued)
            }
        })
        .await;
        match done {
            Ok(Ok(claimed)) if !claimed.is_empty() => {
                tracing::debug!(jobs = claimed.len(), "claimed jobs nobody held");
                // Queued apart, so that renewing never waits for room in the queue.
                let inner = inner.clone();
                tokio::spawn(async move {
                    for id in claimed {
                        inner.enqueue(id).await;
                    }
                });
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %Chain(&e), renewing, "claims"),
            Err(e) => tracing::warn!(error = %e, "claims task failed"),
        }
    }
}

impl Inner {
    /// Removes what a crash left in the spool: on the only node, everything of jobs that are
    /// not open; in a shared spool, only what has been there for a while, since another node
    /// may be between writing a file and recording its job.
    fn sweep_orphans(&self) -> Result<(), PipelineError> {
        let store = &self.store;
        let swept = self.spool.sweep_orphans(
            |id| {
                store
                    .get(id)
                    .ok()
                    .flatten()
                    .is_some_and(|j| j.state.is_open())
            },
            |id| store.has_job(id).unwrap_or(true),
        )?;
        if swept > 0 {
            tracing::info!(removed = swept, "removed files a crash left in the spool");
        }
        Ok(())
    }

    async fn enqueue(&self, file_id: String) {
        let fresh = self.in_flight.locked().insert(file_id.clone());
        if fresh {
            self.metrics.queue_depth.inc();
            let _ = self.work.send(file_id).await;
        }
    }

    fn forget(&self, file_id: &str) {
        self.in_flight.locked().remove(file_id);
        self.attempts.locked().remove(file_id);
        self.internal_failures.locked().remove(file_id);
    }

    /// A stage panicked or failed internally on a job: the wait before it is tried again or,
    /// past [`MAX_INTERNAL_FAILURES`], `None` once the file is rejected with `internal.error`,
    /// kept in quarantine for investigation, and the NOC alerted. The cause is not recorded
    /// here: a panic's message may quote the file.
    fn internal_failure(&self, file_id: &str, stage: &str) -> Option<Duration> {
        let n = {
            let mut failures = self.internal_failures.locked();
            let n = failures.entry(file_id.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        if n < MAX_INTERNAL_FAILURES {
            let wait = self.backoff(file_id);
            tracing::error!(
                file_id,
                stage,
                attempt = n,
                ?wait,
                "internal error; the job is tried again"
            );
            return Some(wait);
        }
        let job = match self.store.get(file_id) {
            Ok(Some(job)) if job.state.is_open() => job,
            Ok(_) => return None,
            Err(e) => {
                tracing::error!(file_id, error = %Chain(&e), "reading job");
                return Some(self.backoff(file_id));
            }
        };
        let sender = job.sender.clone();
        let reason = crate::events::Finding::new(INTERNAL_ERROR_RULE, INTERNAL_ERROR_MESSAGE);
        if let Err(e) = self.reject(job, vec![reason], true) {
            tracing::error!(file_id, error = %Chain(&e), "recording the rejection of a file that keeps failing");
            return Some(self.backoff(file_id));
        }
        let detail = serde_json::json!({"file_id": file_id, "stage": stage, "attempts": n});
        let alert = crate::audit::Alert::InternalError;
        tracing::warn!(alert = alert.as_str(), %detail, "ALERT: a file failed inside the gateway; rejected and kept in quarantine");
        self.audit.record(
            crate::audit::Event::Alert(alert),
            Some(&sender),
            None,
            detail,
        );
        self.alerts
            .get_or_create(&vec![("kind", alert.as_str().to_owned())])
            .inc();
        None
    }

    fn backoff(&self, file_id: &str) -> Duration {
        let mut attempts = self.attempts.locked();
        let n = attempts.entry(file_id.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        (Duration::from_millis(500) * 2u32.saturating_pow((*n).min(8))).min(MAX_BACKOFF)
    }

    /// Counts a file reaching a hop and audits it.
    fn count(&self, hop: Hop, counterpart: &str, file_id: &str) {
        self.audit.record(
            crate::audit::Event::File(hop),
            Some(counterpart),
            None,
            serde_json::json!({ "file_id": file_id }),
        );
        self.metrics
            .files
            .get_or_create(&vec![
                ("hop", hop.as_str().to_owned()),
                ("counterpart", counterpart.to_owned()),
            ])
            .inc();
    }

    /// Runs stages on a job until it finishes, must wait, or is another node's. Returns the wait
    /// before a retry. Each step claims the job anew, so a step starts only while this node
    /// holds it.
    fn process(&self, file_id: &str) -> Option<Duration> {
        loop {
            let job = match self.store.claim(file_id) {
                Ok(Some(claimed)) => {
                    if claimed.taken_over {
                        self.spool.forget(file_id);
                    }
                    claimed.job
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(file_id, error = %Chain(&e), "claiming job");
                    return Some(self.backoff(file_id));
                }
            };
            let stage = self
                .stages
                .iter()
                .find(|s| s.takes() == job.state && s.applies(&job))?;
            let snapshot = self.live.snapshot();
            let ctx = StageCtx {
                spool: &self.spool,
                store: &*self.store,
                config: &snapshot.config,
                boxes: &*self.boxes,
            };
            let started = Instant::now();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some(fault) = &self.fault {
                    fault.apply(stage.name(), &job.original_name);
                }
                stage.run(&job, &ctx)
            }))
            .unwrap_or_else(|_| Outcome::Failed("panicked".to_owned()));
            self.metrics
                .stage_seconds
                .get_or_create(&vec![("stage", stage.name().to_owned())])
                .observe(started.elapsed().as_secs_f64());
            let result = match outcome {
                Outcome::Advance {
                    to,
                    recipient,
                    sealed_sha256,
                    warnings,
                } => self.advance(job, to, recipient, sealed_sha256, warnings),
                Outcome::Reject {
                    reasons,
                    quarantine,
                } => self.reject(job, reasons, quarantine),
                Outcome::Split {
                    children,
                    listed,
                    returned,
                } => self.split(job, children, listed, returned),
                Outcome::Retry(why) => {
                    let wait = self.backoff(file_id);
                    tracing::warn!(file_id, stage = stage.name(), why, ?wait, "job waits");
                    return Some(wait);
                }
                Outcome::Failed(why) => {
                    tracing::error!(file_id, stage = stage.name(), why, "stage failed");
                    return self.internal_failure(file_id, stage.name());
                }
            };
            match result {
                Ok(()) => {}
                Err(PipelineError::Store(StoreError::Taken { by, .. })) => {
                    tracing::info!(
                        file_id,
                        by,
                        "another node took the job over; its step is left to it"
                    );
                    return None;
                }
                Err(e) => {
                    tracing::error!(file_id, error = %Chain(&e), "recording a job transition");
                    return Some(self.backoff(file_id));
                }
            }
        }
    }

    fn advance(
        &self,
        mut job: Job,
        to: JobState,
        recipient: Option<CounterpartId>,
        sealed_sha256: Option<crate::ids::Sha256>,
        warnings: Vec<crate::events::Finding>,
    ) -> Result<(), PipelineError> {
        job.state = to;
        if !warnings.is_empty() {
            job.warnings = warnings.clone();
        }
        if recipient.is_some() {
            job.recipient = recipient.clone();
        }
        if sealed_sha256.is_some() {
            job.sealed_sha256 = sealed_sha256;
        }
        let event =
            (to == JobState::Delivered).then(|| job.event(Hop::Delivered, job.warnings.clone()));
        self.store.transition(&Transition {
            file_id: job.file_id.clone(),
            to,
            recipient,
            sealed_sha256,
            quarantined: false,
            warnings,
            event,
        })?;
        if to == JobState::Delivered {
            self.spool.remove(&job.file_id)?;
            let recipient = job.recipient.as_deref().unwrap_or_default();
            self.count(Hop::Delivered, recipient, &job.file_id);
            tracing::info!(file_id = job.file_id, recipient, "delivered");
        }
        Ok(())
    }

    /// Records a split: the children become jobs of their own (queued once this worker is
    /// done), the parent ends with its `split` receipt, and with a `rejected` receipt listing
    /// the persons returned to the sender, if any.
    fn split(
        &self,
        mut job: Job,
        children: Vec<Job>,
        listed: Vec<crate::events::Child>,
        returned: Vec<crate::events::Finding>,
    ) -> Result<(), PipelineError> {
        job.state = JobState::Split;
        // The parent's warnings are the sender's to read: in its `split` receipt.
        let mut split = job.event(Hop::Split, job.warnings.clone());
        split.children = listed;
        let rejected = (!returned.is_empty()).then(|| job.event(Hop::Rejected, returned));
        self.store
            .commit_split(&job, &children, &split, rejected.as_ref())?;
        self.spool.remove(&job.file_id)?;
        self.count(Hop::Split, &job.sender, &job.file_id);
        if rejected.is_some() {
            self.count(Hop::Rejected, &job.sender, &job.file_id);
        }
        for child in &children {
            self.count(Hop::Accepted, &job.sender, &child.file_id);
        }
        tracing::info!(
            file_id = job.file_id,
            children = children.len(),
            returned = rejected.is_some(),
            "split"
        );
        self.spawned
            .locked()
            .extend(children.into_iter().map(|c| c.file_id));
        Ok(())
    }

    fn reject(
        &self,
        mut job: Job,
        reasons: Vec<crate::events::Finding>,
        quarantine: bool,
    ) -> Result<(), PipelineError> {
        if quarantine {
            self.spool.quarantine(&job.file_id)?;
        }
        job.state = JobState::Rejected;
        let event = job.event(Hop::Rejected, reasons.clone());
        self.store.transition(&Transition {
            file_id: job.file_id.clone(),
            to: JobState::Rejected,
            recipient: None,
            sealed_sha256: None,
            quarantined: quarantine,
            warnings: Vec::new(),
            event: Some(event),
        })?;
        self.spool.remove(&job.file_id)?;
        self.count(Hop::Rejected, &job.sender, &job.file_id);
        // Rules, files and lines only: messages may quote personal data.
        let why = reasons
            .iter()
            .map(crate::events::Finding::redacted)
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(
            file_id = job.file_id,
            sender = %job.sender,
            quarantine,
            why,
            "rejected"
        );
        Ok(())
    }
}
