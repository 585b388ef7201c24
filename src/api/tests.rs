//! The CEL rules, evaluated client-side with the same schema the apiserver gets, and the committed
//! CRD kept in step with the code.

use super::*;

const VALID: &str = r#"
apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {name: contoso, namespace: ftp}
spec:
  publicAddress: contosoftp.cloudapp.net
  controlPort: 21
  passivePorts: {min: 20000, max: 20019}
  keepalive: {idleSeconds: 60}
  loadBalancer: {provider: azure, idleTimeoutSeconds: 240}
  users: {secretRef: {name: ftp-users}}
"#;

fn valid() -> FtpServer {
    serde_yaml::from_str(VALID).unwrap()
}

/// The messages of the rules `server` breaks; empty when it is valid.
fn broken_rules(server: &FtpServer) -> String {
    match server.validate_cel() {
        Ok(()) => String::new(),
        Err(errors) => errors.to_string(),
    }
}

#[track_caller]
fn assert_rejected(server: FtpServer, message: &str) {
    let errors = broken_rules(&server);
    assert!(
        errors.contains(message),
        "expected {message:?}, got {errors:?}"
    );
}

#[test]
fn valid_manifest_passes_every_rule() {
    assert_eq!(broken_rules(&valid()), "");
}

#[test]
fn defaults_fill_an_almost_empty_spec() {
    let server: FtpServer = serde_yaml::from_str(
        "metadata: {name: x}\nspec: {passivePorts: {min: 30000, max: 30009}}\n",
    )
    .unwrap();
    assert_eq!(server.spec.replicas, 1);
    assert_eq!(server.spec.control_port, 21);
    assert_eq!(server.spec.load_balancer.provider, Provider::Generic);
    assert!(!server.spec.host_network);
    assert_eq!(broken_rules(&server), "");
}

#[test]
fn several_replicas_need_a_slice_each_that_fits_the_range() {
    let mut server = valid();
    server.spec.replicas = 3;
    assert_rejected(
        server.clone(),
        "replicas above 1 need passivePorts.perReplica",
    );
    server.spec.passive_ports.per_replica = Some(7);
    assert_rejected(
        server.clone(),
        "replicas 3 x passivePorts.perReplica 7 need 21 ports, but passivePorts 20000-20019 has 20",
    );
    server.spec.passive_ports.per_replica = Some(6);
    assert_eq!(broken_rules(&server), "");
    assert_eq!(server.spec.passive_ports.slice(2), 20012..=20017);
    server.spec.passive_ports.per_replica = Some(0);
    assert_rejected(server.clone(), "passivePorts.perReplica must be between 1");
    // One replica with no slice keeps the whole range.
    server.spec.replicas = 1;
    server.spec.passive_ports.per_replica = None;
    assert_eq!(broken_rules(&server), "");
    assert_eq!(server.spec.passive_ports.slice(0), 20000..=20019);
}

#[test]
fn storage_takes_exactly_one_kind() {
    let mut server = valid();
    server.spec.storage = Some(StorageSpec {
        persistent_volume_claim: None,
        empty_dir: None,
        claim_per_replica: Some(ClaimTemplate {
            size: "1Gi".into(),
            storage_class_name: None,
        }),
        s3: None,
        azure_blob: None,
    });
    assert_eq!(broken_rules(&server), "");
    if let Some(storage) = &mut server.spec.storage {
        storage.empty_dir = Some(EmptyDirVolumeSource::default());
    }
    assert_rejected(server, "storage must set exactly one of");
}

#[test]
fn passive_min_above_max_is_rejected() {
    let mut server = valid();
    server.spec.passive_ports = PassivePorts {
        min: 20019,
        max: 20000,
        per_replica: None,
    };
    assert_rejected(server, "passivePorts.min must not exceed passivePorts.max");
}

#[test]
fn privileged_or_out_of_range_passive_ports_are_rejected() {
    for (min, max) in [(1000, 1010), (65530, 65536)] {
        let mut server = valid();
        server.spec.passive_ports = PassivePorts {
            min,
            max,
            per_replica: None,
        };
        assert_rejected(server, "passivePorts must lie within 1024-65535");
    }
}

#[test]
fn more_than_1000_passive_ports_are_rejected() {
    let mut server = valid();
    server.spec.passive_ports = PassivePorts {
        min: 20000,
        max: 20999,
        per_replica: None,
    };
    assert_eq!(broken_rules(&server), "", "exactly 1000 is allowed");
    server.spec.passive_ports.max = 21000;
    assert_rejected(server, "passivePorts may span at most 1000 ports");
}

