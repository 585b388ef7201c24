//! The reachability probe: a background task beside the reconciles that logs in to each
//! FtpServer through its public address, as a client would, lists over EPSV and PASV, and keeps
//! what it found per replica. It never runs inside a reconcile: a round wakes a server's
//! reconcile only when its result changed, and [`results::passive_reachable`] turns the result
//! into the `PassiveReachable` condition. A server with SFTP also gets one SFTP session a round
//! ([`sftp_session`]), which checks the host key against the server's Secret and becomes
//! `SftpReachable`.
//!
//! Control connections are balanced over the ready replicas, so a round opens sessions until each
//! ready replica has been seen (the data port's slice tells which one), at most
//! [`SESSIONS_PER_REPLICA`] per replica; a replica a round did not reach keeps its last result.
//! A failure before any data port (control connection, login) ends the round at once, so a
//! wrong password costs one failed login per round, never a lockout's worth.

pub mod account;
pub mod results;
pub mod session;
pub mod sftp_session;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use russh::keys::PublicKey;

use crate::api::FtpServer;

use super::build::{INSTANCE_LABEL, POD_INDEX_LABEL, is_ready};
use super::ownership::foreign_holder;
use super::validate::Validated;
use crate::process::errors::ApplyError;
use crate::process::errors::Invalid;
use account::{ProbeAccount, desired_probe_secret, probe_secret_name};
use results::{
    Passive, ProbeObservation, ReadyReplicas, ServerProbe, SessionReport, SftpStep, Slices, Step,
};
use session::{SessionTarget, probe_session};
use sftp_session::{SftpTarget, probe_sftp};

/// Sessions a round may open per ready replica before it gives up on reaching the rest.
pub const SESSIONS_PER_REPLICA: usize = 4;
/// Servers probed at once.
const CONCURRENT_SERVERS: usize = 4;
/// Probe accounts hashed at once. Each hash is cheap now, but a first reconcile of hundreds of
/// servers asks for all their accounts together, and each blocking thread that hashes keeps what
/// it allocated: one at a time keeps that to one thread's worth.
const CONCURRENT_HASHES: usize = 1;

#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    /// Time between rounds; None: the probe is off.
    pub interval: Option<Duration>,
    /// Each step's timeout (connect, reply, data connection).
    pub step_timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// `ok` or `failed`.
    pub result: String,
    /// The step that failed (`control`, `login`, `epsv`, `pasv_data` ...), `none` when ok.
    pub step: String,
}

impl SessionLabels {
    /// The labels of a session that failed at `failed_step` (its metric label), or succeeded.
    fn of(failed_step: Option<&str>) -> SessionLabels {
        let (result, step) = failed_step.map_or(("ok", "none"), |step| ("failed", step));
        SessionLabels {
            result: result.to_owned(),
            step: step.to_owned(),
        }
    }
}

/// The probe's metrics (`ftp_operator_probe_*`).
#[derive(Clone)]
pub struct ProbeMetrics {
    pub sessions: Family<SessionLabels, Counter>,
    /// SFTP sessions, by result and failing step (`connection`, `host_key`, `login`, `list`).
    pub sftp_sessions: Family<SessionLabels, Counter>,
    pub round_duration: Histogram,
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        let metrics = ProbeMetrics {
            sessions: Family::default(),
            sftp_sessions: Family::default(),
            round_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        };
        // Every series exists from the start (at 0), so rates and alerts work before the first
        // failure, and a controller with the probe off still exports the metric.
        let steps = [
            Step::ControlConnection,
            Step::Login,
            Step::Passive(Passive::Epsv),
            Step::Passive(Passive::Pasv),
            Step::DataConnection(Passive::Epsv),
            Step::DataConnection(Passive::Pasv),
            Step::List(Passive::Epsv),
            Step::List(Passive::Pasv),
        ];
        for step in std::iter::once(None).chain(steps.iter().map(|step| Some(step.label()))) {
            drop(metrics.sessions.get_or_create(&SessionLabels::of(step)));
        }
        for step in std::iter::once(None).chain(SftpStep::ALL.iter().map(|s| Some(s.label()))) {
            drop(
                metrics
                    .sftp_sessions
                    .get_or_create(&SessionLabels::of(step)),
            );
        }
        metrics
    }
}

