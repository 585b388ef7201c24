//! The controller against a real control plane: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok, started by `scripts/local-cluster.sh up`. Each test has its own
//! namespace and its own controller process.

mod apply;
mod budgets;
mod faults;
mod harness;
mod leader;
mod metrics;
mod namespaced;
mod node_keepalive;
mod node_tuner;
mod permissions;
mod replicas;
mod status;
mod users;

use std::collections::BTreeMap;
use std::time::Duration;

use ftp_operator::api::FtpServer;
use ftp_operator::ftp::config::{CONFIG_FILE_NAME, ServerConfig};
use harness::{ControllerProcess, TestNamespace, client, install_crd, kubectl, wait_for};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn condition(server: &FtpServer, type_: &str) -> Option<(String, String, String)> {
    let status = server.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn service_ports(service: &Service) -> Vec<(String, i32, String)> {
    let spec = service.spec.as_ref().unwrap();
    spec.ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match p.target_port.clone().unwrap() {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
            };
            (p.name.clone().unwrap_or_default(), p.port, target)
        })
        .collect()
}

fn expected_ports(control: i32, min: i32, max: i32) -> Vec<(String, i32, String)> {
    std::iter::once(("ftp".to_owned(), control, "2121".to_owned()))
        .chain((min..=max).map(|p| (format!("pasv-{p}"), p, p.to_string())))
        .collect()
}

async fn rendered_config(ns: &TestNamespace, name: &str) -> Option<ServerConfig> {
    let cm = ns
        .api::<ConfigMap>()
        .get_opt(&format!("{name}-config"))
        .await
        .ok()??;
    toml::from_str(cm.data?.get(CONFIG_FILE_NAME)?).ok()
}

async fn set_load_balancer_ip(ns: &TestNamespace, name: &str, ip: &str) {
    ns.api::<Service>()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})),
        )
        .await
        .expect("Service status patched");
}

/// Waits until FtpServer `name` has condition `type_` starting with `want` — its status, then
/// its reason (`&[]`: present at all) — and returns the condition's (status, reason, message).
/// Every wait on a condition goes through here.
async fn wait_condition(
    ns: &TestNamespace,
    name: &str,
    type_: &str,
    want: &[&str],
    timeout: Duration,
) -> (String, String, String) {
    let servers = ns.api::<FtpServer>();
    let what = format!("FtpServer {name}'s {type_} condition to be {want:?}");
    wait_for(&what, timeout, || async {
        let found = condition(&servers.get(name).await.ok()?, type_)?;
        let have = [found.0.as_str(), found.1.as_str()];
        (have[..want.len()] == *want).then_some(found)
    })
    .await
}

async fn wait_ready(ns: &TestNamespace, name: &str) -> FtpServer {
    wait_condition(ns, name, "Ready", &["True"], TIMEOUT).await;
    ns.api::<FtpServer>()
        .get(name)
        .await
        .expect("the apiserver answers a GET")
}

async fn setup(prefix: &str) -> (Client, TestNamespace, ControllerProcess) {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    let controller = ControllerProcess::start(&ns.name, &format!("{prefix}-a"));
    (client, ns, controller)
}

const SMALL: &str = r#"
metadata: {name: small}
spec:
  passivePorts: {min: 30000, max: 30002}
"#;

#[tokio::test]
async fn crd_installs_and_is_established() {
    let client = client().await;
    install_crd(&client).await;
    let out = kubectl()
        .args([
            "get",
            "crd",
            "ftpservers.ftpoperator.dev",
            "-o",
            "jsonpath={.spec.names.shortNames}",
        ])
        .output()
        .expect("kubectl runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ftpsrv"));
}

