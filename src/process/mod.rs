//! What the operator process shares between its two controllers (the FtpServer one in
//! [`crate::controller`], the node tuner DaemonSet's in [`crate::node_tuner`]): neither imports
//! the other, both import this.
//!
//! - [`apply`]: server-side apply under one field manager, skipped when already in effect.
//! - [`api_writes`]: the counter of writes to the apiserver.
//! - [`errors`]: a failed API call about one object, and what a user must fix (`Invalid`).
//! - [`backoff`]: the retry delay after a failed reconcile.
//! - [`watch_refusals`]: the watches the apiserver refuses (403), for status and `/readyz`.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`leader`]: the Lease, and the client layer that refuses writes without it.

pub mod api_writes;
pub mod apply;
pub mod backoff;
pub mod errors;
pub mod http;
pub mod leader;
pub mod watch_refusals;

pub use apply::MANAGER;
