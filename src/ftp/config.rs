//! The ftp-server configuration file: the one seam between the two wings of the project.
//!
//! The controller renders a [`ServerConfig`] into the FtpServer's ConfigMap; the server reads it
//! (and re-reads it when the mounted ConfigMap is swapped). Nothing else is shared, so this file is
//! the whole contract: add fields with defaults, never rename one.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// File name of the configuration inside the ConfigMap and its mount directory.
pub const CONFIG_FILE_NAME: &str = "ftp-server.toml";

/// Port the server's control connection listens on inside a pod. Unprivileged, so the container
/// runs as non-root without `NET_BIND_SERVICE`; the Service maps the public control port to it.
pub const DEFAULT_CONTROL_PORT: u16 = 2121;

/// Port of the metrics and health endpoints inside a pod.
pub const DEFAULT_METRICS_PORT: u16 = 9100;

/// Port of the implicit FTPS listener when the config names none (the registered `ftps` port).
pub const DEFAULT_IMPLICIT_TLS_PORT: u16 = 990;

/// Port the implicit FTPS listener uses inside a pod, unprivileged like the control port; the
/// Service maps the public implicit port (990 by default) to it.
pub const POD_IMPLICIT_TLS_PORT: u16 = 9990;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything the server needs to run. Field names are the file's keys (snake_case TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the control connection listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory every session is confined to.
    pub root: PathBuf,
    /// Ports passive data connections listen on; the balancer forwards exactly these.
    pub passive_ports: PassiveRange,
    /// Address advertised in `227` replies: an IP, or a DNS name resolved when the reply is made.
    /// Absent: the local address of the control connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    #[serde(default)]
    pub keepalive: Keepalive,
    /// Users file: lines `name:PHC-hash[:ACCESS[:HOME]]` (ACCESS `ro`, `rw`, `incoming` or a list
    /// such as `list,download,upload`; HOME relative to `root`, created at first login), or
    /// `[[user]]` tables with per-user limits (see `auth::users_toml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    #[serde(default)]
    pub anonymous: Anonymous,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Address of the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub active_mode: ActiveMode,
    /// With several replicas behind one address: each uses only its own slice of
    /// `passive_ports`, this many ports long; replica `i` owns ports
    /// `min + i*n ..= min + (i+1)*n - 1`. Absent: the whole range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_ports_per_replica: Option<u16>,
    /// This server's replica number (a StatefulSet ordinal), usually given by `--replica-index`;
    /// needed when `passive_ports_per_replica` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_index: Option<u32>,
    /// Balancer addresses (CIDRs) whose connections start with a PROXY protocol header (v1 or
    /// v2) carrying the client's address; a connection from one without a valid header is
    /// dropped. Empty: PROXY protocol off, no header is ever read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_protocol_from: Vec<IpNet>,
    /// Allow `SITE CHMOD` (permission bits only) for users who may write. Off by default: mode
    /// changes are rarely what a file drop needs, and a world-writable file is a risk.
    #[serde(default)]
    pub site_chmod: bool,
    /// The operator's probe account, beside `users_file` (which stays the user's alone): it may
    /// only list, confined to an empty home of its own ([`PROBE_HOME`]). Absent: no probe login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_user: Option<ProbeUser>,
    /// Where the files live when not beneath `root` on the local disk: an object store. Absent:
    /// `root`.
    #[serde(default, skip_serializing_if = "StorageConfig::is_local")]
    pub storage: StorageConfig,
    /// SFTP beside FTP, on a listener of its own, over the same users, homes and storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp: Option<Sftp>,
}

/// The storage back-end: at most one kind set; none is the local disk at `root`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_blob: Option<AzureBlobStorage>,
}

impl StorageConfig {
    pub fn is_local(&self) -> bool {
        self.s3.is_none() && self.azure_blob.is_none()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.s3.is_some() && self.azure_blob.is_some() {
            return Err(ConfigError::Invalid(
                "storage.s3 and storage.azure_blob are both set: keep the one the files live in"
                    .into(),
            ));
        }
        if let Some(s3) = &self.s3 {
            s3.validate()?;
        }
        if let Some(azure) = &self.azure_blob {
            azure.validate()?;
        }
        Ok(())
    }
}

