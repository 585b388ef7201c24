//! The FtpServer controller. One reconcile, one direction:
//! [`observe`] → [`validate`] → [`plan`] (the pure [`build`]ers, what to delete, when to look
//! again) → [`children`] (server-side apply) → [`status`] and [`events`].
//!
//! - [`watches`]: the wiring: one controller per watched scope, its watches and caches.
//! - [`reconcile`]: one server's reconcile, the thin async shell around the pure decisions;
//!   [`context`]: what its passes share, and its error.
//! - [`users`]: FtpUsers, gathered into each server's generated users Secret, and their status.
//! - [`node_keepalive`]: the finalizer and status of servers that need node sysctls.
//! - [`probe`], [`served`], [`health`], [`image_rollout`], [`budgets`], [`ownership`]: what
//!   the status and the plan are computed from.

pub mod budgets;
pub mod build;
pub mod children;
pub mod context;
pub mod events;
pub mod health;
pub mod image_rollout;
pub mod metrics;
pub mod node_keepalive;
pub mod observe;
pub mod ownership;
pub mod plan;
pub mod probe;
pub mod reconcile;
pub mod served;
pub mod sftp_host_keys;
pub mod status;
pub mod users;
pub mod validate;
pub mod watches;

use std::time::Duration;

use probe::ProbeSettings;

pub use watches::run;

/// What the controller is told at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image for FtpServers that name none.
    pub default_image: String,
    /// Namespaces to watch, each with watches and caches of its own; empty: all namespaces
    /// (one set of cluster-wide watches).
    pub namespaces: Vec<String>,
    /// Reported as the Events' instance.
    pub identity: String,
    /// Node tuning is installed (`nodeTuning.enabled`): the node tuner controller runs and
    /// servers may ask for node sysctls; without it `keepalive.nodeSysctls` is Stalled.
    pub node_tuning: bool,
    /// Ready waits until every running server pod serves the rendered configuration (asked over
    /// its metrics port; see served.rs). Off only where no server runs (kwok's fake pods).
    pub verify_served_config: bool,
    /// How long a Service may go without a load-balancer address before the FtpServer is
    /// Stalled saying so.
    pub load_balancer_address_timeout: Duration,
    /// The reachability probe (`PassiveReachable`); off where no server really runs.
    pub probe: ProbeSettings,
    /// The cluster's NodePort range and Azure's rules per NIC, checked before a server's
    /// Services grow; None where the operator may not list Services cluster-wide (a
    /// namespaced install), and the apiserver's own refusal is what the user sees.
    pub cluster_budgets: Option<budgets::ClusterBudgets>,
}