impl ProbeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("probe");
        registry.register(
            "sessions",
            "Probe sessions through FtpServers' public addresses, by result and failing step",
            self.sessions.clone(),
        );
        registry.register(
            "sftp_sessions",
            "SFTP probe sessions through FtpServers' public addresses, by result and failing step",
            self.sftp_sessions.clone(),
        );
        registry.register(
            "round_duration_seconds",
            "Time one probe round of one FtpServer took (all its sessions)",
            self.round_duration.clone(),
        );
    }
}

/// What the probe account step of a reconcile found.
#[derive(Debug)]
pub enum AccountState {
    /// The probe is off: the server gets no probe account.
    Off,
    /// The account, and its Secret when that must be written: the reconcile writes it with the
    /// other children, after their ownership checks, and then [`Prober::remember`]s the account.
    Ready(ProbeAccount, Option<Box<UnwrittenSecret>>),
    /// `<name>-probe` is held by an object this server does not control.
    Taken(Invalid),
}

/// What the reconcile decided of a server that a probe session needs, for the generation it
/// applied: the probe follows the reconcile's decisions instead of validating the spec again, and
/// a spec changed since (not yet applied, or invalid) is not probed.
#[derive(Debug, Clone)]
struct Decided {
    generation: Option<i64>,
    control_port: u16,
    slices: Slices,
    tls: bool,
    sftp: Option<SftpDecided>,
}

/// The SFTP side of what the reconcile decided: the balancer's port and the host keys it mounted.
#[derive(Debug, Clone)]
struct SftpDecided {
    port: u16,
    host_keys: Vec<PublicKey>,
}

/// A probe Secret to create or update, and the live one it replaces.
#[derive(Debug)]
pub struct UnwrittenSecret {
    pub desired: Secret,
    pub live: Option<Secret>,
}

/// The probe's shared state: accounts and results per FtpServer (by uid, so a server deleted and
/// made again starts afresh).
pub struct Prober {
    settings: ProbeSettings,
    metrics: ProbeMetrics,
    accounts: Mutex<HashMap<String, ProbeAccount>>,
    decided: Mutex<HashMap<String, Decided>>,
    results: Mutex<HashMap<String, ServerProbe>>,
    hashing: tokio::sync::Semaphore,
}

impl Prober {
    pub fn new(settings: ProbeSettings, metrics: ProbeMetrics) -> Prober {
        Prober {
            settings,
            metrics,
            accounts: Mutex::default(),
            decided: Mutex::default(),
            results: Mutex::default(),
            hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.interval.is_some()
    }

    /// What the probe can say of `server` now, for its status.
    pub fn observation(&self, server: &FtpServer) -> ProbeObservation {
        if !self.enabled() {
            return ProbeObservation::Disabled;
        }
        let uid = server.uid().unwrap_or_default();
        let results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        results
            .get(&uid)
            .cloned()
            .map_or(ProbeObservation::NotProbedYet, ProbeObservation::Probed)
    }

    /// The server's probe account: from memory, else from its Secret, else made now with its
    /// Secret still to be written (never over an object this server does not control). Reads only.
    pub async fn account(
        &self,
        server: &FtpServer,
        client: &Client,
    ) -> Result<AccountState, ApplyError> {
        if !self.enabled() {
            return Ok(AccountState::Off);
        }
        let uid = server.uid().unwrap_or_default();
        if let Some(account) = self
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
        {
            return Ok(AccountState::Ready(account.clone(), None));
        }
        let name = probe_secret_name(server);
        let api: Api<Secret> =
            Api::namespaced(client.clone(), &server.namespace().unwrap_or_default());
        let found = api
            .get_opt(&name)
            .await
            .map_err(|source| ApplyError::read::<Secret>(&name, source))?;
        if let Some(invalid) = found.as_ref().and_then(|s| foreign_holder(server, s)) {
            return Ok(AccountState::Taken(invalid));
        }
        let stored = found.as_ref().and_then(ProbeAccount::from_secret);
        if let Some(account) = stored.as_ref().filter(|account| account.has_probe_hash()) {
            self.remember(server, account);
            return Ok(AccountState::Ready(account.clone(), None));
        }
        // An account of an earlier version keeps its name and password (the pods' lockout and
        // any dashboard know that name); only its costly hash is replaced.
        let make = move || match stored {
            Some(old) => ProbeAccount::with_password(old.user, old.password),
            None => ProbeAccount::generate(),
        };
        let account = self.hash(make).await.map_err(|reason| {
            ApplyError::of::<Secret>(
                &name,
                kube::Error::Service(format!("cannot make the probe password: {reason}").into()),
            )
        })?;
        let desired = desired_probe_secret(server, &account);
        let unwritten = UnwrittenSecret {
            desired,
            live: found,
        };
        Ok(AccountState::Ready(account, Some(Box::new(unwritten))))
    }

    /// Records what the reconcile applied for `server`: the settings its next rounds use.
    /// `sftp_host_keys`: the public keys of its host-key Secret when it serves SFTP.
    pub fn decided(
        &self,
        server: &FtpServer,
        valid: &Validated,
        sftp_host_keys: Option<Vec<PublicKey>>,
    ) {
        let sftp_port = server
            .spec
            .sftp
            .as_ref()
            .and_then(|sftp| u16::try_from(sftp.port).ok());
        let sftp = sftp_host_keys
            .zip(sftp_port)
            .map(|(host_keys, port)| SftpDecided { port, host_keys });
        let decided = Decided {
            generation: server.metadata.generation,
            control_port: valid.control_port,
            slices: Slices {
                passive: valid.passive,
                per_replica: valid.per_replica,
            },
            tls: server.spec.tls.is_some(),
            sftp,
        };
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.uid().unwrap_or_default(), decided);
    }