/// An Azure Blob Storage container. Credentials are never in this file: they come from the
/// environment (`AZURE_STORAGE_ACCOUNT_KEY` or `AZURE_STORAGE_SAS_TOKEN`, or, with neither,
/// Azure workload identity: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
/// `AZURE_FEDERATED_TOKEN_FILE`, as AKS injects them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobStorage {
    /// The storage account.
    pub account: String,
    pub container: String,
    /// Name prefix every home lives beneath; empty: the container's top.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The Blob endpoint URL; absent: `https://<account>.blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Size of each staged block, in bytes: what one upload holds in memory (at most two
    /// blocks). Azure allows 50,000 blocks per blob, so the default 8 MiB allows about 390 GiB.
    #[serde(default = "default_part_size_bytes")]
    pub block_size_bytes: u64,
}

/// Azure's largest staged block: 4000 MiB.
pub const AZURE_MAX_BLOCK_SIZE: u64 = 4000 * 1024 * 1024;

impl AzureBlobStorage {
    pub fn new(account: impl Into<String>, container: impl Into<String>) -> AzureBlobStorage {
        AzureBlobStorage {
            account: account.into(),
            container: container.into(),
            prefix: String::new(),
            endpoint: None,
            block_size_bytes: default_part_size_bytes(),
        }
    }

    /// Where the Blob service answers.
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", self.account))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.account.trim().is_empty() || self.container.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "storage.azure_blob needs account and container: name the storage account and \
                 the container the files live in"
                    .into(),
            ));
        }
        if !(1..=AZURE_MAX_BLOCK_SIZE).contains(&self.block_size_bytes) {
            return Err(ConfigError::Invalid(format!(
                "storage.azure_blob.block_size_bytes = {} is outside what Azure accepts for a \
                 block: give 1 to {AZURE_MAX_BLOCK_SIZE} (4000 MiB)",
                self.block_size_bytes
            )));
        }
        Ok(())
    }
}

/// An S3 bucket (or an S3-compatible server). Credentials are never in this file: they come
/// from the standard AWS environment (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or
/// `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` as EKS injects for a service account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Storage {
    pub bucket: String,
    /// Key prefix every home lives beneath (`ftp/` or `tenants/contoso`); empty: the bucket's
    /// top.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The S3 endpoint URL; absent: AWS's for the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Absent: `AWS_REGION` from the environment, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Address the bucket in the URL's path (`endpoint/bucket/key`), as most S3-compatible
    /// servers need, rather than as a host name (`bucket.endpoint/key`).
    #[serde(default)]
    pub path_style: bool,
    /// Size of each multipart-upload part, in bytes: what one upload holds in memory (at most
    /// two parts: one being sent, one filling). S3 allows 5 MiB to 5 GiB, and 10,000 parts per
    /// object, so the default 8 MiB allows objects up to about 78 GiB.
    #[serde(default = "default_part_size_bytes")]
    pub part_size_bytes: u64,
}

/// How the server's error begins when it cannot use the configured bucket or container, at
/// startup (the container's last words) or on a reload (the rejected input): the controller
/// looks for it.
pub const OBJECT_STORAGE_ERROR: &str = "cannot use object storage";

/// S3's smallest part (but the last): 5 MiB.
pub const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part: 5 GiB.
pub const S3_MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

fn default_part_size_bytes() -> u64 {
    8 * 1024 * 1024
}

impl S3Storage {
    pub fn new(bucket: impl Into<String>) -> S3Storage {
        S3Storage {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            part_size_bytes: default_part_size_bytes(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bucket.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "storage.s3.bucket is empty: name the bucket the files live in".into(),
            ));
        }
        if !(S3_MIN_PART_SIZE..=S3_MAX_PART_SIZE).contains(&self.part_size_bytes) {
            return Err(ConfigError::Invalid(format!(
                "storage.s3.part_size_bytes = {} is outside what S3 accepts for a part: give \
                 {S3_MIN_PART_SIZE} (5 MiB) to {S3_MAX_PART_SIZE} (5 GiB)",
                self.part_size_bytes
            )));
        }
        Ok(())
    }
}

/// Home of the probe account, beneath `root`: a directory of its own, so its listings show
/// nothing of the users' files.
pub const PROBE_HOME: &str = ".ftp-operator-probe";

/// The probe account: a name and an argon2id PHC hash (the password itself stays in the
/// operator's Secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeUser {
    pub name: String,
    pub password_hash: String,
}

