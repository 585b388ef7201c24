//! The ConfigMap holding the ftp-server's configuration file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use crate::api::{FtpServer, LimitsSpec};
use crate::ftp::config::{
    Anonymous, AzureBlobStorage, CONFIG_FILE_NAME, Limits, POD_IMPLICIT_TLS_PORT, POD_SFTP_PORT,
    ProbeUser, S3Storage, ServerConfig, Sftp, Tls,
};

use super::{DATA_DIR, SFTP_HOST_KEYS_DIR, TLS_DIR, USERS_DIR, USERS_KEY, owned_metadata};
use crate::controller::sftp_host_keys::{HOST_KEYS, sftp_enabled};
use crate::controller::validate::Validated;

pub fn config_map_name(server: &FtpServer) -> String {
    format!("{}-config", server.name_any())
}

/// The server's configuration: listener on the in-pod control port, the passive range, the
/// address to advertise, keepalive, and where the mounted Secrets are.
pub fn desired_server_config(
    server: &FtpServer,
    valid: &Validated,
    public_address: Option<&str>,
    probe_user: Option<&ProbeUser>,
) -> ServerConfig {
    let spec = &server.spec;
    let mut config = ServerConfig::new(DATA_DIR, valid.passive);
    config.public_address = public_address.map(str::to_owned);
    config.probe_user = probe_user.cloned();
    config.keepalive = valid.keepalive;
    config.passive_ports_per_replica = valid.per_replica;
    // A pod being replaced lets its transfers run this long; its termination grace is longer.
    config.limits.shutdown_grace_seconds = u32::try_from(spec.drain_seconds).unwrap_or(0);
    if let Some(limits) = &spec.limits {
        apply_limits(&mut config.limits, limits);
    }
    // The generated users Secret (FtpUsers and spec.users together) is always mounted.
    config.users_file = Some(Path::new(USERS_DIR).join(USERS_KEY));
    config.anonymous = Anonymous {
        enabled: spec.anonymous.enabled,
        writable: spec.anonymous.writable,
        home: spec.anonymous.home.clone(),
    };
    // The apiserver's CEL rules refuse anything but CIDRs here.
    config.proxy_protocol_from = spec
        .load_balancer
        .proxy_protocol
        .iter()
        .flat_map(|proxy| &proxy.trusted_sources)
        .filter_map(|cidr| cidr.parse().ok())
        .collect();
    config.tls = spec.tls.as_ref().map(|tls| Tls {
        required: tls.required,
        implicit: tls.implicit,
        implicit_listen: SocketAddr::from(([0, 0, 0, 0], POD_IMPLICIT_TLS_PORT)),
        require_session_reuse: tls.require_session_reuse,
        ..Tls::new(
            Path::new(TLS_DIR).join("tls.crt"),
            Path::new(TLS_DIR).join("tls.key"),
        )
    });
    config.storage.s3 = spec
        .storage
        .as_ref()
        .and_then(|storage| storage.s3.as_ref())
        .map(|s3| S3Storage {
            prefix: s3.prefix.clone().unwrap_or_default(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            path_style: s3.force_path_style.unwrap_or(false),
            ..S3Storage::new(&s3.bucket)
        });
    config.storage.azure_blob = spec
        .storage
        .as_ref()
        .and_then(|storage| storage.azure_blob.as_ref())
        .map(|azure| AzureBlobStorage {
            prefix: azure.prefix.clone().unwrap_or_default(),
            endpoint: azure.endpoint.clone(),
            ..AzureBlobStorage::new(&azure.account, &azure.container)
        });
    // Keys users log in with are `NAME.authorized_keys` entries of the users Secret, mounted
    // beside the users file, where the server looks by default.
    config.sftp = sftp_enabled(server).then(|| Sftp {
        enabled: true,
        listen: SocketAddr::from(([0, 0, 0, 0], POD_SFTP_PORT)),
        host_key_files: HOST_KEYS
            .iter()
            .map(|key| Path::new(SFTP_HOST_KEYS_DIR).join(key))
            .collect(),
        // spec.limits' timeouts hold for SFTP sessions as for FTP's.
        idle_timeout_seconds: config.limits.idle_timeout_seconds,
        login_timeout_seconds: config.limits.login_timeout_seconds,
        ..Sftp::default()
    });
    config
}

/// The limits the user set, over the server's defaults: the file shows every value in force.
fn apply_limits(limits: &mut Limits, spec: &LimitsSpec) {
    // The apiserver's CEL rules refuse negative values; one stored before them keeps the default.
    let set = |target: &mut u32, value: Option<i32>| {
        if let Some(value) = value.and_then(|value| u32::try_from(value).ok()) {
            *target = value;
        }
    };
    set(&mut limits.max_sessions, spec.max_sessions);
    set(
        &mut limits.max_sessions_per_address,
        spec.max_sessions_per_address,
    );
    set(&mut limits.idle_timeout_seconds, spec.idle_timeout_seconds);
    set(
        &mut limits.login_timeout_seconds,
        spec.login_timeout_seconds,
    );
    set(
        &mut limits.data_connect_timeout_seconds,
        spec.data_connect_timeout_seconds,
    );
    set(
        &mut limits.login_failures_before_lockout,
        spec.login_failures_before_lockout,
    );
    set(
        &mut limits.login_failure_window_seconds,
        spec.login_failure_window_seconds,
    );
    set(&mut limits.lockout_seconds, spec.lockout_seconds);
    set(
        &mut limits.login_failure_delay_millis,
        spec.login_failure_delay_millis,
    );
}

pub fn desired_config_map(
    server: &FtpServer,
    valid: &Validated,
    public_address: Option<&str>,
    probe_user: Option<&ProbeUser>,
) -> ConfigMap {
    let config = desired_server_config(server, valid, public_address, probe_user);
    ConfigMap {
        metadata: owned_metadata(server, config_map_name(server)),
        data: Some(BTreeMap::from([(
            CONFIG_FILE_NAME.to_owned(),
            config.render(),
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server, validated};

    fn rendered(config_map: &ConfigMap) -> ServerConfig {
        let text = &config_map.data.as_ref().unwrap()[CONFIG_FILE_NAME];
        let config: ServerConfig = toml::from_str(text).unwrap();
        // Each pod adds its ordinal with --replica-index.
        let mut in_pod = config.clone();
        in_pod.replica_index = Some(0);
        in_pod.validate().unwrap();
        config
    }

    #[test]
    fn sftp_renders_the_listener_and_the_mounted_host_keys() {
        let mut server = server(fixtures::FULL);
        server.spec.limits = Some(serde_yaml::from_str("{idleTimeoutSeconds: 120}").unwrap());
        let valid = fixtures::validated(&server);
        assert_eq!(
            rendered(&desired_config_map(&server, &valid, None, None)).sftp,
            None
        );
        server.spec.sftp = Some(serde_yaml::from_str("{}").unwrap());
        let config = rendered(&desired_config_map(&server, &valid, None, None));
        let sftp = config.sftp.unwrap();
        assert_eq!(sftp.enabled_listen(), Some("0.0.0.0:2222".parse().unwrap()));
        assert_eq!(
            sftp.host_key_files,
            [
                "/etc/ftp-sftp-host-keys/ssh_host_ed25519_key",
                "/etc/ftp-sftp-host-keys/ssh_host_ecdsa_key"
            ]
            .map(std::path::PathBuf::from)
        );
        // The users' authorized keys are read beside the users file, in the users Secret.
        assert_eq!(sftp.authorized_keys_dir, None);
        assert_eq!(
            config.users_file.as_deref(),
            Some(Path::new("/etc/ftp-users/users"))
        );
        assert_eq!(sftp.idle_timeout_seconds, 120);
    }

    #[test]
    fn full_spec_renders_every_setting_the_server_reads() {
        let server = server(fixtures::FULL);
        let probe = ProbeUser {
            name: "ftp-operator-probe-00".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        };
        let cm = desired_config_map(
            &server,
            &validated(&server),
            Some("contosoftp.cloudapp.net"),
            Some(&probe),
        );
        assert_eq!(cm.metadata.name.as_deref(), Some("contoso-config"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("ftp"));
        let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("FtpServer", Some(true))
        );

        let config = rendered(&cm);
        assert_eq!(config.listen.to_string(), "0.0.0.0:2121");
        assert_eq!(config.passive_ports.to_string(), "20000-20019");
        assert_eq!(
            config.public_address.as_deref(),
            Some("contosoftp.cloudapp.net")
        );
        assert_eq!(
            (
                config.keepalive.idle_seconds,
                config.keepalive.interval_seconds,
                config.keepalive.probes
            ),
            (45, 5, 4)
        );
        assert_eq!(
            config.users_file.unwrap(),
            Path::new("/etc/ftp-users/users")
        );
        assert!(config.anonymous.enabled && !config.anonymous.writable);
        assert_eq!(config.anonymous.home.as_deref(), Some("pub"));
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/ftp-tls/tls.crt"));
        assert_eq!(tls.key_file, Path::new("/etc/ftp-tls/tls.key"));
        assert!(tls.required);
        assert_eq!(tls.implicit_listen(), Some("0.0.0.0:9990".parse().unwrap()));
        assert!(
            tls.require_session_reuse,
            "session reuse is required unless opted out"
        );
        assert_eq!(config.root, Path::new("/srv/ftp"));
        assert_eq!(config.passive_ports_per_replica, Some(10));
        assert_eq!(config.replica_index, None);
        assert_eq!(config.limits.shutdown_grace_seconds, 600);
        // The probe account beside the user's own users file, which stays as it was.
        assert_eq!(config.probe_user, Some(probe));
    }

    #[test]
    fn tls_session_reuse_opt_out_is_rendered() {
        let yaml = fixtures::FULL.replace(
            "required: true, implicit: true}",
            "required: true, implicit: true, requireSessionReuse: false}",
        );
        assert_ne!(yaml, fixtures::FULL, "fixture changed: update this test");
        let server = server(&yaml);
        let config = rendered(&desired_config_map(
            &server,
            &validated(&server),
            None,
            None,
        ));
        assert!(!config.tls.unwrap().require_session_reuse);
    }

    #[test]
    fn minimal_spec_without_an_address_yet_renders_none() {
        let server = server(fixtures::MINIMAL);
        let config = rendered(&desired_config_map(
            &server,
            &validated(&server),
            None,
            None,
        ));
        assert_eq!(config.public_address, None);
        // The generated users Secret is mounted even before the first user.
        assert_eq!(
            config.users_file.as_deref(),
            Some(Path::new("/etc/ftp-users/users"))
        );
        assert_eq!(config.tls, None);
        assert_eq!(config.keepalive.idle_seconds, 450);
        assert!(config.proxy_protocol_from.is_empty());
    }

    #[test]
    fn s3_storage_reaches_the_file_and_local_storage_writes_no_table() {
        let on_s3 = server(fixtures::S3);
        let config = rendered(&desired_config_map(&on_s3, &validated(&on_s3), None, None));
        let s3 = config.storage.s3.expect("storage.s3 rendered");
        assert_eq!(s3.bucket, "contoso-ftp");
        assert_eq!(s3.prefix, "tenants/contoso");
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            s3.endpoint.as_deref(),
            Some("https://s3.eu-west-1.amazonaws.com")
        );
        assert!(s3.path_style);
        assert_eq!(s3.part_size_bytes, S3Storage::new("x").part_size_bytes);
        // Credentials never go into the ConfigMap.
        let text = &desired_config_map(&on_s3, &validated(&on_s3), None, None)
            .data
            .unwrap()[CONFIG_FILE_NAME];
        assert!(!text.contains("ftp-s3") && !text.contains("AWS_"), "{text}");

        let local = server(fixtures::MINIMAL);
        let text = &desired_config_map(&local, &validated(&local), None, None)
            .data
            .unwrap()[CONFIG_FILE_NAME];
        assert!(!text.contains("storage"), "{text}");
    }

    #[test]
    fn azure_blob_storage_reaches_the_file() {
        let on_azure = server(fixtures::AZURE_BLOB);
        let config = rendered(&desired_config_map(
            &on_azure,
            &validated(&on_azure),
            None,
            None,
        ));
        assert_eq!(config.storage.s3, None);
        let azure = config
            .storage
            .azure_blob
            .expect("storage.azure_blob rendered");
        assert_eq!(
            (azure.account.as_str(), azure.container.as_str()),
            ("contosoftp", "files")
        );
        assert_eq!(azure.prefix, "ftp");
        assert_eq!(azure.endpoint(), "https://contosoftp.blob.core.windows.net");
    }

    #[test]
    fn aws_proxy_protocol_sources_reach_the_file() {
        let server = server(fixtures::AWS);
        let config = rendered(&desired_config_map(
            &server,
            &validated(&server),
            None,
            None,
        ));
        assert_eq!(
            config.proxy_protocol_from,
            vec!["10.0.0.0/16".parse::<ipnet::IpNet>().unwrap()]
        );
    }

    #[test]
    fn limits_set_in_the_spec_reach_the_file_over_the_servers_defaults() {
        let yaml = fixtures::MINIMAL.replace(
            "spec:\n",
            "spec:\n  limits: {maxSessions: 200, maxSessionsPerAddress: 4, idleTimeoutSeconds: 120, \
             loginTimeoutSeconds: 20, dataConnectTimeoutSeconds: 10, \
             loginFailuresBeforeLockout: 0, loginFailureWindowSeconds: 60, lockoutSeconds: 30, \
             loginFailureDelayMillis: 250}\n",
        );
        assert_ne!(yaml, fixtures::MINIMAL, "fixture changed: update this test");
        let server = server(&yaml);
        let config = rendered(&desired_config_map(
            &server,
            &validated(&server),
            None,
            None,
        ));
        assert_eq!(
            config.limits,
            Limits {
                max_sessions: 200,
                max_sessions_per_address: 4,
                idle_timeout_seconds: 120,
                login_timeout_seconds: 20,
                data_connect_timeout_seconds: 10,
                login_failures_before_lockout: 0,
                login_failure_window_seconds: 60,
                lockout_seconds: 30,
                login_failure_delay_millis: 250,
                shutdown_grace_seconds: 600,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn limits_left_out_keep_the_servers_defaults() {
        let yaml = fixtures::MINIMAL.replace("spec:\n", "spec:\n  limits: {lockoutSeconds: 60}\n");
        assert_ne!(yaml, fixtures::MINIMAL, "fixture changed: update this test");
        let lockout_only = server(&yaml);
        let config = rendered(&desired_config_map(
            &lockout_only,
            &validated(&lockout_only),
            None,
            None,
        ));
        assert_eq!(
            config.limits,
            Limits {
                lockout_seconds: 60,
                shutdown_grace_seconds: 600,
                ..Limits::default()
            }
        );
        // No limits at all: only the shutdown grace, which drainSeconds sets, differs.
        let no_limits = server(fixtures::MINIMAL);
        let config = rendered(&desired_config_map(
            &no_limits,
            &validated(&no_limits),
            None,
            None,
        ));
        assert_eq!(
            config.limits,
            Limits {
                shutdown_grace_seconds: 600,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn the_address_reaches_the_file() {
        let server = server(fixtures::MINIMAL);
        let config = rendered(&desired_config_map(
            &server,
            &validated(&server),
            Some("20.50.1.7"),
            None,
        ));
        assert_eq!(config.public_address.as_deref(), Some("20.50.1.7"));
    }
}