    /// Keeps `account` as the server's for the next reconciles, once its Secret holds it.
    pub fn remember(&self, server: &FtpServer, account: &ProbeAccount) {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.uid().unwrap_or_default(), account.clone());
    }

    /// Runs `make` (which hashes) on a blocking thread, [`CONCURRENT_HASHES`] at a time.
    async fn hash(
        &self,
        make: impl FnOnce() -> Result<ProbeAccount, String> + Send + 'static,
    ) -> Result<ProbeAccount, String> {
        let _permit = self.hashing.acquire().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(make)
            .await
            .map_err(|e| e.to_string())?
    }

    /// Probes every server that has an address, a ready replica and an account, every interval,
    /// and sends the servers whose result changed to `wake`. Never returns when on.
    pub async fn run(
        self: Arc<Self>,
        servers: Store<DeserializeGuard<FtpServer>>,
        pods: Store<Pod>,
        wake: UnboundedSender<ObjectRef<DeserializeGuard<FtpServer>>>,
    ) {
        let Some(interval) = self.settings.interval else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let current: Vec<Arc<FtpServer>> = servers
                .state()
                .iter()
                .filter_map(|guard| guard.0.as_ref().ok().map(|s| Arc::new(s.clone())))
                .collect();
            self.forget_all_but(&current);
            let pods = pods.state();
            let probed: Vec<(Arc<FtpServer>, Option<ServerProbe>)> = futures::stream::iter(current)
                .map(|server| {
                    let pods = &pods;
                    let prober = Arc::clone(&self);
                    async move {
                        let result = prober.probe_server(&server, pods).await;
                        (server, result)
                    }
                })
                .buffer_unordered(CONCURRENT_SERVERS)
                .collect()
                .await;
            for (server, result) in probed {
                let Some(result) = result else { continue };
                let uid = server.uid().unwrap_or_default();
                let changed = {
                    let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = results.get(&uid) != Some(&result);
                    results.insert(uid, result);
                    changed
                };
                if changed && let Some(namespace) = server.namespace() {
                    let _ =
                        wake.unbounded_send(ObjectRef::new(&server.name_any()).within(&namespace));
                }
            }
        }
    }

    fn forget_all_but(&self, servers: &[Arc<FtpServer>]) {
        let live: HashSet<String> = servers.iter().filter_map(|s| s.uid()).collect();
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| live.contains(uid));
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| live.contains(uid));
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| live.contains(uid));
    }

    /// One round for one server; None when it is not to be probed now.
    async fn probe_server(&self, server: &FtpServer, pods: &[Arc<Pod>]) -> Option<ServerProbe> {
        let uid = server.uid()?;
        let account = self
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
            .cloned()?;
        let status = server.status.as_ref()?;
        let host = status.public_address.clone()?;
        let decided = self
            .decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
            .cloned()
            .filter(|decided| decided.generation == server.metadata.generation)?;
        let server_pods: Vec<&Pod> = pods
            .iter()
            .map(AsRef::as_ref)
            .filter(|pod| {
                pod.namespace() == server.namespace()
                    && pod.labels().get(INSTANCE_LABEL) == Some(&server.name_any())
            })
            .collect();
        let ready = ready_replicas(&server_pods);
        if ready.is_empty() {
            return None;
        }
        let previous = self
            .results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
            .cloned();
        // The first round waits for Ready: until then the pods may not serve the configuration
        // that carries the probe account yet, and the login would fail for no fault of theirs.
        let ready_condition = status
            .conditions
            .iter()
            .any(|c| c.type_ == crate::api::conditions::READY && c.status == "True");
        if previous.is_none() && !ready_condition {
            return None;
        }
        let target = SessionTarget {
            host,
            control_port: decided.control_port,
            user: account.user.clone(),
            password: account.password.clone(),
            tls: decided.tls,
            step_timeout: self.settings.step_timeout,
        };
        let slices = decided.slices;
        let started = Instant::now();
        let sessions = round(&target, slices, &ready, &self.metrics).await;
        // The same account logs in over SFTP: after a refused FTP login it would only add a
        // failed login towards the lockout, so the SFTP result stays what it was.
        let login_refused = sessions
            .iter()
            .any(|session| matches!(&session.outcome, Err(failure) if failure.step == Step::Login));
        let sftp = match &decided.sftp {
            Some(_) if login_refused => previous.as_ref().and_then(|p| p.sftp.clone()),
            Some(sftp) => {
                let target = SftpTarget {
                    host: target.host.clone(),
                    port: sftp.port,
                    user: target.user.clone(),
                    password: target.password.clone(),
                    host_keys: sftp.host_keys.clone(),
                    step_timeout: target.step_timeout,
                };
                Some((target.endpoint(), sftp_round(&target, &self.metrics).await))
            }
            None => None,
        };
        self.metrics
            .round_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            server = %server.name_any(),
            sessions = sessions.len(),
            seconds = started.elapsed().as_secs_f64(),
            "probe round"
        );
        let mut result = previous.unwrap_or_default();
        result.record_round(&target.endpoint(), &sessions, slices, &ready);
        result.sftp = sftp;
        Some(result)
    }
}