/// Where the server's metrics port answers which configuration it serves: the digest alone as
/// text, or a [`ServedConfig`] to a request that accepts [`SERVED_CONFIG_MEDIA_TYPE`].
pub const SERVED_CONFIG_PATH: &str = "/config-digest";
pub const SERVED_CONFIG_MEDIA_TYPE: &str = "application/json";

/// `sha256:<hex>` of a configuration file's contents: what the server reports as served, and
/// what the controller computes from the ConfigMap to tell whether a pod serves it yet.
pub fn config_digest(contents: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, contents);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// What the server serves, and what it could not load: a change to the users file or the TLS
/// files that does not load leaves the previous settings in effect, so only this tells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedConfig {
    /// [`config_digest`] of the configuration file in effect; None without one.
    pub digest: Option<String>,
    /// The last reload's failure; None once the files load again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<RejectedInput>,
}

/// A file that changed and could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedInput {
    pub file: InputFile,
    /// The line at fault, when the error names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub reason: String,
}

/// The files the settings are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFile {
    /// This configuration file, or the root directory it names.
    Config,
    Users,
    /// The TLS certificate or key.
    Tls,
    /// The object storage the configuration names (`storage.s3`): its bucket could not be used.
    ObjectStorage,
    /// A file a newer server names.
    #[serde(other)]
    Other,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_CONTROL_PORT))
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_METRICS_PORT))
}

/// An inclusive range of TCP ports; written `"MIN-MAX"` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveRange {
    pub min: u16,
    pub max: u16,
}

impl PassiveRange {
    pub fn new(min: u16, max: u16) -> Result<Self, ConfigError> {
        let range = PassiveRange { min, max };
        range.validate()?;
        Ok(range)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min == 0 || self.min > self.max {
            return Err(ConfigError::Invalid(format!(
                "passive port range {self} is empty or starts at 0: write MIN-MAX with 1 <= MIN <= MAX"
            )));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        usize::from(self.max - self.min) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.min..=self.max
    }
}

impl fmt::Display for PassiveRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl FromStr for PassiveRange {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            ConfigError::Invalid(format!(
                "passive port range {s:?} is not MIN-MAX (for example 20000-20019)"
            ))
        };
        let (min, max) = s.trim().split_once('-').ok_or_else(invalid)?;
        let min = min.trim().parse().map_err(|_| invalid())?;
        let max = max.trim().parse().map_err(|_| invalid())?;
        PassiveRange::new(min, max)
    }
}

/// TCP keepalive for every control and data socket. `idle_seconds = 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keepalive {
    pub idle_seconds: u32,
    pub interval_seconds: u32,
    pub probes: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle_seconds: 60,
            interval_seconds: 10,
            probes: 6,
        }
    }
}

impl Keepalive {
    pub fn enabled(&self) -> bool {
        self.idle_seconds > 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Anonymous {
    pub enabled: bool,
    pub writable: bool,
    /// Directory beneath `root` anonymous sessions are confined to; absent: the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
}

/// Explicit FTPS (`AUTH TLS`) from PEM files, re-read when they change; optionally implicit FTPS
/// (TLS from the first byte) on a listener of its own, with the same certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Refuse login before `AUTH TLS` and plain data channels.
    #[serde(default)]
    pub required: bool,
    /// Also listen for implicit FTPS on `implicit_listen`.
    #[serde(default)]
    pub implicit: bool,
    #[serde(default = "default_implicit_listen")]
    pub implicit_listen: SocketAddr,
    /// A protected data connection must resume the TLS session of its own control connection
    /// (vsftpd's `require_ssl_reuse`); off only for clients that cannot resume, such as Python's
    /// stock `ftplib`.
    #[serde(default = "default_true")]
    pub require_session_reuse: bool,
}

fn default_true() -> bool {
    true
}

fn default_implicit_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_IMPLICIT_TLS_PORT))
}

