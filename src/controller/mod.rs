//! The FtpServer controller. One reconcile, one direction:
//! [`observe`] → [`validate`] → [`build`] → [`apply`] → [`status`].

pub mod apply;
pub mod budgets;
pub mod build;
pub mod health;
pub mod http;
pub mod image_rollout;
pub mod metrics;
pub mod node_tuner;
pub mod observe;
pub mod ownership;
pub mod probe;
pub mod served;
pub mod status;
pub mod validate;
pub mod watch_refusals;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, ObjectReference, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, PredicateConfig, predicates};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::FtpServer;
use crate::keepalive::needs_node_sysctls;
use apply::{Applied, ApplyError, apply, delete, orphan};
use build::{MANAGED_SELECTOR, MANAGER};
use image_rollout::ImageRolloutGate;
use metrics::Metrics;
use node_tuner::{NODE_KEEPALIVE_FINALIZER, has_finalizer, keeps_tuner};
use observe::{Stores, node_for_selection, observe, observe_children, secret_name_only};
use probe::results::ProbeObservation;
use probe::{AccountState, ProbeSettings, Prober};
use status::{Outcome, STALLED, desired_status};
use validate::Invalid;

/// What the controller is told at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image for FtpServers that name none.
    pub default_image: String,
    /// Namespaces to watch, each with watches and caches of its own; empty: all namespaces
    /// (one set of cluster-wide watches).
    pub namespaces: Vec<String>,
    /// Reported as the Events' instance.
    pub identity: String,
    /// Node tuning is installed (`nodeTuning.enabled`): the node tuner controller runs and
    /// servers may ask for node sysctls; without it `keepalive.nodeSysctls` is Stalled.
    pub node_tuning: bool,
    /// Ready waits until every running server pod serves the rendered configuration (asked over
    /// its metrics port; see served.rs). Off only where no server runs (kwok's fake pods).
    pub verify_served_config: bool,
    /// How long a Service may go without a load-balancer address before the FtpServer is
    /// Stalled saying so.
    pub load_balancer_address_timeout: Duration,
    /// The reachability probe (`PassiveReachable`); off where no server really runs.
    pub probe: ProbeSettings,
    /// The cluster's NodePort range and Azure's rules per NIC, checked before a server's
    /// Services grow; None where the operator may not list Services cluster-wide (a
    /// namespaced install), and the apiserver's own refusal is what the user sees.
    pub cluster_budgets: Option<budgets::ClusterBudgets>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Kubernetes API, for {0}")]
    Apply(#[from] ApplyError),
    #[error("waiting for the node tuners on {0} to stop tuning for this FtpServer")]
    NodesStillTuned(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

struct Context {
    client: Client,
    stores: Stores,
    settings: Settings,
    metrics: Metrics,
    recorder: Recorder,
    reporter: Reporter,
    /// Consecutive failures per FtpServer, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<DeserializeGuard<FtpServer>>, u32>>,
    /// Which server may move to a new default image now: one for the process, shared by the
    /// namespaces' controllers.
    image_gate: Arc<ImageRolloutGate>,
    /// Every namespace's StatefulSet cache, to see whether the gate's holder (in any watched
    /// namespace) has rolled out.
    stateful_sets: Arc<Vec<(Option<String>, reflector::Store<StatefulSet>)>>,
    /// The probe's accounts and results, shared with its background task.
    prober: Arc<Prober>,
}

/// Runs the controller until `shutdown` resolves: one FtpServer controller for the cluster, or
/// one per watched namespace (a namespaced install may not watch cluster-wide, and a reflector's
/// cache is fed by one watch). They share the metrics, the process's lease and the image
/// rollout gate.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
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
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let managed = watcher::Config::default().labels(MANAGED_SELECTOR);

    let (config_maps, writer) = reflector::store();
    let track = |resource| (metrics.watch_refusals.clone(), resource, namespace.clone());
    let (refusals, resource, scope) = track("configmaps");
    let config_map_events = refusals
        .track(
            resource,
            scope,
            watcher(api::<ConfigMap>(&client, ns), managed.clone()).default_backoff(),
        )
        .reflect(writer)
        .touched_objects();
    let (deployments, writer) = reflector::store();
    let (refusals, resource, scope) = track("deployments.apps");
    let deployment_events = refusals
        .track(
            resource,
            scope,
            watcher(api::<Deployment>(&client, ns), managed.clone()).default_backoff(),
        )
        .reflect(writer)
        .touched_objects();
    let stateful_sets = shared.stateful_set_writer.as_reader();
    // Kept with its managedFields, like every applied child: they tell apply what it owns.
    let (refusals, resource, scope) = track("statefulsets.apps");
    let stateful_set_events = refusals
        .track(
            resource,
            scope,
            watcher(api::<StatefulSet>(&client, ns), managed.clone()).default_backoff(),
        )
        .reflect(shared.stateful_set_writer)
        .touched_objects();
    // Server pods carry the managed-by label of their template; their IPs and readiness feed the
    // EndpointSlices, their ordinals the slices in use.
    let (pods, writer) = reflector::store();
    let (refusals, resource, scope) = track("pods");
    let pod_events = refusals
        .track(
            resource,
            scope,
            watcher(api::<Pod>(&client, ns), managed.clone()).default_backoff(),
        )
        .modify(|pod: &mut Pod| pod.metadata.managed_fields = None)
        .reflect(writer)
        .touched_objects();
    let (endpoint_slices, writer) = reflector::store();
    let (refusals, resource, scope) = track("endpointslices.discovery.k8s.io");
    let endpoint_slice_events = refusals
        .track(
            resource,
            scope,
            watcher(api::<EndpointSlice>(&client, ns), managed.clone()).default_backoff(),
        )
        .reflect(writer)
        .touched_objects();
    let (disruption_budgets, writer) = reflector::store();
    let (refusals, resource, scope) = track("poddisruptionbudgets.policy");
    let disruption_budget_events = refusals
        .track(
            resource,
            scope,
            watcher(api::<PodDisruptionBudget>(&client, ns), managed.clone()).default_backoff(),
        )
        .reflect(writer)
        .touched_objects();
    let (claims, writer) = reflector::store();
    let (refusals, resource, scope) = track("persistentvolumeclaims");
    let claim_events = refusals
        .track(
            resource,
            scope,
            watcher(
                api::<PersistentVolumeClaim>(&client, ns),
                watcher::Config::default(),
            )
            .default_backoff(),
        )
        .modify(|claim: &mut PersistentVolumeClaim| claim.metadata.managed_fields = None)
        .reflect(writer)
        .touched_objects();
    let (services, writer) = reflector::store();
    let (refusals, resource, scope) = track("services");
    let service_events = refusals
        .track(
            resource,
            scope,
            watcher(api::<Service>(&client, ns), managed.clone()).default_backoff(),
        )
        .reflect(writer)
        .touched_objects();
    // Secrets by name only: the watch carries metadata, not the data of every Secret in the
    // cluster, and keeps no cache; the referenced ones are read when a server is reconciled.
    let (refusals, resource, scope) = track("secrets");
    let secret_events = refusals
        .track(
            resource,
            scope,
            watcher(
                api::<PartialObjectMeta<Secret>>(&client, ns),
                watcher::Config::default(),
            )
            .default_backoff(),
        )
        .modify(secret_name_only)
        .touched_objects();
    // Nodes carry the tuner's reports; servers needing node sysctls summarise them. Only labels,
    // taints and the reports are kept, and a node wakes the servers only when one of them
    // changes (not on each kubelet status update). Without node tuning no server reads them, and no Node is
    // watched (a namespaced install reads nothing cluster-scoped).
    let (nodes, writer) = reflector::store();
    let node_events = if settings.node_tuning {
        metrics
            .watch_refusals
            .track(
                "nodes",
                None,
                watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                    .default_backoff(),
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
    };
    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: Some(settings.identity.clone()),
    };
    // A malformed FtpServer becomes an error for that object alone, never for the watch.
    let (servers, writer) = reflector::store();
    let server_events = metrics
        .watch_refusals
        .track(
            watch_refusals::FTP_SERVERS,
            namespace.clone(),
            watcher(
                api::<DeserializeGuard<FtpServer>>(&client, ns),
                watcher::Config::default(),
            )
            .default_backoff(),
        )
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(server_events, servers.clone());
    metrics.server_conditions.watch(servers.clone());
    let prober = Arc::new(Prober::new(settings.probe, metrics.probe.clone()));
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
        failures: Mutex::default(),
        image_gate: shared.image_gate,
        stateful_sets: shared.stateful_sets,
        prober,
    });
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
        .watches_stream(secret_events, move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            servers
                .state()
                .into_iter()
                .filter(|guard| match &guard.0 {
                    Ok(server) => {
                        server.namespace() == namespace && references_secret(server, &name)
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
    // The probe lives as long as the reconciles; it ends with them.
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
    for taint in crate::node::selection::NodeView::taints(node) {
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

fn references_secret(server: &FtpServer, secret: &str) -> bool {
    let users = server.spec.users.as_ref().map(|u| &u.secret_ref.name);
    let tls = server.spec.tls.as_ref().map(|t| &t.secret_ref.name);
    [users, tls]
        .into_iter()
        .flatten()
        .any(|name| name == secret)
}

async fn reconcile(
    guard: Arc<DeserializeGuard<FtpServer>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    // A refused watch leaves its cache empty or stale: say so rather than wait for it.
    if let Ok(server) = &guard.0
        && let Some(refused) = ctx
            .metrics
            .watch_refusals
            .blocking(&server.namespace().unwrap_or_default())
    {
        report_stalled(server, refused, &ctx).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    // Decisions need complete caches: an empty ConfigMap cache would look like a missing child.
    // Checked without waiting: a store wakes only its latest waiter, so reconciles parked on it
    // concurrently would hang for good. Until the caches are complete, try again shortly.
    let caches_ready = [
        ctx.stores.config_maps.wait_until_ready().now_or_never(),
        ctx.stores.deployments.wait_until_ready().now_or_never(),
        ctx.stores.services.wait_until_ready().now_or_never(),
        ctx.stores.stateful_sets.wait_until_ready().now_or_never(),
        ctx.stores.endpoint_slices.wait_until_ready().now_or_never(),
        ctx.stores
            .disruption_budgets
            .wait_until_ready()
            .now_or_never(),
        ctx.stores.claims.wait_until_ready().now_or_never(),
        ctx.stores.pods.wait_until_ready().now_or_never(),
    ]
    .iter()
    .all(|ready| matches!(ready, Some(Ok(()))))
        && (!ctx.settings.node_tuning
            || matches!(
                ctx.stores.nodes.wait_until_ready().now_or_never(),
                Some(Ok(()))
            ));
    if !caches_ready {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let result = match &guard.0 {
        Ok(server) => reconcile_server(server, &ctx).await,
        Err(invalid) => {
            warn!(name = ?invalid.metadata.name, error = %invalid.error, "FtpServer cannot be read");
            Ok(Action::await_change())
        }
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(&*guard));
    }
    result
}

async fn reconcile_server(server: &FtpServer, ctx: &Context) -> Result<Action, Error> {
    let deleting = server.metadata.deletion_timestamp.is_some();
    // Only servers that tune nodes carry the finalizer; the rest are deleted at once.
    let tunes_nodes = ctx.settings.node_tuning && needs_node_sysctls(&server.spec);
    if has_finalizer(server) || (tunes_nodes && !deleting) {
        let api: Api<FtpServer> =
            Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
        return finalizer(
            &api,
            NODE_KEEPALIVE_FINALIZER,
            Arc::new(server.clone()),
            |event| async move {
                match event {
                    FinalizerEvent::Apply(server) => apply_server(&server, ctx).await,
                    FinalizerEvent::Cleanup(server) => node_tuner::cleanup(&server, ctx)
                        .await
                        .map(|()| Action::await_change()),
                }
            },
        )
        .await
        .map_err(|err| Error::Finalizer(Box::new(err)));
    }
    if deleting {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    apply_server(server, ctx).await
}

async fn apply_server(server: &FtpServer, ctx: &Context) -> Result<Action, Error> {
    let namespace = server.namespace().unwrap_or_default();
    let mut changes = Vec::new();
    let mut image_waiting = false;
    let mut probe_image = None;
    let (mut observed, read) = match observe(server, &ctx.stores, &ctx.client).await {
        Ok(observed) => (observed, Ok(())),
        Err(error) => (observe_children(server, &ctx.stores), Err(error)),
    };
    let result = match read {
        Err(error) => Err(error),
        Ok(()) => match node_tuner::opt_in(server, ctx.settings.node_tuning)
            .map_or_else(|| validate::validate(server, &observed), Err)
        {
            Err(invalid) => Ok(Outcome::Stalled(invalid)),
            Ok(valid) => {
                apply_children(
                    server,
                    &valid,
                    &observed,
                    ctx,
                    &mut changes,
                    &mut image_waiting,
                    &mut probe_image,
                )
                .await
            }
        },
    };
    observed.probe = match probe_image {
        Some(image) => ProbeObservation::NeedsDefaultImage(image),
        None => ctx.prober.observation(server),
    };
    // An API failure is shown in status first, then returned for the backoff.
    let (outcome, failure) = match result {
        Ok(outcome) => (outcome, None),
        Err(error) => (status::api_failure(&error), Some(error)),
    };

    let now =
        Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default());
    let timeout = ctx.settings.load_balancer_address_timeout;
    let balancer_waited = status::balancer_waiting(server, &observed, &now);
    let mut status = desired_status(server, &outcome, &observed, now.clone(), timeout);
    let previous = server.status.clone().unwrap_or_default();
    let mut held_ready = None;
    let desired_config_digest = if ctx.settings.verify_served_config
        && matches!(outcome, Outcome::Applied { .. })
        && served::is_ready(&status)
    {
        // The ConfigMap as just applied, from the API (the cache may lag behind the apply).
        let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
        config_maps
            .get_opt(&build::config_map_name(server))
            .await?
            .as_ref()
            .and_then(served::desired_digest)
    } else {
        None
    };
    if let Some(desired) = &desired_config_digest {
        // The referenced Secrets' versions (metadata only), for the pods' mounted-inputs annotation.
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let mut versions = Vec::new();
        for name in [
            server.spec.users.as_ref().map(|u| &u.secret_ref.name),
            server.spec.tls.as_ref().map(|t| &t.secret_ref.name),
        ] {
            versions.push(match name {
                Some(name) => secrets
                    .get_metadata_opt(name)
                    .await?
                    .and_then(|secret| secret.resource_version()),
                None => None,
            });
        }
        let [users, tls] = [versions[0].clone(), versions[1].clone()];
        let inputs = served::mounted_inputs(desired, &[("users", users), ("tls", tls)]);
        let served = served::check(&ctx.client, server, &inputs).await?;
        if let Some(hold) = served.hold(server, desired, &now) {
            served::hold_ready(&mut status, &previous, &hold, &now);
            held_ready = Some(hold.recheck_after());
        }
    }
    if previous != status {
        patch_status(server, &status, ctx).await?;
    }
    publish_events(server, ctx, &changes, &previous, &status, &outcome).await;
    if let Some(error) = failure {
        return Err(error.into());
    }
    if let Outcome::Stalled(invalid) = &outcome
        && [
            ownership::NAME_TAKEN,
            budgets::NODE_PORTS_EXHAUSTED,
            budgets::AZURE_RULES_EXHAUSTED,
        ]
        .contains(&invalid.reason)
    {
        // What blocks it is outside the watches (an object without our labels, the cluster's
        // other Services): look again soon.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    if let Some(waited) = balancer_waited.filter(|waited| *waited < timeout) {
        // Nothing else wakes the server when the address never comes: look at the deadline.
        return Ok(Action::requeue(timeout - waited + Duration::from_secs(1)));
    }
    if let Some(after) = held_ready {
        return Ok(Action::requeue(after));
    }
    if image_waiting {
        // Another server is rolling to the new default image; look again shortly.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    // Periodic resync; a quiet one writes nothing.
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// Writes a Stalled status (and its Warning Event) for what keeps the server from being
/// reconciled at all; the children are left as they are.
async fn report_stalled(server: &FtpServer, invalid: Invalid, ctx: &Context) -> Result<(), Error> {
    let outcome = Outcome::Stalled(invalid);
    let observed = observe_children(server, &ctx.stores);
    let now =
        Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default());
    let timeout = ctx.settings.load_balancer_address_timeout;
    let status = desired_status(server, &outcome, &observed, now, timeout);
    let previous = server.status.clone().unwrap_or_default();
    if previous != status {
        patch_status(server, &status, ctx).await?;
    }
    publish_events(server, ctx, &[], &previous, &status, &outcome).await;
    Ok(())
}

async fn patch_status(
    server: &FtpServer,
    status: &crate::api::FtpServerStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<FtpServer> =
        Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": FtpServer::api_version(&()),
        "kind": FtpServer::kind(&()),
        "status": status,
    });
    api.patch_status(
        &server.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.api_write("FtpServer/status");
    Ok(())
}

/// Whether the server holding the image-rollout slot is done: rolled out to the default image,
/// or gone.
fn image_rollout_done(ctx: &Context, holder: &ObjectRef<FtpServer>) -> bool {
    let set = holder.namespace.as_deref().and_then(|ns| {
        let (_, store) = ctx
            .stateful_sets
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|scope| scope == ns))?;
        store.get(&ObjectRef::new(&holder.name).within(ns))
    });
    set.is_none_or(|set| {
        let summary = health::WorkloadSummary::from(&*set);
        summary.rolled_out && summary.image.as_deref() == Some(&ctx.settings.default_image)
    })
}

/// Claims the children's names, then applies the ConfigMap, the Services, the StatefulSet, the
/// EndpointSlices and the PodDisruptionBudget, and removes those this server no longer wants.
/// A name held by an object this server does not control stalls before anything is applied.
async fn apply_children(
    server: &FtpServer,
    valid: &validate::Validated,
    observed: &observe::Observed,
    ctx: &Context,
    changes: &mut Vec<(ObjectReference, Applied)>,
    image_waiting: &mut bool,
    probe_image: &mut Option<String>,
) -> Result<Outcome, ApplyError> {
    let namespace = server.namespace().unwrap_or_default();
    let public_address = observed.public_address(server);
    let pods: Vec<&Pod> = observed.pods.iter().map(|p| &**p).collect();
    let slices = build::slices_in_use(server, &pods);
    let workload = observed.workload();
    let image = ctx.image_gate.choose(
        server,
        workload.as_ref(),
        &ctx.settings.default_image,
        |holder| image_rollout_done(ctx, holder),
    );
    *image_waiting = image.waiting;
    // The probe account goes only into the config of servers on this operator's own image: an
    // older ftp-server refuses the unknown `probe_user` key, and would keep its old settings (and
    // fail to start again) for as long as it runs that image.
    let account = if ctx.prober.enabled() && image.image != ctx.settings.default_image {
        *probe_image = Some(image.image.clone());
        AccountState::Off
    } else {
        ctx.prober
            .account(server, &ctx.client, &ctx.metrics)
            .await?
    };
    let probe_user = match account {
        AccountState::Off => None,
        AccountState::Taken(invalid) => return Ok(Outcome::Stalled(invalid)),
        AccountState::Ready(account, written) => {
            changes.extend(written.map(|written| *written));
            Some(account.probe_user())
        }
    };
    let config_map = build::desired_config_map(
        server,
        valid,
        public_address.as_deref(),
        probe_user.as_ref(),
    );
    let stateful_set = build::desired_stateful_set(server, valid, &image.image);
    let services = build::desired_services(
        server,
        valid,
        observed.load_balancer_address().as_deref(),
        slices,
    );
    let endpoint_slices = build::desired_endpoint_slices(server, valid, &pods, slices);
    let disruption_budget = build::desired_disruption_budget(server);

    let client = &ctx.client;
    let metrics = &ctx.metrics;
    let config_map_api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let service_api: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let set_api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let budget_api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let cached_service = |name: &str| {
        observed
            .services
            .iter()
            .find(|s| s.name_any() == name)
            .map(|s| &**s)
    };
    let cached_slice = |name: &str| {
        observed
            .endpoint_slices
            .iter()
            .find(|s| s.name_any() == name)
            .map(|s| &**s)
    };

    let mut taken = vec![
        ownership::check_name(
            server,
            &config_map_api,
            &config_map.name_any(),
            observed.config_map.as_deref(),
        )
        .await?,
        ownership::check_name(
            server,
            &set_api,
            &stateful_set.name_any(),
            observed.stateful_set.as_deref(),
        )
        .await?,
    ];
    for service in &services {
        let name = service.name_any();
        taken
            .push(ownership::check_name(server, &service_api, &name, cached_service(&name)).await?);
    }
    for slice in &endpoint_slices {
        let name = slice.name_any();
        taken.push(ownership::check_name(server, &slice_api, &name, cached_slice(&name)).await?);
    }
    if let Some(budget) = &disruption_budget {
        taken.push(
            ownership::check_name(
                server,
                &budget_api,
                &budget.name_any(),
                observed.disruption_budget.as_deref(),
            )
            .await?,
        );
    }
    if let Some(invalid) = taken.into_iter().flatten().next() {
        return Ok(Outcome::Stalled(invalid));
    }
    if let Some(budgets) = &ctx.settings.cluster_budgets {
        let live: Vec<&Service> = observed.services.iter().map(|s| &**s).collect();
        if let Some(invalid) =
            budgets::check(client, budgets, &server.spec, &services, &live).await?
        {
            return Ok(Outcome::Stalled(invalid));
        }
    }

    let applied_config_map = apply(
        &config_map_api,
        &config_map,
        observed.config_map.as_deref(),
        metrics,
    )
    .await?;
    changes.push((config_map.object_ref(&()), applied_config_map));
    // The Services and the StatefulSet do not wait for each other: creating a LoadBalancer
    // Service is slow (node ports, cluster IP; a cloud balancer behind it), and the rollout
    // should not queue behind it. With 200 FtpServers applied at once, in sequence the
    // workloads started ~8 s later (bench-controller.sh).
    let apply_services = async {
        let mut applied = Vec::new();
        for service in &services {
            let result = apply(
                &service_api,
                service,
                cached_service(&service.name_any()),
                metrics,
            )
            .await?;
            applied.push((service.object_ref(&()), result));
        }
        Ok::<_, ApplyError>(applied)
    };
    let apply_set = async {
        match observed.stateful_set.as_deref() {
            Some(live) if !build::updatable_in_place(live, &stateful_set) => {
                // Its pods stay (and keep serving); the next pass creates the new StatefulSet,
                // which adopts and then replaces them one at a time.
                orphan(&set_api, &live.name_any(), metrics).await?;
                Ok(Applied::Updated)
            }
            live => apply(&set_api, &stateful_set, live, metrics).await,
        }
    };
    let (applied_services, applied_set) = futures::try_join!(apply_services, apply_set)?;
    changes.extend(applied_services);
    changes.push((stateful_set.object_ref(&()), applied_set));

    for slice in &endpoint_slices {
        let result = apply(&slice_api, slice, cached_slice(&slice.name_any()), metrics).await?;
        changes.push((slice.object_ref(&()), result));
    }
    if let Some(budget) = &disruption_budget {
        let result = apply(
            &budget_api,
            budget,
            observed.disruption_budget.as_deref(),
            metrics,
        )
        .await?;
        changes.push((budget.object_ref(&()), result));
    }

    // What this server no longer wants, and only what it controls: Services and slices of
    // replicas scaled away (or of another routing), a budget once down to one replica, and the
    // Deployment of earlier versions once the StatefulSet serves in its place.
    let controlled = |meta: &ObjectMeta| {
        meta.owner_references.iter().flatten().any(|owner| {
            owner.controller == Some(true) && Some(&owner.uid) == server.metadata.uid.as_ref()
        })
    };
    for unwanted in observed.services.iter().filter(|s| {
        controlled(&s.metadata) && !services.iter().any(|d| d.name_any() == s.name_any())
    }) {
        delete(&service_api, &unwanted.name_any(), metrics).await?;
    }
    for unwanted in observed.endpoint_slices.iter().filter(|s| {
        controlled(&s.metadata) && !endpoint_slices.iter().any(|d| d.name_any() == s.name_any())
    }) {
        delete(&slice_api, &unwanted.name_any(), metrics).await?;
    }
    if disruption_budget.is_none()
        && let Some(unwanted) = observed
            .disruption_budget
            .as_ref()
            .filter(|b| controlled(&b.metadata))
    {
        delete(&budget_api, &unwanted.name_any(), metrics).await?;
    }
    if let Some(legacy) = observed
        .legacy_deployment
        .as_ref()
        .filter(|d| controlled(&d.metadata))
    {
        let serving = workload
            .as_ref()
            .is_some_and(|w| w.ready >= server.spec.replicas.min(1));
        if serving {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            delete(&api, &legacy.name_any(), metrics).await?;
        }
    }
    Ok(Outcome::Applied {
        public_address,
        passive_ports: valid.passive.to_string(),
        workload_changed: applied_set != Applied::Unchanged,
        keepalive: valid.keepalive_in_force,
        node_keepalive: node_tuner::node_keepalive(server, ctx),
    })
}

/// Events for what changed and what failed; an unchanged reconcile emits none.
async fn publish_events(
    server: &FtpServer,
    ctx: &Context,
    changes: &[(ObjectReference, Applied)],
    previous: &crate::api::FtpServerStatus,
    status: &crate::api::FtpServerStatus,
    outcome: &Outcome,
) {
    let mut events = Vec::new();
    for (child, applied) in changes {
        let verb = match applied {
            Applied::Unchanged => continue,
            Applied::Created => "Created",
            Applied::Updated => "Updated",
        };
        let kind = child.kind.as_deref().unwrap_or_default();
        let name = child.name.as_deref().unwrap_or_default();
        events.push(Event {
            type_: EventType::Normal,
            reason: verb.to_owned(),
            note: Some(format!("{verb} {kind} {name}")),
            action: "Apply".to_owned(),
            // The child is part of the Recorder's series key: without it, "Created Service"
            // and "Created Deployment" would become repeats (PATCHes) of "Created ConfigMap"
            // and their notes would be lost.
            secondary: Some(child.clone()),
        });
    }
    // A warning whenever what stalls the server, or the failure it retries, says something new.
    let warned = |s: &crate::api::FtpServerStatus| {
        let find = |type_: &str, state: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == state)
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
        match outcome {
            Outcome::Failed(_) => find(status::READY, "False"),
            _ => find(STALLED, "True"),
        }
    };
    if let Some((reason, message)) =
        warned(status).filter(|now| warned(previous).as_ref() != Some(now))
    {
        let action = match outcome {
            Outcome::Stalled(_) => "Validate",
            Outcome::Failed(_) => "Apply",
            Outcome::Applied { .. } => "Observe",
        };
        events.push(Event {
            type_: EventType::Warning,
            reason,
            note: Some(message.chars().take(1000).collect()),
            action: action.to_owned(),
            secondary: None,
        });
    }
    let ready = |s: &crate::api::FtpServerStatus| {
        s.conditions
            .iter()
            .any(|c| c.type_ == status::READY && c.status == "True")
    };
    if ready(status) && !ready(previous) {
        events.push(Event {
            type_: EventType::Normal,
            reason: "Ready".to_owned(),
            note: Some(format!(
                "serving at {}",
                status.public_address.as_deref().unwrap_or_default()
            )),
            action: "Reconcile".to_owned(),
            secondary: None,
        });
    }
    let reference = server.object_ref(&());
    for event in events {
        // A Recorder folds an Event into an earlier one with the same reason, keeping the
        // earlier note; a warning is published only when its message changed, so it gets a
        // Recorder with nothing to fold into and the Event says what is wrong now.
        let fresh;
        let recorder = if event.type_ == EventType::Warning {
            fresh = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
            &fresh
        } else {
            &ctx.recorder
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            warn!(%error, reason = %event.reason, "cannot publish event");
        } else {
            ctx.metrics.api_write("Event");
        }
    }
    if !changes.iter().all(|(_, a)| *a == Applied::Unchanged) {
        info!(name = %server.name_any(), namespace = ?server.namespace(), "applied changes");
    }
}

/// Exponential backoff per object: 1 s, 2 s, 4 s … capped at 5 minutes.
fn error_policy(
    guard: Arc<DeserializeGuard<FtpServer>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconcile_errors.inc();
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(ObjectRef::from_obj(&*guard)).or_insert(0);
    let delay = backoff_delay(*count);
    *count = count.saturating_add(1);
    warn!(%error, name = %guard.name_any(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

pub fn backoff_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(9)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (0..12).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(
            delays,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
    }

    #[test]
    fn secrets_are_mapped_to_the_servers_that_name_them() {
        let server = build::fixtures::server(build::fixtures::FULL);
        assert!(references_secret(&server, "ftp-users"));
        assert!(references_secret(&server, "ftp-tls"));
        assert!(!references_secret(&server, "other"));
    }
}
