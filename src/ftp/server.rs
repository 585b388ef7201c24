//! The control listeners (plain/explicit FTPS, and implicit FTPS when on): accept connections,
//! learn the client's address (from a PROXY header when a trusted balancer sent it), enforce
//! session limits, start sessions, and shut down gracefully on SIGTERM (stop accepting,
//! readiness off, let transfers finish).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::auth::lockout::{DEFAULT_CAPACITY as DEFAULT_LOCKOUT_CAPACITY, Lockout};
use super::auth::verify::Verifier;
use super::cli::ServerFlags;
use super::keepalive;
use super::live_users::LiveUsers;
use super::memory::{self, MemoryLimit};
use super::metrics::{self, Metrics, ResultLabel};
use super::passive::PortPool;
use super::proxy;
use super::reload;
use super::session::{Entry, Session};
use super::settings::Settings;
use super::upload_memory::UploadMemory;

/// What every session shares.
pub struct Shared {
    pub settings: watch::Receiver<Arc<Settings>>,
    pub metrics: Arc<Metrics>,
    pub ports: Arc<PortPool>,
    pub lockout: Arc<Lockout>,
    /// Password verification in a fixed number of slots of memory allocated once.
    pub verifier: Arc<Verifier>,
    /// Each user's sessions, shared buckets and uploads on this process.
    pub live_users: Arc<LiveUsers>,
    /// What memory admits: see [`MemoryBudget`].
    pub memory: MemoryBudget,
    /// What uploads to object storage may hold in part buffers, server-wide.
    pub upload_memory: Arc<UploadMemory>,
    pub shutdown: watch::Receiver<bool>,
}

/// The memory limit the server keeps to and what follows from it, fixed at start.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBudget {
    pub limit: Option<MemoryLimit>,
    /// Sessions the limit holds (with the verifier's memory and the upload buffers set aside);
    /// None without a limit.
    pub sessions: Option<u32>,
    /// What uploads to object storage may hold in part buffers at once (0 on local disk).
    pub upload_bytes: u64,
}

impl MemoryBudget {
    /// The limit from the config or the cgroup, the verifier sized from it and from the users
    /// file's most expensive hash, the upload buffers the storage at start needs, and the
    /// sessions that leaves room for. Planned once: a reload that changes the storage keeps
    /// the plan (each upload still reserves its own cost from the budget).
    pub fn plan(settings: &Settings) -> (MemoryBudget, Arc<Verifier>) {
        let limit = MemoryLimit::detect(settings.config.limits.memory_limit_bytes);
        let verification = settings.users.verification_bytes();
        let cpus = memory::cpus();
        let slots = limit.map_or(memory::verification_slots_unlimited(cpus), |limit| {
            limit.verification_slots(verification, cpus)
        });
        let verifiers = verification * slots as u64;
        let per_upload = settings.storage.upload_memory_bytes();
        let upload_bytes = limit.map_or(memory::upload_budget_unlimited(per_upload), |limit| {
            limit.upload_budget(verifiers, per_upload)
        });
        let sessions = limit.map(|limit| limit.sessions(verifiers, upload_bytes));
        (
            MemoryBudget {
                limit,
                sessions,
                upload_bytes,
            },
            Verifier::new(slots),
        )
    }

    /// Whether a new session fits: below the session count the limit holds and below the
    /// resident-memory line.
    fn admits(&self, open: u64) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        if self
            .sessions
            .is_some_and(|sessions| open >= u64::from(sessions))
        {
            return false;
        }
        memory::resident_bytes().is_none_or(|resident| resident < limit.refuse_above())
    }
}

/// Sessions open per client address; a guard gives its slot back when the session ends.
#[derive(Default)]
struct SessionCounts {
    by_address: Mutex<HashMap<IpAddr, u32>>,
}

impl SessionCounts {
    fn total(map: &HashMap<IpAddr, u32>) -> u64 {
        map.values().map(|&count| u64::from(count)).sum()
    }
}

struct SessionSlot {
    counts: Arc<SessionCounts>,
    address: IpAddr,
    metrics: Arc<Metrics>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.metrics.sessions_active.dec();
        if let Ok(mut map) = self.counts.by_address.lock()
            && let Some(count) = map.get_mut(&self.address)
        {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.address);
            }
        }
    }
}