impl Tls {
    /// Explicit FTPS only, not required: what giving a certificate and key alone means.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Tls {
        Tls {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            required: false,
            implicit: false,
            implicit_listen: default_implicit_listen(),
            require_session_reuse: true,
        }
    }

    /// The implicit FTPS listener's address, when it is on.
    pub fn implicit_listen(&self) -> Option<SocketAddr> {
        self.implicit.then_some(self.implicit_listen)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_sessions: u32,
    pub max_sessions_per_address: u32,
    /// A session with no command for this long is closed; never during a transfer.
    pub idle_timeout_seconds: u32,
    /// A session not logged in this long after it connected is closed, whatever it sends.
    pub login_timeout_seconds: u32,
    /// How long a passive listener waits for the client's data connection.
    pub data_connect_timeout_seconds: u32,
    /// How long PASV/EPSV waits for a place on a passive port when every port already has a
    /// session from this client address waiting (then `425`).
    pub passive_port_wait_seconds: u32,
    /// Longest command line accepted, in bytes, CRLF included.
    pub max_command_line: u32,
    /// Failed logins from one client address (IPv6: one /64) within
    /// `login_failure_window_seconds` before that address is locked out for `lockout_seconds`;
    /// as many for one user name, from anywhere, start throttling that name (one verification at
    /// a time, with a backoff for networks that failed too), never refusing it; 0 turns both off.
    pub login_failures_before_lockout: u32,
    pub login_failure_window_seconds: u32,
    pub lockout_seconds: u32,
    /// Pause before answering a failed login, in milliseconds (slows password guessing).
    pub login_failure_delay_millis: u32,
    /// On SIGTERM, how long running transfers may take to finish.
    pub shutdown_grace_seconds: u32,
    /// The memory the server keeps to, in bytes: it sizes password verification and admits
    /// sessions from it, and refuses new sessions (`421`) near it. Absent: its cgroup's limit
    /// (a container's `resources.limits.memory`), or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 2000,
            max_sessions_per_address: 50,
            idle_timeout_seconds: 900,
            login_timeout_seconds: 60,
            data_connect_timeout_seconds: 30,
            passive_port_wait_seconds: 5,
            max_command_line: 4096,
            login_failures_before_lockout: 5,
            login_failure_window_seconds: 600,
            lockout_seconds: 300,
            login_failure_delay_millis: 1000,
            shutdown_grace_seconds: 30,
            memory_limit_bytes: None,
        }
    }
}

/// The SFTP listener (`[sftp]`): SSH with the `sftp` subsystem only (no shell, no exec, no
/// forwarding). Logins are the users file's, by password or by the keys of
/// `<authorized_keys_dir>/<name>.authorized_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sftp {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// OpenSSH private keys (unencrypted) the server proves itself with; every replica must
    /// have the same ones, or clients see "host key changed".
    pub host_key_files: Vec<PathBuf>,
    /// Where `<name>.authorized_keys` files are; absent: the users file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized_keys_dir: Option<PathBuf>,
    /// SSH channels one connection may have open at once.
    pub max_channels_per_session: u32,
    /// SFTP requests read ahead of the one being served, per channel (and at most 2 MiB of them).
    pub max_outstanding_requests: u32,
    /// The largest SFTP packet a client may send (a write's data and its header); a larger
    /// one ends the session. Reads are answered with at most this much less 1 KiB.
    pub max_packet_bytes: u32,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout_seconds: u32,
    /// A connection not logged in this long after it connected is closed.
    pub login_timeout_seconds: u32,
    /// SSH keepalive: after this long without a word from the client the server asks for one;
    /// three unanswered end the session. 0: off (TCP keepalive still runs).
    pub keepalive_interval_seconds: u32,
}

impl Default for Sftp {
    fn default() -> Self {
        Sftp {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], POD_SFTP_PORT)),
            host_key_files: Vec::new(),
            authorized_keys_dir: None,
            max_channels_per_session: 4,
            max_outstanding_requests: 64,
            max_packet_bytes: 256 * 1024,
            idle_timeout_seconds: 900,
            login_timeout_seconds: 60,
            keepalive_interval_seconds: 30,
        }
    }
}

/// The SFTP listener's port inside the pod (unprivileged; the balancer maps 22 to it).
pub const POD_SFTP_PORT: u16 = 2222;

impl Sftp {
    /// The listener's address, when SFTP is on.
    pub fn enabled_listen(&self) -> Option<SocketAddr> {
        self.enabled.then_some(self.listen)
    }

