//! What the cluster looks like for one FtpServer: the children from the controller's caches, the
//! referenced Secrets read by name (the cache would hold every Secret of the cluster).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, NodeSpec, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::api::FtpServer;

use super::build::{config_map_name, control_service_name, selector_labels, workload_name};
use super::health::WorkloadSummary;
use super::probe::results::ProbeObservation;
use crate::process::errors::ApplyError;

/// The caches the controller's watches fill.
#[derive(Clone)]
pub struct Stores {
    pub config_maps: Store<ConfigMap>,
    /// Deployments from before servers ran as StatefulSets, to remove once replaced.
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub disruption_budgets: Store<PodDisruptionBudget>,
    /// The servers' pods: why a rollout does not finish, and the IPs and ordinals the
    /// EndpointSlices route to.
    pub pods: Store<Pod>,
    /// Claims, for the access modes of a shared one.
    pub claims: Store<PersistentVolumeClaim>,
    /// Nodes' labels, taints and the node tuner's reports (see [`node_for_selection`]).
    pub nodes: Store<Node>,
    /// FtpUsers, gathered into their servers' users files.
    pub ftp_users: Store<crate::api::FtpUser>,
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

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub config_map: Option<Arc<ConfigMap>>,
    pub stateful_set: Option<Arc<StatefulSet>>,
    /// A Deployment of the same name from before StatefulSets: removed once they serve.
    pub legacy_deployment: Option<Arc<Deployment>>,
    /// The control Service, whose balancer address is the public one.
    pub service: Option<Arc<Service>>,
    /// Every Service this server owns (the control one and per-replica ones).
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub disruption_budget: Option<Arc<PodDisruptionBudget>>,
    /// The server's pods, sorted by name.
    pub pods: Vec<Arc<Pod>>,
    pub shared_claim: ClaimState,
    pub users_secret: SecretState,
    pub tls_secret: SecretState,
    /// What the reachability probe last found (kept by its background task, not read here).
    pub probe: ProbeObservation,
}

/// The children from the caches and the referenced Secrets' keys, read by name.
pub async fn observe(
    server: &FtpServer,
    stores: &Stores,
    client: &Client,
) -> Result<Observed, ApplyError> {
    let namespace = server.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let users_secret = read_secret(
        &secrets,
        server.spec.users.as_ref().map(|u| &u.secret_ref.name),
    );
    let tls_secret = read_secret(
        &secrets,
        server.spec.tls.as_ref().map(|t| &t.secret_ref.name),
    );
    let (users_secret, tls_secret) = futures::try_join!(users_secret, tls_secret)?;
    Ok(Observed {
        users_secret,
        tls_secret,
        ..observe_children(server, stores)
    })
}

async fn read_secret(
    secrets: &Api<Secret>,
    name: Option<&String>,
) -> Result<SecretState, ApplyError> {
    let Some(name) = name else {
        return Ok(SecretState::NotReferenced);
    };
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| ApplyError::read::<Secret>(name, source))?;
    Ok(match secret {
        None => SecretState::Missing,
        // Only the keys are kept; the values are dropped with the object.
        Some(secret) => SecretState::Present {
            keys: secret_keys(&secret),
        },
    })
}

/// The children, from the caches (no API calls).
pub fn observe_children(server: &FtpServer, stores: &Stores) -> Observed {
    let namespace = server.namespace().unwrap_or_default();
    let name = server.name_any();
    // Objects of this server: same namespace, its instance and name labels (the watches hold
    // only objects with our manager label).
    let selector = selector_labels(server);
    let mine = |meta: &ObjectMeta| {
        meta.namespace.as_deref() == Some(namespace.as_str())
            && meta.labels.as_ref().is_some_and(|labels| {
                selector
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value))
            })
    };
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
    let mut services: Vec<_> = stores
        .services
        .state()
        .into_iter()
        .filter(|s| mine(&s.metadata))
        .collect();
    services.sort_by_key(|s| s.name_any());
    let mut endpoint_slices: Vec<_> = stores
        .endpoint_slices
        .state()
        .into_iter()
        .filter(|s| mine(&s.metadata))
        .collect();
    endpoint_slices.sort_by_key(|s| s.name_any());
    // Sorted, so the EndpointSlices built from them come out the same on every pass.
    let mut pods: Vec<_> = stores
        .pods
        .state()
        .into_iter()
        .filter(|p| mine(&p.metadata))
        .collect();
    pods.sort_by_key(|p| p.name_any());
    Observed {
        config_map: stores
            .config_maps
            .get(&ObjectRef::new(&config_map_name(server)).within(&namespace)),
        stateful_set: stores
            .stateful_sets
            .get(&ObjectRef::new(&workload_name(server)).within(&namespace)),
        legacy_deployment: stores
            .deployments
            .get(&ObjectRef::new(&name).within(&namespace))
            .filter(|d| mine(&d.metadata)),
        service: stores
            .services
            .get(&ObjectRef::new(&control_service_name(server)).within(&namespace)),
        services,
        endpoint_slices,
        disruption_budget: stores
            .disruption_budgets
            .get(&ObjectRef::new(&name).within(&namespace)),
        pods,
        shared_claim,
        users_secret: SecretState::NotReferenced,
        tls_secret: SecretState::NotReferenced,
        probe: ProbeObservation::Disabled,
    }
}

