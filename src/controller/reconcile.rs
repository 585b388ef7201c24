//! One FtpServer's reconcile: the cache gate, the node-keepalive finalizer, and the thin async
//! shell that observes, validates, applies the [`plan`](super::plan) and writes status and
//! Events. What it decides (children, deletions, Events, when to look again) is decided in pure
//! code: [`super::plan`] and [`super::events`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::api::{FtpServer, FtpUser};
use crate::keepalive::needs_node_sysctls;
use crate::node_tuner::demand::{NODE_KEEPALIVE_FINALIZER, has_finalizer};
use crate::process::MANAGER;
use crate::process::backoff::backoff_delay;
use crate::process::errors::{ApplyError, Invalid};

use super::children::{Progress, Users, apply_children};
use super::context::{Context, Error};
use super::events;
use super::observe::{Observed, observe, observe_children};
use super::plan::{Waits, next};
use super::probe::results::ProbeObservation;
use super::status::{self, Outcome, desired_status};
use super::users::observe::observe_users;
use super::users::{self, Gathered};
use super::validate::Validated;
use super::{build, node_keepalive, served, validate};

pub async fn reconcile(
    guard: Arc<DeserializeGuard<FtpServer>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    // A refused watch leaves its cache empty or stale: say so rather than wait for it.
    if let Ok(server) = &guard.0
        && let Some(refused) = ctx
            .refusals
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
        // Without every FtpUser, a server's users file would lose some for a moment.
        ctx.stores.ftp_users.wait_until_ready().now_or_never(),
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
                    FinalizerEvent::Cleanup(server) => node_keepalive::cleanup(&server, ctx)
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
    let (mut observed, read) = match observe(server, &ctx.stores, &ctx.client).await {
        Ok(observed) => (observed, Ok(())),
        Err(error) => (observe_children(server, &ctx.stores), Err(error)),
    };
    let (result, progress, gathered) = match read {
        Err(error) => (Err(error), Progress::default(), None),
        Ok(()) => match node_keepalive::opt_in(server, ctx.settings.node_tuning)
            .map_or_else(|| validate::validate(server, &observed), Err)
        {
            Err(invalid) => (Ok(Outcome::Stalled(invalid)), Progress::default(), None),
            Ok(valid) => apply_with_users(server, &valid, &observed, ctx).await,
        },
    };
    observed.probe = match &progress.probe_image {
        Some(image) => ProbeObservation::NeedsDefaultImage(image.clone()),
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
        // What the mounted users file holds (the generated Secret's content) and the TLS
        // Secret's version (metadata only), for the pods' mounted-inputs annotation.
        let users = gathered
            .as_ref()
            .map(|users| build::users_digest(&build::desired_users_secret(server, users)));
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let tls = match server.spec.tls.as_ref().map(|t| &t.secret_ref.name) {
            Some(name) => secrets
                .get_metadata_opt(name)
                .await?
                .and_then(|secret| secret.resource_version()),
            None => None,
        };
        let inputs = served::mounted_inputs(desired, &[("users", users), ("tls", tls)]);
        let served = served::check(
            &ctx.client,
            server,
            &observed.pods,
            &inputs,
            &ctx.metrics.api_writes,
        )
        .await?;
        if let Some(hold) = served.hold(server, desired, &now) {
            served::hold_ready(&mut status, &previous, &hold, &now);
            held_ready = Some(hold.recheck_after());
        }
    }
    if previous != status {
        patch_status(server, &status, ctx).await?;
    }
    if let Some(users) = &gathered {
        write_user_statuses(users, ctx).await;
    }
    let events = events::events(&progress.changes, &previous, &status, &outcome);
    events::publish(server, ctx, events, &progress.changes).await;
    if let Some(error) = failure {
        return Err(error.into());
    }
    let waits = Waits {
        balancer_waited,
        balancer_timeout: timeout,
        held_ready,
        image_waiting: progress.image_waiting,
    };
    Ok(Action::requeue(next(&outcome, &waits)))
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
    events::publish(
        server,
        ctx,
        events::events(&[], &previous, &status, &outcome),
        &[],
    )
    .await;
    Ok(())
}

/// Gathers the server's users (reading their Secrets, hashing clear passwords) and applies the
/// children with that users file; the file is returned for the users' statuses.
async fn apply_with_users(
    server: &FtpServer,
    valid: &Validated,
    observed: &Observed,
    ctx: &Context,
) -> (Result<Outcome, ApplyError>, Progress, Option<Gathered>) {
    let stores = &ctx.stores;
    let users =
        match observe_users(server, &stores.ftp_users, &ctx.client, &ctx.password_hashes).await {
            Ok(users) => users,
            Err(error) => return (Err(error), Progress::default(), None),
        };
    let mut gathered = match users::gather(server, &users.bound, users.users_secret.as_deref()) {
        Ok(gathered) => gathered,
        Err(invalid) => return (Ok(Outcome::Stalled(invalid)), Progress::default(), None),
    };
    // Keys in the users Secret beside its lines; an FtpUser's own keys take its login's place.
    for (key, text) in &users.users_secret_keys {
        gathered
            .authorized_keys
            .entry(key.clone())
            .or_insert_with(|| text.clone());
    }
    let with = Users {
        gathered: &gathered,
        live: users.generated.as_ref(),
    };
    let (result, progress) = apply_children(server, valid, observed, &with, ctx).await;
    (result, progress, Some(gathered))
}

/// Each FtpUser's verdict, written where it changed. A user that cannot be written to is logged:
/// its server, and the other users, are not held up by it.
async fn write_user_statuses(users: &Gathered, ctx: &Context) {
    let now = users::status::now();
    for (user, verdict) in &users.verdicts {
        let status = users::status::desired_status(user, verdict, &now);
        let api: Api<FtpUser> =
            Api::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default());
        if let Err(error) =
            users::status::write_if_changed(&api, user, &status, &ctx.metrics.api_writes).await
        {
            warn!(%error, user = %user.name_any(), "cannot write the FtpUser's status");
        }
    }
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
/// Exponential backoff per object: 1 s, 2 s, 4 s … capped at 5 minutes.
pub fn error_policy(
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
