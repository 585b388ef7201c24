//! Commands on files and directories: navigation, metadata, listings, downloads and uploads.

use std::io;
use std::time::Instant;

use super::data::Direction;
use super::{Flow, Outcome, Reply0, Session, StoreKind};
use crate::ftp::access::Permission;
use crate::ftp::fs;
use crate::ftp::listing::{self, ListKind, Listing, Writable};
use crate::ftp::live_users::UserSession;
use crate::ftp::quota::{self, UploadQuota};
use crate::ftp::reply::{Reply, quote_path};
use crate::ftp::storage::{FileKind, Home, Keep};
use crate::ftp::transfer;
use crate::ftp::upload_memory;

/// Runs a file-system call on a blocking thread, never on the runtime's workers.
pub(super) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(io::Error::other)?
}

impl Session {
    pub(super) async fn rmd(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        let removed = target.clone();
        let result = self.fs(move |root| root.remove_dir(&removed)).await;
        self.audit_change("rmdir", &target, None, result.is_ok());
        match result {
            Ok(()) => {
                self.reply(250, "Remove directory operation successful.")
                    .await
            }
            Err(error) => {
                self.fs_error(error, "Remove directory operation failed.")
                    .await
            }
        }
    }

    pub(super) async fn dele(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        let path = target.clone();
        let removed = self.fs(move |root| root.remove_file(&path)).await;
        self.audit_change("delete", &target, None, removed.is_ok());
        match removed {
            Ok(()) => self.reply(250, "Delete operation successful.").await,
            Err(error) => self.fs_error(error, "Delete operation failed.").await,
        }
    }

    pub(super) async fn rnfr(&mut self, path: &str) -> io::Result<()> {
        let source = fs::resolve(&self.cwd, path);
        let stated = source.clone();
        match self.fs(move |root| root.lstat(&stated)).await {
            Ok(_) => {
                self.rename_from = Some(source);
                self.reply(350, "Ready for RNTO.").await
            }
            Err(error) => self.fs_error(error, "RNFR command failed.").await,
        }
    }

    pub(super) async fn rnto(&mut self, path: &str) -> io::Result<()> {
        let Some(source) = self.rename_from.take() else {
            return self.reply(503, "Send RNFR first.").await;
        };
        let target = fs::resolve(&self.cwd, path);
        let replace = self.permissions().may_replace();
        let (from, to) = (source.clone(), target.clone());
        let renamed = self.fs(move |root| root.rename(&from, &to, replace)).await;
        self.audit_change("rename", &source, Some(&target), renamed.is_ok());
        match renamed {
            Ok(()) => self.reply(250, "Rename successful.").await,
            Err(error) => self.fs_error(error, "Rename failed.").await,
        }
    }

    pub(super) async fn cwd(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        let checked = target.clone();
        match self.fs(move |root| root.change_dir(&checked)).await {
            Ok(()) => {
                self.cwd = target;
                self.reply(250, "Directory successfully changed.").await
            }
            Err(error) => self.fs_error(error, "Failed to change directory.").await,
        }
    }

