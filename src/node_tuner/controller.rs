//! The node tuner DaemonSet's own controller: one key for the whole cluster (the install's
//! ConfigMap), woken by any FtpServer change, by its DaemonSet and by the ConfigMap. It applies
//! the DaemonSet while some FtpServer needs node sysctls and deletes it when none does. No
//! FtpServer's reconcile touches the DaemonSet, so a failure here fails no server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use tracing::{info, warn};

use super::demand::tuner_needed;
use crate::api::FtpServer;
use crate::process::api_writes::ApiWrites;
use crate::process::apply::{Applied, apply};
use crate::process::backoff::backoff_delay;
use crate::process::errors::ApplyError;

use super::daemon_set::{NODE_TUNER_NAME, TunerInputs, desired_node_tuner_daemon_set};
use super::{NODE_TUNING_CONFIG_MAP, TOLERATIONS_KEY};

/// What the node tuning controller is told at start.
#[derive(Debug, Clone)]
pub struct TuningSettings {
    /// The operator's namespace: the ConfigMap and the DaemonSet live there.
    pub namespace: String,
    /// The agents' image: the operator's own (it runs `ftp-operator node-tuner run`).
    pub image: String,
    /// The namespace whose FtpServers count; None: all.
    pub watch_namespace: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("ConfigMap {NODE_TUNING_CONFIG_MAP} key {TOLERATIONS_KEY}: {0}")]
    Tolerations(serde_json::Error),
    #[error("the FtpServer and DaemonSet caches are not complete yet")]
    CachesNotReady,
}

/// The counters this controller adds to: the process's API writes, and failed reconciles
/// (`ftp_operator_reconcile_errors`, shared with the FtpServer controller).
#[derive(Clone, Debug, Default)]
pub struct TuningMetrics {
    pub api_writes: ApiWrites,
    pub reconcile_errors: Counter,
}

struct Context {
    client: Client,
    settings: TuningSettings,
    metrics: TuningMetrics,
    servers: Store<DeserializeGuard<FtpServer>>,
    daemon_sets: Store<DaemonSet>,
    failures: std::sync::Mutex<u32>,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: TuningSettings,
    metrics: TuningMetrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = settings.namespace.clone();
    let servers_api: Api<DeserializeGuard<FtpServer>> = match &settings.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Only the spec and the deletion matter here: the cache drops status and managed fields.
    let (servers, writer) = reflector::store();
    let server_events = watcher(servers_api, watcher::Config::default())
        .default_backoff()
        .modify(|guard: &mut DeserializeGuard<FtpServer>| {
            if let Ok(server) = &mut guard.0 {
                server.status = None;
                server.metadata.managed_fields = None;
            }
        })
        .reflect(writer)
        .touched_objects();
    let (daemon_sets, writer) = reflector::store();
    let daemon_set_events = watcher(
        Api::<DaemonSet>::namespaced(client.clone(), &namespace),
        watcher::Config::default().fields(&format!("metadata.name={NODE_TUNER_NAME}")),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let owner = ObjectRef::<ConfigMap>::new(NODE_TUNING_CONFIG_MAP).within(&namespace);
    let context = Arc::new(Context {
        client: client.clone(),
        settings,
        metrics,
        servers,
        daemon_sets,
        failures: std::sync::Mutex::new(0),
    });
    Controller::new(
        Api::<ConfigMap>::namespaced(client, &namespace),
        watcher::Config::default().fields(&format!("metadata.name={NODE_TUNING_CONFIG_MAP}")),
    )
    .owns_stream(daemon_set_events)
    .watches_stream(server_events, move |_| Some(owner.clone()))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(error) = result {
            warn!(%error, "node tuner DaemonSet reconcile failed");
        }
    })
    .await;
}