#[test]
fn passive_range_over_the_pods_own_ports_is_rejected() {
    for (min, max) in [(2100, 2200), (9000, 9100)] {
        let mut server = valid();
        server.spec.passive_ports = PassivePorts {
            min,
            max,
            per_replica: None,
        };
        assert_rejected(server, "passivePorts must not include 2121 or 9100");
    }
    // The rule's literals are the server's ports.
    assert_eq!((DEFAULT_CONTROL_PORT, DEFAULT_METRICS_PORT), (2121, 9100));
}

#[test]
fn control_port_out_of_range_is_rejected() {
    for port in [0, 65536] {
        let mut server = valid();
        server.spec.control_port = port;
        assert_rejected(server, "controlPort must be between 1 and 65535");
    }
}

#[test]
fn control_port_inside_passive_range_is_rejected() {
    let mut server = valid();
    server.spec.control_port = 20005;
    assert_rejected(server, "controlPort must lie outside passivePorts");
}

#[test]
fn keepalive_idle_at_or_above_balancer_timeout_is_rejected() {
    let mut server = valid();
    server.spec.keepalive = Some(KeepaliveSpec {
        idle_seconds: Some(240),
        ..KeepaliveSpec::default()
    });
    assert_rejected(
        server.clone(),
        "keepalive.idleSeconds must be below loadBalancer.idleTimeoutSeconds",
    );
    // Without a balancer timeout there is nothing to compare against.
    server.spec.load_balancer.idle_timeout_seconds = None;
    assert_eq!(broken_rules(&server), "");
}

#[test]
fn keepalive_outside_kernel_limits_is_rejected() {
    let mut server = valid();
    server.spec.keepalive = Some(KeepaliveSpec {
        probes: 0,
        ..KeepaliveSpec::default()
    });
    assert_rejected(server, "keepalive.probes must be between 1 and 127");
}

#[test]
fn public_address_must_be_an_ip_or_dns_name() {
    for good in ["20.50.1.7", "2001:db8::7", "ftp.example.com", "localhost"] {
        let mut server = valid();
        server.spec.public_address = Some(good.into());
        assert_eq!(broken_rules(&server), "", "{good} rejected");
    }
    for bad in [
        "ftp example",
        "FTP.Example.com",
        "-ftp.example.com",
        "http://x",
        "",
    ] {
        let mut server = valid();
        server.spec.public_address = Some(bad.into());
        assert_rejected(
            server,
            "publicAddress must be an IP address or a lower-case DNS name",
        );
    }
}

#[test]
fn s3_storage_is_one_kind_of_its_own() {
    let mut server = valid();
    server.spec.storage = Some(StorageSpec {
        persistent_volume_claim: None,
        empty_dir: None,
        claim_per_replica: None,
        s3: Some(S3StorageSpec {
            bucket: "contoso-ftp".into(),
            prefix: None,
            endpoint: None,
            region: Some("eu-west-1".into()),
            force_path_style: None,
            credentials_secret_ref: None,
        }),
        azure_blob: None,
    });
    assert_eq!(broken_rules(&server), "");
    if let Some(storage) = &mut server.spec.storage {
        storage.empty_dir = Some(EmptyDirVolumeSource::default());
    }
    assert_rejected(server.clone(), "storage must set exactly one of");
    // Azure Blob alone is one kind; beside S3 it is refused.
    if let Some(storage) = &mut server.spec.storage {
        storage.empty_dir = None;
        storage.azure_blob = Some(AzureBlobStorageSpec {
            account: "contosoftp".into(),
            container: "files".into(),
            prefix: None,
            endpoint: None,
            credentials_secret_ref: None,
        });
    }
    assert_rejected(server.clone(), "storage must set exactly one of");
    if let Some(storage) = &mut server.spec.storage {
        storage.s3 = None;
    }
    assert_eq!(broken_rules(&server), "");
}

#[test]
fn storage_needs_exactly_one_source() {
    let mut server = valid();
    server.spec.storage = Some(StorageSpec {
        persistent_volume_claim: None,
        empty_dir: None,
        claim_per_replica: None,
        s3: None,
        azure_blob: None,
    });
    assert_rejected(server, "storage must set exactly one of");
}

#[test]
fn writable_anonymous_needs_anonymous_enabled() {
    let mut server = valid();
    server.spec.anonymous = AnonymousSpec {
        enabled: false,
        writable: true,
        home: None,
    };
    assert_rejected(server, "anonymous.writable needs anonymous.enabled");
}

