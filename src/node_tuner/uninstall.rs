//! `ftp-operator node-tuner uninstall`: the Helm pre-delete hook. Before Helm deletes the
//! operator, its RBAC and the tuner's ServiceAccount, it
//! 1. scales the operator to zero and waits for its pods to go, so nothing re-adds a finalizer
//!    or re-tunes behind it;
//! 2. asks every tuned node's agent to restore: the install's uid goes into the Node's
//!    `ftpoperator.dev/keepalive-restore` annotation, and the agent writes back the originals it
//!    recorded on that Node (`ftpoperator.dev/keepalive-original`, taken before its first
//!    change) and drops its record;
//! 3. waits until no Node carries a record any more;
//! 4. removes the node-keepalive finalizer from every FtpServer, so none is stuck once the
//!    operator is gone.
//!
//! Nodes still tuned at the deadline (an agent that cannot run there) are named with their
//! recorded originals and the command fails after step 4, so `helm uninstall` says so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::demand::NODE_KEEPALIVE_FINALIZER;
use crate::api::FtpServer;
use crate::node_tuner::report::{RESTORE_ANNOTATION, original_of, report_of};

use super::NODE_TUNING_CONFIG_MAP;

#[derive(Debug, Clone)]
pub struct UninstallSettings {
    /// The operator's namespace.
    pub namespace: String,
    /// The operator's Deployment, stopped first.
    pub operator_deployment: String,
    /// How long to wait for the operator's pods and for the nodes each.
    pub timeout: Duration,
}

fn tuned(node: &PartialObjectMeta<Node>) -> bool {
    original_of(node).is_some() || report_of(node).is_some()
}

pub async fn run(client: Client, settings: UninstallSettings) -> anyhow::Result<()> {
    stop_operator(&client, &settings).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.namespace);
    let install_uid = config_maps
        .get_opt(NODE_TUNING_CONFIG_MAP)
        .await
        .context("reading the node tuning ConfigMap")?
        .and_then(|c| c.uid());
    let left_tuned = match install_uid {
        Some(uid) => restore_nodes(&client, &uid, settings.timeout).await?,
        None => {
            info!("no node tuning ConfigMap: node tuning is not installed; no node to restore");
            Vec::new()
        }
    };
    release_servers(&client).await?;
    if left_tuned.is_empty() {
        info!("every node is back at its own keepalive values; no FtpServer holds a finalizer");
        Ok(())
    } else {
        anyhow::bail!(
            "nodes still tuned after {:?} (their agents did not restore them; set these values \
             by hand with sysctl): {}",
            settings.timeout,
            left_tuned.join("; ")
        )
    }
}

async fn stop_operator(client: &Client, settings: &UninstallSettings) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &settings.namespace);
    let Some(deployment) = deployments
        .get_opt(&settings.operator_deployment)
        .await
        .context("reading the operator Deployment")?
    else {
        info!(deployment = %settings.operator_deployment, "no operator Deployment to stop");
        return Ok(());
    };
    deployments
        .patch(
            &settings.operator_deployment,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .context("scaling the operator Deployment to zero")?;
    info!(deployment = %settings.operator_deployment, "scaled the operator to zero");
    let labels: BTreeMap<String, String> = deployment
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default();
    if labels.is_empty() {
        return Ok(());
    }
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &settings.namespace);
    let deadline = Instant::now() + settings.timeout;
    loop {
        let left = pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .context("listing the operator's pods")?;
        if left.items.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the operator's pods ({}) did not stop within {:?}",
                left.items
                    .iter()
                    .map(|p| p.name_any())
                    .collect::<Vec<_>>()
                    .join(", "),
                settings.timeout
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Asks every tuned node's agent to restore and waits; returns the nodes still tuned, each with
/// its recorded originals.
async fn restore_nodes(
    client: &Client,
    install_uid: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes
        .list_metadata(&ListParams::default())
        .await
        .context("listing Nodes")?;
    for node in listed.items.iter().filter(|n| tuned(n)) {
        nodes
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {RESTORE_ANNOTATION: install_uid}}}),
                ),
            )
            .await
            .with_context(|| format!("asking node {} to restore", node.name_any()))?;
        info!(node = %node.name_any(), "asked the node's agent to restore its keepalive values");
    }
    let deadline = Instant::now() + timeout;
    loop {
        let still: Vec<String> = nodes
            .list_metadata(&ListParams::default())
            .await
            .context("listing Nodes")?
            .items
            .iter()
            .filter(|n| tuned(n))
            .map(|n| match original_of(n) {
                Some(original) => format!("{}: {original}", n.name_any()),
                None => n.name_any(),
            })
            .collect();
        if still.is_empty() || Instant::now() > deadline {
            return Ok(still);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Removes the node-keepalive finalizer from every FtpServer that has it.
async fn release_servers(client: &Client) -> anyhow::Result<()> {
    let servers: Api<FtpServer> = Api::all(client.clone());
    let listed = servers
        .list_metadata(&ListParams::default())
        .await
        .context("listing FtpServers")?;
    for server in listed.items {
        let finalizers = server.finalizers();
        if !finalizers.iter().any(|f| f == NODE_KEEPALIVE_FINALIZER) {
            continue;
        }
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != NODE_KEEPALIVE_FINALIZER)
            .collect();
        let namespace = server.namespace().unwrap_or_default();
        let api: Api<FtpServer> = Api::namespaced(client.clone(), &namespace);
        // The resourceVersion guards against dropping a finalizer someone added meanwhile.
        let patch = json!({"metadata": {
            "finalizers": kept,
            "resourceVersion": server.resource_version(),
        }});
        match api
            .patch(
                &server.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                info!(%namespace, name = %server.name_any(), "removed the node-keepalive finalizer")
            }
            Err(kube::Error::Api(err)) if err.code == 404 => {}
            Err(err) => {
                warn!(%namespace, name = %server.name_any(), %err, "cannot remove the finalizer");
                return Err(err).context(format!(
                    "removing the finalizer of FtpServer {namespace}/{}",
                    server.name_any()
                ));
            }
        }
    }
    Ok(())
}