/// The agents' extra tolerations, from the ConfigMap.
pub fn tolerations(config: &ConfigMap) -> Result<Vec<Toleration>, serde_json::Error> {
    match config.data.as_ref().and_then(|d| d.get(TOLERATIONS_KEY)) {
        Some(text) if !text.trim().is_empty() => serde_json::from_str(text),
        _ => Ok(Vec::new()),
    }
}

fn owner_of(config: &ConfigMap) -> OwnerReference {
    OwnerReference {
        api_version: ConfigMap::api_version(&()).into_owned(),
        kind: ConfigMap::kind(&()).into_owned(),
        name: config.name_any(),
        uid: config.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn reconcile(config: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, Error> {
    // An empty FtpServer cache would read as "nobody needs the tuner" and delete it.
    let ready = [
        ctx.servers.wait_until_ready().now_or_never(),
        ctx.daemon_sets.wait_until_ready().now_or_never(),
    ]
    .iter()
    .all(|ready| matches!(ready, Some(Ok(()))));
    if !ready {
        return Err(Error::CachesNotReady);
    }
    if config.meta().deletion_timestamp.is_some() {
        // Being uninstalled: the garbage collector takes the DaemonSet with the ConfigMap.
        return Ok(Action::await_change());
    }
    let needed = {
        let servers = ctx.servers.state();
        tuner_needed(servers.iter().filter_map(|g| g.0.as_ref().ok()), None)
    };
    let namespace = &ctx.settings.namespace;
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), namespace);
    let cached = ctx
        .daemon_sets
        .get(&ObjectRef::new(NODE_TUNER_NAME).within(namespace));
    if needed {
        let desired = desired_node_tuner_daemon_set(&TunerInputs {
            namespace: namespace.clone(),
            image: ctx.settings.image.clone(),
            tolerations: tolerations(&config).map_err(Error::Tolerations)?,
            owner: owner_of(&config),
        });
        let applied = apply(&api, &desired, cached.as_deref(), &ctx.metrics.api_writes).await?;
        if applied != Applied::Unchanged {
            info!(%namespace, ?applied, "applied the node tuner DaemonSet");
        }
    } else if cached.is_some() {
        match api
            .delete(NODE_TUNER_NAME, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                ctx.metrics.api_writes.record("DaemonSet");
                info!(%namespace, "deleted the node tuner DaemonSet: no FtpServer needs it");
            }
            Err(kube::Error::Api(err)) if err.code == 404 => {}
            Err(err) => return Err(ApplyError::of::<DaemonSet>(NODE_TUNER_NAME, err).into()),
        }
    }
    *ctx.failures.lock().unwrap_or_else(|e| e.into_inner()) = 0;
    Ok(Action::requeue(Duration::from_secs(600)))
}

fn error_policy(_: Arc<ConfigMap>, error: &Error, ctx: Arc<Context>) -> Action {
    if matches!(error, Error::CachesNotReady) {
        return Action::requeue(Duration::from_millis(500));
    }
    ctx.metrics.reconcile_errors.inc();
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let delay = backoff_delay(*failures);
    *failures = failures.saturating_add(1);
    warn!(%error, retry_in = ?delay, "node tuner DaemonSet reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_come_from_the_config_map_and_default_to_none() {
        let config: ConfigMap = serde_yaml::from_str(
            r#"
metadata: {name: ftp-operator-node-tuner, uid: u1}
data:
  tolerations.json: '[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]'
"#,
        )
        .unwrap();
        let got = tolerations(&config).unwrap();
        assert_eq!(
            got[0].key.as_deref(),
            Some("node-role.kubernetes.io/control-plane")
        );
        assert_eq!(owner_of(&config).uid, "u1");
        let empty: ConfigMap = serde_yaml::from_str("metadata: {name: x}").unwrap();
        assert!(tolerations(&empty).unwrap().is_empty());
        let bad: ConfigMap =
            serde_yaml::from_str("metadata: {name: x}\ndata: {tolerations.json: '{'}").unwrap();
        assert!(tolerations(&bad).is_err());
    }
}
