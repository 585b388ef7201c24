//! The FtpServer reconcile's side of node keepalive: servers that need node sysctls carry a
//! finalizer, so their nodes are restored before they disappear; their status sums up the
//! agents' Node reports; without node tuning installed, asking for node sysctls is Stalled.
//! The tuner DaemonSet itself is its own controller's ([`crate::node_tuner`]).

use std::time::Duration;

use kube::{Resource, ResourceExt};

use crate::api::{FtpServer, NodeKeepaliveStatus};
use crate::keepalive::needs_node_sysctls;
use crate::node_tuner::report::{still_tuned_for, summarise};

use super::context::{Context, Error};
use crate::process::errors::Invalid;

/// The Stalled reason of node sysctls asked for on an install without node tuning.
pub const NODE_TUNING_DISABLED: &str = "NodeTuningDisabled";

/// How long a deleted FtpServer waits for the agents to drop it. After that the finalizer goes
/// anyway; the originals stay on record on each Node, so a later agent still restores them.
pub const RESTORE_GRACE: Duration = Duration::from_secs(120);

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
    use crate::node_tuner::demand::fixtures::{deleting, server};

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
