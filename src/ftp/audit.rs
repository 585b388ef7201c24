//! The audit log: one structured line (tracing target `audit`, JSON like every log line) per
//! login, per transfer and per file change, each counted in the matching Prometheus counter, so
//! what the log says and what the metrics say never disagree.

use std::net::IpAddr;
use std::time::Duration;

use super::metrics::Metrics;

/// Who did it: the client's address and the login name (empty before login).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub client: IpAddr,
    pub user: &'a str,
}

/// One login's outcome: one of [`super::metrics::LOGIN_RESULTS`].
pub fn login(metrics: &Metrics, actor: Actor<'_>, result: &str) {
    metrics.login(result);
    tracing::info!(
        target: "audit",
        event = "login",
        result,
        user = actor.user,
        client = %actor.client,
    );
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferResult {
    Ok,
    Failed,
    Aborted,
}

impl TransferResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferResult::Ok => "ok",
            TransferResult::Failed => "failed",
            TransferResult::Aborted => "aborted",
        }
    }
}

/// One finished transfer: `direction` is `download`, `upload` or `listing`.
#[derive(Debug, Clone, Copy)]
pub struct Transfer<'a> {
    pub path: &'a str,
    pub direction: &'a str,
    pub bytes: u64,
    pub elapsed: Duration,
    pub result: TransferResult,
}

pub fn transfer(metrics: &Metrics, actor: Actor<'_>, transfer: Transfer<'_>) {
    metrics.transfer(
        transfer.direction,
        transfer.result.as_str(),
        transfer.bytes,
        transfer.elapsed,
    );
    tracing::info!(
        target: "audit",
        event = "transfer",
        result = transfer.result.as_str(),
        user = actor.user,
        client = %actor.client,
        path = transfer.path,
        direction = transfer.direction,
        bytes = transfer.bytes,
        seconds = transfer.elapsed.as_secs_f64(),
    );
}

/// One change to the tree other than an upload: `operation` is `delete`, `rename`, `mkdir`,
/// `rmdir`, `chmod` or `set_mtime`; `to` is a rename's new path.
pub fn file_change(
    metrics: &Metrics,
    actor: Actor<'_>,
    operation: &str,
    path: &str,
    to: Option<&str>,
    ok: bool,
) {
    let result = if ok { "ok" } else { "failed" };
    metrics.file_change(operation, result);
    tracing::info!(
        target: "audit",
        event = "file_change",
        result,
        user = actor.user,
        client = %actor.client,
        operation,
        path,
        to,
    );
}