    fn validate(&self, config: &ServerConfig) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let port = self.listen.port();
        if config.passive_ports.contains(port) {
            return Err(ConfigError::Invalid(format!(
                "sftp.listen port {port} lies inside the passive range {}: move one of them",
                config.passive_ports
            )));
        }
        let implicit = config.tls.as_ref().and_then(Tls::implicit_listen);
        if port == config.listen.port() || implicit.is_some_and(|i| i.port() == port) {
            return Err(ConfigError::Invalid(format!(
                "sftp.listen port {port} is an FTP listener's too: give SFTP a port of its own \
                 ({POD_SFTP_PORT} is the usual one inside a pod)"
            )));
        }
        if self.host_key_files.is_empty() {
            return Err(ConfigError::Invalid(
                "sftp.host_key_files is empty: make keys with `ftp-server generate-host-key \
                 --type ed25519 --out FILE` and list them"
                    .into(),
            ));
        }
        if self.max_channels_per_session == 0 || self.max_outstanding_requests == 0 {
            return Err(ConfigError::Invalid(
                "sftp.max_channels_per_session and sftp.max_outstanding_requests must be at least 1"
                    .into(),
            ));
        }
        if !(34 * 1024..=16 * 1024 * 1024).contains(&self.max_packet_bytes) {
            return Err(ConfigError::Invalid(format!(
                "sftp.max_packet_bytes {} is outside 34816..=16777216 (clients write 32 KiB at a \
                 time, plus the header)",
                self.max_packet_bytes
            )));
        }
        Ok(())
    }
}

/// Active mode (PORT/EPRT): off by default; even when on, only to the client's own address
/// unless `allow_foreign_address` (FXP) is set too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveMode {
    pub enabled: bool,
    pub allow_foreign_address: bool,
}

impl ServerConfig {
    /// A configuration with defaults for everything but the root and the passive range.
    pub fn new(root: impl Into<PathBuf>, passive_ports: PassiveRange) -> Self {
        ServerConfig {
            listen: default_listen(),
            root: root.into(),
            passive_ports,
            public_address: None,
            keepalive: Keepalive::default(),
            users_file: None,
            anonymous: Anonymous::default(),
            tls: None,
            metrics_listen: default_metrics_listen(),
            limits: Limits::default(),
            active_mode: ActiveMode::default(),
            passive_ports_per_replica: None,
            replica_index: None,
            proxy_protocol_from: Vec::new(),
            site_chmod: false,
            probe_user: None,
            storage: StorageConfig::default(),
            sftp: None,
        }
    }

    /// The passive ports this server advertises: its replica's slice, else the whole range.
    pub fn own_passive_ports(&self) -> Result<PassiveRange, ConfigError> {
        let Some(per_replica) = self.passive_ports_per_replica else {
            return Ok(self.passive_ports);
        };
        let range = self.passive_ports;
        let index = self.replica_index.ok_or_else(|| {
            ConfigError::Invalid(format!(
                "passive_ports_per_replica = {per_replica} needs this server's replica number: \
                 give --replica-index N (or replica_index in the file)"
            ))
        })?;
        if per_replica == 0 {
            return Err(ConfigError::Invalid(
                "passive_ports_per_replica must be at least 1".into(),
            ));
        }
        let slice_min = u64::from(range.min) + u64::from(index) * u64::from(per_replica);
        let slice_max = slice_min + u64::from(per_replica) - 1;
        match (u16::try_from(slice_min), u16::try_from(slice_max)) {
            (Ok(min), Ok(max)) if max <= range.max => Ok(PassiveRange { min, max }),
            _ => Err(ConfigError::Invalid(format!(
                "replica {index} would own passive ports {slice_min}-{slice_max}, outside \
                 passive_ports {range} ({} ports, room for {} replicas of {per_replica}): widen \
                 the range or lower the replica count",
                range.len(),
                range.len() / usize::from(per_replica)
            ))),
        }
    }