fn with_implicit_tls(implicit_port: i32) -> FtpServer {
    let mut server = valid();
    server.spec.tls = Some(TlsSpec {
        secret_ref: SecretRef { name: "t".into() },
        required: false,
        implicit: true,
        implicit_port,
        require_session_reuse: true,
    });
    server
}

#[test]
fn implicit_ftps_port_must_stand_apart() {
    assert_eq!(broken_rules(&with_implicit_tls(990)), "");
    for clash in [21, 20005] {
        assert_rejected(
            with_implicit_tls(clash),
            "tls.implicitPort must differ from controlPort and lie outside passivePorts",
        );
    }
    let mut server = with_implicit_tls(990);
    server.spec.passive_ports = PassivePorts {
        min: 9980,
        max: 9999,
        per_replica: None,
    };
    assert_rejected(
        server,
        "passivePorts must not include 9990 when tls.implicit",
    );
    assert_eq!(
        POD_IMPLICIT_TLS_PORT, 9990,
        "the rule's literal is the pod's port"
    );
    // Without implicit FTPS, the same ports are fine.
    let mut server = with_implicit_tls(21);
    server.spec.tls.as_mut().unwrap().implicit = false;
    assert_eq!(broken_rules(&server), "");
}

#[test]
fn proxy_protocol_needs_cidrs() {
    let mut server = valid();
    let mut proxy = |sources: &[&str]| {
        server.spec.load_balancer.proxy_protocol = Some(ProxyProtocolSpec {
            trusted_sources: sources.iter().map(|s| s.to_string()).collect(),
        });
        broken_rules(&server)
    };
    assert_eq!(proxy(&["10.0.0.0/16", "2001:db8::/48"]), "");
    assert!(proxy(&[]).contains("must list the balancer's addresses"));
    assert!(proxy(&["10.0.0.1"]).contains("must be CIDRs"));
    assert!(proxy(&["ten/8"]).contains("must be CIDRs"));
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let crd = serde_json::to_value(<FtpServer as kube::CustomResourceExt>::crd()).unwrap();
    let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
}

#[test]
fn committed_crd_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/ftpserver.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == FtpServer::crd_yaml(),
        "crds/ftpserver.yaml is out of date: run `cargo run --bin ftp-operator -- crd > crds/ftpserver.yaml`"
    );
}

#[test]
fn example_manifest_is_valid() {
    let text = include_str!("../../examples/ftpserver.yaml");
    let server = text
        .split("\n---\n")
        .find(|doc| doc.contains("kind: FtpServer"))
        .map(|doc| serde_yaml::from_str::<FtpServer>(doc).unwrap())
        .unwrap();
    assert_eq!(broken_rules(&server), "");
    crate::controller::validate::validate_spec(&server.spec).unwrap();
}

#[test]
fn a_name_no_child_can_carry_is_rejected() {
    for name in ["ftp.example", "1st", &"a".repeat(53)] {
        let mut server = valid();
        server.metadata.name = Some(name.to_owned());
        assert_rejected(server, "metadata.name must be at most 52 characters");
    }
    let mut server = valid();
    server.metadata.name = Some("a".repeat(52));
    assert_eq!(broken_rules(&server), "");
}

#[test]
fn static_provider_limits_are_rejected_at_admission() {
    let mut aws = valid();
    aws.spec.load_balancer = LoadBalancerSpec {
        provider: Provider::Aws,
        ..LoadBalancerSpec::default()
    };
    aws.spec.keepalive = None;
    aws.spec.passive_ports = PassivePorts {
        min: 20000,
        max: 20049,
        per_replica: None,
    };
    assert_rejected(
        aws.clone(),
        "passivePorts may span at most 49 ports with loadBalancer.provider aws",
    );
    aws.spec.passive_ports.max = 20048;
    assert_eq!(broken_rules(&aws), "");

    for seconds in [250, 180, 6060] {
        let mut azure = valid();
        azure.spec.keepalive = None;
        azure.spec.load_balancer.idle_timeout_seconds = Some(seconds);
        assert_rejected(azure, "whole number of minutes from 4 to 100");
    }
    let mut generic = valid();
    generic.spec.keepalive = None;
    generic.spec.load_balancer.provider = Provider::Generic;
    generic.spec.load_balancer.idle_timeout_seconds = Some(300);
    assert_eq!(broken_rules(&generic), "");
}

