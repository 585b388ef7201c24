//! One control connection: reads command lines, keeps the session's state (login, working
//! directory, data-connection plan, TLS), and runs transfers while still listening for `ABOR`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::access::Permissions;
use super::audit::{self, Actor};
use super::command::{self, Command, TransferType};
use super::control::{ControlConnection, Line};
use super::listing::ListKind;
use super::live_users::UserSession;
use super::passive::PassiveListener;
use super::proxy;
use super::reply::{Reply, quote_path};
use super::server::Shared;
use super::settings::Settings;
use super::storage::{Capabilities, Home};
use super::tls::SessionTls;

#[cfg(test)]
mod capability_tests;
mod data;
mod files;
mod gate;
mod login;
mod tls;

/// Which listener a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The control port: plain, upgraded by `AUTH TLS` when the client asks.
    Plain,
    /// The implicit FTPS port: TLS from the first byte.
    ImplicitTls,
}

/// How the next data connection is made.
enum DataPlan {
    /// A listening passive port; closed at `expires` whether or not a transfer command came, so
    /// an idle session cannot hold a port of the range.
    Passive {
        listener: PassiveListener,
        expires: tokio::time::Instant,
    },
    Active(SocketAddr),
}

enum Login {
    Anonymous,
    User(String),
}

struct LoggedIn {
    name: String,
    permissions: Permissions,
    /// The session's root: the login's home beneath the server's root.
    home: Arc<dyn Home>,
    /// Its share of the user's sessions, bandwidth and uploads; none for anonymous logins.
    account: Option<UserSession>,
}

/// What ended a transfer.
enum Outcome {
    Done(io::Result<u64>),
    Aborted,
    ControlClosed,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

pub struct Session {
    id: u64,
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    control: ControlConnection,
    peer: SocketAddr,
    local: SocketAddr,
    pending_login: Option<Login>,
    user: Option<LoggedIn>,
    cwd: String,
    restart_offset: u64,
    rename_from: Option<String>,
    data_plan: Option<DataPlan>,
    epsv_all: bool,
    tls: Option<SessionTls>,
    protect_data: bool,
    ascii: bool,
    quit_after_transfer: bool,
    entry: Entry,
    /// Counted from the connection, so NOOP (or anything else) before login buys no time, and
    /// a login waiting for its turn waits no longer than this.
    login_deadline: tokio::time::Instant,
}

type Reply0 = io::Result<Flow>;

impl Session {
    pub fn new(
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        entry: Entry,
        shared: Arc<Shared>,
    ) -> Self {
        let settings = shared.settings.borrow().clone();
        let max_line = settings.config.limits.max_command_line as usize;
        let login_timeout =
            Duration::from_secs(settings.config.limits.login_timeout_seconds.max(1).into());
        Session {
            id,
            shared,
            settings,
            control: ControlConnection::new(stream, max_line),
            peer,
            local,
            pending_login: None,
            user: None,
            cwd: "/".into(),
            restart_offset: 0,
            rename_from: None,
            data_plan: None,
            epsv_all: false,
            tls: None,
            protect_data: false,
            ascii: false,
            quit_after_transfer: false,
            entry,
            login_deadline: tokio::time::Instant::now() + login_timeout,
        }
    }