    pub(super) async fn mkd(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        let made = target.clone();
        let result = self.fs(move |root| root.mkdir(&made)).await;
        self.audit_change("mkdir", &target, None, result.is_ok());
        match result {
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

    pub(super) async fn size(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        match self.fs(move |root| root.stat(&target)).await {
            Ok(stat) if stat.kind == FileKind::File => self.reply(213, stat.size.to_string()).await,
            Ok(_) => {
                self.reply(550, "Could not get file size: not a regular file.")
                    .await
            }
            Err(error) => self.fs_error(error, "Could not get file size.").await,
        }
    }

    pub(super) async fn mdtm(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        match self.fs(move |root| root.stat(&target)).await {
            Ok(stat) => self.reply(213, listing::time_val(&stat)).await,
            Err(error) => {
                self.fs_error(error, "Could not get file modification time.")
                    .await
            }
        }
    }

    pub(super) async fn mfmt(&mut self, seconds: i64, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        let changed = target.clone();
        let result = self
            .fs(move |root| {
                root.set_modified(&changed, seconds)?;
                root.stat(&changed)
            })
            .await;
        self.audit_change("set_mtime", &target, None, result.is_ok());
        match result {
            Ok(stat) => {
                let text = format!("Modify={}; {path}", listing::time_val(&stat));
                self.reply(213, text).await
            }
            Err(error) => {
                self.fs_error(error, "Could not set the modification time.")
                    .await
            }
        }
    }

    pub(super) async fn site_chmod(&mut self, mode: u32, path: &str) -> io::Result<()> {
        if !self.settings.config.site_chmod {
            return self
                .reply(502, "SITE CHMOD is disabled on this server.")
                .await;
        }
        let target = fs::resolve(&self.cwd, path);
        let changed = target.clone();
        let result = self.fs(move |root| root.chmod(&changed, mode)).await;
        self.audit_change("chmod", &target, None, result.is_ok());
        match result {
            Ok(()) => self.reply(200, "SITE CHMOD command ok.").await,
            Err(error) => self.fs_error(error, "SITE CHMOD command failed.").await,
        }
    }

    /// Whether listings show the entries as writable (the `perm` facts of MLSD/MLST).
    pub(super) fn writable(&self) -> Writable {
        let write = self.permissions().allows(Permission::Upload);
        Writable {
            write,
            append: write && self.capabilities().append,
        }
    }

    pub(super) async fn mlst(&mut self, path: Option<&str>) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path.unwrap_or("."));
        let stated = target.clone();
        match self.fs(move |root| root.stat(&stated)).await {
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

    pub(super) async fn stat(&mut self, path: Option<&str>) -> io::Result<()> {
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
                match self.listing_text(ListKind::Long, &target, path).await {
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

    pub(super) async fn retr(&mut self, path: &str, offset: u64) -> Reply0 {
        let target = fs::resolve(&self.cwd, path);
        let shown = target.clone();
        let opened = self.fs(move |root| root.open_read(&target, offset)).await;
        let (download, size) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                self.fs_error(error, "Failed to open file.").await?;
                return Ok(Flow::Continue);
            }
        };
        if !self.data_allowed().await? {
            return Ok(Flow::Continue);
        }
        let stall = self.idle_timeout();
        let Some(data) = self
            .open_data(&format!("{path} ({size} bytes)"), Direction::Download)
            .await?
        else {
            return Ok(Flow::Continue);
        };
        let started = Instant::now();
        let throttle = self
            .account()
            .map(UserSession::download_throttle)
            .unwrap_or_default();
        let outcome = self
            .run_transfer(transfer::send_file(data, download, stall, throttle))
            .await?;
        self.finish_transfer("download", &shown, started, &outcome)
            .await
    }

    pub(super) async fn store(&mut self, kind: StoreKind, offset: u64) -> Reply0 {
        let (target, unique, keep) = match &kind {
            StoreKind::Replace(path) => (fs::resolve(&self.cwd, path), false, Keep::Prefix(offset)),
            StoreKind::Append(path) => (fs::resolve(&self.cwd, path), false, Keep::All),
            StoreKind::Unique => {
                let name = format!("stou-{:016x}", rand::random::<u64>());
                (fs::resolve(&self.cwd, &name), true, Keep::Nothing)
            }
        };
        // Replacing or extending a file destroys what was there: that takes `delete` too.
        let replace = self.permissions().may_replace();
        if !replace {
            let stated = target.clone();
            if self.fs(move |root| root.lstat(&stated)).await.is_ok() {
                self.reply(
                    550,
                    "Permission denied: the file exists and this login may not replace files.",
                )
                .await?;
                return Ok(Flow::Continue);
            }
        }
        let quota = match self.upload_quota(&target, keep).await {
            Ok(quota) => quota,
            Err(refusal) => {
                self.reply(552, refusal).await?;
                return Ok(Flow::Continue);
            }
        };
        if !self.data_allowed().await? {
            return Ok(Flow::Continue);
        }
        // Nothing on disk changes before the client's data connection is there; and every upload,
        // resumed ones too, goes to a temporary file renamed into place only when complete.
        let Some(tcp) = self.connect_data().await? else {
            return Ok(Flow::Continue);
        };
        // An upload to object storage holds part buffers: it reserves them from the server's
        // budget before it reads a byte, and keeps them until it is completed or aborted (the end
        // of this call), so the server never outgrows its memory. The data connection is taken
        // first: a passive one is often there already, and only a taken one has its keepalive,
        // which keeps the balancer from forgetting it while the upload waits here.
        let buffers = self.settings.storage.upload_memory_bytes();
        let _buffers = match self
            .shared
            .upload_memory
            .reserve(buffers, upload_memory::WAIT)
            .await
        {
            Ok(reservation) => reservation,
            Err(at_capacity) => {
                if let Some(quota) = quota {
                    quota.finish(false);
                }
                drop(tcp);
                tracing::warn!(path = %target, "upload refused: no part-buffer memory in time");
                self.reply(452, at_capacity.to_string()).await?;
                return Ok(Flow::Continue);
            }
        };
        let upload = {
            let target = target.clone();
            self.fs(move |root| root.begin_upload(&target, keep)).await
        };
        let mut upload = match upload {
            Ok(upload) => upload,
            Err(error) => {
                self.fs_error(error, "Could not create file.").await?;
                return Ok(Flow::Continue);
            }
        };
        let Some(body) = upload.take_body() else {
            self.reply(451, "Could not create file.").await?;
            return Ok(Flow::Continue);
        };
        let body = match &quota {
            Some(quota) => quota.guard(body),
            None => body,
        };
        let what = if unique {
            format!("FILE: {}", target.rsplit('/').next().unwrap_or_default())
        } else {
            target.clone()
        };
        let stall = self.idle_timeout();
        let Some(data) = self.start_data(tcp, &what, Direction::Upload).await? else {
            return Ok(Flow::Continue);
        };
        let started = Instant::now();
        let throttle = self
            .account()
            .map(UserSession::upload_throttle)
            .unwrap_or_default();
        let mut outcome = self
            .run_transfer(transfer::receive_file(data, body, stall, throttle))
            .await?;
        if let Outcome::Done(Ok(_)) = &outcome {
            if let Err(error) = blocking(move || upload.commit(replace)).await {
                outcome = Outcome::Done(Err(error));
            }
        } else {
            // Gone before the client hears the transfer ended.
            let _ = blocking(move || upload.discard()).await;
        }
        if let Some(quota) = quota {
            quota.finish(matches!(outcome, Outcome::Done(Ok(_))));
        }
        self.finish_transfer("upload", &target, started, &outcome)
            .await
    }

    /// The logged-in user's share of its account; none for anonymous logins.
    pub(super) fn account(&self) -> Option<&UserSession> {
        self.user.as_ref().and_then(|user| user.account.as_ref())
    }

    /// The quota check of an upload to `target`, when the user has a quota; the `552` text when
    /// the upload would add a file past `quota_files`, or usage cannot be read.
    async fn upload_quota(&self, target: &str, keep: Keep) -> Result<Option<UploadQuota>, String> {
        let Some(account) = self.account() else {
            return Ok(None);
        };
        let limit = self.settings.users.policy(account.name()).quota;
        if !limit.is_limited() {
            return Ok(None);
        }
        let ledger = account.ledger();
        let target = target.to_owned();
        let begun = self
            .fs(move |root| quota::begin_upload(root, limit, ledger, &target, keep))
            .await;
        match begun {
            Ok(Ok(quota)) => Ok(Some(quota)),
            Ok(Err(exceeded)) => Err(format!(
                "Quota exceeded: this login may store at most {} files.",
                exceeded.quota_files
            )),
            Err(error) => {
                tracing::warn!(%error, "cannot read the home's usage for its quota");
                Err("Cannot check the quota: the home's usage cannot be read.".to_owned())
            }
        }
    }

    /// Runs a storage call on the login's home on a blocking thread.
    pub(super) async fn fs<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Home) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let root = self.home()?;
        blocking(move || call(&*root)).await
    }