#[tokio::test]
async fn valid_server_gets_config_map_stateful_set_and_service_as_declared() {
    let (_client, ns, _controller) = setup("children").await;
    ns.create_users_secret("ftp-users").await;
    ns.create_server(
        r#"
metadata: {name: contoso}
spec:
  publicAddress: ftp.contoso.example
  passivePorts: {min: 20000, max: 20004}
  keepalive: {idleSeconds: 45}
  loadBalancer:
    provider: azure
    idleTimeoutSeconds: 1800
    annotations: {example.com/team: files}
    sourceRanges: [203.0.113.0/24]
  users: {secretRef: {name: ftp-users}}
  limits: {maxSessionsPerAddress: 5, loginTimeoutSeconds: 20}
"#,
    )
    .await;

    let service = wait_for("the Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("contoso").await.ok()?
    })
    .await;
    assert_eq!(service_ports(&service), expected_ports(21, 20000, 20004));
    let annotations = service.annotations();
    let expected: BTreeMap<String, String> = BTreeMap::from([
        (
            "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout".into(),
            "30".into(),
        ),
        ("example.com/team".into(), "files".into()),
    ]);
    assert_eq!(annotations, &expected);
    let spec = service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        spec.load_balancer_source_ranges.as_deref(),
        Some(&["203.0.113.0/24".to_owned()][..])
    );
    let owner = &service.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("FtpServer", Some(true))
    );

    let config = wait_for("the ConfigMap", TIMEOUT, || rendered_config(&ns, "contoso")).await;
    assert_eq!(
        config.public_address.as_deref(),
        Some("ftp.contoso.example")
    );
    assert_eq!(config.passive_ports.to_string(), "20000-20004");
    assert_eq!(config.keepalive.idle_seconds, 45);
    // Through the apiserver's schema (nothing pruned), over the server's defaults.
    let defaults = ftp_operator::ftp::config::Limits::default();
    assert_eq!(
        (
            config.limits.max_sessions_per_address,
            config.limits.login_timeout_seconds,
            config.limits.max_sessions
        ),
        (5, 20, defaults.max_sessions)
    );

    let set = wait_for("the StatefulSet", TIMEOUT, || async {
        ns.api::<StatefulSet>().get_opt("contoso").await.ok()?
    })
    .await;
    let pod = set.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ftp-operator:test")
    );
    let sysctls: Vec<_> = pod
        .security_context
        .unwrap()
        .sysctls
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    assert!(sysctls.contains(&("net.ipv4.tcp_keepalive_time".into(), "45".into())));
}

#[tokio::test]
async fn pods_run_on_kwok_nodes_and_server_becomes_ready_then_stays_quiet() {
    let (_client, ns, controller) = setup("ready").await;
    ns.create_server(SMALL).await;

    let pods = ns.api::<Pod>();
    wait_for("a Running pod on a kwok node", TIMEOUT, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items.iter().find(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| n.starts_with("kwok"))
        })?;
        Some(())
    })
    .await;

    // Without an address the server is not usable yet.
    let server = ns.api::<FtpServer>().get("small").await.unwrap();
    assert_ne!(
        condition(&server, "Ready").map(|c| c.0).as_deref(),
        Some("True")
    );

    set_load_balancer_ip(&ns, "small", "198.51.100.7").await;
    let server = wait_ready(&ns, "small").await;
    let status = server.status.clone().unwrap();
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(status.public_address.as_deref(), Some("198.51.100.7"));
    assert_eq!(status.passive_ports.as_deref(), Some("30000-30002"));
    assert_eq!(status.observed_generation, server.metadata.generation);
    assert_eq!(condition(&server, "LoadBalancerReady").unwrap().0, "True");
    let config = rendered_config(&ns, "small").await.unwrap();
    assert_eq!(config.public_address.as_deref(), Some("198.51.100.7"));

    let out = kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "ftpserver/small",
            "-n",
            &ns.name,
            "--timeout=30s",
        ])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A quiet period: nothing changes, so the controller writes nothing.
    let versions = || async {
        let cm = ns.api::<ConfigMap>().get("small-config").await.unwrap();
        let svc = ns.api::<Service>().get("small").await.unwrap();
        let deploy = ns.api::<StatefulSet>().get("small").await.unwrap();
        let server = ns.api::<FtpServer>().get("small").await.unwrap();
        let events =
            kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(_client.clone(), &ns.name)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
        (
            cm.resource_version(),
            svc.resource_version(),
            deploy.resource_version(),
            server.resource_version(),
            events,
        )
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = versions().await;
    let writes_before = controller.api_writes().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        versions().await,
        before,
        "something was written during the quiet period"
    );
    assert_eq!(controller.api_writes().await, writes_before);
}