    /// Reads and parses the file; it is validated once the flags are applied
    /// ([`super::cli::ServerFlags::merge`]), since the replica index usually comes from a flag.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    /// The configuration in `bytes`, the contents of the file at `path` (named in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        })?;
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.passive_ports.validate()?;
        self.storage.validate()?;
        self.own_passive_ports()?;
        if self.passive_ports.contains(self.listen.port()) {
            return Err(ConfigError::Invalid(format!(
                "listen port {} lies inside the passive range {}: move one of them",
                self.listen.port(),
                self.passive_ports
            )));
        }
        if let Some(implicit) = self.tls.as_ref().and_then(Tls::implicit_listen) {
            if self.passive_ports.contains(implicit.port()) {
                return Err(ConfigError::Invalid(format!(
                    "tls.implicit_listen port {} lies inside the passive range {}: move one of them",
                    implicit.port(),
                    self.passive_ports
                )));
            }
            if implicit.port() == self.listen.port() {
                return Err(ConfigError::Invalid(format!(
                    "tls.implicit_listen port {} is the control port too: give implicit FTPS a \
                     port of its own (990 is the usual one)",
                    implicit.port()
                )));
            }
        }
        if self.keepalive.enabled()
            && (self.keepalive.interval_seconds == 0 || self.keepalive.probes == 0)
        {
            return Err(ConfigError::Invalid(
                "keepalive interval_seconds and probes must be at least 1 when idle_seconds is set"
                    .into(),
            ));
        }
        if let Some(address) = &self.public_address
            && address.trim().is_empty()
        {
            return Err(ConfigError::Invalid(
                "public_address is empty: remove it or set an IP or DNS name".into(),
            ));
        }
        if let Some(home) = &self.anonymous.home {
            super::access::home_path(home)
                .map_err(|reason| ConfigError::Invalid(format!("anonymous.home: {reason}")))?;
        }
        if let Some(sftp) = &self.sftp {
            sftp.validate(self)?;
        }
        if self.limits.max_command_line < 64 {
            return Err(ConfigError::Invalid(
                "limits.max_command_line must be at least 64 bytes".into(),
            ));
        }
        Ok(())
    }

    /// The file's text, as the controller writes it into the ConfigMap.
    pub fn render(&self) -> String {
        // Serialising plain structs of strings, numbers and paths cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_reads_back_identically() {
        let mut config = ServerConfig::new("/srv/ftp", PassiveRange::new(20000, 20019).unwrap());
        config.public_address = Some("203.0.113.7".into());
        config.users_file = Some("/etc/ftp-server/users/users".into());
        config.tls = Some(Tls {
            required: true,
            implicit: true,
            implicit_listen: "0.0.0.0:9990".parse().unwrap(),
            require_session_reuse: false,
            ..Tls::new("/tls/tls.crt", "/tls/tls.key")
        });
        config.anonymous.home = Some("pub".into());
        config.probe_user = Some(ProbeUser {
            name: "ftp-operator-probe-0a1b".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        });
        config.proxy_protocol_from = vec![
            "10.0.0.0/16".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        let text = config.render();
        let back: ServerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn the_sftp_table_renders_reads_back_and_is_checked() {
        let mut config = ServerConfig::new("/srv/ftp", PassiveRange::new(20000, 20019).unwrap());
        config.sftp = Some(Sftp {
            enabled: true,
            host_key_files: vec!["/keys/ssh_host_ed25519_key".into()],
            authorized_keys_dir: Some("/etc/ftp-server/users".into()),
            ..Sftp::default()
        });
        let text = config.render();
        assert!(text.contains("[sftp]"), "{text}");
        let back: ServerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
        back.validate().unwrap();
        let minimal: ServerConfig = toml::from_str(
            "root = \"/srv\"\npassive_ports = { min = 30000, max = 30009 }\n\
             [sftp]\nenabled = true\nhost_key_files = [\"/k\"]\n",
        )
        .unwrap();
        let sftp = minimal.sftp.clone().unwrap();
        assert_eq!(sftp.listen.port(), POD_SFTP_PORT);
        assert_eq!(sftp.max_packet_bytes, 256 * 1024);
        let mut clash = minimal.clone();
        if let Some(sftp) = &mut clash.sftp {
            sftp.listen = "0.0.0.0:30005".parse().unwrap();
        }
        let error = clash.validate().unwrap_err().to_string();
        assert!(error.contains("passive range"), "{error}");
        let mut keyless = minimal;
        if let Some(sftp) = &mut keyless.sftp {
            sftp.host_key_files.clear();
        }
        let error = keyless.validate().unwrap_err().to_string();
        assert!(error.contains("generate-host-key"), "{error}");
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config: ServerConfig =
            toml::from_str("root = \"/srv\"\npassive_ports = { min = 30000, max = 30009 }\n")
                .unwrap();
        assert_eq!(config.listen.port(), DEFAULT_CONTROL_PORT);
        assert_eq!(config.keepalive, Keepalive::default());
        assert!(!config.anonymous.enabled);
        assert!(!config.active_mode.enabled);
        config.validate().unwrap();
    }

    #[test]
    fn a_table_that_omits_keys_takes_their_defaults() {
        let config: ServerConfig = toml::from_str(
            "root = \"/srv\"\npassive_ports = { min = 30000, max = 30009 }\n\
             [anonymous]\nenabled = true\n[keepalive]\nidle_seconds = 30\n\
             [limits]\nmax_sessions = 10\n[active_mode]\nenabled = true\n\
             [tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\n",
        )
        .unwrap();
        assert!(config.anonymous.enabled && !config.anonymous.writable);
        assert_eq!(config.keepalive.idle_seconds, 30);
        assert_eq!(config.keepalive.probes, Keepalive::default().probes);
        assert_eq!(config.limits.login_timeout_seconds, 60);
        assert!(!config.active_mode.allow_foreign_address);
        let tls = config.tls.unwrap();
        assert!(!tls.required && tls.require_session_reuse);
        assert!(!config.site_chmod);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<ServerConfig>(
            "root = \"/srv\"\npassive_ports = { min = 1, max = 2 }\npublic_adress = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("public_adress"), "{err}");
    }

    #[test]
    fn passive_range_parses_and_rejects() {
        assert_eq!(
            "20000-20019".parse::<PassiveRange>().unwrap(),
            PassiveRange {
                min: 20000,
                max: 20019
            }
        );
        assert_eq!("20000-20019".parse::<PassiveRange>().unwrap().len(), 20);
        for bad in ["", "20000", "20019-20000", "0-10", "a-b", "1-70000"] {
            assert!(bad.parse::<PassiveRange>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn each_replica_uses_only_its_own_slice() {
        let mut config = ServerConfig::new("/srv", PassiveRange::new(20000, 20029).unwrap());
        assert_eq!(config.own_passive_ports().unwrap(), config.passive_ports);
        config.passive_ports_per_replica = Some(10);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("give --replica-index N"), "{err}");
        let slices: Vec<String> = (0..3)
            .map(|index| {
                config.replica_index = Some(index);
                config.validate().unwrap();
                config.own_passive_ports().unwrap().to_string()
            })
            .collect();
        assert_eq!(slices, ["20000-20009", "20010-20019", "20020-20029"]);
        config.replica_index = Some(3);
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("replica 3 would own passive ports 20030-20039, outside passive_ports 20000-20029 (30 ports, room for 3 replicas of 10)"),
            "{err}"
        );
        config.replica_index = Some(u32::MAX);
        assert!(config.validate().is_err());
    }

    #[test]
    fn replica_keys_read_back_and_default_to_absent() {
        let config: ServerConfig = toml::from_str(
            "root = \"/srv\"\npassive_ports = { min = 30000, max = 30009 }\npassive_ports_per_replica = 5\nreplica_index = 1\n",
        )
        .unwrap();
        assert_eq!(
            config.own_passive_ports().unwrap(),
            PassiveRange::new(30005, 30009).unwrap()
        );
        let back: ServerConfig = toml::from_str(&config.render()).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn implicit_tls_defaults_to_990_and_needs_a_port_of_its_own() {
        let config: ServerConfig = toml::from_str(
            "root = \"/srv\"\npassive_ports = { min = 30000, max = 30009 }\n\
             [tls]\ncert_file = \"c\"\nkey_file = \"k\"\nimplicit = true\n",
        )
        .unwrap();
        let tls = config.tls.clone().unwrap();
        assert_eq!(tls.implicit_listen().unwrap().port(), 990);
        config.validate().unwrap();
        assert_eq!(Tls::new("c", "k").implicit_listen(), None);
        let mut clash = config.clone();
        clash.tls.as_mut().unwrap().implicit_listen = "0.0.0.0:2121".parse().unwrap();
        let error = clash.validate().unwrap_err().to_string();
        assert!(error.contains("control port too"), "{error}");
        let mut inside = config;
        inside.tls.as_mut().unwrap().implicit_listen = "0.0.0.0:30005".parse().unwrap();
        let error = inside.validate().unwrap_err().to_string();
        assert!(error.contains("inside the passive range"), "{error}");
    }

    #[test]
    fn listen_port_inside_passive_range_is_invalid() {
        let mut config = ServerConfig::new("/srv", PassiveRange::new(2100, 2200).unwrap());
        config.listen = "0.0.0.0:2121".parse().unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("inside the passive range"), "{err}");
    }
}