    async fn open_listing(
        &self,
        kind: ListKind,
        target: &str,
        shown_as: &str,
    ) -> io::Result<Listing> {
        let target = target.to_owned();
        let shown_as = shown_as.to_owned();
        let writable = self.writable();
        self.fs(move |root| Listing::open(root, kind, &target, &shown_as, writable))
            .await
    }

    pub(super) async fn listing_text(
        &self,
        kind: ListKind,
        target: &str,
        shown_as: &str,
    ) -> io::Result<Vec<u8>> {
        let listing = self.open_listing(kind, target, shown_as).await?;
        blocking(move || listing.collect()).await
    }

    pub(super) async fn list(&mut self, kind: ListKind, path: Option<String>) -> Reply0 {
        let target = fs::resolve(&self.cwd, path.as_deref().unwrap_or("."));
        // A missing path is 550 like every other command (sync clients read it as "not found");
        // only an existing non-directory is the argument error RFC 3659 gives 501 for.
        if kind == ListKind::Machine {
            let stated = target.clone();
            match self.fs(move |root| root.stat(&stated)).await {
                Ok(stat) if stat.kind == FileKind::Dir => {}
                Ok(_) => {
                    self.reply(501, "MLSD needs a directory.").await?;
                    return Ok(Flow::Continue);
                }
                Err(error) => {
                    self.fs_error(error, "Could not list.").await?;
                    return Ok(Flow::Continue);
                }
            }
        }
        // Opened now, so a missing path is 550 before any data connection; read only as the
        // client takes it.
        let listing = match self
            .open_listing(kind, &target, path.as_deref().unwrap_or(""))
            .await
        {
            Ok(listing) => listing,
            Err(error) => {
                self.fs_error(error, "Could not list.").await?;
                return Ok(Flow::Continue);
            }
        };
        if !self.data_allowed().await? {
            return Ok(Flow::Continue);
        }
        let stall = self.idle_timeout();
        let Some(data) = self
            .open_data("directory listing", Direction::Download)
            .await?
        else {
            return Ok(Flow::Continue);
        };
        let started = Instant::now();
        let outcome = self
            .run_transfer(transfer::send_listing(data, listing, stall))
            .await?;
        self.finish_transfer("listing", &target, started, &outcome)
            .await
    }
}