impl SessionCounts {
    /// Takes a slot, or says which limit refuses it.
    fn take(
        self: &Arc<Self>,
        address: IpAddr,
        settings: &Settings,
        budget: &MemoryBudget,
        metrics: &Arc<Metrics>,
    ) -> Result<SessionSlot, &'static str> {
        let limits = settings.config.limits;
        let mut map = self.by_address.lock().map_err(|_| "internal error")?;
        let open = SessionCounts::total(&map);
        if open >= u64::from(limits.max_sessions) {
            return Err("total");
        }
        if !budget.admits(open) {
            return Err("memory");
        }
        let count = map.entry(address).or_insert(0);
        if *count >= limits.max_sessions_per_address {
            return Err("per_address");
        }
        *count += 1;
        metrics.sessions_active.inc();
        Ok(SessionSlot {
            counts: Arc::clone(self),
            address,
            metrics: Arc::clone(metrics),
        })
    }
}

fn prepare_control_socket(stream: &TcpStream, settings: &Settings) {
    if let Err(error) = keepalive::apply(stream, &settings.config.keepalive) {
        tracing::warn!(%error, "cannot set keepalive on control connection");
    }
    let _ = stream.set_nodelay(true);
    // ftplib sends ABOR as urgent data; keep that byte in the stream.
    let _ = SockRef::from(stream).set_out_of_band_inline(true);
}

/// Connections a control listener queues before it accepts them. Clients arrive in bursts (500 at
/// once in `scripts/bench-replicas.sh`); when the queue is full the kernel drops SYNs, or with SYN
/// cookies completes a handshake and then drops its last ACK, leaving a client that believes it is
/// connected and never hears the greeting. `net.core.somaxconn` caps it (4096 by default).
const CONTROL_BACKLOG: u32 = 4096;

/// A control listener on `address` with a [`CONTROL_BACKLOG`] queue (tokio's `bind` queues 128).
fn bind_control(address: SocketAddr) -> std::io::Result<TcpListener> {
    super::passive::listen(address, CONTROL_BACKLOG)
}

/// Which protocol an accepted connection speaks.
#[derive(Debug, Clone, Copy)]
enum Front {
    Ftp(Entry),
    Sftp,
}

