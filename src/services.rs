//! What the parts of a running gateway share: the live config, the audit log, the metrics, the
//! upload writers, the channel transports tell the pipeline about box files on. The daemon builds
//! one [`Services`] at start-up and hands a clone to each transport, the pipeline and the NOC
//! server, which is why it sits below all of them.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::audit::Audit;
use crate::boxes::{BoxEvent, BoxStore, LocalBoxes, Writers};
use crate::config::live::LiveConfig;
use crate::metrics::Metrics;
use crate::state::StateLayout;
use crate::transport::limits::Limiter;
use crate::transport::sessions::SessionRegistry;

/// What the parts of a running gateway share. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub live: Arc<LiveConfig>,
    pub layout: StateLayout,
    /// Where jobs and receipts are kept (`[gateway.store]`).
    pub store: crate::store::Store,
    /// Where the store is a database: the box files, spool and quarantine every node reaches
    /// through it (the state directory is this node's copy).
    pub files: Option<crate::store::SharedFiles>,
    /// The box files, as the gateway itself reaches them (the pipeline, receipts, the NOC).
    pub boxes: Arc<dyn BoxStore>,
    /// Transports report completed uploads, retrievals and acknowledgements here.
    pub box_events: mpsc::Sender<BoxEvent>,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<SessionRegistry>,
    pub limiter: Arc<Limiter>,
    /// The clamd endpoints of `gateway.clamd` (read at start-up) and their health: the pipeline
    /// scans through them, the NOC status shows them.
    pub clamd: Arc<crate::scan::ClamdPool>,
    /// The key of everything encrypted at rest: uploads as they are written, the spool, quarantine.
    pub master: Arc<crate::keys::MasterKey>,
    /// The threads that write uploads of both transports, and the accounts' budgets for data
    /// written ahead of gaps.
    pub writers: Arc<Writers>,
}

/// Bound on queued box events: transports wait (back-pressure) rather than queue without end.
const BOX_EVENT_QUEUE: usize = 1024;

impl Services {
    /// Whether an upload may begin or be handed off now: only while the audit log can record it
    /// and the store answers, so nothing is acknowledged that the gateway cannot keep (fail
    /// closed; the client sends it again later).
    pub fn takes_uploads(&self) -> bool {
        self.audit.writable() && self.store.is_up()
    }

    /// Services for a loaded config, with the receiving end of the box events. Fails only if
    /// the upload writer threads cannot be started.
    pub fn new(
        live: Arc<LiveConfig>,
        audit: Audit,
        master: Arc<crate::keys::MasterKey>,
        store: crate::store::Store,
    ) -> std::io::Result<(Services, mpsc::Receiver<BoxEvent>)> {
        let snapshot = live.snapshot();
        let (tx, rx) = mpsc::channel(BOX_EVENT_QUEUE);
        let limits = &snapshot.config.gateway.limits;
        let metrics = Arc::new(Metrics::new());
        let writers = Writers::new(
            limits.upload_writer_threads,
            limits.max_buffered_per_account.bytes(),
            limits.max_buffered_total.bytes(),
            metrics.upload_buffered_bytes.clone(),
        )?;
        let layout = StateLayout::new(&snapshot.config.gateway.state_dir);
        let files = store.shared_files(&layout);
        let services = Services {
            writers: Arc::new(writers),
            metrics,
            layout: layout.clone(),
            store,
            boxes: Arc::new(LocalBoxes::new(&layout, files.clone())),
            files,
            limiter: Arc::new(Limiter::new(&snapshot.config.gateway.limits)),
            live,
            box_events: tx,
            audit,
            sessions: SessionRegistry::new(),
            clamd: Arc::new(crate::scan::ClamdPool::new(
                snapshot.config.gateway.clamd.as_slice(),
            )),
            master,
        };
        Ok((services, rx))
    }
}
