//! One SSH connection: the server's SSH settings from `[sftp]`, logins (password through the
//! same lockout and bounded verifier as FTP's `PASS`, public keys from the user's
//! `authorized_keys`), and session channels that may run only the `sftp` subsystem.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, MethodKind, MethodSet};
use tokio::net::TcpStream;

use super::authorized_keys;
use super::files::{Files, Login, Rules};
use super::requests::{self, RequestLimits};
use crate::ftp::access::Access;
use crate::ftp::audit::{self, Actor};
use crate::ftp::auth::LoginRefusal;
use crate::ftp::auth::lockout::{Admission, Policy, Subject};
use crate::ftp::config::Sftp;
use crate::ftp::live_users::UserSession;
use crate::ftp::server::Shared;
use crate::ftp::settings::Settings;
use crate::ftp::storage::Home;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    #[error("{0}")]
    Refused(&'static str),
}

/// The SSH settings of the listener, from the `[sftp]` section and the host keys.
pub fn ssh_config(settings: &Settings, sftp: &Sftp) -> russh::server::Config {
    let limits = settings.config.limits;
    let seconds = |s: u32| (s > 0).then(|| Duration::from_secs(s.into()));
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::Password);
    russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-ftp-server_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods,
        // Every failed login is answered at the same delay as FTP's, so timing does not tell
        // who exists; the first "none" probe of a client at once.
        auth_rejection_time: Duration::from_millis(limits.login_failure_delay_millis.into()),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: settings.sftp_host_keys.keys.as_ref().clone(),
        inactivity_timeout: seconds(sftp.idle_timeout_seconds),
        keepalive_interval: seconds(sftp.keepalive_interval_seconds),
        keepalive_max: 3,
        // What a channel may have in flight towards the server, as OpenSSH's sshd grants
        // (2 MiB): with the read-ahead of `requests`, a channel's memory stays a few MiB.
        window_size: requests::QUEUED_BYTES,
        nodelay: true,
        ..Default::default()
    }
}

/// What the connection knows once a login succeeded.
struct LoggedIn {
    name: String,
    access: Access,
    home: Arc<dyn Home>,
    /// The session's share of its user (`max_sessions`, bandwidth, quota ledger), as FTP's
    /// sessions take it from the same live users, so the limits hold across both protocols.
    account: Arc<UserSession>,
}

/// The per-connection SSH handler.
pub struct Connection {
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    peer: SocketAddr,
    logged_in: Option<LoggedIn>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    open_channels: u32,
    authenticated: Arc<AtomicBool>,
    /// Files open for transfers on all channels (see [`Files`]).
    transfers: Arc<AtomicUsize>,
    /// The session's handle, to end it from outside a callback (a lockout, a protocol error).
    handle: Arc<OnceLock<russh::server::Handle>>,
}

impl Connection {
    fn sftp(&self) -> Sftp {
        self.settings.config.sftp.clone().unwrap_or_default()
    }

    fn subjects(&self, name: &str) -> [Subject; 2] {
        [
            Subject::network(self.peer.ip()),
            Subject::User(name.to_owned()),
        ]
    }

    fn policy(&self) -> Policy {
        let limits = self.settings.config.limits;
        Policy {
            threshold: limits.login_failures_before_lockout,
            window: Duration::from_secs(limits.login_failure_window_seconds.into()),
            lock_for: Duration::from_secs(limits.lockout_seconds.into()),
        }
    }

    fn audit_login(&self, name: &str, method: &str, result: &str) {
        self.shared.metrics.sftp_login(method, result);
        if self.settings.users.policy(name).metered {
            self.shared.metrics.user_login(name, result);
        }
        audit::login(
            &self.shared.metrics,
            Actor {
                client: self.peer.ip(),
                user: name,
            },
            result,
        );
    }

    /// Ends the session with a reason the client shows.
    fn disconnect(&self, reason: Disconnect, description: &'static str) {
        if let Some(handle) = self.handle.get().cloned() {
            tokio::spawn(async move {
                let _ = handle
                    .disconnect(reason, description.into(), "en".into())
                    .await;
            });
        }
    }

    fn refuse_locked(&self, name: &str, method: &str) -> Result<Auth, SshError> {
        self.audit_login(name, method, "locked");
        self.disconnect(
            Disconnect::NoMoreAuthMethodsAvailable,
            "Too many failed logins; try again later.",
        );
        Ok(Auth::reject())
    }

    fn refuse_busy(&self, name: &str, method: &str) -> Result<Auth, SshError> {
        self.audit_login(name, method, "busy");
        self.disconnect(
            Disconnect::TooManyConnections,
            "Server busy: too many logins are being checked; try again later.",
        );
        Ok(Auth::reject())
    }

    async fn open_home(&self, access: &Access) -> std::io::Result<Arc<dyn Home>> {
        let storage = Arc::clone(&self.settings.storage);
        let home = access.home.clone();
        tokio::task::spawn_blocking(move || storage.open_home(&home))
            .await
            .map_err(std::io::Error::other)?
    }