/// Accepts on an optional listener (implicit FTPS, SFTP), or never when there is none.
async fn accept_optional(
    listener: &Option<TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Runs the server until SIGTERM or SIGINT, then drains sessions within the grace period.
/// `files` is the fingerprint `settings` were read with ([`reload::read`]).
pub async fn serve(
    settings: Settings,
    flags: ServerFlags,
    files: reload::Fingerprint,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    if let Some(contents) = reload::config_contents(&flags, &files) {
        metrics.set_served_config(contents);
    }
    let listen = settings.config.listen;
    let implicit_listen = settings
        .config
        .tls
        .as_ref()
        .and_then(|tls| tls.implicit_listen());
    let metrics_listen = settings.config.metrics_listen;
    let passive = settings.config.own_passive_ports()?;
    let replica = settings.config.replica_index;
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let lockout = Arc::new(Lockout::counting(
        DEFAULT_LOCKOUT_CAPACITY,
        metrics.lockouts.clone(),
    ));
    metrics.watch_lockout(Arc::clone(&lockout));
    let (budget, verifier) = MemoryBudget::plan(&settings_rx.borrow());
    metrics.watch_verifier(Arc::clone(&verifier));
    let upload_memory =
        UploadMemory::new(budget.upload_bytes, metrics.upload_memory_refusals.clone());
    metrics.watch_upload_memory(Arc::clone(&upload_memory));
    let per_upload = settings_rx.borrow().storage.upload_memory_bytes();
    let limit_bytes = budget.limit.map_or(0, |limit| limit.bytes);
    metrics
        .memory_limit_bytes
        .set(i64::try_from(limit_bytes).unwrap_or(i64::MAX));
    tracing::info!(
        memory_limit_bytes = limit_bytes,
        memory_limit_source = ?budget.limit.map(|limit| limit.source),
        verification_slots = verifier.slots(),
        sessions_the_memory_holds = ?budget.sessions,
        upload_buffer_bytes = budget.upload_bytes,
        uploads_at_once = budget.upload_bytes.checked_div(per_upload),
        "memory budget"
    );
    if let Some(limit) = budget.limit
        && per_upload > 0
        && budget.upload_bytes <= per_upload
    {
        tracing::warn!(
            memory_limit_bytes = limit.bytes,
            upload_bytes = per_upload,
            "the memory limit holds one object-storage upload at a time: raise the limit or lower the part size"
        );
    }
    let live_users = Arc::new(LiveUsers::default());
    live_users.set_metered(settings_rx.borrow().users.metered_names());
    metrics.watch_live_users(Arc::clone(&live_users));
    let shared = Arc::new(Shared {
        settings: settings_rx.clone(),
        metrics: Arc::clone(&metrics),
        ports: PortPool::new(Arc::clone(&metrics)),
        lockout,
        verifier,
        live_users: Arc::clone(&live_users),
        memory: budget,
        upload_memory,
        shutdown: shutdown_rx,
    });

    let listener =
        bind_control(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let implicit_listener =
        match implicit_listen {
            Some(address) => Some(bind_control(address).map_err(|e| {
                anyhow::anyhow!("cannot listen on {address} for implicit FTPS: {e}")
            })?),
            None => None,
        };
    let sftp_listen = settings_rx
        .borrow()
        .config
        .sftp
        .as_ref()
        .and_then(|sftp| sftp.enabled_listen());
    let sftp_listener = match sftp_listen {
        Some(address) => Some(
            bind_control(address)
                .map_err(|e| anyhow::anyhow!("cannot listen on {address} for SFTP: {e}"))?,
        ),
        None => None,
    };
    for key in settings_rx.borrow().sftp_host_keys.keys.iter() {
        tracing::info!(key = %crate::sftp::host_keys::fingerprint(key), "SFTP host key");
    }
    let metrics_listener_check = std::net::TcpListener::bind(metrics_listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {metrics_listen} for metrics: {e}"))?;
    drop(metrics_listener_check);
    tokio::spawn({
        let metrics = Arc::clone(&metrics);
        async move {
            if let Err(error) = metrics::serve(metrics_listen, metrics).await {
                tracing::error!(%error, "metrics endpoint stopped");
            }
        }
    });
    tokio::spawn(reload::watch_files(
        flags,
        settings_tx,
        Arc::clone(&metrics),
        files,
    ));
    tokio::spawn(meter_reloaded_users(settings_rx.clone(), live_users));

    tokio::spawn(sweep_upload_leftovers(settings_rx.clone()));

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let counts = Arc::new(SessionCounts::default());
    let mut sessions = JoinSet::new();
    let mut next_id: u64 = 0;
    metrics.set_ready(true);
    tracing::info!(%listen, implicit_tls_listen = ?implicit_listen, ?sftp_listen, %metrics_listen, %passive, ?replica, "ftp-server listening");

    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => {
                let Some((stream, from)) = accepted_or_pause(accepted).await else { continue };
                next_id += 1;
                sessions.spawn(start_session(next_id, stream, from, Front::Ftp(Entry::Plain), &shared, &counts));
            }
            accepted = accept_optional(&implicit_listener) => {
                let Some((stream, from)) = accepted_or_pause(accepted).await else { continue };
                next_id += 1;
                sessions.spawn(start_session(next_id, stream, from, Front::Ftp(Entry::ImplicitTls), &shared, &counts));
            }
            accepted = accept_optional(&sftp_listener) => {
                let Some((stream, from)) = accepted_or_pause(accepted).await else { continue };
                next_id += 1;
                sessions.spawn(start_session(next_id, stream, from, Front::Sftp, &shared, &counts));
            }
        }
    }

    drop(listener);
    drop(implicit_listener);
    drop(sftp_listener);
    metrics.set_ready(false);
    let grace = Duration::from_secs(
        settings_rx
            .borrow()
            .config
            .limits
            .shutdown_grace_seconds
            .into(),
    );
    tracing::info!(
        sessions = sessions.len(),
        grace_seconds = grace.as_secs(),
        "shutting down"
    );
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "grace period over; closing remaining sessions"
        );
        sessions.abort_all();
    }
    Ok(())
}

