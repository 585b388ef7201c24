//! The command-line flags of `ftp-server` and how they override the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use ipnet::IpNet;

use super::config::{ConfigError, PassiveRange, ServerConfig, Tls};

/// Flags; each one given overrides the config file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ServerFlags {
    /// Control connection listen address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Directory every session is confined to.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Passive data port range.
    #[arg(long, value_name = "MIN-MAX")]
    pub passive_ports: Option<PassiveRange>,
    /// Address advertised in PASV replies: an IP or a DNS name.
    #[arg(long, value_name = "HOST")]
    pub public_address: Option<String>,
    /// Allow read-only anonymous login to the root.
    #[arg(long)]
    pub anonymous: bool,
    /// Users file: lines name:PHC-hash[:ACCESS[:HOME]], or [[user]] TOML tables with limits.
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    #[arg(long, value_name = "SECS")]
    pub keepalive_idle: Option<u32>,
    #[arg(long, value_name = "SECS")]
    pub keepalive_interval: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keepalive_probes: Option<u32>,
    /// PEM certificate chain for AUTH TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for AUTH TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Refuse login before AUTH TLS and unprotected data connections.
    #[arg(long)]
    pub require_tls: bool,
    /// Also serve implicit FTPS (TLS from the first byte), on port 990 unless
    /// --implicit-tls-listen says otherwise.
    #[arg(long)]
    pub implicit_tls: bool,
    /// Address of the implicit FTPS listener (implies --implicit-tls).
    #[arg(long, value_name = "ADDR:PORT")]
    pub implicit_tls_listen: Option<SocketAddr>,
    /// Read a PROXY protocol header (v1 or v2) on connections from these balancer addresses;
    /// repeat the flag or separate CIDRs with commas.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub proxy_protocol_from: Vec<IpNet>,
    /// Whether a protected data connection must resume its control connection's TLS session
    /// (default true; false for clients that cannot resume, such as Python's stock ftplib).
    #[arg(long, value_name = "BOOL")]
    pub require_tls_session_reuse: Option<bool>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// This server's replica number (a StatefulSet ordinal): with `passive_ports_per_replica`
    /// it advertises only its own slice of the passive range.
    #[arg(long, value_name = "N")]
    pub replica_index: Option<u32>,
    /// Also serve SFTP, on port 2222 unless --sftp-listen says otherwise (needs host keys).
    #[arg(long)]
    pub sftp: bool,
    /// Address of the SFTP listener (implies --sftp).
    #[arg(long, value_name = "ADDR:PORT")]
    pub sftp_listen: Option<SocketAddr>,
    /// OpenSSH private host key for SFTP; repeat for each key type (implies --sftp).
    #[arg(long, value_name = "FILE")]
    pub sftp_host_key: Vec<PathBuf>,
    /// Config file (TOML), re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ServerFlags {
    /// The configuration to run: the file's (if any) with every given flag applied on top.
    pub fn merge(&self, file: Option<ServerConfig>) -> Result<ServerConfig, ConfigError> {
        let mut config = match file {
            Some(config) => config,
            None => {
                let root = self.root.clone().ok_or_else(|| {
                    ConfigError::Invalid("give --root DIR (or --config FILE)".into())
                })?;
                let ports = self.passive_ports.ok_or_else(|| {
                    ConfigError::Invalid("give --passive-ports MIN-MAX (or --config FILE)".into())
                })?;
                ServerConfig::new(root, ports)
            }
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(root) = &self.root {
            config.root = root.clone();
        }
        if let Some(ports) = self.passive_ports {
            config.passive_ports = ports;
        }
        if let Some(address) = &self.public_address {
            config.public_address = Some(address.clone());
        }
        if self.anonymous {
            config.anonymous.enabled = true;
        }
        if let Some(users) = &self.users {
            config.users_file = Some(users.clone());
        }
        if let Some(idle) = self.keepalive_idle {
            config.keepalive.idle_seconds = idle;
        }
        if let Some(interval) = self.keepalive_interval {
            config.keepalive.interval_seconds = interval;
        }
        if let Some(probes) = self.keepalive_probes {
            config.keepalive.probes = probes;
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = config.tls.take().unwrap_or_else(|| Tls::new(cert, key));
                config.tls = Some(Tls {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                    ..tls
                });
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "give --tls-cert and --tls-key together".into(),
                ));
            }
        }
        if self.require_tls {
            match &mut config.tls {
                Some(tls) => tls.required = true,
                None => {
                    return Err(ConfigError::Invalid(
                        "--require-tls needs --tls-cert and --tls-key (or tls in the config file)"
                            .into(),
                    ));
                }
            }
        }
        if self.implicit_tls || self.implicit_tls_listen.is_some() {
            let Some(tls) = &mut config.tls else {
                return Err(ConfigError::Invalid(
                    "--implicit-tls needs --tls-cert and --tls-key (or tls in the config file)"
                        .into(),
                ));
            };
            tls.implicit = true;
            if let Some(listen) = self.implicit_tls_listen {
                tls.implicit_listen = listen;
            }
        }
        if !self.proxy_protocol_from.is_empty() {
            config.proxy_protocol_from = self.proxy_protocol_from.clone();
        }
        if let Some(reuse) = self.require_tls_session_reuse {
            match &mut config.tls {
                Some(tls) => tls.require_session_reuse = reuse,
                None => {
                    return Err(ConfigError::Invalid(
                        "--require-tls-session-reuse needs --tls-cert and --tls-key (or tls in the config file)"
                            .into(),
                    ));
                }
            }
        }
        if let Some(metrics) = self.metrics_listen {
            config.metrics_listen = metrics;
        }
        if let Some(index) = self.replica_index {
            config.replica_index = Some(index);
        }
        if self.sftp || self.sftp_listen.is_some() || !self.sftp_host_key.is_empty() {
            let sftp = config.sftp.get_or_insert_with(Default::default);
            sftp.enabled = true;
            if let Some(listen) = self.sftp_listen {
                sftp.listen = listen;
            }
            if !self.sftp_host_key.is_empty() {
                sftp.host_key_files = self.sftp_host_key.clone();
            }
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_config() -> ServerConfig {
        let mut config = ServerConfig::new("/srv/file", PassiveRange::new(30000, 30009).unwrap());
        config.public_address = Some("file.example".into());
        config
    }

    #[test]
    fn flags_alone_need_root_and_ports() {
        let error = ServerFlags::default().merge(None).unwrap_err().to_string();
        assert!(error.contains("--root"), "{error}");
        let flags = ServerFlags {
            root: Some("/srv".into()),
            passive_ports: Some(PassiveRange::new(40000, 40001).unwrap()),
            anonymous: true,
            ..Default::default()
        };
        let config = flags.merge(None).unwrap();
        assert!(config.anonymous.enabled);
        assert!(!config.anonymous.writable);
        assert_eq!(config.public_address, None);
    }

    #[test]
    fn flags_override_the_file_and_the_rest_is_kept() {
        let flags = ServerFlags {
            public_address: Some("203.0.113.9".into()),
            keepalive_idle: Some(0),
            ..Default::default()
        };
        let config = flags.merge(Some(file_config())).unwrap();
        assert_eq!(config.public_address.as_deref(), Some("203.0.113.9"));
        assert!(config.proxy_protocol_from.is_empty());
        assert_eq!(config.keepalive.idle_seconds, 0);
        assert_eq!(config.root, PathBuf::from("/srv/file"));
        assert_eq!(
            config.passive_ports,
            PassiveRange::new(30000, 30009).unwrap()
        );
    }

    #[test]
    fn sftp_flags_turn_sftp_on_and_need_a_host_key() {
        let flags = ServerFlags {
            sftp: true,
            ..Default::default()
        };
        let error = flags.merge(Some(file_config())).unwrap_err().to_string();
        assert!(error.contains("generate-host-key"), "{error}");
        let flags = ServerFlags {
            sftp_listen: Some("127.0.0.1:2022".parse().unwrap()),
            sftp_host_key: vec!["/keys/ed25519".into(), "/keys/ecdsa".into()],
            ..Default::default()
        };
        let sftp = flags.merge(Some(file_config())).unwrap().sftp.unwrap();
        assert_eq!(
            sftp.enabled_listen(),
            Some("127.0.0.1:2022".parse().unwrap())
        );
        assert_eq!(sftp.host_key_files.len(), 2);
        let clash = ServerFlags {
            sftp_listen: Some("0.0.0.0:2121".parse().unwrap()),
            ..flags
        };
        let error = clash.merge(Some(file_config())).unwrap_err().to_string();
        assert!(error.contains("port of its own"), "{error}");
    }

    #[test]
    fn replica_index_flag_picks_the_slice_of_the_file_range() {
        let mut file = file_config();
        file.passive_ports_per_replica = Some(5);
        let flags = ServerFlags {
            replica_index: Some(1),
            ..Default::default()
        };
        let config = flags.merge(Some(file.clone())).unwrap();
        assert_eq!(
            config.own_passive_ports().unwrap(),
            PassiveRange::new(30005, 30009).unwrap()
        );
        let error = ServerFlags::default().merge(Some(file)).unwrap_err();
        assert!(error.to_string().contains("--replica-index"), "{error}");
    }

    #[test]
    fn tls_flags_come_in_pairs_and_require_tls_needs_them() {
        let half = ServerFlags {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(half.merge(Some(file_config())).is_err());
        let required = ServerFlags {
            require_tls: true,
            ..Default::default()
        };
        assert!(required.merge(Some(file_config())).is_err());
        let both = ServerFlags {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            require_tls: true,
            ..Default::default()
        };
        let tls = both.merge(Some(file_config())).unwrap().tls.unwrap();
        assert!(tls.required);
        assert!(
            tls.require_session_reuse,
            "session reuse is required by default"
        );
        assert_eq!(tls.implicit_listen(), None);
        let implicit = ServerFlags {
            implicit_tls_listen: Some("127.0.0.1:9990".parse().unwrap()),
            ..both.clone()
        };
        let tls = implicit.merge(Some(file_config())).unwrap().tls.unwrap();
        assert_eq!(
            tls.implicit_listen(),
            Some("127.0.0.1:9990".parse().unwrap())
        );
        let without_certificate = ServerFlags {
            implicit_tls: true,
            ..Default::default()
        };
        assert!(without_certificate.merge(Some(file_config())).is_err());
        let opt_out = ServerFlags {
            require_tls_session_reuse: Some(false),
            ..both
        };
        let tls = opt_out.merge(Some(file_config())).unwrap().tls.unwrap();
        assert!(!tls.require_session_reuse);
        let alone = ServerFlags {
            require_tls_session_reuse: Some(false),
            ..Default::default()
        };
        assert!(alone.merge(Some(file_config())).is_err());
    }
}
