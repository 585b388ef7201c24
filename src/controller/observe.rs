//! What the cluster looks like for one FtpServer, read from the controller's caches (no API calls).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::FtpServer;

use super::build::config_map_name;

/// The caches the controller's watches fill. Secrets are stored with their values stripped.
#[derive(Clone)]
pub struct Stores {
    pub config_maps: Store<ConfigMap>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
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

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub config_map: Option<Arc<ConfigMap>>,
    pub deployment: Option<Arc<Deployment>>,
    pub service: Option<Arc<Service>>,
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
    fn stripped_secrets_keep_keys_only() {
        let mut secret: Secret =
            serde_yaml::from_str("metadata: {name: s}\ndata: {users: YWxpY2U6eA==}").unwrap();
        strip_secret_values(&mut secret);
        assert_eq!(secret_keys(&secret), vec!["users".to_owned()]);
        assert!(secret.data.unwrap()["users"].0.is_empty());
    }
}