/// An accepted connection, or after a failed accept a short pause (so a full file table does
/// not spin the loop) and `None`.
async fn accepted_or_pause(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok(accepted) => Some(accepted),
        Err(error) => {
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// One accepted connection: the client's address, the session limits, then the session, as a
/// task of its own (so a slow PROXY header or TLS handshake holds up nobody else). A connection
/// that carries no PROXY header takes its session slot at once, so sessions are admitted in the
/// order they connect.
fn start_session(
    id: u64,
    mut stream: TcpStream,
    from: SocketAddr,
    front: Front,
    shared: &Arc<Shared>,
    counts: &Arc<SessionCounts>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let settings = shared.settings.borrow().clone();
    prepare_control_socket(&stream, &settings);
    let sources = settings.config.proxy_protocol_from.clone();
    let admitted_now = (!proxy::trusted(&sources, from.ip()))
        .then(|| counts.take(from.ip(), &settings, &shared.memory, &shared.metrics));
    let shared = Arc::clone(shared);
    let counts = Arc::clone(counts);
    async move {
        let metrics = &shared.metrics;
        let (peer, slot) = match admitted_now {
            Some(slot) => (from, slot),
            None => match proxy::client_address(&mut stream, from, &sources).await {
                Ok(peer) => (
                    peer,
                    counts.take(peer.ip(), &settings, &shared.memory, metrics),
                ),
                Err(error) => {
                    metrics
                        .sessions_refused
                        .get_or_create(&ResultLabel {
                            result: "proxy_header".into(),
                        })
                        .inc();
                    tracing::warn!(%from, %error, "connection dropped: no valid PROXY header");
                    return;
                }
            },
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(limit) => {
                metrics
                    .sessions_refused
                    .get_or_create(&ResultLabel {
                        result: limit.into(),
                    })
                    .inc();
                tracing::warn!(%peer, limit, "session refused by limit");
                if matches!(front, Front::Ftp(_)) {
                    refuse(stream, limit).await;
                }
                return;
            }
        };
        metrics.sessions_total.inc();
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let span = if peer == from {
            tracing::info_span!("session", id, %peer)
        } else {
            tracing::info_span!("session", id, %peer, via = %from)
        };
        let entry = match front {
            Front::Ftp(entry) => entry,
            Front::Sftp => {
                let span = tracing::info_span!("sftp_session", id, %peer);
                return async move {
                    tracing::info!("session started");
                    crate::sftp::ssh::serve_connection(stream, peer, Arc::clone(&shared)).await;
                    tracing::info!("session ended");
                    drop(slot);
                }
                .instrument(span)
                .await;
            }
        };
        let session = Session::new(id, stream, peer, local, entry, Arc::clone(&shared));
        async move {
            tracing::info!("session started");
            if let Err(error) = session.run().await {
                tracing::info!(%error, "session ended with an error");
            } else {
                tracing::info!("session ended");
            }
            drop(slot);
        }
        .instrument(span)
        .await
    }
}

/// Gives the users of each reloaded users file their metrics series.
async fn meter_reloaded_users(mut settings: watch::Receiver<Arc<Settings>>, live: Arc<LiveUsers>) {
    while settings.changed().await.is_ok() {
        let names = settings.borrow_and_update().users.metered_names();
        live.set_metered(names);
    }
}

/// Removes the temporary files of uploads a killed server left: at start those idle longer than
/// the stall bound, and once more when the stall bound has passed (so a crash just before this
/// start is cleaned up too, while uploads of other servers on the same volume are spared).
async fn sweep_upload_leftovers(settings: watch::Receiver<Arc<Settings>>) {
    let sweep = |settings: Arc<Settings>| async move {
        let stall = Duration::from_secs(settings.config.limits.idle_timeout_seconds.max(1).into());
        let storage = Arc::clone(&settings.storage);
        match tokio::task::spawn_blocking(move || storage.remove_upload_leftovers(stall)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "removed leftover temporary upload files"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot sweep leftover upload files"),
            Err(error) => tracing::warn!(%error, "upload sweep failed"),
        }
        stall
    };
    let current = settings.borrow().clone();
    let stall = sweep(current).await;
    tokio::time::sleep(stall).await;
    let current = settings.borrow().clone();
    sweep(current).await;
}

async fn refuse(mut stream: TcpStream, limit: &'static str) {
    let text: &[u8] = match limit {
        "per_address" => b"421 Too many connections from your address; try again later.\r\n",
        "memory" => b"421 Server is at its memory limit; try again later.\r\n",
        _ => b"421 Too many connections; try again later.\r\n",
    };
    let _ = stream.write_all(text).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300 clients connect at once to a listener that has not accepted yet: each gets through
    /// the handshake at once (with 128 queued the others' SYNs are dropped and retried after 1 s).
    #[tokio::test]
    async fn the_control_listener_queues_a_burst_of_connections() {
        let listener = bind_control("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let connects = (0..300)
            .map(|_| tokio::time::timeout(Duration::from_millis(700), TcpStream::connect(address)));
        let results = futures::future::join_all(connects).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(connected, 300, "connections queued before the first accept");
    }
}