#[test]
fn source_ranges_must_be_cidrs() {
    let mut server = valid();
    server.spec.load_balancer.source_ranges =
        vec!["198.51.100.0/24".into(), "2001:db8::/32".into()];
    assert_eq!(broken_rules(&server), "");
    for bad in ["198.51.100.7", "office", "198.51.100.0/33"] {
        let mut server = valid();
        server.spec.load_balancer.source_ranges = vec![bad.into()];
        assert_rejected(server, "loadBalancer.sourceRanges entries must be CIDRs");
    }
}

#[test]
fn aws_implicit_tls_takes_one_more_listener() {
    let mut aws = valid();
    aws.spec.load_balancer = LoadBalancerSpec {
        provider: Provider::Aws,
        ..LoadBalancerSpec::default()
    };
    aws.spec.keepalive = None;
    aws.spec.passive_ports = PassivePorts {
        min: 20000,
        max: 20048,
        per_replica: None,
    };
    aws.spec.tls = Some(TlsSpec {
        secret_ref: SecretRef {
            name: "ftp-tls".into(),
        },
        required: true,
        implicit: true,
        implicit_port: 990,
        require_session_reuse: true,
    });
    // 49 passive + control + implicit FTPS = 51 listeners: refused at admission.
    assert_rejected(aws.clone(), "one fewer with tls.implicit");
    aws.spec.passive_ports.max = 20047;
    assert_eq!(broken_rules(&aws), "");
    crate::lb::check_limits(&aws.spec).unwrap();
    // SFTP is one more listener: 48 passive + control + implicit FTPS + SFTP = 51.
    aws.spec.sftp = Some(SftpSpec {
        enabled: true,
        port: 22,
    });
    assert_rejected(aws.clone(), "one fewer with sftp");
    assert!(crate::lb::check_limits(&aws.spec).is_err());
    aws.spec.passive_ports.max = 20046;
    assert_eq!(broken_rules(&aws), "");
    crate::lb::check_limits(&aws.spec).unwrap();
}

#[test]
fn the_sftp_port_must_stand_apart() {
    let mut server = valid();
    let sftp: SftpSpec = serde_yaml::from_str("{}").unwrap();
    assert_eq!(
        sftp,
        SftpSpec {
            enabled: true,
            port: 22
        },
        "spec.sftp: {{}} turns SFTP on at port 22"
    );
    server.spec.sftp = Some(sftp);
    assert_eq!(broken_rules(&server), "");
    for clash in [21, 20005] {
        server.spec.sftp.as_mut().unwrap().port = clash;
        assert_rejected(
            server.clone(),
            "sftp.port must differ from controlPort and tls.implicitPort",
        );
    }
    server.spec.sftp.as_mut().unwrap().port = 22;
    server.spec.passive_ports = PassivePorts {
        min: 2200,
        max: 2229,
        per_replica: None,
    };
    assert_rejected(server.clone(), "must not include 2222 when sftp is enabled");
    assert_eq!(POD_SFTP_PORT, 2222, "the rule's literal is the pod's port");
    server.spec.sftp.as_mut().unwrap().enabled = false;
    assert_eq!(broken_rules(&server), "");
}

#[test]
fn pod_labels_may_not_take_the_selector_labels() {
    for key in RESERVED_POD_LABELS {
        let mut server = valid();
        server.spec.pod_labels = BTreeMap::from([(key.to_owned(), "x".to_owned())]);
        assert_rejected(server, "podLabels must not set");
    }
    let mut server = valid();
    server.spec.pod_labels = BTreeMap::from([("team".to_owned(), "files".to_owned())]);
    assert_eq!(broken_rules(&server), "");
}

#[test]
fn platform_pod_settings_are_checked_at_admission() {
    let mut server = valid();
    server.spec.service_account_name = Some("Not_A_Name".into());
    assert_rejected(server, "serviceAccountName must be a ServiceAccount's name");
    let mut server = valid();
    server.spec.priority_class_name = Some("high priority".into());
    assert_rejected(server, "priorityClassName must be a PriorityClass's name");
    let mut server = valid();
    server.spec.image_pull_secrets = vec![LocalObjectReference {
        name: String::new(),
    }];
    assert_rejected(server, "imagePullSecrets entries must name a Secret");
    let mut server = valid();
    server.spec.service_account_name = Some("ftp-files".into());
    server.spec.priority_class_name = Some("system-cluster-critical".into());
    server.spec.image_pull_secrets = vec![LocalObjectReference {
        name: "regcred".into(),
    }];
    assert_eq!(broken_rules(&server), "");
}
