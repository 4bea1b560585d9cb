//! Prometheus metrics for the NOC: one registry for the whole gateway, encoded as text on the
//! metrics listener, beside a read-only HTML status page ([`server`]) and the alert watch
//! ([`alerts`]).

pub mod alerts;
pub mod noc;
pub mod server;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    /// Failed authentications by transport and reason class.
    pub auth_failures: Family<Labels, Counter>,
    /// Bans imposed, by transport and kind (ip, account).
    pub bans: Family<Labels, Counter>,
    /// Live authenticated sessions by transport.
    pub sessions: Family<Labels, Gauge>,
    /// Bytes moved by transport and direction (upload, download).
    pub transfer_bytes: Family<Labels, Counter>,
    /// Alerts raised, by kind (accept_overdue, retrieve_overdue, break_glass, clock_unsynchronised,
    /// receipt_chain_broken, scanner_down, audit_unwritable).
    pub alerts: Family<Labels, Counter>,
    /// Files overdue now, by kind (accept, retrieve).
    pub overdue: Family<Labels, Gauge>,
    /// 1 while the kernel reports the system clock synchronised.
    pub clock_synchronised: Gauge,
    /// 1 while the audit log is written; 0 while it cannot be (sessions and uploads refused).
    pub audit_writable: Gauge,
    /// Bytes of uploads written ahead of gaps and held in memory until the gaps are filled.
    pub upload_buffered_bytes: Gauge,
    /// The spool pipeline's metrics.
    pub pipeline: PipelineMetrics,
}

/// Metrics of the spool pipeline.
#[derive(Clone)]
pub struct PipelineMetrics {
    /// Files reaching a hop, by hop and counterpart (the sender, or the recipient for
    /// delivered, retrieved and purged).
    pub files: Family<Labels, Counter>,
    /// Seconds one stage took, by stage.
    pub stage_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Jobs queued for a worker.
    pub queue_depth: Gauge,
    /// 1 while at least one clamd of the pool answers its health checks.
    pub scanner_up: Gauge,
    /// 1 while one clamd answers its health checks, by endpoint (as written in `gateway.clamd`).
    pub scanner_endpoint_up: Family<Labels, Gauge>,
    /// Age in seconds of the oldest accepted file not yet delivered or rejected.
    pub oldest_undelivered_seconds: Gauge,
    /// 1 while the store answers (the local store always does: its files are this machine's).
    pub store_up: Gauge,
}

fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl PipelineMetrics {
    fn register(registry: &mut Registry) -> PipelineMetrics {
        let m = PipelineMetrics {
            files: Family::default(),
            stage_seconds: Family::new_with_constructor(stage_histogram),
            queue_depth: Gauge::default(),
            scanner_up: Gauge::default(),
            scanner_endpoint_up: Family::default(),
            oldest_undelivered_seconds: Gauge::default(),
            store_up: Gauge::default(),
        };
        registry.register("pipeline_files", "Files reaching a hop", m.files.clone());
        registry.register(
            "pipeline_stage_seconds",
            "Time one pipeline stage took",
            m.stage_seconds.clone(),
        );
        registry.register(
            "pipeline_queue_depth",
            "Jobs waiting for a pipeline worker",
            m.queue_depth.clone(),
        );
        registry.register(
            "scanner_up",
            "Whether at least one clamd answers health checks",
            m.scanner_up.clone(),
        );
        registry.register(
            "scanner_endpoint_up",
            "Whether one clamd of the pool answers health checks",
            m.scanner_endpoint_up.clone(),
        );
        registry.register(
            "store_up",
            "Whether the store of jobs and receipts answers (the database's health checks)",
            m.store_up.clone(),
        );
        registry.register(
            "pipeline_oldest_undelivered_seconds",
            "Age of the oldest file not yet delivered or rejected",
            m.oldest_undelivered_seconds.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("handoff");
        let auth_failures = Family::default();
        registry.register(
            "auth_failures",
            "Failed authentications",
            auth_failures.clone(),
        );
        let bans = Family::default();
        registry.register("bans", "Temporary bans imposed", bans.clone());
        let sessions = Family::default();
        registry.register("sessions", "Live authenticated sessions", sessions.clone());
        let transfer_bytes = Family::default();
        registry.register(
            "transfer_bytes",
            "Bytes transferred through the boxes",
            transfer_bytes.clone(),
        );
        let alerts = Family::default();
        registry.register("alerts", "Alerts raised", alerts.clone());
        let overdue = Family::default();
        registry.register(
            "overdue_files",
            "Files overdue at their current hop",
            overdue.clone(),
        );
        let clock_synchronised = Gauge::default();
        registry.register(
            "clock_synchronised",
            "1 while the system clock is synchronised",
            clock_synchronised.clone(),
        );
        let audit_writable = Gauge::default();
        audit_writable.set(1);
        registry.register(
            "audit_writable",
            "1 while the audit log is written; 0 while new sessions and uploads are refused",
            audit_writable.clone(),
        );
        let upload_buffered_bytes = Gauge::default();
        registry.register(
            "upload_buffered_bytes",
            "Bytes of uploads written ahead of gaps, held in memory until the gaps are filled",
            upload_buffered_bytes.clone(),
        );
        let pipeline = PipelineMetrics::register(&mut registry);
        Metrics {
            upload_buffered_bytes,
            pipeline,
            registry,
            auth_failures,
            bans,
            sessions,
            transfer_bytes,
            alerts,
            overdue,
            clock_synchronised,
            audit_writable,
        }
    }

    /// The byte counter of one transport and direction ("upload" or "download"). Counters are
    /// shared handles: a session looks its own up once, not per request.
    pub fn transferred(&self, transport: &'static str, direction: &'static str) -> Counter {
        self.transfer_bytes
            .get_or_create(&vec![
                ("transport", transport.to_owned()),
                ("direction", direction.to_owned()),
            ])
            .clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
