//! Prometheus metrics for the NOC: one registry for the whole gateway, encoded as text on the
//! metrics listener.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
        Metrics {
            registry,
            auth_failures,
            bans,
            sessions,
            transfer_bytes,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
