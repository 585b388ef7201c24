//! Restarts and faults: the controller killed (SIGKILL) in the middle of a batch of creates and
//! deletes, and the kube-apiserver restarted under a running controller. Afterwards every
//! remaining FtpServer is Ready with each child exactly once, the deleted ones leave nothing
//! behind, and no FtpServer waits on a finalizer.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use ftp_operator::api::FtpServer;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DeleteParams, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::harness::{
    ControllerProcess, TestNamespace, exclusive_apiserver, kubeconfig_path, wait_for, wait_until,
};
use super::node_keepalive::setup_tuning;
use super::{TIMEOUT, condition, set_load_balancer_ip};

fn needs_node_sysctls(i: usize) -> bool {
    i.is_multiple_of(3)
}

/// Server `i` of a batch. Every third needs node sysctls, so it carries the node-keepalive
/// finalizer; those run on kwok-node-1 only, where no other test's tuner agent reports.
fn manifest(i: usize) -> String {
    let min = 30000 + 10 * i;
    let tuned = if needs_node_sysctls(i) {
        "\n  keepalive: {nodeSysctls: true}\n  nodeSelector: {kubernetes.io/hostname: kwok-node-1}"
    } else {
        ""
    };
    format!(
        "metadata: {{name: s{i}}}\nspec:\n  passivePorts: {{min: {min}, max: {}}}{tuned}",
        min + 1
    )
}

async fn create(ns: &TestNamespace, servers: impl IntoIterator<Item = usize>) {
    for i in servers {
        ns.create_server(&manifest(i)).await;
    }
}

async fn delete(ns: &TestNamespace, servers: impl IntoIterator<Item = usize>) {
    let api = ns.api::<FtpServer>();
    for i in servers {
        api.delete(&format!("s{i}"), &DeleteParams::default())
            .await
            .expect("FtpServer deleted");
    }
}

/// Controller-owner uid of each `K` in the namespace, by kind and name; objects without one are
/// listed too. The namespace's CA bundle and the install's node-tuning ConfigMap are no children.
async fn owners<K>(ns: &TestNamespace) -> Option<Vec<(String, String, Option<String>)>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).into_owned();
    let listed = ns.api::<K>().list(&ListParams::default()).await.ok()?;
    Some(
        listed
            .items
            .iter()
            .map(Resource::meta)
            .filter(|meta| {
                let name = meta.name.as_deref().unwrap_or_default();
                !["kube-root-ca.crt", "ftp-operator-node-tuner"].contains(&name)
            })
            .map(|meta| {
                let owner = meta
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true))
                    .map(|o| o.uid.clone());
                (kind.clone(), meta.name.clone().unwrap_or_default(), owner)
            })
            .collect(),
    )
}

/// Waits until exactly the servers in `expected` exist, each Ready (the test plays the cloud
/// and gives each Service an address), none deleting, and the namespace holds, per server, one
/// ConfigMap, one Service and one StatefulSet it owns, and nothing owned by anyone else (the
/// deleted servers' children gone after garbage collection).
async fn assert_converged(ns: &TestNamespace, expected: &BTreeSet<usize>) {
    let servers = ns.api::<FtpServer>();
    for i in expected {
        let name = format!("s{i}");
        wait_for(&format!("the Service {name}"), TIMEOUT, || async {
            ns.api::<Service>().get_opt(&name).await.ok()?
        })
        .await;
        set_load_balancer_ip(ns, &name, &format!("198.51.100.{}", 10 + i)).await;
    }
    let names: BTreeSet<String> = expected.iter().map(|i| format!("s{i}")).collect();
    let listed = ListParams::default();
    let state = || async {
        let items = servers.list(&listed).await.ok()?.items;
        let present: BTreeSet<String> = items.iter().map(ResourceExt::name_any).collect();
        let not_ready: Vec<String> = items
            .iter()
            .filter(|s| {
                s.metadata.deletion_timestamp.is_some()
                    || condition(s, "Ready").map(|c| c.0).as_deref() != Some("True")
            })
            .map(|s| format!("{} {:?}", s.name_any(), s.finalizers()))
            .collect();
        let uids: BTreeMap<String, String> = items
            .iter()
            .map(|s| (s.uid().unwrap_or_default(), s.name_any()))
            .collect();
        let mut children = owners::<ConfigMap>(ns).await?;
        children.extend(owners::<Service>(ns).await?);
        children.extend(owners::<StatefulSet>(ns).await?);
        // Each child named by the server that owns it, or a stray when its owner is gone.
        let mut owned: Vec<String> = children
            .iter()
            .map(
                |(kind, name, owner)| match owner.as_ref().and_then(|u| uids.get(u)) {
                    Some(server) => format!("{server} {kind}"),
                    None => format!("stray {kind} {name}"),
                },
            )
            .collect();
        owned.sort();
        Some((present, not_ready, owned))
    };
    let mut wanted: Vec<String> = names
        .iter()
        .flat_map(|n| ["ConfigMap", "Service", "StatefulSet"].map(|kind| format!("{n} {kind}")))
        .collect();
    wanted.sort();
    let what = format!(
        "convergence to servers {names:?} with children {wanted:?} (last seen: servers, not \
         ready or deleting, children)"
    );
    wait_until(&what, TIMEOUT, || async {
        match state().await {
            Some((present, not_ready, owned))
                if present == names && not_ready.is_empty() && owned == wanted =>
            {
                Ok(())
            }
            seen => Err(seen),
        }
    })
    .await;
}