    fn key_dir(&self) -> Option<std::path::PathBuf> {
        authorized_keys::key_dir(
            self.sftp().authorized_keys_dir.as_deref(),
            self.settings.config.users_file.as_deref(),
        )
    }

    /// The user's `allowed_cidrs` leave the client's address out: refused before any password
    /// or key is checked, and not counted toward a lockout (nothing was guessed), as FTP does.
    fn address_refused(&self, user: &str, method: &str) -> bool {
        if self.settings.users.address_allowed(user, self.peer.ip()) {
            return false;
        }
        self.audit_login(user, method, "address");
        tracing::warn!(user, method, "login refused from this address");
        true
    }

    fn key_authorized(&self, user: &str, key: &russh::keys::PublicKey) -> bool {
        self.settings.users.access(user).is_some()
            && self
                .key_dir()
                .is_some_and(|dir| authorized_keys::authorizes(&dir, user, key))
    }
}

impl russh::server::Handler for Connection {
    type Error = SshError;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, SshError> {
        const METHOD: &str = "password";
        if self.shared.lockout.is_locked(&self.subjects(user)) {
            return self.refuse_locked(user, METHOD);
        }
        if self.address_refused(user, METHOD) {
            return Ok(Auth::reject());
        }
        let login_timeout = Duration::from_secs(self.sftp().login_timeout_seconds.into());
        let deadline = tokio::time::Instant::now() + login_timeout;
        let attempt = match self
            .shared
            .lockout
            .admit(self.subjects(user), self.policy(), deadline)
            .await
        {
            Admission::Admitted(attempt) => attempt,
            Admission::Locked => return self.refuse_locked(user, METHOD),
            Admission::TimedOut => return self.refuse_busy(user, METHOD),
        };
        let verifier = Arc::clone(&self.shared.verifier);
        let access = match self
            .settings
            .users
            .verify(user, password, &verifier, deadline)
            .await
        {
            Ok(access) => access,
            Err(busy) => {
                // Nothing was verified: not a failed guess.
                attempt.finish(false);
                tracing::warn!(%busy, "login not verified");
                return self.refuse_busy(user, METHOD);
            }
        };
        let Some(access) = access else {
            let locked = attempt.finish(true);
            self.audit_login(user, METHOD, "failed");
            tracing::warn!(user, locked, "login failed");
            if locked {
                self.disconnect(
                    Disconnect::NoMoreAuthMethodsAvailable,
                    "Too many failed logins; try again later.",
                );
            }
            return Ok(Auth::reject());
        };
        // The password was right whatever happens to the home.
        attempt.finish(false);
        self.log_in(user, METHOD, access).await
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, SshError> {
        // Keys the user does not have are not guesses: clients offer every key they hold.
        if self.settings.users.address_allowed(user, self.peer.ip())
            && self.key_authorized(user, offer.public_key)
        {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, SshError> {
        const METHOD: &str = "publickey";
        if self.shared.lockout.is_locked(&self.subjects(user)) {
            return self.refuse_locked(user, METHOD);
        }
        if self.address_refused(user, METHOD) {
            return Ok(Auth::reject());
        }
        let access = self
            .settings
            .users
            .access(user)
            .filter(|_| self.key_authorized(user, key.public_key));
        match access {
            Some(access) => self.log_in(user, METHOD, access).await,
            None => {
                self.audit_login(user, METHOD, "failed");
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), SshError> {
        self.authenticated.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), SshError> {
        if self.open_channels >= self.sftp().max_channels_per_session {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.open_channels += 1;
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), SshError> {
        self.channels.remove(&channel);
        self.open_channels = self.open_channels.saturating_sub(1);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), SshError> {
        let (Some(user), "sftp") = (self.logged_in.as_ref(), name) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        let Some(channel) = self.channels.remove(&channel_id) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        let sftp = self.sftp();
        let login = Login {
            name: user.name.clone(),
            permissions: user.access.permissions,
            home: Arc::clone(&user.home),
            client: self.peer.ip(),
            account: Arc::clone(&user.account),
            quota: self.settings.users.policy(&user.name).quota,
        };
        let rules = Rules {
            capabilities: self.settings.storage.capabilities(),
            chmod: self.settings.config.site_chmod,
            max_read: sftp.max_packet_bytes - 1024,
            upload_memory_bytes: self.settings.storage.upload_memory_bytes(),
        };
        let limits = RequestLimits {
            max_packet_bytes: sftp.max_packet_bytes,
            max_outstanding_requests: sftp.max_outstanding_requests,
        };
        let files = Files::new(
            login,
            rules,
            Arc::clone(&self.shared.metrics),
            Arc::clone(&self.shared.upload_memory),
            Arc::clone(&self.transfers),
        );
        session.channel_success(channel_id)?;
        let handle = session.handle();
        let metrics = Arc::clone(&self.shared.metrics);
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                match requests::serve(channel.into_stream(), files, limits).await {
                    Ok(()) => {
                        let _ = handle.close(channel_id).await;
                    }
                    Err(error) if error.is_protocol_violation() => {
                        metrics.sftp_protocol_errors.inc();
                        tracing::warn!(%error, "SFTP session ended: protocol error");
                        let _ = handle
                            .disconnect(Disconnect::ProtocolError, error.to_string(), "en".into())
                            .await;
                    }
                    Err(error) => {
                        tracing::info!(%error, "SFTP channel ended");
                        let _ = handle.close(channel_id).await;
                    }
                }
            },
            span,
        ));
        Ok(())
    }

    // No shell, no commands, no terminals: this server only serves files.
    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), SshError> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), SshError> {
        session.channel_failure(channel)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), SshError> {
        session.channel_failure(channel)?;
        Ok(())
    }
}

impl Connection {
    /// A proven login: the account's own rules (enabled, expiry, `max_sessions`) checked, as
    /// FTP's `PASS` does, its home opened, the audit line written.
    async fn log_in(&mut self, user: &str, method: &str, access: Access) -> Result<Auth, SshError> {
        let account = match self.settings.users.admit_session(
            user,
            &self.shared.live_users,
            jiff::Timestamp::now(),
        ) {
            Ok(account) => Arc::new(account),
            Err(refusal) => {
                self.audit_login(user, method, refusal.as_str());
                tracing::warn!(user, method, %refusal, "login refused by the account's policy");
                // Disabled and expired accounts hear what a wrong password hears.
                if let LoginRefusal::TooManySessions(_) = refusal {
                    self.disconnect(
                        Disconnect::TooManyConnections,
                        "Too many sessions of this user; try again later.",
                    );
                }
                return Ok(Auth::reject());
            }
        };
        match self.open_home(&access).await {
            Ok(home) => {
                tracing::info!(user, method, permissions = %access.permissions, "login");
                self.audit_login(user, method, "ok");
                self.logged_in = Some(LoggedIn {
                    name: user.to_owned(),
                    access,
                    home,
                    account,
                });
                Ok(Auth::Accept)
            }
            Err(error) => {
                tracing::error!(user, home = %access.home, %error, "cannot open the login's home");
                self.disconnect(
                    Disconnect::ByApplication,
                    "Login refused: the home directory cannot be opened.",
                );
                Ok(Auth::reject())
            }
        }
    }
}

/// Once the server shuts down, ends the session as soon as no file is open for a transfer:
/// transfers finish within the grace period, idle sessions do not hold the pod.
async fn end_when_idle_at_shutdown(
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    transfers: Arc<AtomicUsize>,
    handle: russh::server::Handle,
) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
    while transfers.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!("server shutting down: closing the idle SFTP session");
    let _ = handle
        .disconnect(
            Disconnect::ByApplication,
            "Server shutting down; reconnect.".into(),
            "en".into(),
        )
        .await;
}

