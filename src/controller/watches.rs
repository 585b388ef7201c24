//! The FtpServer controller's wiring: one controller per watched scope, its watches and caches,
//! and which FtpServers each watched object wakes.

use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret};
use kube::api::Api;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::api::{FtpServer, FtpUser};
use crate::node_tuner::demand::keeps_tuner;
use crate::process::MANAGER;
use crate::process::watch_refusals::{self, WatchRefusals};

use super::Settings;
use super::build::{self, MANAGED_SELECTOR};
use super::context::Context;
use super::image_rollout::ImageRolloutGate;
use super::metrics::Metrics;
use super::observe::{Stores, node_for_selection, secret_name_only};
use super::probe::account::probe_secret_name;
use super::probe::{ProbeMetrics, Prober};
use super::reconcile::{error_policy, reconcile};
use super::sftp_host_keys::{host_keys_secret_name, sftp_enabled};
use super::users;

/// The watches of one scope: a namespace, or the cluster (None). Each records its refusals.
struct Scope {
    client: Client,
    namespace: Option<String>,
    refusals: WatchRefusals,
}

impl Scope {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The watch of `resource` in this scope, backing off on errors, a 403 recorded.
    fn watch<K>(
        &self,
        resource: &'static str,
        config: watcher::Config,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + 'static,
    {
        self.refusals.track(
            resource,
            self.namespace.clone(),
            watcher(self.api::<K>(), config).default_backoff(),
        )
    }

    /// The watch of `resource` feeding `cache`, each object trimmed by `trim` first; yields the
    /// objects that changed.
    fn cached<K>(
        &self,
        resource: &'static str,
        config: watcher::Config,
        cache: Writer<K>,
        trim: fn(&mut K),
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + use<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        self.watch::<K>(resource, config)
            .modify(trim)
            .reflect(cache)
            .touched_objects()
    }
}

/// Keeps every field: children are cached with their managedFields, which tell apply what it owns.
fn whole<K>(_: &mut K) {}

fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Runs the controller until `shutdown` resolves: one FtpServer controller for the cluster, or
/// one per watched namespace (a namespaced install may not watch cluster-wide, and a reflector's
/// cache is fed by one watch). They share the metrics, the process's lease and the image
/// rollout gate.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    probe_metrics: ProbeMetrics,
    refusals: WatchRefusals,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let stateful_set_caches: Vec<_> = scopes.iter().map(|_| reflector::store()).collect();
    let stateful_sets = Arc::new(
        scopes
            .iter()
            .cloned()
            .zip(stateful_set_caches.iter().map(|(store, _)| store.clone()))
            .collect::<Vec<_>>(),
    );
    let image_gate = Arc::new(ImageRolloutGate::default());
    let shutdown = shutdown.shared();
    let controllers =
        scopes
            .into_iter()
            .zip(stateful_set_caches)
            .map(|(namespace, (_, stateful_set_writer))| {
                run_scope(
                    client.clone(),
                    settings.clone(),
                    namespace,
                    metrics.clone(),
                    Shared {
                        probe_metrics: probe_metrics.clone(),
                        refusals: refusals.clone(),
                        image_gate: image_gate.clone(),
                        stateful_sets: stateful_sets.clone(),
                        stateful_set_writer,
                    },
                    shutdown.clone(),
                )
            });
    futures::future::join_all(controllers).await;
}

/// What the namespaces' controllers share, and this one's StatefulSet cache writer.
struct Shared {
    probe_metrics: ProbeMetrics,
    refusals: WatchRefusals,
    image_gate: Arc<ImageRolloutGate>,
    stateful_sets: Arc<Vec<(Option<String>, reflector::Store<StatefulSet>)>>,
    stateful_set_writer: reflector::store::Writer<StatefulSet>,
}

