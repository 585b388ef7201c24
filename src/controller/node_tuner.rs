//! The controller's side of node keepalive: the tuner DaemonSet exists exactly while some
//! FtpServer needs node sysctls; servers that need them carry a finalizer, so their nodes are
//! restored before they disappear; their status sums up the agents' Node reports.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::info;

use crate::api::{FtpServer, NodeKeepaliveStatus};
use crate::keepalive::needs_node_sysctls;
use crate::node::report::{still_tuned_for, summarise};

use super::apply::{Applied, apply};
use super::build::{NODE_TUNER_NAME, desired_node_tuner_daemon_set};
use super::{Context, Error};

/// Held by FtpServers that need node sysctls until no node is tuned for them any more.
pub const NODE_KEEPALIVE_FINALIZER: &str = "ftpoperator.dev/node-keepalive";

/// How long a deleted FtpServer waits for the agents to drop it. After that the finalizer goes
/// anyway; the originals stay on record on each Node, so a later agent still restores them.
pub const RESTORE_GRACE: Duration = Duration::from_secs(120);

pub fn has_finalizer(server: &FtpServer) -> bool {
    server
        .finalizers()
        .iter()
        .any(|f| f == NODE_KEEPALIVE_FINALIZER)
}

/// Whether this server keeps the tuner DaemonSet alive: it needs node sysctls, or it is being
/// deleted and its finalizer still waits for the nodes to be restored.
pub fn keeps_tuner(server: &FtpServer) -> bool {
    if server.meta().deletion_timestamp.is_some() {
        has_finalizer(server)
    } else {
        needs_node_sysctls(&server.spec)
    }
}

/// Whether any server but `leaving` keeps the tuner DaemonSet alive.
pub fn tuner_needed<'a>(
    servers: impl IntoIterator<Item = &'a FtpServer>,
    leaving: Option<&FtpServer>,
) -> bool {
    let leaving = leaving.map(|s| (s.namespace(), s.name_any()));
    servers
        .into_iter()
        .filter(|s| Some((s.namespace(), s.name_any())) != leaving)
        .any(keeps_tuner)
}

/// Applies or deletes the DaemonSet as the servers in the cache (without `leaving`) require;
/// returns what was applied, for the Events.
pub(super) async fn reconcile_daemon_set(
    ctx: &Context,
    leaving: Option<&FtpServer>,
) -> Result<Option<(ObjectReference, Applied)>, Error> {
    // Read through the cache's shared objects: every reconcile runs this, and copying all
    // FtpServers each time (hundreds of reconciles at once) multiplied the controller's memory.
    let needed = {
        let servers = ctx.servers.state();
        tuner_needed(
            servers.iter().filter_map(|guard| guard.0.as_ref().ok()),
            leaving,
        )
    };
    let namespace = &ctx.settings.operator_namespace;
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), namespace);
    let cached = ctx
        .stores
        .daemon_sets
        .get(&ObjectRef::new(NODE_TUNER_NAME).within(namespace));
    if needed {
        let desired = desired_node_tuner_daemon_set(namespace, &ctx.settings.node_tuner_image);
        let applied = apply(&api, &desired, cached.as_deref(), &ctx.metrics).await?;
        if applied != Applied::Unchanged {
            info!(%namespace, "applied the node tuner DaemonSet");
        }
        Ok(Some((desired.object_ref(&()), applied)))
    } else if cached.is_some() {
        match api
            .delete(NODE_TUNER_NAME, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                ctx.metrics.api_write("DaemonSet");
                info!(%namespace, "deleted the node tuner DaemonSet: no FtpServer needs it");
            }
            Err(kube::Error::Api(err)) if err.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
        Ok(None)
    } else {
        Ok(None)
    }
}

/// The nodes' progress for one server, from the cached Nodes.
pub(super) fn node_keepalive(server: &FtpServer, ctx: &Context) -> Option<NodeKeepaliveStatus> {
    needs_node_sysctls(&server.spec).then(|| {
        let nodes = ctx.stores.nodes.state();
        summarise(server, nodes.iter().map(|n| n.as_ref()))
    })
}

/// What still holds a deleted server back: nodes whose agents report tuning for it, unless the
/// grace period is over.
pub fn waiting_on_nodes(
    server: &FtpServer,
    tuned_nodes: Vec<String>,
    now: jiff::Timestamp,
) -> Option<Vec<String>> {
    let deleted_at = server.meta().deletion_timestamp.as_ref()?.0;
    let waited = now.duration_since(deleted_at);
    let grace = jiff::SignedDuration::try_from(RESTORE_GRACE).unwrap_or_default();
    (!tuned_nodes.is_empty() && waited < grace).then_some(tuned_nodes)
}

/// The finalizer's cleanup: wait for the agents to restore (or re-tune for the remaining
/// servers) every node tuned for this one, then drop the DaemonSet if it was the last.
pub(super) async fn cleanup(server: &FtpServer, ctx: &Context) -> Result<(), Error> {
    let nodes = ctx.stores.nodes.state();
    let tuned = still_tuned_for(server, nodes.iter().map(|n| n.as_ref()));
    if let Some(waiting) = waiting_on_nodes(server, tuned.clone(), jiff::Timestamp::now()) {
        return Err(Error::NodesStillTuned(waiting.join(", ")));
    }
    if !tuned.is_empty() {
        tracing::warn!(
            name = %server.name_any(),
            nodes = %tuned.join(", "),
            "node tuners did not report restoring within the grace period; releasing the FtpServer"
        );
    }
    reconcile_daemon_set(ctx, Some(server)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn server(name: &str, spec: &str) -> FtpServer {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: ftp}}\nspec: {{passivePorts: {{min: 20000, max: 20001}}{spec}}}"
        ))
        .unwrap()
    }

    fn deleting(mut server: FtpServer, finalizer: bool) -> FtpServer {
        server.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        if finalizer {
            server.metadata.finalizers = Some(vec![NODE_KEEPALIVE_FINALIZER.to_owned()]);
        }
        server
    }

    #[test]
    fn the_daemon_set_lives_while_a_server_needs_node_sysctls() {
        let plain = server("plain", "");
        let tuned = server("tuned", ", keepalive: {nodeSysctls: true}");
        let host = server("host", ", hostNetwork: true");
        assert!(!tuner_needed([&plain], None));
        assert!(tuner_needed([&plain, &tuned], None));
        assert!(tuner_needed([&host], None));
        // The last one leaving takes the DaemonSet with it.
        assert!(!tuner_needed([&plain, &tuned], Some(&tuned)));
        assert!(tuner_needed([&tuned, &host], Some(&tuned)));
        // A deleted server keeps it only while its finalizer waits for the nodes.
        assert!(tuner_needed([&deleting(tuned.clone(), true)], None));
        assert!(!tuner_needed([&deleting(tuned, false)], None));
    }

    #[test]
    fn a_deleted_server_waits_for_tuned_nodes_until_the_grace_period_ends() {
        let gone = deleting(server("tuned", ", hostNetwork: true"), true);
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(
            waiting_on_nodes(&gone, vec!["a".into()], at("2026-01-01T00:00:30Z")),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(
            waiting_on_nodes(&gone, vec![], at("2026-01-01T00:00:30Z")),
            None
        );
        assert_eq!(
            waiting_on_nodes(&gone, vec!["a".into()], at("2026-01-01T00:02:01Z")),
            None
        );
    }
}