/// Serves one accepted (and admitted) connection until it ends.
pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let settings = shared.settings.borrow().clone();
    let Some(sftp) = settings.config.sftp.clone().filter(|sftp| sftp.enabled) else {
        return;
    };
    let config = Arc::new(ssh_config(&settings, &sftp));
    let authenticated = Arc::new(AtomicBool::new(false));
    let transfers = Arc::new(AtomicUsize::new(0));
    let handle = Arc::new(OnceLock::new());
    let connection = Connection {
        shared: Arc::clone(&shared),
        settings,
        peer,
        logged_in: None,
        channels: HashMap::new(),
        open_channels: 0,
        authenticated: Arc::clone(&authenticated),
        transfers: Arc::clone(&transfers),
        handle: Arc::clone(&handle),
    };
    let login_timeout = Duration::from_secs(sftp.login_timeout_seconds.into());
    shared.metrics.sftp_sessions_total.inc();
    shared.metrics.sftp_sessions_active.inc();
    // The SSH version exchange and key exchange count against the login timeout too.
    let running = tokio::time::timeout(
        login_timeout,
        russh::server::run_stream(config, stream, connection),
    )
    .await;
    match running {
        Ok(Ok(running)) => {
            let session_handle = running.handle();
            let _ = handle.set(session_handle.clone());
            let watchdog = tokio::spawn(async move {
                tokio::time::sleep(login_timeout).await;
                if !authenticated.load(Ordering::SeqCst) {
                    tracing::info!("login timeout");
                    let _ = session_handle
                        .disconnect(
                            Disconnect::ByApplication,
                            "Login timeout: log in sooner after connecting.".into(),
                            "en".into(),
                        )
                        .await;
                }
            });
            let drain = tokio::spawn(end_when_idle_at_shutdown(
                shared.shutdown.clone(),
                transfers,
                running.handle(),
            ));
            if let Err(error) = running.await {
                tracing::info!(%error, "SFTP session ended with an error");
            }
            watchdog.abort();
            drain.abort();
        }
        Ok(Err(error)) => tracing::info!(%error, "SSH handshake failed"),
        Err(_) => tracing::info!("SSH handshake not done within the login timeout"),
    }
    shared.metrics.sftp_sessions_active.dec();
}
