//! Server-side apply on a shared cluster: fields other managers add to the children survive, a
//! rollout restart is not undone, nothing is written twice, and a name the server does not own is
//! reported and left alone.

use std::time::Duration;

use ftp_operator::api::FtpServer;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::harness::{ControllerProcess, TestNamespace, kubectl, wait_for};
use super::{SMALL, TIMEOUT, set_load_balancer_ip, setup, wait_condition, wait_ready};

/// Makes the controller reconcile `name` `count` times: each metadata change of the FtpServer is
/// a watch event, and each reconcile is counted on /metrics.
async fn reconcile_times(
    ns: &TestNamespace,
    controller: &ControllerProcess,
    name: &str,
    count: u64,
) {
    let servers = ns.api::<FtpServer>();
    let start = controller.metric("ftp_operator_reconciles_total").await;
    for i in 0..count {
        servers
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"example.com/poke": i.to_string()}}}),
                ),
            )
            .await
            .unwrap();
        let wanted = start + i + 1;
        wait_for(&format!("reconcile {}", i + 1), TIMEOUT, || async {
            (controller.metric("ftp_operator_reconciles_total").await >= wanted).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn fields_other_managers_add_survive_ten_reconciles_with_no_write() {
    let (_client, ns, controller) = setup("others").await;
    ns.create_server(SMALL).await;
    wait_for("the Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("small").await.ok()?
    })
    .await;
    set_load_balancer_ip(&ns, "small", "198.51.100.8").await;
    wait_ready(&ns, "small").await;

    // What a policy engine's mutation adds: a volume in the pod template, an annotation and a
    // label, on the workload and on the Service, under a field manager of its own.
    let policy = PatchParams::apply("policy-engine");
    let sets = ns.api::<StatefulSet>();
    let services = ns.api::<Service>();
    sets.patch(
        "small",
        &policy,
        &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "small", "annotations": {"policy.example.com/checked": "yes"},
                         "labels": {"policy.example.com/tier": "files"}},
            "spec": {"template": {"spec": {"volumes": [{"name": "policy-ca", "emptyDir": {}}]}}}
        })),
    )
    .await
    .expect("the policy engine's apply");
    services
        .patch(
            "small",
            &policy,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "small", "annotations": {"policy.example.com/checked": "yes"},
                             "labels": {"policy.example.com/tier": "files"}}
            })),
        )
        .await
        .expect("the policy engine's apply");
    // The new volume rolls the pods once (the policy engine's change); let that finish and the
    // server be Ready again before counting.
    wait_for("the policy engine's rollout", TIMEOUT, || async {
        let set = sets.get("small").await.ok()?;
        let status = set.status.as_ref()?;
        (status.observed_generation == set.metadata.generation
            && status.updated_replicas == Some(1)
            && status.ready_replicas == Some(1)
            && status.replicas == 1
            && status.current_revision == status.update_revision)
            .then_some(())
    })
    .await;
    wait_ready(&ns, "small").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let generation = sets.get("small").await.unwrap().metadata.generation;
    let service_version = services.get("small").await.unwrap().resource_version();
    let writes = controller.api_writes().await;

    reconcile_times(&ns, &controller, "small", 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let set = sets.get("small").await.unwrap();
    let service = services.get("small").await.unwrap();
    assert_eq!(
        set.metadata.generation, generation,
        "the StatefulSet was rolled"
    );
    assert_eq!(
        service.resource_version(),
        service_version,
        "the Service was written"
    );
    let volumes: Vec<String> = set
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.volumes)
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert!(volumes.contains(&"policy-ca".to_owned()), "{volumes:?}");
    for object in [&set.metadata, &service.metadata] {
        let annotations = object.annotations.clone().unwrap_or_default();
        let labels = object.labels.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get("policy.example.com/checked")
                .map(String::as_str),
            Some("yes")
        );
        assert_eq!(
            labels.get("policy.example.com/tier").map(String::as_str),
            Some("files")
        );
    }
    assert_eq!(
        controller.api_writes().await,
        writes,
        "the controller wrote"
    );

    // And a quiet minute: nothing at all.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        controller.api_writes().await,
        writes,
        "the controller wrote while quiet"
    );
}

#[tokio::test]
async fn a_rollout_restart_is_not_undone() {
    let (_client, ns, controller) = setup("restart").await;
    ns.create_server(SMALL).await;
    let sets = ns.api::<StatefulSet>();
    wait_for("the StatefulSet", TIMEOUT, || async {
        sets.get_opt("small").await.ok()?
    })
    .await;
    let out = kubectl()
        .args(["rollout", "restart", "statefulset/small", "-n", &ns.name])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restarted = sets.get("small").await.unwrap();
    let restarted_at = |d: &StatefulSet| {
        d.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get("kubectl.kubernetes.io/restartedAt")
            .cloned()
    };
    let stamp = restarted_at(&restarted).expect("kubectl set restartedAt");

    reconcile_times(&ns, &controller, "small", 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = sets.get("small").await.unwrap();
    assert_eq!(restarted_at(&after), Some(stamp));
    assert_eq!(after.metadata.generation, restarted.metadata.generation);
}

#[tokio::test]
async fn a_name_held_by_a_users_object_stalls_and_the_object_is_left_alone() {
    let (_client, ns, _controller) = setup("taken").await;
    let config_maps = ns.api::<ConfigMap>();
    let users: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "small-config", "labels": {"team": "files"}},
        "data": {"notes": "the team's own"}
    }))
    .unwrap();
    let users = config_maps
        .create(&PostParams::default(), &users)
        .await
        .unwrap();
    ns.create_server(SMALL).await;
    let (_, reason, message) = wait_condition(&ns, "small", "Stalled", &["True"], TIMEOUT).await;
    assert_eq!(reason, "NameTaken");
    assert!(
        message.contains("ConfigMap small-config already exists")
            && message.contains("delete or rename that ConfigMap"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = config_maps.get("small-config").await.unwrap();
    assert_eq!(now.resource_version(), users.resource_version());
    assert!(now.owner_references().is_empty());
    assert!(!ns.has::<Service>("small").await);
    assert!(!ns.has::<StatefulSet>("small").await);

    // The user frees the name: the server proceeds on its own.
    config_maps
        .delete("small-config", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the server's own ConfigMap",
        Duration::from_secs(90),
        || async {
            let cm = config_maps.get_opt("small-config").await.ok()??;
            (!cm.owner_references().is_empty()).then_some(())
        },
    )
    .await;
}
