//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` HTTP endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::auth::lockout::Lockout;
use super::auth::verify::Verifier;
use super::config::{RejectedInput, SERVED_CONFIG_MEDIA_TYPE, ServedConfig, config_digest};
use super::live_users::LiveUsers;
use super::upload_memory::UploadMemory;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// What a lockout holds: `network` (a client's address, IPv6 by /64) or `user` (a user name).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubjectLabel {
    pub subject: String,
}

impl SubjectLabel {
    pub fn new(subject: &str) -> SubjectLabel {
        SubjectLabel {
            subject: subject.into(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabel {
    pub user: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserDirectionLabel {
    pub user: String,
    pub direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserResultLabel {
    pub user: String,
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabel {
    pub direction: String,
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileChangeLabel {
    pub operation: String,
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginMethodLabel {
    pub method: String,
    pub result: String,
}

/// Methods of `ftp_sftp_logins_total`.
pub const SFTP_LOGIN_METHODS: [&str; 2] = ["password", "publickey"];

/// Results of `ftp_logins_total`: `ok`, `failed` (a wrong password or unknown user), `locked`
/// (refused: the client's network is locked out), `busy` (no verification slot in time);
/// refusals by the user's own policy: `address` (not in its `allowed_cidrs`), `disabled`,
/// `expired`, `max_sessions`.
pub const LOGIN_RESULTS: [&str; 8] = [
    "ok",
    "failed",
    "locked",
    "busy",
    "address",
    "disabled",
    "expired",
    "max_sessions",
];

/// Directions of `ftp_user_bytes_total`.
pub const USER_DIRECTIONS: [&str; 2] = ["download", "upload"];

/// Every metric the server exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions_total: Counter,
    pub sessions_active: Gauge,
    pub sessions_refused: Family<ResultLabel, Counter>,
    pub logins: Family<ResultLabel, Counter>,
    pub bytes: Family<DirectionLabel, Counter>,
    pub transfers: Family<TransferLabel, Counter>,
    pub transfer_seconds: Family<DirectionLabel, Counter<f64, AtomicU64>>,
    pub file_changes: Family<FileChangeLabel, Counter>,
    pub passive_ports_in_use: Gauge,
    pub passive_ports_exhausted: Counter,
    pub data_connections_refused: Counter,
    pub config_reloads: Family<ResultLabel, Counter>,
    /// Lockouts started; the lockout table counts them (see [`Lockout::counting`]).
    pub lockouts: Family<SubjectLabel, Counter>,
    /// Subjects locked out now, read from the table at each scrape (lockouts end by themselves).
    lockouts_active: Family<SubjectLabel, Gauge>,
    lockout: OnceLock<Arc<Lockout>>,
    /// Logins waiting for a verification slot, and the slots, read at each scrape.
    login_verifications_queued: Gauge,
    login_verification_slots: Gauge,
    verifier: OnceLock<Arc<Verifier>>,
    /// Uploads to object storage refused for want of part buffers; the budget counts them.
    pub upload_memory_refusals: Counter,
    /// The part-buffer budget, what uploads hold of it and how many wait, read at each scrape.
    upload_memory_budget_bytes: Gauge,
    upload_memory_in_use_bytes: Gauge,
    uploads_waiting_for_memory: Gauge,
    upload_memory: OnceLock<Arc<UploadMemory>>,
    /// Per-user series, for the users of the TOML form only (their number is the file's).
    pub user_bytes: Family<UserDirectionLabel, Counter>,
    pub user_logins: Family<UserResultLabel, Counter>,
    /// Sessions of each metered user, read from the live users at each scrape.
    user_sessions: Family<UserLabel, Gauge>,
    live_users: OnceLock<Arc<LiveUsers>>,
    /// SFTP connections accepted and open now; `sessions` and `sessions_active` count them too.
    pub sftp_sessions_total: Counter,
    pub sftp_sessions_active: Gauge,
    /// SFTP logins by method and result; `logins` counts them too.
    pub sftp_logins: Family<LoginMethodLabel, Counter>,
    /// SFTP sessions ended because the client sent a malformed or oversized packet.
    pub sftp_protocol_errors: Counter,
    /// The memory limit the server keeps to (0: none known) and its resident memory at scrape.
    pub memory_limit_bytes: Gauge,
    resident_memory_bytes: Gauge,
    ready: AtomicBool,
    /// `sha256:<hex>` of the configuration file in effect; None without one.
    served_config: std::sync::Mutex<Option<String>>,
    /// The last reload's failure, reported beside the digest.
    rejected_input: std::sync::Mutex<Option<RejectedInput>>,
}

impl Metrics {
    pub fn login(&self, result: &str) {
        self.logins
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn file_change(&self, operation: &str, result: &str) {
        self.file_changes
            .get_or_create(&FileChangeLabel {
                operation: operation.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn transfer(&self, direction: &str, result: &str, bytes: u64, elapsed: Duration) {
        self.transfer_seconds
            .get_or_create(&DirectionLabel {
                direction: direction.into(),
            })
            .inc_by(elapsed.as_secs_f64());
        self.transfers
            .get_or_create(&TransferLabel {
                direction: direction.into(),
                result: result.into(),
            })
            .inc();
        self.bytes
            .get_or_create(&DirectionLabel {
                direction: direction.into(),
            })
            .inc_by(bytes);
    }

    /// The lockout table whose current lockouts `ftp_lockouts_active` reports.
    pub fn watch_lockout(&self, lockout: Arc<Lockout>) {
        let _ = self.lockout.set(lockout);
    }

    /// The live users whose sessions `ftp_user_sessions` reports, and whose metered users get
    /// their series at 0.
    pub fn watch_live_users(&self, live: Arc<LiveUsers>) {
        let _ = self.live_users.set(live);
    }

    /// A metered user's login result.
    pub fn user_login(&self, user: &str, result: &str) {
        self.user_logins
            .get_or_create(&UserResultLabel {
                user: user.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Bytes a metered user moved (`download` or `upload`).
    pub fn user_bytes(&self, user: &str, direction: &str, bytes: u64) {
        self.user_bytes
            .get_or_create(&UserDirectionLabel {
                user: user.into(),
                direction: direction.into(),
            })
            .inc_by(bytes);
    }

    fn refresh_users(&self) {
        let Some(live) = self.live_users.get() else {
            return;
        };
        for user in live.metered() {
            for direction in USER_DIRECTIONS {
                let _ = self.user_bytes.get_or_create(&UserDirectionLabel {
                    user: user.clone(),
                    direction: direction.into(),
                });
            }
            for result in LOGIN_RESULTS {
                let _ = self.user_logins.get_or_create(&UserResultLabel {
                    user: user.clone(),
                    result: result.into(),
                });
            }
            let sessions = live.sessions(&user);
            self.user_sessions
                .get_or_create(&UserLabel { user })
                .set(i64::from(sessions));
        }
    }

    /// The part-buffer budget `ftp_upload_memory_*` and `ftp_uploads_waiting_for_memory` report.
    pub fn watch_upload_memory(&self, budget: Arc<UploadMemory>) {
        let _ = self.upload_memory.set(budget);
    }

    /// The verifier whose slots and queue `ftp_login_verification_*` report.
    pub fn watch_verifier(&self, verifier: Arc<Verifier>) {
        let _ = self.verifier.set(verifier);
    }

    /// Gives every labelled counter a series for each value it can take, at 0, so a dashboard
    /// or an alert on a fresh server finds a series rather than "no data".
    fn seed_known_series(&self) {
        let result = |result: &str| ResultLabel {
            result: result.into(),
        };
        for refused in ["total", "per_address", "proxy_header", "memory"] {
            let _ = self.sessions_refused.get_or_create(&result(refused));
        }
        for login in LOGIN_RESULTS {
            let _ = self.logins.get_or_create(&result(login));
        }
        for reload in ["ok", "failed"] {
            let _ = self.config_reloads.get_or_create(&result(reload));
        }
        for direction in ["download", "upload", "listing"] {
            let label = DirectionLabel {
                direction: direction.into(),
            };
            let _ = self.bytes.get_or_create(&label);
            let _ = self.transfer_seconds.get_or_create(&label);
            for outcome in ["ok", "failed", "aborted"] {
                let _ = self.transfers.get_or_create(&TransferLabel {
                    direction: direction.into(),
                    result: outcome.into(),
                });
            }
        }
        for operation in ["delete", "rename", "mkdir", "rmdir", "chmod", "set_mtime"] {
            for outcome in ["ok", "failed"] {
                let _ = self.file_changes.get_or_create(&FileChangeLabel {
                    operation: operation.into(),
                    result: outcome.into(),
                });
            }
        }
        for kind in ["network", "user"] {
            let _ = self.lockouts.get_or_create(&SubjectLabel::new(kind));
        }
        for method in SFTP_LOGIN_METHODS {
            for login in LOGIN_RESULTS {
                let _ = self.sftp_logins.get_or_create(&LoginMethodLabel {
                    method: method.into(),
                    result: login.into(),
                });
            }
        }
    }

    pub fn sftp_login(&self, method: &str, result: &str) {
        self.sftp_logins
            .get_or_create(&LoginMethodLabel {
                method: method.into(),
                result: result.into(),
            })
            .inc();
    }

    fn refresh_gauges(&self) {
        if let Some(verifier) = self.verifier.get() {
            let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.login_verifications_queued
                .set(count(verifier.queued()));
            self.login_verification_slots.set(count(verifier.slots()));
        }
        if let Some(budget) = self.upload_memory.get() {
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.upload_memory_budget_bytes
                .set(gauge(budget.budget_bytes()));
            self.upload_memory_in_use_bytes
                .set(gauge(budget.in_use_bytes()));
            self.uploads_waiting_for_memory
                .set(gauge(budget.waiting() as u64));
        }
        if let Some(resident) = super::memory::resident_bytes() {
            self.resident_memory_bytes
                .set(i64::try_from(resident).unwrap_or(i64::MAX));
        }
        self.refresh_lockouts_active();
        self.refresh_users();
    }

    fn refresh_lockouts_active(&self) {
        let locked = self
            .lockout
            .get()
            .map(|lockout| lockout.locked_now())
            .unwrap_or_default();
        for (kind, count) in [("network", locked.networks), ("user", locked.users)] {
            self.lockouts_active
                .get_or_create(&SubjectLabel::new(kind))
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Records the contents of the configuration file now in effect.
    pub fn set_served_config(&self, contents: &[u8]) {
        let digest = config_digest(contents);
        if let Ok(mut served) = self.served_config.lock() {
            *served = Some(digest);
        }
    }

    pub fn served_config(&self) -> Option<String> {
        self.served_config
            .lock()
            .ok()
            .and_then(|served| served.clone())
    }

    /// Records the last reload's failure, or None when the files loaded.
    pub fn set_rejected_input(&self, rejected: Option<RejectedInput>) {
        if let Ok(mut slot) = self.rejected_input.lock() {
            *slot = rejected;
        }
    }

    /// What `/config-digest` answers a client that accepts JSON.
    pub fn served_config_report(&self) -> ServedConfig {
        ServedConfig {
            digest: self.served_config(),
            rejected: self.rejected_input.lock().ok().and_then(|r| r.clone()),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("ftp");
        registry.register(
            "sessions",
            "Control connections accepted",
            self.sessions_total.clone(),
        );
        registry.register(
            "sessions_active",
            "Control connections open now",
            self.sessions_active.clone(),
        );
        registry.register(
            "sessions_refused",
            "Control connections refused by a limit",
            self.sessions_refused.clone(),
        );
        registry.register("logins", "Login attempts by result", self.logins.clone());
        registry.register(
            "bytes",
            "Data bytes transferred by direction",
            self.bytes.clone(),
        );
        registry.register(
            "transfers",
            "Transfers by direction and result",
            self.transfers.clone(),
        );
        registry.register(
            "transfer_seconds",
            "Seconds spent in transfers by direction",
            self.transfer_seconds.clone(),
        );
        registry.register(
            "file_changes",
            "Deletes, renames, directory and attribute changes by operation and result",
            self.file_changes.clone(),
        );
        registry.register(
            "passive_ports_in_use",
            "Passive data ports listening now",
            self.passive_ports_in_use.clone(),
        );
        registry.register(
            "passive_ports_exhausted",
            "PASV/EPSV refused because every passive port was busy",
            self.passive_ports_exhausted.clone(),
        );
        registry.register(
            "data_connections_refused",
            "Data connections refused because they came from another address",
            self.data_connections_refused.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            self.config_reloads.clone(),
        );
        registry.register(
            "lockouts",
            "Lockouts of client networks and throttles of user names started after repeated failed logins",
            self.lockouts.clone(),
        );
        registry.register(
            "lockouts_active",
            "Client networks locked out and user names throttled now",
            self.lockouts_active.clone(),
        );
        registry.register(
            "login_verifications_queued",
            "Logins waiting for a password verification slot",
            self.login_verifications_queued.clone(),
        );
        registry.register(
            "login_verification_slots",
            "Password verifications that may run at once (each holds its hash's memory)",
            self.login_verification_slots.clone(),
        );
        registry.register(
            "upload_memory_budget_bytes",
            "Memory uploads to object storage may hold in part buffers at once (0: the storage needs none)",
            self.upload_memory_budget_bytes.clone(),
        );
        registry.register(
            "upload_memory_in_use_bytes",
            "Part-buffer memory held by uploads to object storage now",
            self.upload_memory_in_use_bytes.clone(),
        );
        registry.register(
            "uploads_waiting_for_memory",
            "Uploads to object storage waiting for part-buffer memory",
            self.uploads_waiting_for_memory.clone(),
        );
        registry.register(
            "upload_memory_refusals",
            "Uploads to object storage refused because the part-buffer budget stayed full",
            self.upload_memory_refusals.clone(),
        );
        registry.register(
            "user_sessions",
            "Sessions open now, per user of the TOML form of the users file",
            self.user_sessions.clone(),
        );
        registry.register(
            "user_bytes",
            "File bytes transferred by direction, per user of the TOML form of the users file",
            self.user_bytes.clone(),
        );
        registry.register(
            "user_logins",
            "Login attempts by result, per user of the TOML form of the users file",
            self.user_logins.clone(),
        );
        registry.register(
            "sftp_sessions",
            "SFTP connections accepted (also in ftp_sessions_total)",
            self.sftp_sessions_total.clone(),
        );
        registry.register(
            "sftp_sessions_active",
            "SFTP connections open now (also in ftp_sessions_active)",
            self.sftp_sessions_active.clone(),
        );
        registry.register(
            "sftp_logins",
            "SFTP login attempts by method and result (also in ftp_logins_total)",
            self.sftp_logins.clone(),
        );
        registry.register(
            "sftp_protocol_errors",
            "SFTP sessions ended because the client sent a malformed or oversized packet",
            self.sftp_protocol_errors.clone(),
        );
        registry.register(
            "memory_limit_bytes",
            "Memory limit the server keeps to: limits.memory_limit_bytes or its cgroup's (0: none)",
            self.memory_limit_bytes.clone(),
        );
        registry.register(
            "resident_memory_bytes",
            "Resident memory of the server process",
            self.resident_memory_bytes.clone(),
        );
        registry
    }

    pub fn encode(&self) -> String {
        self.seed_known_series();
        self.refresh_gauges();
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry());
        text
    }
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// The digest of the configuration in effect, so the controller can hold Ready until a pod serves
/// what the ConfigMap says (the kubelet refreshes a mounted ConfigMap up to a minute late).
async fn served_config_digest(
    State(metrics): State<Arc<Metrics>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let wants_report = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains(SERVED_CONFIG_MEDIA_TYPE));
    if wants_report {
        let body = serde_json::to_string(&metrics.served_config_report()).unwrap_or_default();
        return ([(header::CONTENT_TYPE, SERVED_CONFIG_MEDIA_TYPE)], body).into_response();
    }
    match metrics.served_config() {
        Some(digest) => (StatusCode::OK, format!("{digest}\n")).into_response(),
        None => (StatusCode::NOT_FOUND, "no configuration file\n").into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if metrics.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(super::config::SERVED_CONFIG_PATH, get(served_config_digest))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metered_users_have_their_series_at_zero() {
        let metrics = Metrics::default();
        let live = Arc::new(LiveUsers::default());
        live.set_metered(["acme".to_owned()]);
        metrics.watch_live_users(Arc::clone(&live));
        let session = live
            .open_session("acme", &crate::ftp::auth::policy::UserPolicy::default())
            .unwrap();
        metrics.user_bytes("acme", "upload", 7);
        let text = metrics.encode();
        for series in [
            "ftp_user_sessions{user=\"acme\"} 1",
            "ftp_user_bytes_total{user=\"acme\",direction=\"upload\"} 7",
            "ftp_user_bytes_total{user=\"acme\",direction=\"download\"} 0",
            "ftp_user_logins_total{user=\"acme\",result=\"expired\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        drop(session);
        assert!(
            metrics
                .encode()
                .contains("ftp_user_sessions{user=\"acme\"} 0")
        );
    }

    #[test]
    fn encodes_counters() {
        let metrics = Metrics::default();
        metrics.login("ok");
        metrics.transfer("download", "ok", 42, Duration::from_millis(1500));
        metrics.file_change("delete", "ok");
        let text = metrics.encode();
        assert!(text.contains("ftp_logins_total{result=\"ok\"} 1"), "{text}");
        assert!(
            text.contains("ftp_bytes_total{direction=\"download\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("ftp_transfer_seconds_total{direction=\"download\"} 1.5"),
            "{text}"
        );
        assert!(
            text.contains("ftp_file_changes_total{operation=\"delete\",result=\"ok\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn every_known_series_exists_at_zero_on_a_fresh_server() {
        let text = Metrics::default().encode();
        for series in [
            "ftp_sessions_refused_total{result=\"per_address\"} 0",
            "ftp_sessions_refused_total{result=\"memory\"} 0",
            "ftp_logins_total{result=\"busy\"} 0",
            "ftp_logins_total{result=\"locked\"} 0",
            "ftp_transfers_total{direction=\"upload\",result=\"aborted\"} 0",
            "ftp_file_changes_total{operation=\"rename\",result=\"failed\"} 0",
            "ftp_config_reloads_total{result=\"failed\"} 0",
            "ftp_lockouts_total{subject=\"user\"} 0",
            "ftp_logins_total{result=\"max_sessions\"} 0",
            "ftp_sftp_logins_total{method=\"publickey\",result=\"failed\"} 0",
            "ftp_sftp_sessions_total 0",
            "ftp_sftp_protocol_errors_total 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }
}
