//! The agent loop: on every change to what this node needs and every `resync`, tune or restore
//! the node and report on it.
//!
//! What it watches is kept small, since every node runs one: its own Node only (a field
//! selector on the name; a pass reads it from that watch's cache, never with a GET), woken only
//! by label and annotation changes (not kubelet status updates); and the FtpServers' specs and
//! deletions only (status and managed fields are dropped from the cache, and a status update,
//! which leaves the generation alone, wakes nothing).
//!
//! Each pass is split in two synchronous halves around the one API write that must come first:
//! [`decide`] reads the kernel and plans; when the plan takes a new record of the originals, the
//! agent writes it to the Node before [`carry_out`] touches the kernel, so an agent killed
//! between the two can still restore the node later.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource};
use tracing::{info, warn};

use crate::api::FtpServer;

use super::plan::{Plan, plan};
use super::report::{NodeReport, annotations_patch, original_of, report_of, restore_requested};
use super::selection::{Wanted, wanted_on_node};
use super::sysctl::{KeepaliveSysctls, SysctlRoot};

/// Field manager of the agent's Node patches.
pub const AGENT_MANAGER: &str = "ftp-operator-node-tuner";

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub node_name: String,
    pub sysctl_root: SysctlRoot,
    /// How often to check for reboots and hand changes without a watch event.
    pub resync: Duration,
    /// The install this agent belongs to (its DaemonSet owner's uid): an uninstall asks the
    /// agents to restore by writing it on each Node.
    pub install_uid: Option<String>,
}

/// One pass's reading of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub wanted: Option<Wanted>,
    /// The originals on record before this pass.
    pub recorded: Option<KeepaliveSysctls>,
    /// What to do, or why the kernel could not be read.
    pub plan: Result<Plan, String>,
}

impl Decision {
    /// A record of the originals that must reach the Node before the kernel changes.
    pub fn new_record(&self) -> Option<KeepaliveSysctls> {
        match &self.plan {
            Ok(plan) if plan.original != self.recorded => plan.original,
            _ => None,
        }
    }
}

/// `install_uid`: an uninstall of this install asked for the node's originals back, whatever the
/// servers want.
pub fn decide<'a>(
    root: &SysctlRoot,
    node: &Node,
    servers: impl IntoIterator<Item = &'a FtpServer>,
    install_uid: Option<&str>,
) -> Decision {
    let restoring = install_uid.is_some_and(|uid| restore_requested(node, uid));
    let wanted = if restoring {
        None
    } else {
        wanted_on_node(servers, node)
    };
    let recorded = original_of(node);
    let plan = root
        .read()
        .map(|current| plan(current, recorded, wanted.as_ref().map(|w| w.values)))
        .map_err(|err| err.to_string());
    Decision {
        wanted,
        recorded,
        plan,
    }
}

/// The annotations the Node should carry after a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub original: Option<KeepaliveSysctls>,
    pub report: Option<NodeReport>,
}

/// Writes the kernel as planned and says what to report. An untouched, never-tuned node carries
/// no annotations at all.
pub fn carry_out(root: &SysctlRoot, decision: &Decision) -> Outcome {
    let servers = decision
        .wanted
        .as_ref()
        .map(|w| w.servers.clone())
        .unwrap_or_default();
    let written = decision.plan.clone().and_then(|plan| {
        if let Some(values) = plan.write {
            root.write(values).map_err(|err| err.to_string())?;
        }
        Ok(plan)
    });
    match (written, &decision.wanted) {
        (Ok(plan), Some(wanted)) => Outcome {
            original: plan.original,
            report: Some(NodeReport {
                values: Some(wanted.values),
                servers,
                error: None,
            }),
        },
        (Ok(_), None) => Outcome {
            original: None,
            report: None,
        },
        (Err(error), _) => Outcome {
            // Keep the record: a later pass still has to restore.
            original: decision.recorded,
            report: Some(NodeReport {
                values: None,
                servers,
                error: Some(error),
            }),
        },
    }
}

/// What of an FtpServer the agent acts on: changes to anything else wake no pass.
fn server_fingerprint(guard: &DeserializeGuard<FtpServer>) -> (Option<i64>, bool) {
    (
        guard.meta().generation,
        guard.meta().deletion_timestamp.is_some(),
    )
}

