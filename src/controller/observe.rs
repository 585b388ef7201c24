//! What the cluster looks like for one FtpServer, read from the controller's caches (no API calls).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::FtpServer;

use super::build::{config_map_name, control_service_name, selector_labels, workload_name};

/// The caches the controller's watches fill. Secrets are stored with their values stripped.
#[derive(Clone)]
pub struct Stores {
    pub config_maps: Store<ConfigMap>,
    /// Deployments from before servers ran as StatefulSets, to remove once replaced.
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
    /// The server pods (they carry the managed-by label from the pod template).
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub disruption_budgets: Store<PodDisruptionBudget>,
    /// Claims, for the access modes of a shared one.
    pub claims: Store<PersistentVolumeClaim>,
    pub secrets: Store<Secret>,
    /// The node tuner DaemonSet, in the operator's namespace.
    pub daemon_sets: Store<DaemonSet>,
    /// Nodes, for their labels and the node tuner's reports.
    pub nodes: Store<Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SecretState {
    #[default]
    NotReferenced,
    Missing,
    /// The Secret exists with these keys.
    Present {
        keys: Vec<String>,
    },
}

/// The shared claim of `storage.persistentVolumeClaim`, as far as replicas care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClaimState {
    #[default]
    NotReferenced,
    Missing,
    Present {
        access_modes: Vec<String>,
    },
}

/// The server's workload in a form status can use whatever runs the pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadSummary {
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// Pods that exist, ready ones and ones on the current template.
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The last rollout has reached every pod.
    pub rolled_out: bool,
    /// The image of the server container.
    pub image: Option<String>,
}

impl WorkloadSummary {
    pub fn of(set: &StatefulSet) -> WorkloadSummary {
        let status = set.status.clone().unwrap_or_default();
        let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let updated = status.updated_replicas.unwrap_or(0);
        let current_is_update =
            status.current_revision.is_some() && status.current_revision == status.update_revision;
        WorkloadSummary {
            generation: set.metadata.generation,
            observed_generation: status.observed_generation,
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated,
            rolled_out: status.observed_generation >= set.metadata.generation
                && status.replicas == desired
                && (current_is_update || updated >= desired),
            image: set
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|pod| pod.containers.first())
                .and_then(|c| c.image.clone()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub config_map: Option<Arc<ConfigMap>>,
    pub stateful_set: Option<Arc<StatefulSet>>,
    pub workload: Option<WorkloadSummary>,
    /// A Deployment of the same name from before StatefulSets: removed once they serve.
    pub legacy_deployment: Option<Arc<Deployment>>,
    /// The control Service, whose balancer address is the public one.
    pub service: Option<Arc<Service>>,
    /// Every Service this server owns (the control one and per-replica ones).
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub disruption_budget: Option<Arc<PodDisruptionBudget>>,
    pub pods: Vec<Arc<Pod>>,
    pub shared_claim: ClaimState,
    pub users_secret: SecretState,
    pub tls_secret: SecretState,
}

pub fn observe(server: &FtpServer, stores: &Stores) -> Observed {
    let namespace = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let secret = |secret_name: Option<&String>| match secret_name {
        None => SecretState::NotReferenced,
        Some(secret_name) => {
            match stores
                .secrets
                .get(&ObjectRef::new(secret_name).within(&namespace))
            {
                None => SecretState::Missing,
                Some(secret) => SecretState::Present {
                    keys: secret_keys(&secret),
                },
            }
        }
    };
    // Objects of this server: same namespace, its instance label, our manager label.
    let selector = selector_labels(server);
    let mine = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.namespace.as_deref() == Some(namespace.as_str())
            && meta.labels.as_ref().is_some_and(|labels| {
                selector
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value))
            })
    };
    let stateful_set = stores
        .stateful_sets
        .get(&ObjectRef::new(&workload_name(server)).within(&namespace));
    let shared_claim = match server
        .spec
        .storage
        .as_ref()
        .and_then(|s| s.persistent_volume_claim.as_ref())
    {
        None => ClaimState::NotReferenced,
        Some(claim) => match stores
            .claims
            .get(&ObjectRef::new(&claim.claim_name).within(&namespace))
        {
            None => ClaimState::Missing,
            Some(claim) => ClaimState::Present {
                access_modes: claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.access_modes.clone())
                    .unwrap_or_default(),
            },
        },
    };
    Observed {
        config_map: stores
            .config_maps
            .get(&ObjectRef::new(&config_map_name(server)).within(&namespace)),
        workload: stateful_set.as_deref().map(WorkloadSummary::of),
        stateful_set,
        legacy_deployment: stores
            .deployments
            .get(&ObjectRef::new(&name).within(&namespace))
            .filter(|d| mine(&d.metadata)),
        service: stores
            .services
            .get(&ObjectRef::new(&control_service_name(server)).within(&namespace)),
        services: stores
            .services
            .state()
            .into_iter()
            .filter(|s| mine(&s.metadata))
            .collect(),
        endpoint_slices: stores
            .endpoint_slices
            .state()
            .into_iter()
            .filter(|s| mine(&s.metadata))
            .collect(),
        disruption_budget: stores
            .disruption_budgets
            .get(&ObjectRef::new(&name).within(&namespace)),
        // Sorted, so the EndpointSlices built from them come out the same on every pass.
        pods: {
            let mut pods: Vec<_> = stores
                .pods
                .state()
                .into_iter()
                .filter(|p| mine(&p.metadata))
                .collect();
            pods.sort_by_key(|p| p.name_any());
            pods
        },
        shared_claim,
        users_secret: secret(server.spec.users.as_ref().map(|u| &u.secret_ref.name)),
        tls_secret: secret(server.spec.tls.as_ref().map(|t| &t.secret_ref.name)),
    }
}

