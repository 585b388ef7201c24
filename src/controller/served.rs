//! Ready means reachable: the configuration the running server pods serve.
//!
//! A changed ConfigMap reaches a pod's mounted volume only when the kubelet next syncs the pod,
//! up to a minute or more later, and the server re-reads it within its poll interval. Until then
//! PASV advertises the old address, so the FtpServer must not be Ready. Each server reports the
//! digest of the configuration file it serves (`/config-digest` on its metrics port); the
//! controller compares it with the ConfigMap's. Every pod carries, as an annotation, what its
//! mounted files should be made of (the config digest and the users and TLS Secrets'
//! resourceVersions): updating that annotation makes the kubelet sync the pod, and its volumes, at
//! once, so a changed address, user or certificate reaches the server in seconds, not a minute.
//!
//! Pods are found by their labels, not through the workload that owns them. Turn the check off
//! (`--verify-served-config=false`) only where no server really runs, as on kwok's fake nodes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{FtpServer, FtpServerStatus};
use crate::ftp::config::CONFIG_FILE_NAME;
use crate::ftp::metrics::config_digest;

use super::build::selector_labels;
use super::status::condition;
use crate::api::conditions::{READY, RECONCILING};

/// What a pod's mounted files should hold: `<config digest>[ users=<rv>][ tls=<rv>]`.
pub const MOUNTED_INPUTS_ANNOTATION: &str = "ftpoperator.dev/mounted-inputs";
/// How long one pod may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The digest of the configuration file the ConfigMap holds.
pub fn desired_digest(config_map: &ConfigMap) -> Option<String> {
    config_map
        .data
        .as_ref()
        .and_then(|data| data.get(CONFIG_FILE_NAME))
        .map(|text| config_digest(text.as_bytes()))
}

/// How many running server pods serve the desired configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    pub pods: usize,
    /// Pods that serve another configuration or did not answer.
    pub lagging: Vec<String>,
}

impl Served {
    /// What Ready waits for, or None when every pod serves the desired configuration.
    pub fn waiting_for(&self) -> Option<String> {
        if self.lagging.is_empty() {
            return None;
        }
        Some(format!(
            "waiting for {} of {} pod(s) to serve the new configuration ({}); the kubelet is updating their mounted ConfigMap",
            self.lagging.len(),
            self.pods,
            self.lagging.join(", ")
        ))
    }
}

/// Whether the status about to be written says Ready.
pub fn is_ready(status: &FtpServerStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// Holds Ready (and keeps Reconciling) while pods lag behind the ConfigMap.
pub fn hold_ready(
    status: &mut FtpServerStatus,
    previous: &FtpServerStatus,
    waiting: String,
    now: &Time,
) {
    let generation = status.observed_generation;
    for c in status.conditions.iter_mut() {
        if c.type_ == READY {
            *c = condition(
                &previous.conditions,
                READY,
                false,
                "Progressing",
                waiting.clone(),
                generation,
                now,
            );
        } else if c.type_ == RECONCILING {
            *c = condition(
                &previous.conditions,
                RECONCILING,
                true,
                "Progressing",
                waiting.clone(),
                generation,
                now,
            );
        }
    }
}

/// The annotation value for the desired config digest and the referenced Secrets' versions.
pub fn mounted_inputs(desired: &str, secret_versions: &[(&str, Option<String>)]) -> String {
    let mut inputs = desired.to_owned();
    for (name, version) in secret_versions {
        if let Some(version) = version {
            inputs.push_str(&format!(" {name}={version}"));
        }
    }
    inputs
}

/// Asks every running server pod of `server` which configuration it serves, and nudges the
/// kubelet for each pod whose mounted inputs changed.
pub async fn check(
    client: &Client,
    server: &FtpServer,
    desired: &str,
    inputs: &str,
) -> Result<Served, kube::Error> {
    let namespace = server.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = selector_labels(server)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let mut served = Served::default();
    for pod in list.items.iter().filter(|pod| is_running(pod)) {
        served.pods += 1;
        let name = pod.name_any();
        let annotated = pod.annotations().get(MOUNTED_INPUTS_ANNOTATION);
        if annotated.map(String::as_str) != Some(inputs) {
            let patch = json!({"metadata": {"annotations": {MOUNTED_INPUTS_ANNOTATION: inputs}}});
            pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let answer = match serving_address(pod) {
            Some(address) => ask(&address).await,
            None => Err("no pod IP or metrics port yet".to_owned()),
        };
        if answer.as_deref() == Ok(desired) {
            continue;
        }
        if let Err(why) = &answer {
            tracing::debug!(pod = %name, %why, "cannot tell which configuration the pod serves");
        }
        served.lagging.push(name);
    }
    Ok(served)
}

/// Running and not being deleted: a pod that will answer.
fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// `ip:port` of the pod's metrics endpoint (the container port named `metrics`).
fn serving_address(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("metrics"))?
        .container_port;
    Some(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

/// GET /config-digest from one pod.
async fn ask(address: &str) -> Result<String, String> {
    let request = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/config-digest")
            .header(hyper::header::HOST, address)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("/config-digest answered {status}"));
        }
        Ok(String::from_utf8_lossy(&body).trim().to_owned())
    };
    tokio::time::timeout(ASK_TIMEOUT, request)
        .await
        .map_err(|_| format!("{address} did not answer within {ASK_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_desired_digest_is_the_servers_digest_of_the_same_file() {
        let config_map: ConfigMap = serde_yaml::from_str(
            "metadata: {name: c-config}\ndata: {ftp-server.toml: \"public_address = \\\"198.18.0.10\\\"\\n\"}",
        )
        .unwrap();
        assert_eq!(
            desired_digest(&config_map),
            Some(config_digest(b"public_address = \"198.18.0.10\"\n"))
        );
        assert!(config_digest(b"").starts_with("sha256:e3b0c442"));
    }

    #[test]
    fn mounted_inputs_name_the_secrets_that_exist() {
        assert_eq!(
            mounted_inputs("sha256:ab", &[("users", Some("12".into())), ("tls", None)]),
            "sha256:ab users=12"
        );
    }

    #[test]
    fn waiting_names_the_lagging_pods() {
        let served = Served {
            pods: 2,
            lagging: vec!["c-0".into()],
        };
        assert_eq!(
            served.waiting_for().as_deref(),
            Some(
                "waiting for 1 of 2 pod(s) to serve the new configuration (c-0); the kubelet is updating their mounted ConfigMap"
            )
        );
        assert_eq!(Served::default().waiting_for(), None);
    }
}