/// Runs until `shutdown` resolves. The node keeps its tuned values when the agent stops: the
/// originals stay on record for whichever agent runs next.
pub async fn run(
    client: Client,
    settings: AgentSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let changed = Arc::new(tokio::sync::Notify::new());

    let (servers, writer) = reflector::store::<DeserializeGuard<FtpServer>>();
    let notify = changed.clone();
    let mut seen = std::collections::HashMap::new();
    let server_watch = watcher(
        Api::<DeserializeGuard<FtpServer>>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|guard: &mut DeserializeGuard<FtpServer>| {
        if let Ok(server) = &mut guard.0 {
            server.status = None;
            server.metadata.managed_fields = None;
        }
    })
    .reflect(writer)
    .for_each(move |event| {
        let wake = match event {
            Err(error) => {
                warn!(%error, "FtpServer watch");
                false
            }
            Ok(watcher::Event::Apply(guard) | watcher::Event::InitApply(guard)) => {
                let fingerprint = server_fingerprint(&guard);
                seen.insert(ObjectRef::from_obj(&guard), fingerprint) != Some(fingerprint)
            }
            Ok(watcher::Event::Delete(guard)) => {
                seen.remove(&ObjectRef::from_obj(&guard));
                true
            }
            Ok(watcher::Event::Init) => false,
            Ok(watcher::Event::InitDone) => true,
        };
        if wake {
            notify.notify_one();
        }
        futures::future::ready(())
    });

    let (node_cache, writer) = reflector::store::<Node>();
    let notify = changed.clone();
    let node_watch = watcher(
        nodes.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", settings.node_name)),
    )
    .default_backoff()
    .modify(|node: &mut Node| node.metadata.managed_fields = None)
    .reflect(writer)
    .touched_objects()
    .predicate_filter(
        predicates::labels.combine(predicates::annotations),
        PredicateConfig::default(),
    )
    .for_each(move |event| {
        match event {
            Err(error) => warn!(%error, "Node watch"),
            Ok(_) => notify.notify_one(),
        }
        futures::future::ready(())
    });
    let watches = tokio::spawn(async move {
        futures::join!(server_watch, node_watch);
    });
    // An empty cache would look like "nobody needs tuning" and restore a tuned node.
    servers.wait_until_ready().await?;
    node_cache.wait_until_ready().await?;
    info!(node = %settings.node_name, root = %settings.sysctl_root.root().display(), "node tuner started");

    let this_node = ObjectRef::<Node>::new(&settings.node_name);
    tokio::pin!(shutdown);
    loop {
        match node_cache.get(&this_node) {
            Some(node) => {
                let state = servers.state();
                let ready: Vec<&FtpServer> = state
                    .iter()
                    .filter_map(|guard| guard.0.as_ref().ok())
                    .collect();
                if let Err(error) = pass(&nodes, &settings, &node, ready).await {
                    warn!(%error, "node tuner pass failed; retrying");
                }
            }
            None => warn!(node = %settings.node_name, "this agent's Node is not in the cluster"),
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(settings.resync) => {}
            _ = &mut shutdown => break,
        }
    }
    watches.abort();
    Ok(())
}

