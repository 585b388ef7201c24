//! One control connection: reads command lines, keeps the session's state (login, working
//! directory, data-connection plan, TLS), and runs transfers while still listening for `ABOR`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::access::{Access, Permission, Permissions};
use super::command::{self, Command, Protection, TransferType};
use super::control::{ControlConnection, Line};
use super::fs::{self, Root};
use super::listing::ListKind;
use super::passive::PassiveListener;
use super::proxy;
use super::reply::{Reply, quote_path};
use super::server::Shared;
use super::settings::Settings;
use super::tls::TlsAcceptors;

mod data;
mod files;

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
    Passive(PassiveListener),
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
    home: Root,
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
    tls: Option<TlsAcceptors>,
    protect_data: bool,
    ascii: bool,
    quit_after_transfer: bool,
    entry: Entry,
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
        }
    }

    /// What paths resolve beneath: the login's home (before login, no file command runs).
    fn root(&self) -> &Root {
        self.user
            .as_ref()
            .map_or(&self.settings.root, |user| &user.home)
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
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                self.reply(421, "Server shutting down; closing control connection.")
                    .await?;
                break;
            }
            let line = tokio::select! {
                line = tokio::time::timeout(idle, self.read_line()) => line,
                _ = shutdown.changed() => continue,
            };
            let line = match line {
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

    async fn handle(&mut self, command: Command) -> Reply0 {
        let needs_login = !matches!(
            command,
            Command::User(_)
                | Command::Pass(_)
                | Command::Auth
                | Command::Pbsz(_)
                | Command::Prot(_)
                | Command::Feat
                | Command::Syst
                | Command::Quit
                | Command::Noop
                | Command::Help
                | Command::OptsUtf8(_)
                | Command::OptsMlst(_)
                | Command::Abor
        );
        if needs_login && self.user.is_none() {
            self.reply(530, "Please login with USER and PASS.").await?;
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
        if let Some(permission) = required_permission(&command)
            && !self.check(permission).await?
        {
            return Ok(Flow::Continue);
        }
        match command {
            Command::User(name) => return self.user(name).await,
            Command::Pass(password) => return self.pass(password).await,
            Command::Acct => self.reply(202, "ACCT not needed.").await?,
            Command::Auth => self.auth().await?,
            Command::Pbsz(_) => {
                if self.tls.is_some() {
                    self.reply(200, "PBSZ=0").await?
                } else {
                    self.reply(503, "PBSZ needs AUTH TLS first.").await?
                }
            }
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
            Command::Rmd(path) => {
                let target = fs::resolve(&self.cwd, &path);
                match self.root().remove_dir(&target) {
                    Ok(()) => {
                        self.reply(250, "Remove directory operation successful.")
                            .await?
                    }
                    Err(error) => {
                        self.fs_error(error, "Remove directory operation failed.")
                            .await?
                    }
                }
            }
            Command::Dele(path) => {
                let target = fs::resolve(&self.cwd, &path);
                let is_dir = self.root().is_dir(&target);
                match if is_dir {
                    Err(io::ErrorKind::IsADirectory.into())
                } else {
                    self.root().remove_file(&target)
                } {
                    Ok(()) => self.reply(250, "Delete operation successful.").await?,
                    Err(error) => self.fs_error(error, "Delete operation failed.").await?,
                }
            }
            Command::Rnfr(path) => {
                let source = fs::resolve(&self.cwd, &path);
                match self.root().lstat(&source) {
                    Ok(_) => {
                        self.rename_from = Some(source);
                        self.reply(350, "Ready for RNTO.").await?
                    }
                    Err(error) => self.fs_error(error, "RNFR command failed.").await?,
                }
            }
            Command::Rnto(path) => match self.rename_from.take() {
                None => self.reply(503, "Send RNFR first.").await?,
                Some(source) => {
                    let target = fs::resolve(&self.cwd, &path);
                    let replace = self.permissions().may_replace();
                    match self.root().rename(&source, &target, replace) {
                        Ok(()) => self.reply(250, "Rename successful.").await?,
                        Err(error) => self.fs_error(error, "Rename failed.").await?,
                    }
                }
            },
            Command::Retr(path) => return self.retr(&path, restart_offset).await,
            Command::Stor(path) => {
                return self.store(StoreKind::Replace(path), restart_offset).await;
            }
            Command::Appe(path) => return self.store(StoreKind::Append(path), 0).await,
            Command::Stou => return self.store(StoreKind::Unique, 0).await,
            Command::List(path) => return self.list(ListKind::Long, path).await,
            Command::Nlst(path) => return self.list(ListKind::Names, path).await,
            Command::Mlsd(path) => return self.list(ListKind::Machine, path).await,
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

    /// Replies `550` unless the login has `permission`.
    async fn check(&mut self, permission: Permission) -> io::Result<bool> {
        let allowed = self.permissions().allows(permission);
        if !allowed {
            let text = format!(
                "Permission denied: this login may not {}.",
                permission.name()
            );
            self.reply(550, text).await?;
        }
        Ok(allowed)
    }

    // ---- login and TLS ----

    async fn user(&mut self, name: String) -> Reply0 {
        if self.user.is_some() {
            self.reply(530, "Already logged in; reconnect to change user.")
                .await?;
            return Ok(Flow::Continue);
        }
        if self.settings.tls_required() && !self.tls_active() {
            self.reply(530, "TLS is required: send AUTH TLS first.")
                .await?;
            return Ok(Flow::Continue);
        }
        if self.shared.lockout.is_locked(self.peer.ip()) {
            self.reply(
                421,
                "Too many failed logins from your address; try again later.",
            )
            .await?;
            return Ok(Flow::Quit);
        }
        let anonymous = matches!(name.as_str(), "anonymous" | "ftp");
        if anonymous && self.settings.config.anonymous.enabled {
            self.pending_login = Some(Login::Anonymous);
            self.reply(
                331,
                "Anonymous login ok, send your email address as password.",
            )
            .await?;
        } else {
            self.pending_login = Some(Login::User(name));
            self.reply(331, "Please specify the password.").await?;
        }
        Ok(Flow::Continue)
    }

    async fn pass(&mut self, password: String) -> Reply0 {
        if self.user.is_some() {
            self.reply(230, "Already logged in.").await?;
            return Ok(Flow::Continue);
        }
        let Some(login) = self.pending_login.take() else {
            self.reply(503, "Login with USER first.").await?;
            return Ok(Flow::Continue);
        };
        let ip = self.peer.ip();
        let logged_in = match login {
            Login::Anonymous => Some(self.anonymous_access()),
            Login::User(name) => self
                .settings
                .users
                .verify(&name, &password)
                .await
                .map(|access| (name, access)),
        };
        let logged_in = match logged_in {
            Some((name, access)) => match self.open_home(&access).await {
                Ok(home) => Some(LoggedIn {
                    name,
                    permissions: access.permissions,
                    home,
                }),
                Err(error) => {
                    tracing::error!(user = %name, home = %access.home, %error, "cannot open the login's home");
                    self.reply(530, "Login refused: the home directory cannot be opened.")
                        .await?;
                    return Ok(Flow::Continue);
                }
            },
            None => None,
        };
        match logged_in {
            Some(user) => {
                self.shared.lockout.record_success(ip);
                self.shared.metrics.login("ok");
                tracing::info!(user = %user.name, permissions = %user.permissions, "login");
                self.user = Some(user);
                self.reply(230, "Login successful.").await?;
            }
            None => {
                self.shared.metrics.login("failed");
                let limits = self.settings.config.limits;
                tokio::time::sleep(Duration::from_millis(
                    limits.login_failure_delay_millis.into(),
                ))
                .await;
                let locked = self.shared.lockout.record_failure(
                    ip,
                    limits.login_failures_before_lockout,
                    Duration::from_secs(limits.lockout_seconds.into()),
                );
                tracing::warn!(locked, "login failed");
                if locked {
                    self.reply(
                        421,
                        "Too many failed logins from your address; try again later.",
                    )
                    .await?;
                    return Ok(Flow::Quit);
                }
                self.reply(530, "Login incorrect.").await?;
            }
        }
        Ok(Flow::Continue)
    }

    fn anonymous_access(&self) -> (String, Access) {
        let anonymous = &self.settings.config.anonymous;
        let permissions = if anonymous.writable {
            Permissions::read_write()
        } else {
            Permissions::read_only()
        };
        // The config was validated at load, so the home is already a valid one.
        let home = crate::ftp::access::home_path(anonymous.home.as_deref().unwrap_or_default())
            .unwrap_or_default();
        ("anonymous".into(), Access { permissions, home })
    }

    /// Opens (creating if missing) the login's home on a blocking thread.
    async fn open_home(&self, access: &Access) -> io::Result<Root> {
        let root = self.settings.root.clone();
        let home = access.home.clone();
        tokio::task::spawn_blocking(move || root.open_home(&home))
            .await
            .map_err(io::Error::other)?
    }

    fn tls_active(&self) -> bool {
        self.control.is_tls()
    }

    async fn auth(&mut self) -> io::Result<()> {
        let Some(acceptors) = self.settings.tls.clone() else {
            return self
                .reply(502, "TLS is not configured on this server.")
                .await;
        };
        if self.tls_active() {
            return self.reply(503, "TLS is already active.").await;
        }
        self.reply(234, "Proceed with negotiation.").await?;
        let limit = self.idle_timeout();
        self.control.upgrade(&acceptors.control, limit).await?;
        self.tls = Some(acceptors);
        Ok(())
    }

    /// The TLS handshake an implicit FTPS session starts with. Data connections are protected
    /// from the start too (clients still send `PBSZ`/`PROT P`, which are accepted).
    async fn implicit_tls(&mut self) -> io::Result<()> {
        let Some(acceptors) = self.settings.tls.clone() else {
            return Err(io::Error::other(
                "implicit FTPS without a TLS configuration",
            ));
        };
        let limit = self.idle_timeout();
        self.control.upgrade(&acceptors.control, limit).await?;
        self.tls = Some(acceptors);
        self.protect_data = true;
        Ok(())
    }

    async fn prot(&mut self, level: Protection) -> io::Result<()> {
        if self.tls.is_none() {
            return self.reply(503, "PROT needs AUTH TLS first.").await;
        }
        match level {
            Protection::Private => {
                self.protect_data = true;
                self.reply(200, "PROT now Private.").await
            }
            Protection::Clear if self.settings.tls_required() => {
                self.reply(
                    534,
                    "PROT C refused: this server requires protected data connections.",
                )
                .await
            }
            Protection::Clear => {
                self.protect_data = false;
                self.reply(200, "PROT now Clear.").await
            }
        }
    }

    async fn feat(&mut self) -> io::Result<()> {
        let mut lines = Vec::new();
        if self.settings.tls.is_some() {
            lines.extend([" AUTH TLS".to_owned(), " PBSZ".into(), " PROT".into()]);
        }
        if self.settings.config.active_mode.enabled {
            lines.push(" EPRT".into());
        }
        lines.extend(
            [
                " EPSV",
                " MDTM",
                " MLST type*;size*;modify*;perm*;unique*;",
                " REST STREAM",
                " SIZE",
                " TVFS",
                " UTF8",
            ]
            .map(String::from),
        );
        self.send(Reply::multi(211, "Features:", lines, "End"))
            .await
    }

    async fn help(&mut self) -> io::Result<()> {
        let lines = vec![
            " ABOR ACCT ALLO APPE AUTH CCC  CDUP CWD  DELE EPRT EPSV FEAT HELP LIST MDTM MKD"
                .into(),
            " MLSD MLST MODE NLST NOOP OPTS PASS PASV PBSZ PORT PROT PWD  QUIT REST RETR RMD"
                .into(),
            " RNFR RNTO SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD XPWD XRMD".into(),
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

/// The permission a command needs beyond being logged in.
fn required_permission(command: &Command) -> Option<Permission> {
    Some(match command {
        Command::List(_)
        | Command::Nlst(_)
        | Command::Mlsd(_)
        | Command::Mlst(_)
        | Command::Stat(Some(_))
        | Command::Size(_)
        | Command::Mdtm(_) => Permission::List,
        Command::Retr(_) => Permission::Download,
        Command::Stor(_) | Command::Appe(_) | Command::Stou => Permission::Upload,
        Command::Dele(_) | Command::Rmd(_) => Permission::Delete,
        Command::Rnfr(_) => Permission::Rename,
        Command::Mkd(_) => Permission::Mkdir,
        _ => return None,
    })
}

enum StoreKind {
    Replace(String),
    Append(String),
    Unique,
}