/// One round's sessions: until every ready replica was seen, a failure nobody can be blamed
/// for, or the bound.
pub async fn round(
    target: &SessionTarget,
    slices: Slices,
    ready: &ReadyReplicas,
    metrics: &ProbeMetrics,
) -> Vec<SessionReport> {
    let mut sessions = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..SESSIONS_PER_REPLICA * ready.len() {
        let report = probe_session(target).await;
        let failed_step = report.outcome.as_ref().err().map(|f| f.step.label());
        metrics
            .sessions
            .get_or_create(&SessionLabels::of(failed_step))
            .inc();
        let replica = report
            .data_address
            .and_then(|address| slices.replica_of(address.port()));
        let stop = replica.is_none() && report.outcome.is_err();
        seen.extend(replica);
        sessions.push(report);
        if stop || ready.keys().all(|replica| seen.contains(replica)) {
            break;
        }
    }
    sessions
}

/// One SFTP session, counted.
async fn sftp_round(
    target: &SftpTarget,
    metrics: &ProbeMetrics,
) -> Result<(), results::SftpFailure> {
    let outcome = probe_sftp(target).await;
    let failed_step = outcome.as_ref().err().map(|f| f.step.label());
    metrics
        .sftp_sessions
        .get_or_create(&SessionLabels::of(failed_step))
        .inc();
    outcome
}

/// The server's ready pods by ordinal (the StatefulSet's pod-index label).
pub fn ready_replicas(pods: &[&Pod]) -> ReadyReplicas {
    pods.iter()
        .filter(|pod| is_ready(pod))
        .filter_map(|pod| {
            let index = pod.labels().get(POD_INDEX_LABEL)?.parse().ok()?;
            Some((index, pod.name_any()))
        })
        .collect()
}
