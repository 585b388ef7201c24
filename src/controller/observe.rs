//! What the cluster looks like for one FtpServer: the children from the controller's caches, the
//! referenced Secrets read by name (the cache would hold every Secret of the cluster).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::api::FtpServer;

use super::apply::ApplyError;
use super::build::{INSTANCE_LABEL, config_map_name};
use super::health::WorkloadSummary;

/// The caches the controller's watches fill.
#[derive(Clone)]
pub struct Stores {
    pub config_maps: Store<ConfigMap>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    /// The servers' pods, for why a rollout does not finish.
    pub pods: Store<Pod>,
    /// Nodes' metadata, for their labels and the node tuner's reports (see [`node_metadata`]).
    pub nodes: Store<PartialObjectMeta<Node>>,
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

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub config_map: Option<Arc<ConfigMap>>,
    pub deployment: Option<Arc<Deployment>>,
    pub service: Option<Arc<Service>>,
    /// The server's pods (by its instance label).
    pub pods: Vec<Arc<Pod>>,
    pub users_secret: SecretState,
    pub tls_secret: SecretState,
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
    Observed {
        config_map: stores
            .config_maps
            .get(&ObjectRef::new(&config_map_name(server)).within(&namespace)),
        deployment: stores
            .deployments
            .get(&ObjectRef::new(&name).within(&namespace)),
        service: stores
            .services
            .get(&ObjectRef::new(&name).within(&namespace)),
        pods: stores
            .pods
            .state()
            .into_iter()
            .filter(|pod| {
                pod.namespace().as_deref() == Some(namespace.as_str())
                    && pod.labels().get(INSTANCE_LABEL) == Some(&name)
            })
            .collect(),
        users_secret: SecretState::NotReferenced,
        tls_secret: SecretState::NotReferenced,
    }
}

fn secret_keys(secret: &Secret) -> Vec<String> {
    let data = secret.data.iter().flat_map(|data| data.keys());
    let string_data = secret.string_data.iter().flat_map(|data| data.keys());
    data.chain(string_data).cloned().collect()
}

/// What the controller keeps of a Node: its name, labels and the node tuner's two annotations.
/// The rest (other annotations, managed fields) is dropped, so a cluster of busy nodes costs
/// little memory.
pub fn node_metadata(node: &mut PartialObjectMeta<Node>) {
    node.metadata.managed_fields = None;
    if let Some(annotations) = &mut node.metadata.annotations {
        annotations.retain(|key, _| crate::node::report::is_report_annotation(key));
    }
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
        self.deployment.as_deref().map(WorkloadSummary::from)
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
    fn cached_node_metadata_keeps_labels_and_the_tuners_reports_only() {
        let mut node: PartialObjectMeta<Node> = serde_yaml::from_str(
            "metadata:\n  name: n\n  labels: {zone: a}\n  annotations:\n    ftpoperator.dev/keepalive-applied: '{}'\n    node.alpha.kubernetes.io/ttl: '0'\n  managedFields: [{manager: kubelet}]",
        )
        .unwrap();
        node_metadata(&mut node);
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
