//! One control connection: reads command lines, keeps the session's state (login, working
//! directory, data-connection plan, TLS), and runs transfers while still listening for `ABOR`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::command::{self, Command, EpsvArg, Protection, TransferType};
use super::control::{ControlConnection, Line};
use super::fs::{self, FileKind, Root, file_kind};
use super::keepalive;
use super::listing::{self, ListKind};
use super::passive::{PassiveListener, advertised_ipv4, same_host};
use super::reply::{Reply, quote_path};
use super::server::Shared;
use super::settings::Settings;
use super::tls::TlsAcceptors;
use super::transfer::{self, DataStream};

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
    writable: bool,
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
}

type Reply0 = io::Result<Flow>;

impl Session {
    pub fn new(
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
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
        }
    }

    fn root(&self) -> &Root {
        &self.settings.root
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
        self.reply(220, "ftp-server ready.").await?;
        let idle = Duration::from_secs(
            self.settings
                .config
                .limits
                .idle_timeout_seconds
                .max(1)
                .into(),
        );
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
                if self.check_writable().await? {
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
            }
            Command::Dele(path) => {
                let target = fs::resolve(&self.cwd, &path);
                if self.check_writable().await? {
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
            }
            Command::Rnfr(path) => {
                let source = fs::resolve(&self.cwd, &path);
                if self.check_writable().await? {
                    match self.root().lstat(&source) {
                        Ok(_) => {
                            self.rename_from = Some(source);
                            self.reply(350, "Ready for RNTO.").await?
                        }
                        Err(error) => self.fs_error(error, "RNFR command failed.").await?,
                    }
                }
            }
            Command::Rnto(path) => match self.rename_from.take() {
                None => self.reply(503, "Send RNFR first.").await?,
                Some(source) => {
                    let target = fs::resolve(&self.cwd, &path);
                    match self.root().rename(&source, &target) {
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

    async fn check_writable(&mut self) -> io::Result<bool> {
        let writable = self.user.as_ref().is_some_and(|user| user.writable);
        if !writable {
            self.reply(550, "Permission denied: this login is read-only.")
                .await?;
        }
        Ok(writable)
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
            Login::Anonymous => Some(LoggedIn {
                name: "anonymous".into(),
                writable: self.settings.config.anonymous.writable,
            }),
            Login::User(name) => self
                .settings
                .users
                .verify(&name, &password)
                .await
                .map(|writable| LoggedIn { name, writable }),
        };
        match logged_in {
            Some(user) => {
                self.shared.lockout.record_success(ip);
                self.shared.metrics.login("ok");
                tracing::info!(user = %user.name, writable = user.writable, "login");
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

    // ---- directories and metadata ----

    async fn cwd(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        match self.root().open_dir(&target) {
            Ok(_) => {
                self.cwd = target;
                self.reply(250, "Directory successfully changed.").await
            }
            Err(error) => self.fs_error(error, "Failed to change directory.").await,
        }
    }

    async fn mkd(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        if !self.check_writable().await? {
            return Ok(());
        }
        match self.root().mkdir(&target) {
            Ok(()) => {
                self.reply(257, format!("{} created", quote_path(&target)))
                    .await
            }
            Err(error) => {
                self.fs_error(error, "Create directory operation failed.")
                    .await
            }
        }
    }

    async fn size(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        match self.root().stat(&target) {
            Ok(stat) if file_kind(&stat) == FileKind::File => {
                self.reply(213, stat.st_size.to_string()).await
            }
            Ok(_) => {
                self.reply(550, "Could not get file size: not a regular file.")
                    .await
            }
            Err(error) => self.fs_error(error, "Could not get file size.").await,
        }
    }

    async fn mdtm(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        match self.root().stat(&target) {
            Ok(stat) => self.reply(213, listing::time_val(&stat)).await,
            Err(error) => {
                self.fs_error(error, "Could not get file modification time.")
                    .await
            }
        }
    }

    fn writable(&self) -> bool {
        self.user.as_ref().is_some_and(|user| user.writable)
    }

    async fn mlst(&mut self, path: Option<&str>) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path.unwrap_or("."));
        match self.root().stat(&target) {
            Ok(stat) => {
                let facts = listing::facts(&stat, self.writable(), false);
                let line = format!(" {facts} {target}");
                self.send(Reply::multi(
                    250,
                    format!("Listing {target}"),
                    vec![line],
                    "End",
                ))
                .await
            }
            Err(error) => self.fs_error(error, "Could not list.").await,
        }
    }

    async fn stat(&mut self, path: Option<&str>) -> io::Result<()> {
        match path {
            None => {
                let user = self
                    .user
                    .as_ref()
                    .map(|u| u.name.clone())
                    .unwrap_or_default();
                let lines = vec![
                    format!(" Connected to {}", self.peer.ip()),
                    format!(" Logged in as {user}"),
                    format!(" TYPE: {}", if self.ascii { "ASCII" } else { "BINARY" }),
                    format!(
                        " Control connection is {}",
                        if self.tls_active() { "TLS" } else { "plain" }
                    ),
                    format!(
                        " Data connections are {}",
                        if self.protect_data {
                            "protected"
                        } else {
                            "plain"
                        }
                    ),
                ];
                self.send(Reply::multi(
                    211,
                    "FTP server status:",
                    lines,
                    "End of status",
                ))
                .await
            }
            Some(path) => {
                let target = fs::resolve(&self.cwd, path);
                match self.listing_text(ListKind::Long, &target).await {
                    Ok(text) => {
                        let lines = String::from_utf8_lossy(&text)
                            .lines()
                            .map(|line| format!(" {line}"))
                            .collect();
                        self.send(Reply::multi(
                            213,
                            format!("Status of {target}:"),
                            lines,
                            "End of status",
                        ))
                        .await
                    }
                    Err(error) => self.fs_error(error, "Could not get status.").await,
                }
            }
        }
    }

    // ---- data connections ----

    async fn passive(&mut self, extended: bool) -> io::Result<()> {
        if self.epsv_all && !extended {
            return self.reply(503, "EPSV ALL is in effect; use EPSV.").await;
        }
        self.data_plan = None;
        let bind_ip = self.local.ip();
        let advertised = if extended {
            None
        } else {
            Some(
                advertised_ipv4(
                    self.settings.config.public_address.as_deref(),
                    self.local.ip(),
                )
                .await,
            )
        };
        if let Some(None) = advertised {
            return self
                .reply(
                    425,
                    "Cannot find an IPv4 address to advertise for PASV; use EPSV.",
                )
                .await;
        }
        let range = self.settings.config.passive_ports;
        let Some(listener) = self.shared.ports.open(&range, bind_ip) else {
            tracing::warn!(%range, "passive ports exhausted");
            return self
                .reply(
                    425,
                    format!("No passive port free in {range}; try again later."),
                )
                .await;
        };
        let port = listener.port();
        self.data_plan = Some(DataPlan::Passive(listener));
        match advertised {
            Some(Some(ip)) => {
                let [a, b, c, d] = ip.octets();
                self.reply(
                    227,
                    format!(
                        "Entering Passive Mode ({a},{b},{c},{d},{},{}).",
                        port >> 8,
                        port & 0xff
                    ),
                )
                .await
            }
            _ => {
                self.reply(229, format!("Entering Extended Passive Mode (|||{port}|)"))
                    .await
            }
        }
    }

    async fn epsv(&mut self, arg: EpsvArg) -> io::Result<()> {
        let ipv4 = self.local.ip().to_canonical().is_ipv4();
        match arg {
            EpsvArg::All => {
                self.epsv_all = true;
                self.reply(200, "EPSV ALL ok.").await
            }
            EpsvArg::Ipv4 if !ipv4 => {
                self.reply(522, "Network protocol not supported, use (2)")
                    .await
            }
            EpsvArg::Ipv6 if ipv4 => {
                self.reply(522, "Network protocol not supported, use (1)")
                    .await
            }
            _ => self.passive(true).await,
        }
    }

    async fn active(&mut self, address: SocketAddr) -> io::Result<()> {
        let active = self.settings.config.active_mode;
        if !active.enabled {
            return self
                .reply(
                    502,
                    "Active mode (PORT/EPRT) is disabled; use PASV or EPSV.",
                )
                .await;
        }
        if self.epsv_all {
            return self.reply(503, "EPSV ALL is in effect; use EPSV.").await;
        }
        if !active.allow_foreign_address && !same_host(address.ip(), self.peer.ip()) {
            tracing::warn!(%address, "refused PORT to another address");
            return self
                .reply(
                    500,
                    "Illegal PORT command: the data address must be your own.",
                )
                .await;
        }
        if address.port() < 1024 {
            return self
                .reply(500, "Illegal PORT command: privileged port.")
                .await;
        }
        self.data_plan = Some(DataPlan::Active(address));
        self.reply(200, "PORT command successful. Consider using PASV.")
            .await
    }

    /// Checks that a data transfer may start at all (a plan exists, TLS policy is met).
    async fn data_allowed(&mut self) -> io::Result<bool> {
        if self.data_plan.is_none() {
            self.reply(425, "Use PASV or EPSV first.").await?;
            return Ok(false);
        }
        if self.settings.tls_required() && !self.protect_data {
            self.data_plan = None;
            self.reply(521, "Data connections must be protected: send PROT P.")
                .await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Makes the data connection, replies `150`, then starts TLS on it if `PROT P`.
    async fn open_data(&mut self, what: &str) -> io::Result<Option<DataStream>> {
        let timeout = Duration::from_secs(
            self.settings
                .config
                .limits
                .data_connect_timeout_seconds
                .max(1)
                .into(),
        );
        let tcp = match self.data_plan.take() {
            Some(DataPlan::Passive(listener)) => {
                listener.accept_from(self.peer.ip(), timeout).await
            }
            Some(DataPlan::Active(address)) => {
                tokio::time::timeout(timeout, TcpStream::connect(address))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            }
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        let tcp = match tcp {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::info!(%error, "data connection failed");
                self.reply(425, "Cannot open data connection.").await?;
                return Ok(None);
            }
        };
        let _ = tcp.set_nodelay(true);
        if let Err(error) = keepalive::apply(&tcp, &self.settings.config.keepalive) {
            tracing::warn!(%error, "cannot set keepalive on data connection");
        }
        let mode = if self.ascii { "ASCII" } else { "BINARY" };
        self.reply(
            150,
            format!("Opening {mode} mode data connection for {what}."),
        )
        .await?;
        if !self.protect_data {
            return Ok(Some(DataStream::Plain(tcp)));
        }
        let Some(acceptors) = self.tls.clone() else {
            self.reply(425, "PROT P without TLS.").await?;
            return Ok(None);
        };
        let handshake = tokio::time::timeout(timeout, acceptors.data.accept(tcp))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
        match handshake {
            Ok(stream) => Ok(Some(DataStream::Tls(Box::new(stream)))),
            Err(error) => {
                tracing::info!(%error, "data TLS handshake failed");
                self.reply(425, "TLS handshake on the data connection failed.")
                    .await?;
                Ok(None)
            }
        }
    }

    /// Runs a transfer while reading the control connection for `ABOR` (and answering `NOOP`,
    /// `STAT`); a closed control connection ends the transfer too.
    async fn run_transfer<F>(&mut self, transfer: F) -> io::Result<Outcome>
    where
        F: Future<Output = io::Result<u64>>,
    {
        tokio::pin!(transfer);
        loop {
            tokio::select! {
                result = &mut transfer => return Ok(Outcome::Done(result)),
                line = self.read_line() => match line? {
                    Line::Closed => return Ok(Outcome::ControlClosed),
                    Line::TooLong => self.reply(500, "Command line too long.").await?,
                    Line::Command(line) => match command::parse(&line) {
                        Ok(Command::Abor) => return Ok(Outcome::Aborted),
                        Ok(Command::Noop) => self.reply(200, "NOOP ok.").await?,
                        Ok(Command::Stat(None)) => self.reply(213, "Transfer in progress.").await?,
                        // RFC 959: QUIT during a transfer waits for it, then closes.
                        Ok(Command::Quit) => {
                            self.quit_after_transfer = true;
                            return Ok(Outcome::Done((&mut transfer).await));
                        }
                        _ => self.reply(503, "A transfer is in progress; send ABOR to stop it.").await?,
                    },
                },
            }
        }
    }

    /// Sends the replies that end a transfer; returns whether the session goes on.
    async fn finish_transfer(&mut self, direction: &str, outcome: &Outcome) -> Reply0 {
        let metrics = Arc::clone(&self.shared.metrics);
        match outcome {
            Outcome::Done(Ok(bytes)) => {
                metrics.transfer(direction, "ok", *bytes);
                tracing::info!(direction, bytes, "transfer complete");
                self.reply(226, "Transfer complete.").await?;
            }
            Outcome::Done(Err(error)) => {
                metrics.transfer(direction, "failed", 0);
                tracing::info!(direction, %error, "transfer failed");
                self.reply(426, "Connection closed; transfer aborted.")
                    .await?;
            }
            Outcome::Aborted => {
                metrics.transfer(direction, "aborted", 0);
                self.reply(426, "Connection closed; transfer aborted.")
                    .await?;
                self.reply(226, "ABOR successful.").await?;
            }
            Outcome::ControlClosed => {
                metrics.transfer(direction, "aborted", 0);
                return Ok(Flow::Quit);
            }
        }
        if self.quit_after_transfer {
            self.reply(221, "Goodbye.").await?;
            return Ok(Flow::Quit);
        }
        Ok(Flow::Continue)
    }

    async fn retr(&mut self, path: &str, offset: u64) -> Reply0 {
        let target = fs::resolve(&self.cwd, path);
        let file = match self.root().open_read(&target) {
            Ok(file) => file,
            Err(error) => {
                self.fs_error(error, "Failed to open file.").await?;
                return Ok(Flow::Continue);
            }
        };
        if !self.data_allowed().await? {
            return Ok(Flow::Continue);
        }
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let stall = self.idle_timeout();
        let Some(data) = self.open_data(&format!("{path} ({size} bytes)")).await? else {
            return Ok(Flow::Continue);
        };
        let outcome = self
            .run_transfer(transfer::send_file(data, file, offset, stall))
            .await?;
        self.finish_transfer("download", &outcome).await
    }

    async fn store(&mut self, kind: StoreKind, offset: u64) -> Reply0 {
        if !self.check_writable().await? {
            return Ok(Flow::Continue);
        }
        let (target, unique) = match &kind {
            StoreKind::Replace(path) | StoreKind::Append(path) => {
                (fs::resolve(&self.cwd, path), false)
            }
            StoreKind::Unique => {
                let name = format!("stou-{:016x}", rand::random::<u64>());
                (fs::resolve(&self.cwd, &name), true)
            }
        };
        // Plain STOR and STOU write a temporary file renamed into place on success; APPE and a
        // resumed STOR (REST n) extend the existing file, which is what they mean.
        let opened = match kind {
            StoreKind::Append(_) => self.root().open_write(&target, true).map(|f| (f, None)),
            StoreKind::Replace(_) if offset > 0 => {
                self.root().open_write(&target, false).and_then(|f| {
                    f.set_len(offset)?;
                    let mut f = f;
                    io::Seek::seek(&mut f, io::SeekFrom::Start(offset))?;
                    Ok((f, None))
                })
            }
            _ => self.root().begin_upload(&target).and_then(|mut upload| {
                let file = upload
                    .take_file()
                    .ok_or_else(|| io::Error::other("no upload file"))?;
                Ok((file, Some(upload)))
            }),
        };
        let (file, upload) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                self.fs_error(error, "Could not create file.").await?;
                return Ok(Flow::Continue);
            }
        };
        if !self.data_allowed().await? {
            return Ok(Flow::Continue);
        }
        let what = if unique {
            format!("FILE: {}", target.rsplit('/').next().unwrap_or_default())
        } else {
            target.clone()
        };
        let stall = self.idle_timeout();
        let Some(data) = self.open_data(&what).await? else {
            return Ok(Flow::Continue);
        };
        let mut outcome = self
            .run_transfer(transfer::receive_file(data, file, stall))
            .await?;
        if let (Outcome::Done(Ok(_)), Some(upload)) = (&outcome, upload)
            && let Err(error) = upload.commit()
        {
            outcome = Outcome::Done(Err(error));
        }
        self.finish_transfer("upload", &outcome).await
    }

    async fn listing_text(&self, kind: ListKind, target: &str) -> io::Result<Vec<u8>> {
        let root = self.root().clone();
        let target = target.to_owned();
        let writable = self.writable();
        tokio::task::spawn_blocking(move || listing::render(&root, kind, &target, writable))
            .await
            .map_err(io::Error::other)?
    }

    async fn list(&mut self, kind: ListKind, path: Option<String>) -> Reply0 {
        let target = fs::resolve(&self.cwd, path.as_deref().unwrap_or("."));
        if kind == ListKind::Machine && !self.root().is_dir(&target) {
            self.reply(501, "MLSD needs a directory.").await?;
            return Ok(Flow::Continue);
        }
        let text = match self.listing_text(kind, &target).await {
            Ok(text) => text,
            Err(error) => {
                self.fs_error(error, "Could not list.").await?;
                return Ok(Flow::Continue);
            }
        };
        if !self.data_allowed().await? {
            return Ok(Flow::Continue);
        }
        let Some(mut data) = self.open_data("directory listing").await? else {
            return Ok(Flow::Continue);
        };
        let outcome = self
            .run_transfer(async move { transfer::send_bytes(&mut data, &text).await })
            .await?;
        self.finish_transfer("listing", &outcome).await
    }

    pub fn id(&self) -> u64 {
        self.id
    }
}

enum StoreKind {
    Replace(String),
    Append(String),
    Unique,
}