#[tokio::test]
async fn load_balancer_address_flows_into_status_and_config_map() {
    let (_client, ns, _controller) = setup("address").await;
    ns.create_server(SMALL).await;
    wait_for("the Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("small").await.ok()?
    })
    .await;
    for ip in ["203.0.113.10", "203.0.113.11"] {
        set_load_balancer_ip(&ns, "small", ip).await;
        wait_for(&format!("status.publicAddress {ip}"), TIMEOUT, || async {
            let server = ns.api::<FtpServer>().get("small").await.ok()?;
            (server.status?.public_address.as_deref() == Some(ip)).then_some(())
        })
        .await;
        let config = rendered_config(&ns, "small").await.unwrap();
        assert_eq!(config.public_address.as_deref(), Some(ip));
    }
}

#[tokio::test]
async fn passive_range_change_updates_service_and_config_map() {
    let (_client, ns, _controller) = setup("range").await;
    ns.create_server(SMALL).await;
    wait_for("the Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("small").await.ok()?
    })
    .await;
    ns.api::<FtpServer>()
        .patch(
            "small",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"passivePorts": {"min": 31000, "max": 31004}}})),
        )
        .await
        .unwrap();
    wait_for("the Service to carry the new range", TIMEOUT, || async {
        let svc = ns.api::<Service>().get("small").await.ok()?;
        (service_ports(&svc) == expected_ports(21, 31000, 31004)).then_some(())
    })
    .await;
    wait_for("the ConfigMap to carry the new range", TIMEOUT, || async {
        let config = rendered_config(&ns, "small").await?;
        (config.passive_ports.to_string() == "31000-31004").then_some(())
    })
    .await;
}

/// Creates SMALL, waits for its Service and sends `patch` to it as another field manager would
/// (`kubectl edit`).
async fn edit_small_service_by_hand(
    ns: &TestNamespace,
    patch: Patch<serde_json::Value>,
) -> Api<Service> {
    ns.create_server(SMALL).await;
    let services = ns.api::<Service>();
    wait_for("the Service", TIMEOUT, || async {
        services.get_opt("small").await.ok()?
    })
    .await;
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    services
        .patch("small", &edit, &patch)
        .await
        .expect("the hand edit is accepted");
    services
}

