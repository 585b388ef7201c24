//! The FtpServer reconcile's side of node keepalive: servers that need node sysctls carry a
//! finalizer, so their nodes are restored before they disappear; their status sums up the
//! agents' Node reports; without node tuning installed, asking for node sysctls is Stalled.
//! The tuner DaemonSet itself is the node tuning controller's ([`crate::node_tuning`]).

use std::time::Duration;

use kube::{Resource, ResourceExt};

use crate::api::{FtpServer, NodeKeepaliveStatus};
use crate::keepalive::needs_node_sysctls;
use crate::node::report::{still_tuned_for, summarise};

use super::validate::Invalid;
use super::{Context, Error};

/// The Stalled reason of node sysctls asked for on an install without node tuning.
pub const NODE_TUNING_DISABLED: &str = "NodeTuningDisabled";

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

/// Node sysctls asked for on an install without node tuning: Stalled, saying how to turn it
/// on. (A hostNetwork server without `keepalive.nodeSysctls` runs with the nodes' own values.)
pub fn opt_in(server: &FtpServer, node_tuning: bool) -> Option<Invalid> {
    let asked = server.spec.keepalive.is_some_and(|k| k.node_sysctls);
    (asked && !node_tuning).then(|| Invalid {
        reason: NODE_TUNING_DISABLED,
        message: "keepalive.nodeSysctls needs node tuning, which this install of the operator \
                  has off: upgrade it with `helm upgrade ... --set nodeTuning.enabled=true` \
                  (the operator's --node-tuning flag), or remove keepalive.nodeSysctls"
            .to_owned(),
    })
}

/// The nodes' progress for one server, from the cached Nodes.
pub(super) fn node_keepalive(server: &FtpServer, ctx: &Context) -> Option<NodeKeepaliveStatus> {
    (ctx.settings.node_tuning && needs_node_sysctls(&server.spec)).then(|| {
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
/// servers) every node tuned for this one. (The node tuning controller drops the DaemonSet once
/// no server keeps it.)
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
    fn node_sysctls_without_node_tuning_stall_saying_how_to_turn_it_on() {
        let tuned = server("tuned", ", keepalive: {nodeSysctls: true}");
        let invalid = opt_in(&tuned, false).unwrap();
        assert_eq!(invalid.reason, "NodeTuningDisabled");
        assert!(
            invalid.message.contains("--set nodeTuning.enabled=true"),
            "{}",
            invalid.message
        );
        assert!(opt_in(&tuned, true).is_none());
        assert!(opt_in(&server("host", ", hostNetwork: true"), false).is_none());
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