async fn pass(
    nodes: &Api<Node>,
    settings: &AgentSettings,
    node: &Node,
    servers: Vec<&FtpServer>,
) -> Result<(), kube::Error> {
    let decision = decide(
        &settings.sysctl_root,
        node,
        servers,
        settings.install_uid.as_deref(),
    );
    let params = PatchParams::apply(AGENT_MANAGER);
    if let Some(original) = decision.new_record() {
        let patch = annotations_patch(Some(original), report_of(node).as_ref());
        nodes
            .patch(&settings.node_name, &params, &Patch::Merge(&patch))
            .await?;
        info!(%original, "recorded the node's original keepalive values");
    }
    let outcome = carry_out(&settings.sysctl_root, &decision);
    match &decision.plan {
        Ok(Plan {
            write: Some(values),
            ..
        }) if outcome.report.as_ref().is_none_or(|r| r.error.is_none()) => {
            info!(%values, servers = ?decision.wanted.as_ref().map(|w| &w.servers), "wrote keepalive sysctls");
        }
        _ => {}
    }
    if let Some(NodeReport {
        error: Some(error), ..
    }) = &outcome.report
    {
        warn!(%error, "cannot tune the node");
    }
    let recorded_after = decision.new_record().or(decision.recorded);
    if recorded_after != outcome.original || report_of(node) != outcome.report {
        let patch = annotations_patch(outcome.original, outcome.report.as_ref());
        nodes
            .patch(&settings.node_name, &params, &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_tuner::report::{APPLIED_ANNOTATION, ORIGINAL_ANNOTATION, RESTORE_ANNOTATION};
    use crate::node_tuner::sysctl::tests::fake_root;
    use kube::ResourceExt;

    fn server(name: &str, idle: u32) -> FtpServer {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: ftp}}\nspec: {{passivePorts: {{min: 20000, max: 20001}}, keepalive: {{idleSeconds: {idle}, intervalSeconds: 5, probes: 4, nodeSysctls: true}}}}"
        ))
        .unwrap()
    }

    /// Applies a pass's annotations to the node, as the API server would.
    fn annotate(node: &mut Node, decision: &Decision, outcome: &Outcome) {
        let annotations = node.annotations_mut();
        if let Some(original) = decision.new_record() {
            annotations.insert(
                ORIGINAL_ANNOTATION.into(),
                serde_json::to_string(&original).unwrap(),
            );
        }
        let patch = annotations_patch(outcome.original, outcome.report.as_ref());
        for (key, value) in patch["metadata"]["annotations"].as_object().unwrap() {
            match value.as_str() {
                Some(value) => annotations.insert(key.clone(), value.to_owned()),
                None => annotations.remove(key),
            };
        }
    }

    #[test]
    fn tune_survive_a_reboot_then_restore_when_the_last_server_goes() {
        let host = KeepaliveSysctls {
            time: 600,
            intvl: 60,
            probes: 5,
        };
        let (_dir, root) = fake_root(host);
        let mut node: Node = serde_yaml::from_str("metadata: {name: node-a}").unwrap();
        let servers = [server("a", 30), server("b", 45)];

        let decision = decide(&root, &node, &servers, None);
        assert_eq!(decision.new_record(), Some(host));
        let outcome = carry_out(&root, &decision);
        annotate(&mut node, &decision, &outcome);
        let tuned = KeepaliveSysctls {
            time: 30,
            intvl: 5,
            probes: 4,
        };
        assert_eq!(root.read().unwrap(), tuned);
        assert_eq!(original_of(&node), Some(host));
        assert_eq!(report_of(&node).unwrap().servers, vec!["ftp/a", "ftp/b"]);

        // A reboot: the kernel is back at its defaults; the record still holds the node's own.
        root.write(KeepaliveSysctls::KERNEL_DEFAULTS).unwrap();
        let decision = decide(&root, &node, &servers[1..], None);
        assert_eq!(decision.new_record(), None);
        let outcome = carry_out(&root, &decision);
        annotate(&mut node, &decision, &outcome);
        assert_eq!(root.read().unwrap(), KeepaliveSysctls { time: 45, ..tuned });
        assert_eq!(original_of(&node), Some(host));

        let decision = decide(&root, &node, [], None);
        let outcome = carry_out(&root, &decision);
        annotate(&mut node, &decision, &outcome);
        assert_eq!(root.read().unwrap(), host);
        assert!(!node.annotations().contains_key(ORIGINAL_ANNOTATION));
        assert!(!node.annotations().contains_key(APPLIED_ANNOTATION));
    }

    #[test]
    fn a_kernel_that_refuses_is_reported_with_the_servers_and_keeps_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysctlRoot::new(dir.path());
        let node: Node = serde_yaml::from_str("metadata: {name: node-a}").unwrap();
        let decision = decide(&root, &node, &[server("a", 30)], None);
        assert_eq!(decision.new_record(), None);
        let outcome = carry_out(&root, &decision);
        let report = outcome.report.unwrap();
        assert_eq!(report.servers, vec!["ftp/a"]);
        assert!(report.error.unwrap().contains("cannot read"));
        assert_eq!(outcome.original, None);
    }

    #[test]
    fn an_uninstall_of_this_install_restores_the_node_and_one_of_another_does_not() {
        let host = KeepaliveSysctls {
            time: 600,
            intvl: 60,
            probes: 5,
        };
        let (_dir, root) = fake_root(host);
        let mut node: Node = serde_yaml::from_str("metadata: {name: node-a}").unwrap();
        let servers = [server("a", 30)];
        let decision = decide(&root, &node, &servers, Some("install-1"));
        let outcome = carry_out(&root, &decision);
        annotate(&mut node, &decision, &outcome);
        assert_eq!(root.read().unwrap().time, 30);

        // A request left by an earlier install's uninstall changes nothing.
        node.annotations_mut()
            .insert(RESTORE_ANNOTATION.into(), "install-0".into());
        let decision = decide(&root, &node, &servers, Some("install-1"));
        assert_eq!(decision.plan.as_ref().unwrap().write, None);

        node.annotations_mut()
            .insert(RESTORE_ANNOTATION.into(), "install-1".into());
        let decision = decide(&root, &node, &servers, Some("install-1"));
        let outcome = carry_out(&root, &decision);
        annotate(&mut node, &decision, &outcome);
        assert_eq!(root.read().unwrap(), host);
        assert!(!node.annotations().contains_key(ORIGINAL_ANNOTATION));
        assert!(!node.annotations().contains_key(APPLIED_ANNOTATION));
    }
}