/// One FtpServer controller over `namespace` (None: all namespaces).
async fn run_scope(
    client: Client,
    settings: Settings,
    namespace: Option<String>,
    metrics: Metrics,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let scope = Scope {
        client: client.clone(),
        namespace: namespace.clone(),
        refusals: shared.refusals.clone(),
    };
    let managed = || watcher::Config::default().labels(MANAGED_SELECTOR);
    let everything = watcher::Config::default;

    let (config_maps, writer) = reflector::store();
    let config_map_events = scope.cached("configmaps", managed(), writer, whole);
    let (deployments, writer) = reflector::store();
    let deployment_events = scope.cached("deployments.apps", managed(), writer, whole);
    let stateful_sets = shared.stateful_set_writer.as_reader();
    let stateful_set_events = scope.cached(
        "statefulsets.apps",
        managed(),
        shared.stateful_set_writer,
        whole,
    );
    // Server pods carry the managed-by label of their template; their IPs and readiness feed the
    // EndpointSlices, their ordinals the slices in use.
    let (pods, writer) = reflector::store();
    let pod_events = scope.cached("pods", managed(), writer, without_managed_fields);
    let (endpoint_slices, writer) = reflector::store();
    let endpoint_slice_events =
        scope.cached("endpointslices.discovery.k8s.io", managed(), writer, whole);
    let (disruption_budgets, writer) = reflector::store();
    let disruption_budget_events =
        scope.cached("poddisruptionbudgets.policy", managed(), writer, whole);
    let (claims, writer) = reflector::store();
    let claim_events = scope.cached(
        "persistentvolumeclaims",
        everything(),
        writer,
        without_managed_fields,
    );
    let (services, writer) = reflector::store();
    let service_events = scope.cached("services", managed(), writer, whole);
    // Secrets by name only: the watch carries metadata, not the data of every Secret in the
    // cluster, and keeps no cache; the referenced ones are read when a server is reconciled.
    let secret_events = scope
        .watch::<PartialObjectMeta<Secret>>("secrets", everything())
        .modify(secret_name_only)
        .touched_objects();
    // Nodes carry the tuner's reports; servers needing node sysctls summarise them. Only labels,
    // taints and the reports are kept, and a node wakes the servers only when one of them
    // changes (not on each kubelet status update). Without node tuning no server reads them, and no Node is
    // watched (a namespaced install reads nothing cluster-scoped).
    let (nodes, writer) = reflector::store();
    let node_events = if settings.node_tuning {
        shared
            .refusals
            .track(
                "nodes",
                None,
                watcher(Api::<Node>::all(client.clone()), everything()).default_backoff(),
            )
            .modify(node_for_selection)
            .reflect(writer)
            .touched_objects()
            .predicate_filter(
                predicates::labels
                    .combine(predicates::annotations)
                    .combine(taints_predicate),
                PredicateConfig::default(),
            )
            .boxed()
    } else {
        futures::stream::empty().boxed()
    };

    // FtpUsers: cached (their servers gather them), and each change wakes the servers of its
    // namespace: the one it names now, and one it named before (nothing remembers which).
    let (ftp_users, writer) = reflector::store();
    let user_events = scope.cached(
        "ftpusers.ftpoperator.dev",
        everything(),
        writer,
        without_managed_fields,
    );
    let stores = Stores {
        config_maps,
        deployments,
        stateful_sets,
        pods,
        services,
        endpoint_slices,
        disruption_budgets,
        claims,
        nodes,
        ftp_users: ftp_users.clone(),
    };
    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: Some(settings.identity.clone()),
    };
    // A malformed FtpServer becomes an error for that object alone, never for the watch.
    let (servers, writer) = reflector::store();
    let server_events = scope
        .watch::<DeserializeGuard<FtpServer>>(watch_refusals::FTP_SERVERS, everything())
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(server_events, servers.clone());
    metrics.server_conditions.watch(servers.clone());
    let prober = Arc::new(Prober::new(settings.probe, shared.probe_metrics));
    // The probe wakes a server's reconcile only when what it found changed.
    let (probe_wake, probe_woken) = futures::channel::mpsc::unbounded();
    let probe_task = Arc::clone(&prober).run(servers.clone(), stores.pods.clone(), probe_wake);
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter.clone()),
        reporter,
        client: client.clone(),
        stores,
        settings,
        metrics,
        refusals: shared.refusals,
        failures: Mutex::default(),
        image_gate: shared.image_gate,
        stateful_sets: shared.stateful_sets,
        prober,
        password_hashes: Arc::default(),
    });
    let orphans = users::orphans::run(
        ftp_users.clone(),
        servers.clone(),
        client.clone(),
        context.metrics.api_writes.clone(),
    );
    let tuned_servers = {
        let servers = servers.clone();
        move || {
            servers
                .state()
                .into_iter()
                .filter(|guard| guard.0.as_ref().is_ok_and(keeps_tuner))
                .map(|guard| ObjectRef::from_obj(&*guard))
                .collect::<Vec<_>>()
        }
    };
    let claim_servers = servers.clone();
    let user_servers = servers.clone();
    let secret_users = ftp_users.clone();
    let reconciles = controller
        .reconcile_on(probe_woken)
        .owns_stream(config_map_events)
        .owns_stream(deployment_events)
        .owns_stream(stateful_set_events)
        .owns_stream(service_events)
        .owns_stream(endpoint_slice_events)
        .owns_stream(disruption_budget_events)
        .watches_stream(claim_events, move |claim: PersistentVolumeClaim| {
            let namespace = claim.namespace();
            let name = claim.name_any();
            claim_servers
                .state()
                .into_iter()
                .filter(|guard| match &guard.0 {
                    Ok(server) => {
                        server.namespace() == namespace && shared_claim(server) == Some(&name)
                    }
                    Err(_) => false,
                })
                .map(|guard| ObjectRef::from_obj(&*guard))
                .collect::<Vec<_>>()
        })
        .watches_stream(user_events, move |user: FtpUser| {
            let namespace = user.namespace();
            user_servers
                .state()
                .into_iter()
                .filter(|guard| guard.namespace() == namespace)
                .map(|guard| ObjectRef::from_obj(&*guard))
                .collect::<Vec<_>>()
        })
        .watches_stream(secret_events, move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            // The servers of the FtpUsers whose password it holds.
            let users_servers: std::collections::BTreeSet<String> = secret_users
                .state()
                .iter()
                .filter(|user| {
                    user.namespace() == namespace && user.spec.password_secret_ref.name == name
                })
                .map(|user| user.spec.server_ref.name.clone())
                .collect();
            servers
                .state()
                .into_iter()
                .filter(|guard| match &guard.0 {
                    Ok(server) => {
                        server.namespace() == namespace
                            && (references_secret(server, &name)
                                || users_servers.contains(&server.name_any()))
                    }
                    Err(_) => false,
                })
                .map(|guard| ObjectRef::from_obj(&*guard))
                .collect::<Vec<_>>()
        })
        // Pods belong to the StatefulSet; their instance label names the server.
        .watches_stream(pod_events, |pod: Pod| {
            let server = pod.labels().get(build::INSTANCE_LABEL)?.clone();
            Some(ObjectRef::new(&server).within(&pod.namespace()?))
        })
        .watches_stream(node_events, move |_: Node| tuned_servers())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "reconcile failed");
            }
        });
    // The orphaned users' loop, and the probe, live as long as the reconciles; they end with them.
    let reconciles = async move {
        futures::pin_mut!(orphans);
        futures::future::select(reconciles.boxed(), orphans).await;
    };
    futures::pin_mut!(reconciles, probe_task);
    if let futures::future::Either::Right(((), reconciles)) =
        futures::future::select(reconciles, probe_task).await
    {
        reconciles.await;
    }
}

