//! The condition types an FtpServer's status carries (`status.conditions`, a list-map on
//! `type`). They are part of the contract: `kubectl wait --for=condition=Ready`, kstatus, Argo
//! CD's health check and alerts on `ftp_operator_server_condition` name them.

/// The server serves: its pods run the rendered configuration and the balancer has an address.
pub const READY: &str = "Ready";
/// A new generation is being rolled out (kstatus).
pub const RECONCILING: &str = "Reconciling";
/// Something the user must fix keeps the server from being applied; the message says what.
pub const STALLED: &str = "Stalled";
/// The load balancer forwards the control port and every passive port, at a public address.
pub const LOAD_BALANCER_READY: &str = "LoadBalancerReady";
/// The keepalive in force fires before the balancer forgets an idle flow.
pub const KEEPALIVE_CONFIGURED: &str = "KeepaliveConfigured";
/// The reachability probe completed a passive transfer through the public address.
pub const PASSIVE_REACHABLE: &str = "PassiveReachable";
/// The reachability probe logged in over SFTP through the public address, and the server
/// presented its own host key. Only on servers with `spec.sftp.enabled`.
pub const SFTP_REACHABLE: &str = "SftpReachable";