    /// What paths resolve beneath: the login's home (before login, no file command runs).
    fn home(&self) -> io::Result<Arc<dyn Home>> {
        self.user
            .as_ref()
            .map(|user| Arc::clone(&user.home))
            .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "not logged in"))
    }

    /// What the server's storage can do.
    fn capabilities(&self) -> Capabilities {
        self.settings.storage.capabilities()
    }

    async fn send(&mut self, reply: Reply) -> io::Result<()> {
        tracing::debug!(code = reply.code, "reply");
        let limit = self.idle_timeout();
        self.control.send(&reply, limit).await
    }

    async fn read_line(&mut self) -> io::Result<Line> {
        self.control.read_line().await
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(
            self.settings
                .config
                .limits
                .idle_timeout_seconds
                .max(1)
                .into(),
        )
    }

    async fn reply(&mut self, code: u16, text: impl Into<String>) -> io::Result<()> {
        self.send(Reply::new(code, text)).await
    }

    /// Runs the session until the client quits, the connection drops, it idles out, or shutdown.
    pub async fn run(mut self) -> io::Result<()> {
        if self.entry == Entry::ImplicitTls {
            self.implicit_tls().await?;
        }
        self.reply(220, "ftp-server ready.").await?;
        let idle = self.idle_timeout();
        let login_deadline = self.login_deadline;
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                self.reply(421, "Server shutting down; closing control connection.")
                    .await?;
                break;
            }
            let passive_expires = self.passive_expires();
            let read_deadline = match self.user {
                Some(_) => tokio::time::Instant::now() + idle,
                None => login_deadline.min(tokio::time::Instant::now() + idle),
            };
            let line = tokio::select! {
                line = tokio::time::timeout_at(read_deadline, self.read_line()) => line,
                _ = shutdown.changed() => continue,
                _ = sleep_until(passive_expires) => {
                    tracing::debug!("passive listener expired unused");
                    self.data_plan = None;
                    continue;
                }
            };
            let line = match line {
                Err(_) if self.user.is_none() && tokio::time::Instant::now() >= login_deadline => {
                    self.reply(421, "Login timeout: closing control connection.")
                        .await?;
                    break;
                }
                Err(_) => {
                    self.reply(
                        421,
                        "Timeout: no command for too long; closing control connection.",
                    )
                    .await?;
                    break;
                }
                Ok(line) => line?,
            };
            let line = match line {
                Line::Closed => break,
                Line::TooLong => {
                    self.reply(500, "Command line too long.").await?;
                    continue;
                }
                Line::Command(line) => line,
            };
            if proxy::looks_like_header(&line) {
                // Only the trusted balancers' headers are read (before the greeting); one here
                // is an attempt to claim another address.
                tracing::warn!("PROXY header from a source not trusted to send one");
                self.reply(500, "PROXY header refused: this address may not send one.")
                    .await?;
                break;
            }
            let command = match command::parse(&line) {
                Ok(command) => command,
                Err(error) => {
                    self.reply(error.code(), error.text()).await?;
                    continue;
                }
            };
            match &command {
                Command::Pass(_) => tracing::debug!("command PASS ****"),
                other => tracing::debug!(command = ?other, "command"),
            }
            if self.handle(command).await? == Flow::Quit {
                break;
            }
        }
        let _ = self.control.shutdown().await;
        Ok(())
    }

    fn passive_expires(&self) -> Option<tokio::time::Instant> {
        match &self.data_plan {
            Some(DataPlan::Passive { expires, .. }) => Some(*expires),
            _ => None,
        }
    }

    async fn handle(&mut self, command: Command) -> Reply0 {
        if let Err(refusal) = gate::admit(&command, self.user.is_some()) {
            self.reply(refusal.code, refusal.text).await?;
            return Ok(Flow::Continue);
        }
        // REST holds until the next transfer command uses (or drops) it; PASV/TYPE in between
        // are common.
        let restart_offset = if matches!(
            command,
            Command::Retr(_)
                | Command::Stor(_)
                | Command::Appe(_)
                | Command::Stou
                | Command::List(_)
                | Command::Nlst(_)
                | Command::Mlsd(_)
        ) {
            std::mem::take(&mut self.restart_offset)
        } else {
            0
        };
        if !matches!(command, Command::Rnto(_)) && !matches!(command, Command::Rnfr(_)) {
            self.rename_from = None;
        }
        if let Err(refusal) = gate::permitted(&command, self.permissions()) {
            self.reply(refusal.code, refusal.text).await?;
            return Ok(Flow::Continue);
        }
        if let Err(refusal) = gate::supported(&command, restart_offset, self.capabilities()) {
            self.reply(refusal.code, refusal.text).await?;
            return Ok(Flow::Continue);
        }
        match command {
            Command::User(name) => return self.user(name).await,
            Command::Pass(password) => return self.pass(password).await,
            Command::Acct => self.reply(202, "ACCT not needed.").await?,
            Command::Auth => self.auth().await?,
            Command::Pbsz(_) => self.pbsz().await?,
            Command::Prot(level) => self.prot(level).await?,
            Command::Ccc => self.reply(534, "CCC is not allowed.").await?,
            Command::Feat => self.feat().await?,
            Command::OptsUtf8(_) => self.reply(200, "Always in UTF8 mode.").await?,
            Command::OptsMlst(_) => {
                self.reply(200, "MLST OPTS type;size;modify;perm;unique;")
                    .await?
            }
            Command::Syst => self.reply(215, "UNIX Type: L8").await?,
            Command::Noop => self.reply(200, "NOOP ok.").await?,
            Command::Help => self.help().await?,
            Command::Quit => {
                self.reply(221, "Goodbye.").await?;
                return Ok(Flow::Quit);
            }
            Command::Abor => self.reply(225, "No transfer to abort.").await?,
            Command::Pwd => {
                let text = format!("{} is the current directory", quote_path(&self.cwd));
                self.reply(257, text).await?
            }
            Command::Cwd(path) => self.cwd(&path).await?,
            Command::Cdup => self.cwd("..").await?,
            Command::Type(kind) => {
                self.ascii = kind == TransferType::Ascii;
                let text = if self.ascii {
                    "Switching to ASCII mode."
                } else {
                    "Switching to Binary mode."
                };
                self.reply(200, text).await?
            }
            Command::Stru => self.reply(200, "Structure set to F.").await?,
            Command::Mode => self.reply(200, "Mode set to S.").await?,
            Command::Allo => self.reply(202, "ALLO not needed.").await?,
            Command::Rest(offset) => {
                self.restart_offset = offset;
                self.reply(350, format!("Restarting at {offset}. Send STOR or RETR."))
                    .await?
            }
            Command::Pasv => self.passive(false).await?,
            Command::Epsv(arg) => self.epsv(arg).await?,
            Command::Port(address) | Command::Eprt(address) => self.active(address).await?,
            Command::Size(path) => self.size(&path).await?,
            Command::Mdtm(path) => self.mdtm(&path).await?,
            Command::Mlst(path) => self.mlst(path.as_deref()).await?,
            Command::Stat(path) => self.stat(path.as_deref()).await?,
            Command::Mkd(path) => self.mkd(&path).await?,
            Command::Rmd(path) => self.rmd(&path).await?,
            Command::Dele(path) => self.dele(&path).await?,
            Command::Rnfr(path) => self.rnfr(&path).await?,
            Command::Rnto(path) => self.rnto(&path).await?,
            Command::Retr(path) => return self.retr(&path, restart_offset).await,
            Command::Stor(path) => {
                return self.store(StoreKind::Replace(path), restart_offset).await;
            }
            Command::Appe(path) => return self.store(StoreKind::Append(path), 0).await,
            Command::Stou => return self.store(StoreKind::Unique, 0).await,
            Command::List(path) => return self.list(ListKind::Long, path).await,
            Command::Nlst(path) => return self.list(ListKind::Names, path).await,
            Command::Mlsd(path) => return self.list(ListKind::Machine, path).await,
            Command::Host(name) => self.host(&name).await?,
            Command::Mfmt(seconds, path) => self.mfmt(seconds, &path).await?,
            Command::SiteChmod(mode, path) => self.site_chmod(mode, &path).await?,
        }
        Ok(Flow::Continue)
    }

    async fn fs_error(&mut self, error: io::Error, context: &str) -> io::Result<()> {
        let reason = match error.kind() {
            io::ErrorKind::NotFound => "No such file or directory",
            io::ErrorKind::PermissionDenied => "Permission denied",
            io::ErrorKind::AlreadyExists => "File exists",
            io::ErrorKind::IsADirectory => "Is a directory",
            io::ErrorKind::NotADirectory => "Not a directory",
            io::ErrorKind::DirectoryNotEmpty => "Directory not empty",
            io::ErrorKind::InvalidInput => "Restart offset is past the end of the file",
            _ => "Operation failed",
        };
        tracing::debug!(%error, "file system error");
        self.reply(550, format!("{context} {reason}.")).await
    }

    fn permissions(&self) -> Permissions {
        self.user
            .as_ref()
            .map_or(Permissions::NONE, |user| user.permissions)
    }

    /// Who the audit log says did something in this session.
    pub(super) fn actor(&self) -> Actor<'_> {
        let user = self.user.as_ref().map_or("", |user| user.name.as_str());
        self.actor_named(user)
    }

    fn actor_named<'a>(&self, user: &'a str) -> Actor<'a> {
        Actor {
            client: self.peer.ip(),
            user,
        }
    }

    /// Audits a change to the tree (DELE, RNTO, MKD, RMD, ...).
    /// Records a change of the tree; a delete or rename also makes the quota walk the home again.
    pub(super) fn audit_change(&self, operation: &str, path: &str, to: Option<&str>, ok: bool) {
        audit::file_change(&self.shared.metrics, self.actor(), operation, path, to, ok);
        if ok
            && matches!(operation, "delete" | "rename" | "rmdir")
            && let Some(account) = self.account()
        {
            account.ledger().forget_walk();
        }
    }

    /// RFC 7151. One server serves one tree, so any name is accepted; what matters is that
    /// HOST comes before login, as the RFC requires.
    async fn host(&mut self, name: &str) -> io::Result<()> {
        if self.user.is_some() || self.pending_login.is_some() {
            return self.reply(503, "HOST must come before USER.").await;
        }
        tracing::info!(host = name, "HOST");
        self.reply(220, "Host accepted.").await
    }

    async fn feat(&mut self) -> io::Result<()> {
        let mut lines = Vec::new();
        if self.settings.tls.is_some() {
            lines.extend([" AUTH TLS".to_owned(), " PBSZ".into(), " PROT".into()]);
        }
        if self.settings.config.active_mode.enabled {
            lines.push(" EPRT".into());
        }
        let capabilities = self.capabilities();
        lines.extend(
            [
                (" EPSV", true),
                (" HOST", true),
                (" MDTM", true),
                (" MFMT", capabilities.set_mtime),
                (" MLST type*;size*;modify*;perm*;unique*;", true),
                // Offered only where a restarted download is served from the offset; a restarted
                // upload without `resume_upload` is refused at STOR.
                (" REST STREAM", capabilities.resume_download),
                (" SIZE", true),
                (" TVFS", true),
                (" UTF8", true),
            ]
            .into_iter()
            .filter(|(_, offered)| *offered)
            .map(|(line, _)| line.to_owned()),
        );
        self.send(Reply::multi(211, "Features:", lines, "End"))
            .await
    }

    async fn help(&mut self) -> io::Result<()> {
        let lines = vec![
            " ABOR ACCT ALLO APPE AUTH CCC  CDUP CWD  DELE EPRT EPSV FEAT HELP HOST LIST MDTM"
                .into(),
            " MFMT MKD  MLSD MLST MODE NLST NOOP OPTS PASS PASV PBSZ PORT PROT PWD  QUIT REST"
                .into(),
            " RETR RMD  RNFR RNTO SITE SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD"
                .into(),
            " XPWD XRMD".into(),
        ];
        self.send(Reply::multi(
            214,
            "The following commands are recognized.",
            lines,
            "Help OK.",
        ))
        .await
    }

    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Sleeps until `deadline`; forever when there is none.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

enum StoreKind {
    Replace(String),
    Append(String),
    Unique,
}