/// A Node's taints as a predicate value: a change of taints changes which servers' pods may go
/// to the node, hence what those servers wait for.
fn taints_predicate(node: &Node) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for taint in crate::node_tuner::selection::NodeView::taints(node) {
        (&taint.key, &taint.value, &taint.effect).hash(&mut hasher);
    }
    Some(hasher.finish())
}

fn shared_claim(server: &FtpServer) -> Option<&String> {
    let storage = server.spec.storage.as_ref()?;
    storage
        .persistent_volume_claim
        .as_ref()
        .map(|c| &c.claim_name)
}

/// Whether a change to Secret `secret` concerns `server`: the Secrets its spec names, and the
/// two it owns (the probe account, the SFTP host keys), so a deleted or edited one is noticed at
/// once rather than at the next resync.
fn references_secret(server: &FtpServer, secret: &str) -> bool {
    let spec = &server.spec;
    let named = [
        spec.users.as_ref().map(|u| &u.secret_ref.name),
        spec.tls.as_ref().map(|t| &t.secret_ref.name),
        spec.storage
            .as_ref()
            .and_then(|s| s.s3.as_ref())
            .and_then(|s3| s3.credentials_secret_ref.as_ref())
            .map(|r| &r.name),
        spec.storage
            .as_ref()
            .and_then(|s| s.azure_blob.as_ref())
            .and_then(|azure| azure.credentials_secret_ref.as_ref())
            .map(|r| &r.name),
    ];
    named.into_iter().flatten().any(|name| name == secret)
        || secret == probe_secret_name(server)
        || (sftp_enabled(server) && secret == host_keys_secret_name(server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_mapped_to_the_servers_that_name_them() {
        let server = build::fixtures::server(build::fixtures::FULL);
        assert!(references_secret(&server, "ftp-users"));
        assert!(references_secret(&server, "ftp-tls"));
        assert!(!references_secret(&server, "other"));
        assert!(references_secret(&server, "contoso-probe"));
        let mut sftp = server.clone();
        assert!(!references_secret(&sftp, "contoso-sftp-host-keys"));
        sftp.spec.sftp = Some(crate::api::SftpSpec {
            enabled: true,
            port: 22,
        });
        assert!(references_secret(&sftp, "contoso-sftp-host-keys"));
    }
}