#[tokio::test]
async fn a_controller_killed_mid_batch_is_replaced_and_everything_converges() {
    let (_client, ns, mut first) = setup_tuning("sigkill").await;
    first.wait_logged("holding the lease", TIMEOUT).await;
    create(&ns, 0..8).await;
    // In the middle of it: the first servers' children are being written, the rest are queued.
    wait_for("the first children", TIMEOUT, || async {
        ns.api::<Service>().get_opt("s0").await.ok()?
    })
    .await;
    delete(&ns, [0, 1, 3]).await;
    create(&ns, 8..12).await;
    first.signal("KILL");
    assert!(first.wait_exit().is_some(), "SIGKILL ends the controller");
    // While no controller runs: more deletes (one with its finalizer) and creates.
    delete(&ns, [6, 9]).await;
    create(&ns, 12..14).await;

    // A new replica (a new pod): it waits out the killed one's lease, then takes over.
    let _second = tuning_controller(&ns, "sigkill-b");
    let expected: BTreeSet<usize> = (0..14).filter(|i| ![0, 1, 3, 6, 9].contains(i)).collect();
    assert_converged(&ns, &expected).await;
}

/// The controller as the fixture started it: with node tuning installed.
fn tuning_controller(ns: &TestNamespace, identity: &str) -> ControllerProcess {
    ControllerProcess::start_with(
        &ns.name,
        identity,
        &kubeconfig_path(),
        &["--node-tuning=true"],
    )
}

/// Notes why the controller ended (its last lines reach the log shortly after it exits) and
/// starts it again under the same identity.
async fn record_exit(
    exits: &mut Vec<(std::process::ExitStatus, bool)>,
    status: std::process::ExitStatus,
    ended: ControllerProcess,
    ns: &TestNamespace,
) -> ControllerProcess {
    tokio::time::sleep(Duration::from_millis(300)).await;
    exits.push((status, ended.logged("lost the lease")));
    drop(ended);
    tuning_controller(ns, "apiserver-a")
}

#[tokio::test]
async fn the_apiserver_restarts_under_a_busy_controller_and_everything_converges() {
    // The other tests' controllers would lose their leases too: they wait.
    let _alone = exclusive_apiserver().await;
    let (_client, ns, mut controller) = setup_tuning("apiserver").await;
    controller.wait_logged("holding the lease", TIMEOUT).await;
    create(&ns, 0..6).await;
    wait_for("the first children", TIMEOUT, || async {
        ns.api::<Service>().get_opt("s0").await.ok()?
    })
    .await;
    delete(&ns, [0, 4]).await;
    create(&ns, 6..9).await;

    // Played as a kubelet would with restartPolicy Always: a controller that exits is started
    // again in the same pod (same identity). It exits by design when it cannot renew its lease
    // for the renew deadline (10 s), which an apiserver restart here exceeds.
    let mut restart = Command::new("bash")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/local-cluster.sh"),
            "restart-apiserver",
        ])
        .spawn()
        .expect("scripts/local-cluster.sh runs");
    let mut exits = Vec::new();
    let restarted = loop {
        if let Some(status) = controller.exited() {
            controller = record_exit(&mut exits, status, controller, &ns).await;
        }
        if let Some(status) = restart.try_wait().expect("restart-apiserver waited for") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        restarted.success(),
        "scripts/local-cluster.sh restart-apiserver failed"
    );
    // The apiserver is back: more changes, seen by the controller that lived through it.
    super::harness::client().await;
    delete(&ns, [3, 6]).await;
    create(&ns, 9..11).await;
    if let Some(status) = controller.exited() {
        controller = record_exit(&mut exits, status, controller, &ns).await;
    }

    let expected: BTreeSet<usize> = (0..11).filter(|i| ![0, 3, 4, 6].contains(i)).collect();
    assert_converged(&ns, &expected).await;
    assert!(
        controller.exited().is_none(),
        "the controller exited after the apiserver was back"
    );
    // Whoever exited did so because the lease could not be renewed, not by crashing.
    assert!(
        exits.iter().all(|(_, lost_lease)| *lost_lease),
        "the controller exited for another reason than its lease: {exits:?}"
    );
    eprintln!("controller exits across the apiserver restart: {exits:?}");
}
