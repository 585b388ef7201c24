//! Prometheus metrics the controller serves on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_duration: Histogram,
    /// Writes (applies, status patches) per kind: a quiet cluster should see none.
    pub api_writes: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            api_writes: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("ftp_operator");
        registry.register(
            "reconciles",
            "FtpServer reconciles run",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "FtpServer reconciles that failed",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one FtpServer reconcile took",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API by kind",
            self.api_writes.clone(),
        );
    }

    pub fn api_write(&self, kind: &str) {
        self.api_writes
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }
}
