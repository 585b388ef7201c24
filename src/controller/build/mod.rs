//! Pure functions from a validated FtpServer (and what was observed) to the objects it owns.
//! No I/O here: everything a builder needs is an argument, so each is unit-tested from YAML.

mod config_map;
mod disruption_budget;
mod endpoint_slices;
mod service;
mod users_secret;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::FtpServer;
use crate::process::MANAGER;

pub use config_map::{config_map_name, desired_config_map, desired_server_config};
pub use disruption_budget::desired_disruption_budget;
pub use endpoint_slices::{ENDPOINT_SLICE_MANAGER, desired_endpoint_slices, is_ready};
pub use service::{
    control_service_name, desired_services, passive_port_name, replica_service_name,
};
pub use users_secret::{desired_users_secret, users_digest, users_secret_name};
pub use workload::{
    DATA_VOLUME, POD_INDEX_LABEL, POD_NAME_LABEL, REPLICA_INDEX_ENV, RESTART_HASH_ANNOTATION,
    desired_stateful_set, replica_pod_name, slices_in_use, updatable_in_place, workload_name,
};

/// Where the pod finds its files.
pub const CONFIG_DIR: &str = "/etc/ftp-server";
pub const USERS_DIR: &str = "/etc/ftp-users";
pub use super::validate::USERS_KEY;
pub const TLS_DIR: &str = "/etc/ftp-tls";
pub const SFTP_HOST_KEYS_DIR: &str = "/etc/ftp-sftp-host-keys";
pub const DATA_DIR: &str = "/srv/ftp";

/// Labels every owned object carries; the first two select the server's pods.
pub fn labels(server: &FtpServer) -> BTreeMap<String, String> {
    let mut labels = selector_labels(server);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    labels
}

/// The label naming the FtpServer a pod (or any child) belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

pub fn selector_labels(server: &FtpServer) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "ftp-server".to_owned()),
        (INSTANCE_LABEL.to_owned(), server.name_any()),
    ])
}

/// The label selector the controller's child watches use.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=ftp-operator";

/// Metadata of an owned object: same namespace, our labels, the FtpServer as controller owner
/// (so the garbage collector removes it with the FtpServer).
pub(crate) fn owned_metadata(server: &FtpServer, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: server.namespace(),
        labels: Some(labels(server)),
        owner_references: server.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::api::FtpServer;
    use crate::controller::validate::{Validated, validate_spec};

    /// A FtpServer from a fixture file, as the apiserver would hand it over (uid set).
    pub fn server(yaml: &str) -> FtpServer {
        let mut server: FtpServer = serde_yaml::from_str(yaml).unwrap();
        server.metadata.uid = Some("8d3c0c61-4f7e-4b59-9a3e-2f1d2b1f0c11".into());
        server.metadata.generation = Some(1);
        server
    }

    pub fn validated(server: &FtpServer) -> Validated {
        validate_spec(&server.spec).unwrap()
    }

    pub const MINIMAL: &str = include_str!("fixtures/minimal.yaml");
    pub const FULL: &str = include_str!("fixtures/full.yaml");
    pub const AWS: &str = include_str!("fixtures/aws.yaml");
    pub const HOST_NETWORK: &str = include_str!("fixtures/host-network.yaml");
    pub const S3: &str = include_str!("fixtures/s3.yaml");
    pub const AZURE_BLOB: &str = include_str!("fixtures/azure-blob.yaml");
}