fn secret_keys(secret: &Secret) -> Vec<String> {
    let data = secret.data.iter().flat_map(|data| data.keys());
    let string_data = secret.string_data.iter().flat_map(|data| data.keys());
    data.chain(string_data).cloned().collect()
}

/// What the controller keeps of a Node: its name, labels, the node tuner's two annotations and
/// its taints (which servers' pods may go there). The rest (status with its image list, other
/// annotations, managed fields) is dropped, so a cluster of busy nodes costs little memory.
pub fn node_for_selection(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(annotations) = &mut node.metadata.annotations {
        annotations.retain(|key, _| crate::node_tuner::report::is_report_annotation(key));
    }
    node.status = None;
    let taints = node.spec.take().and_then(|spec| spec.taints);
    node.spec = taints.map(|taints| NodeSpec {
        taints: Some(taints),
        ..NodeSpec::default()
    });
}

/// Of a Secret only its name reaches the controller's watch: the watch maps it to the
/// FtpServers that name it, and carries no data, labels or annotations.
pub fn secret_name_only(secret: &mut PartialObjectMeta<Secret>) {
    let name = secret.metadata.name.take();
    let namespace = secret.metadata.namespace.take();
    secret.metadata = kube::api::ObjectMeta {
        name,
        namespace,
        ..kube::api::ObjectMeta::default()
    };
}

impl Observed {
    /// The workload's own report on its rollout.
    pub fn workload(&self) -> Option<WorkloadSummary> {
        self.stateful_set.as_deref().map(WorkloadSummary::from)
    }

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
    fn a_secret_keeps_its_keys_only() {
        let secret: Secret =
            serde_yaml::from_str("metadata: {name: s}\ndata: {users: YWxpY2U6eA==}").unwrap();
        assert_eq!(secret_keys(&secret), vec!["users".to_owned()]);
    }

    #[test]
    fn a_cached_node_keeps_labels_the_tuners_reports_and_taints_only() {
        let mut node: Node = serde_yaml::from_str(
            "metadata:\n  name: n\n  labels: {zone: a}\n  annotations:\n    ftpoperator.dev/keepalive-applied: '{}'\n    node.alpha.kubernetes.io/ttl: '0'\n  managedFields: [{manager: kubelet}]\nspec:\n  podCIDR: 10.0.0.0/24\n  taints: [{key: gpu, effect: NoSchedule}]\nstatus:\n  images: [{names: [big]}]",
        )
        .unwrap();
        node_for_selection(&mut node);
        let spec = node.spec.as_ref().unwrap();
        assert_eq!(spec.taints.as_ref().unwrap()[0].key, "gpu");
        assert!(spec.pod_cidr.is_none() && node.status.is_none());
        assert_eq!(node.labels().get("zone").map(String::as_str), Some("a"));
        let annotations: Vec<_> = node.annotations().keys().cloned().collect();
        assert_eq!(
            annotations,
            vec!["ftpoperator.dev/keepalive-applied".to_owned()]
        );
        assert!(node.metadata.managed_fields.is_none());

        let mut secret: PartialObjectMeta<Secret> = serde_yaml::from_str(
            "metadata: {name: s, namespace: ns, annotations: {kubectl.kubernetes.io/last-applied-configuration: secret}, labels: {a: b}}",
        )
        .unwrap();
        secret_name_only(&mut secret);
        assert_eq!(
            (secret.name_any(), secret.namespace()),
            ("s".to_owned(), Some("ns".to_owned()))
        );
        assert!(secret.annotations().is_empty() && secret.labels().is_empty());
    }
}