fn secret_keys(secret: &Secret) -> Vec<String> {
    let data = secret.data.iter().flat_map(|data| data.keys());
    let string_data = secret.string_data.iter().flat_map(|data| data.keys());
    data.chain(string_data).cloned().collect()
}

/// Keeps a Secret's keys and drops its values, so the cache holds no credentials.
pub fn strip_secret_values(secret: &mut Secret) {
    if let Some(data) = &mut secret.data {
        for value in data.values_mut() {
            value.0.clear();
        }
    }
    secret.string_data = None;
    secret.metadata.managed_fields = None;
}

impl Observed {
    /// The balancer's address from the Service status: the first ingress's IP, else hostname.
    pub fn load_balancer_address(&self) -> Option<String> {
        let ingress = self
            .service
            .as_ref()?
            .status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .as_ref()?
            .first()?;
        ingress
            .ip
            .clone()
            .or_else(|| ingress.hostname.clone())
            .filter(|address| !address.is_empty())
    }

    /// The address clients are told: the spec's, else the balancer's.
    pub fn public_address(&self, server: &FtpServer) -> Option<String> {
        server
            .spec
            .public_address
            .clone()
            .or_else(|| self.load_balancer_address())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};

    fn with_ingress(yaml: &str) -> Observed {
        Observed {
            service: Some(Arc::new(serde_yaml::from_str(yaml).unwrap())),
            ..Observed::default()
        }
    }

    #[test]
    fn public_address_prefers_the_spec_then_the_balancer_ip_then_hostname() {
        let minimal = server(fixtures::MINIMAL);
        let full = server(fixtures::FULL);
        let observed = with_ingress(
            "metadata: {name: x}\nstatus: {loadBalancer: {ingress: [{ip: 20.50.1.7, hostname: lb.example.com}]}}",
        );
        assert_eq!(
            observed.public_address(&minimal).as_deref(),
            Some("20.50.1.7")
        );
        assert_eq!(
            observed.public_address(&full).as_deref(),
            Some("contosoftp.cloudapp.net")
        );
        let observed = with_ingress(
            "metadata: {name: x}\nstatus: {loadBalancer: {ingress: [{hostname: abc.elb.amazonaws.com}]}}",
        );
        assert_eq!(
            observed.public_address(&minimal).as_deref(),
            Some("abc.elb.amazonaws.com")
        );
        let pending = with_ingress("metadata: {name: x}\nstatus: {loadBalancer: {}}");
        assert_eq!(pending.public_address(&minimal), None);
    }

    #[test]
    fn a_stateful_set_is_rolled_out_when_every_pod_runs_the_current_revision() {
        let set = |status: &str| -> StatefulSet {
            serde_yaml::from_str(&format!(
                "metadata: {{name: s, generation: 3}}\n\
                 spec: {{replicas: 2, selector: {{}}, template: {{spec: {{containers: [{{name: ftp-server, image: img:2}}]}}}}}}\n\
                 status: {status}"
            ))
            .unwrap()
        };
        let done = WorkloadSummary::of(&set(
            "{observedGeneration: 3, replicas: 2, readyReplicas: 2, updatedReplicas: 2, currentRevision: b, updateRevision: b}",
        ));
        assert!(done.rolled_out);
        assert_eq!(
            (done.replicas, done.ready, done.image.as_deref()),
            (2, 2, Some("img:2"))
        );
        for status in [
            // Halfway: one pod on the new revision.
            "{observedGeneration: 3, replicas: 2, readyReplicas: 2, updatedReplicas: 1, currentRevision: a, updateRevision: b}",
            // The StatefulSet controller has not seen the latest spec.
            "{observedGeneration: 2, replicas: 2, readyReplicas: 2, updatedReplicas: 2, currentRevision: b, updateRevision: b}",
            // Scaling.
            "{observedGeneration: 3, replicas: 1, readyReplicas: 1, updatedReplicas: 1, currentRevision: b, updateRevision: b}",
        ] {
            assert!(!WorkloadSummary::of(&set(status)).rolled_out, "{status}");
        }
    }

    #[test]
    fn stripped_secrets_keep_keys_only() {
        let mut secret: Secret =
            serde_yaml::from_str("metadata: {name: s}\ndata: {users: YWxpY2U6eA==}").unwrap();
        strip_secret_values(&mut secret);
        assert_eq!(secret_keys(&secret), vec!["users".to_owned()]);
        assert!(secret.data.unwrap()["users"].0.is_empty());
    }
}
