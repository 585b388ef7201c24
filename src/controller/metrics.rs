//! The FtpServer controller's Prometheus metrics (served on `/metrics` beside the probe's).

use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::FtpServer;
use crate::process::api_writes::ApiWrites;

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_duration: Histogram,
    /// Writes (applies, status patches) per kind: a quiet cluster should see none.
    pub api_writes: ApiWrites,
    /// Each FtpServer's conditions, read from the controller's cache at every scrape.
    pub server_conditions: ServerConditions,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            api_writes: ApiWrites::default(),
            server_conditions: ServerConditions::default(),
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
            self.api_writes.0.clone(),
        );
        registry.register_collector(Box::new(self.server_conditions.clone()));
    }

    pub fn api_write(&self, kind: &str) {
        self.api_writes.record(kind);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub name: String,
    /// The condition's type (`Ready`, `Stalled`, ...).
    pub r#type: String,
    pub status: String,
}

/// The statuses a metav1.Condition can have: each gets a series, 1 for the current one.
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// `ftp_operator_server_condition`: per FtpServer and condition type, one series for each of
/// True, False and Unknown, 1 for the condition's current status and 0 for the others (the
/// kube-state-metrics convention, so `== 1` and `sum by (status)` both work). The series are
/// made from the controller's FtpServer cache at each scrape: a deleted FtpServer's series go
/// with it, so their number stays at servers × conditions × 3. Empty on a standby replica (it
/// has no cache until it holds the lease).
#[derive(Clone, Default)]
pub struct ServerConditions {
    servers: Arc<Mutex<Vec<Store<DeserializeGuard<FtpServer>>>>>,
}

impl std::fmt::Debug for ServerConditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConditions").finish_non_exhaustive()
    }
}

impl ServerConditions {
    /// Reports the conditions of the servers in `store` from now on, beside those of the
    /// stores already watched (one per watched namespace).
    pub fn watch(&self, store: Store<DeserializeGuard<FtpServer>>) {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store);
    }

    fn family(&self) -> Family<ConditionLabels, Gauge> {
        let family = Family::<ConditionLabels, Gauge>::default();
        let stores = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let servers: Vec<_> = stores.iter().flat_map(|store| store.state()).collect();
        for guard in &servers {
            if let Ok(server) = &guard.0 {
                for (labels, value) in condition_series(server) {
                    family.get_or_create(&labels).set(value);
                }
            }
        }
        family
    }
}

/// The series of one FtpServer: three per condition in its status.
pub fn condition_series(server: &FtpServer) -> Vec<(ConditionLabels, i64)> {
    let namespace = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let conditions = server.status.iter().flat_map(|s| &s.conditions);
    conditions
        .flat_map(|condition| {
            CONDITION_STATUSES.iter().map(|status| {
                let labels = ConditionLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    r#type: condition.type_.clone(),
                    status: (*status).to_owned(),
                };
                (labels, i64::from(condition.status == *status))
            })
        })
        .collect()
}

impl Collector for ServerConditions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = self.family();
        let metric = encoder.encode_descriptor(
            "server_condition",
            "FtpServer status conditions: 1 for the current status of each type",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: "Test".to_owned(),
            message: String::new(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn scrape(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
        body
    }

    #[test]
    fn each_condition_has_one_series_per_status_and_only_the_current_one_is_1() {
        let mut server = fixtures::server(fixtures::FULL);
        server.metadata.namespace = Some("ftp".to_owned());
        server.status = Some(crate::api::FtpServerStatus {
            conditions: vec![condition("Ready", "False"), condition("Stalled", "True")],
            ..Default::default()
        });
        let series: Vec<_> = condition_series(&server)
            .into_iter()
            .map(|(l, v)| (l.r#type, l.status, v))
            .collect();
        let expected = [
            ("Ready", "True", 0),
            ("Ready", "False", 1),
            ("Ready", "Unknown", 0),
            ("Stalled", "True", 1),
            ("Stalled", "False", 0),
            ("Stalled", "Unknown", 0),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(t, s, v)| (t.to_string(), s.to_string(), *v))
            .collect();
        assert_eq!(series, expected);
    }

    #[test]
    fn the_family_is_exported_under_its_name_even_before_the_cache_exists() {
        let body = scrape(&Metrics::default());
        assert!(
            body.contains("# TYPE ftp_operator_server_condition gauge"),
            "{body}"
        );
    }

    #[test]
    fn a_server_leaves_the_metric_when_it_leaves_the_cache() {
        let metrics = Metrics::default();
        let (store, mut writer) = kube::runtime::reflector::store::<DeserializeGuard<FtpServer>>();
        metrics.server_conditions.watch(store);
        let mut server = fixtures::server(fixtures::FULL);
        server.metadata.namespace = Some("ftp".to_owned());
        server.status = Some(crate::api::FtpServerStatus {
            conditions: vec![condition("Ready", "True")],
            ..Default::default()
        });
        let name = server.name_any();
        let guard = DeserializeGuard(Ok(server));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(guard.clone()));
        let line = format!(
            "ftp_operator_server_condition{{namespace=\"ftp\",name=\"{name}\",type=\"Ready\",status=\"True\"}} 1"
        );
        assert!(scrape(&metrics).contains(&line), "{}", scrape(&metrics));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Delete(guard));
        let body = scrape(&metrics);
        assert!(!body.contains(&name), "{body}");
    }
}