#[tokio::test]
async fn hand_edit_of_the_service_is_reverted() {
    let (_client, ns, _controller) = setup("revert").await;
    // What `kubectl edit` sends: a strategic merge patch, ports merged by their port number.
    let services = edit_small_service_by_hand(
        &ns,
        Patch::Strategic(json!({
            "spec": {"ports": [{"port": 21, "targetPort": 2100}],
                     "externalTrafficPolicy": "Cluster"}
        })),
    )
    .await;
    wait_for("the Service to be restored", TIMEOUT, || async {
        let svc = services.get("small").await.ok()?;
        let spec = svc.spec.as_ref()?;
        (service_ports(&svc) == expected_ports(21, 30000, 30002)
            && spec.external_traffic_policy.as_deref() == Some("Local"))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_hand_edit_the_apiserver_cannot_merge_stalls_with_its_words() {
    let (_client, ns, _controller) = setup("clash").await;
    // A JSON merge patch replaces the whole list: port 21 is gone and 2100 now carries the name
    // `ftp`, so putting port 21 back under that name makes an invalid Service. The operator
    // does not replace other managers' list entries; it says what is in the way.
    edit_small_service_by_hand(
        &ns,
        Patch::Merge(json!({
            "spec": {"ports": [{"name": "ftp", "port": 2100, "targetPort": 2121, "protocol": "TCP"}]}
        })),
    )
    .await;
    let (_, reason, message) = wait_condition(&ns, "small", "Stalled", &["True"], TIMEOUT).await;
    assert_eq!(reason, "Rejected");
    assert!(
        message.contains("the apiserver rejected Service small") && message.contains("ftp"),
        "{message}"
    );
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(_client.clone(), &ns.name);
    wait_for("a Warning Event saying so", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Rejected")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("rejected Service small"))
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_the_server_lets_the_garbage_collector_remove_children() {
    let (_client, ns, _controller) = setup("gc").await;
    ns.create_server(SMALL).await;
    wait_for("all children", TIMEOUT, || async {
        ns.api::<Service>().get_opt("small").await.ok()??;
        ns.api::<StatefulSet>().get_opt("small").await.ok()??;
        ns.api::<ConfigMap>().get_opt("small-config").await.ok()?
    })
    .await;
    ns.api::<FtpServer>()
        .delete("small", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the garbage collector to remove the children",
        TIMEOUT,
        || async {
            let gone = ns.api::<Service>().get_opt("small").await.ok()?.is_none()
                && ns
                    .api::<StatefulSet>()
                    .get_opt("small")
                    .await
                    .ok()?
                    .is_none()
                && ns
                    .api::<ConfigMap>()
                    .get_opt("small-config")
                    .await
                    .ok()?
                    .is_none();
            gone.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn missing_secret_stalls_with_the_fix_and_heals_when_created() {
    let (_client, ns, _controller) = setup("stalled").await;
    ns.create_server(
        "metadata: {name: s}\nspec: {passivePorts: {min: 30000, max: 30001}, users: {secretRef: {name: ftp-users}}}",
    )
    .await;
    let (_, reason, message) = wait_condition(&ns, "s", "Stalled", &["True"], TIMEOUT).await;
    assert_eq!(reason, "SecretMissing");
    assert!(message.contains("Secret ftp-users named by spec.users.secretRef does not exist"));
    assert!(!ns.has::<StatefulSet>("s").await);

    ns.create_users_secret("ftp-users").await;
    wait_condition(&ns, "s", "Stalled", &["False"], TIMEOUT).await;
    wait_for("the StatefulSet", TIMEOUT, || async {
        ns.api::<StatefulSet>().get_opt("s").await.ok()?
    })
    .await;
}

#[tokio::test]
async fn provider_limit_stalls_with_the_fix() {
    // A limit CEL cannot express alone (GCP's depends on where the control port sits) is
    // checked by the controller before anything is applied.
    let (_client, ns, _controller) = setup("limit").await;
    ns.create_server(
        "metadata: {name: big}\nspec: {passivePorts: {min: 20000, max: 20009}, loadBalancer: {provider: gcp}}",
    )
    .await;
    let (_, reason, message) = wait_condition(&ns, "big", "Stalled", &["True"], TIMEOUT).await;
    assert_eq!(reason, "ProviderLimit");
    assert!(
        message.contains("controlPort 21 and passivePorts 20000-20009 make 11 ports"),
        "{message}"
    );
    assert!(ns.api::<Service>().get_opt("big").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_manifests_are_rejected_by_the_apiserver_with_their_cel_message() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "cel").await;
    let cases = [
        (
            "passivePorts: {min: 20010, max: 20000}",
            "passivePorts.min must not exceed passivePorts.max",
        ),
        (
            "passivePorts: {min: 80, max: 90}",
            "passivePorts must lie within 1024-65535",
        ),
        (
            "passivePorts: {min: 20000, max: 21000}",
            "passivePorts may span at most 1000 ports",
        ),
        (
            "passivePorts: {min: 2100, max: 2200}",
            "passivePorts must not include 2121 or 9100",
        ),
        (
            "controlPort: 70000\npassivePorts: {min: 20000, max: 20001}",
            "controlPort must be between 1 and 65535",
        ),
        (
            "controlPort: 20001\npassivePorts: {min: 20000, max: 20001}",
            "controlPort must lie outside passivePorts",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nkeepalive: {idleSeconds: 300}\nloadBalancer: {idleTimeoutSeconds: 240}",
            "keepalive.idleSeconds must be below loadBalancer.idleTimeoutSeconds",
        ),
        (
            "publicAddress: not an address\npassivePorts: {min: 20000, max: 20001}",
            "publicAddress must be an IP address or a lower-case DNS name",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nstorage: {}",
            "storage must set exactly one of",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nanonymous: {writable: true}",
            "anonymous.writable needs anonymous.enabled",
        ),
        (
            "passivePorts: {min: 20000, max: 20099}\nloadBalancer: {provider: aws}",
            "passivePorts may span at most 49 ports with loadBalancer.provider aws",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nloadBalancer: {provider: azure, idleTimeoutSeconds: 250}",
            "loadBalancer.idleTimeoutSeconds must be a whole number of minutes from 4 to 100",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nloadBalancer: {provider: azure, idleTimeoutSeconds: 7200}",
            "loadBalancer.idleTimeoutSeconds must be a whole number of minutes from 4 to 100",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nloadBalancer: {sourceRanges: [198.51.100.0/24, office]}",
            "loadBalancer.sourceRanges entries must be CIDRs",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nlimits: {idleTimeoutSeconds: 0}",
            "limits.idleTimeoutSeconds must be between 1 and 86400",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nlimits: {maxSessions: 10, maxSessionsPerAddress: 11}",
            "limits.maxSessionsPerAddress 11 exceeds limits.maxSessions 10",
        ),
        (
            "passivePorts: {min: 20000, max: 20001}\nlimits: {maxSessionsPerAddress: 2001}",
            "limits.maxSessionsPerAddress 2001 exceeds limits.maxSessions 2000",
        ),
    ];
    let servers = ns.api::<FtpServer>();
    for (i, (spec, message)) in cases.iter().enumerate() {
        let indented = spec.replace('\n', "\n  ");
        let yaml = format!("metadata: {{name: bad-{i}}}\nspec:\n  {indented}\n");
        let server: FtpServer = serde_yaml::from_str(&yaml).unwrap();
        let err = servers
            .create(&PostParams::default(), &server)
            .await
            .expect_err(&format!("{spec} was accepted"));
        assert!(err.to_string().contains(message), "{spec}: {err}");
    }
    // Names every derived name can carry: a DNS label the Service takes as it is, short
    // enough for the workload's labels.
    for name in ["ftp.example", "1st", &"a".repeat(53)] {
        let yaml = format!(
            "metadata: {{name: '{name}'}}\nspec: {{passivePorts: {{min: 20000, max: 20001}}}}"
        );
        let server: FtpServer = serde_yaml::from_str(&yaml).unwrap();
        let err = servers
            .create(&PostParams::default(), &server)
            .await
            .expect_err(&format!("name {name} was accepted"));
        assert!(
            err.to_string()
                .contains("metadata.name must be at most 52 characters"),
            "{name}: {err}"
        );
    }
    // And a valid one goes through.
    servers
        .create(
            &PostParams::default(),
            &serde_yaml::from_str(SMALL).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn second_replica_does_not_write_while_the_first_holds_the_lease() {
    let (_client, ns, mut first) = setup("lease").await;
    first.wait_logged("holding the lease", TIMEOUT).await;
    let second = ControllerProcess::start(&ns.name, "lease-b");
    second.wait_logged("waiting for the lease", TIMEOUT).await;

    ns.create_server(SMALL).await;
    wait_for("the first replica's Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("small").await.ok()?
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!second.logged("holding the lease"));
    assert_eq!(second.api_writes().await, 0);
    assert!(first.api_writes().await > 0);

    // When the first goes away without releasing, the second takes over after the lease ends.
    first.kill();
    second
        .wait_logged("holding the lease", Duration::from_secs(45))
        .await;
    ns.api::<FtpServer>()
        .patch(
            "small",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"passivePorts": {"min": 30000, "max": 30001}}})),
        )
        .await
        .unwrap();
    wait_for("the second replica to reconcile", TIMEOUT, || async {
        let svc = ns.api::<Service>().get("small").await.ok()?;
        (service_ports(&svc) == expected_ports(21, 30000, 30001)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_balancer_that_targets_pods_takes_no_node_ports() {
    let (_client, ns, _controller) = setup("nodeports").await;
    ns.create_server(
        "metadata: {name: nlb}\nspec: {passivePorts: {min: 30000, max: 30009}, loadBalancer: {provider: aws}}",
    )
    .await;
    let service = wait_for("the Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("nlb").await.ok()?
    })
    .await;
    let spec = service.spec.unwrap();
    assert_eq!(spec.allocate_load_balancer_node_ports, Some(false));
    let ports = spec.ports.unwrap_or_default();
    assert_eq!(ports.len(), 11);
    assert!(ports.iter().all(|p| p.node_port.is_none()), "{ports:?}");
}
