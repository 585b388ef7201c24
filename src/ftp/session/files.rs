//! Commands on files and directories: navigation, metadata, listings, downloads and uploads.

use std::io;

use super::{Flow, Outcome, Reply0, Session, StoreKind};
use crate::ftp::access::Permission;
use crate::ftp::fs::{self, FileKind, file_kind};
use crate::ftp::listing::{self, ListKind};
use crate::ftp::reply::{Reply, quote_path};
use crate::ftp::transfer;

impl Session {
    pub(super) async fn cwd(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        match self.root().open_dir(&target) {
            Ok(_) => {
                self.cwd = target;
                self.reply(250, "Directory successfully changed.").await
            }
            Err(error) => self.fs_error(error, "Failed to change directory.").await,
        }
    }

    pub(super) async fn mkd(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
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

    pub(super) async fn size(&mut self, path: &str) -> io::Result<()> {
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

    pub(super) async fn mdtm(&mut self, path: &str) -> io::Result<()> {
        let target = fs::resolve(&self.cwd, path);
        match self.root().stat(&target) {
            Ok(stat) => self.reply(213, listing::time_val(&stat)).await,
            Err(error) => {
                self.fs_error(error, "Could not get file modification time.")
                    .await
            }
        }
    }

    /// Whether listings show the entries as writable (the `perm` facts of MLSD/MLST).
    pub(super) fn writable(&self) -> bool {
        self.permissions().allows(Permission::Upload)
    }

    pub(super) async fn mlst(&mut self, path: Option<&str>) -> io::Result<()> {
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

    pub(super) async fn store(&mut self, kind: StoreKind, offset: u64) -> Reply0 {
        let (target, unique) = match &kind {
            StoreKind::Replace(path) | StoreKind::Append(path) => {
                (fs::resolve(&self.cwd, path), false)
            }
            StoreKind::Unique => {
                let name = format!("stou-{:016x}", rand::random::<u64>());
                (fs::resolve(&self.cwd, &name), true)
            }
        };
        // Replacing or extending a file destroys what was there: that takes `delete` too.
        let replace = self.permissions().may_replace();
        if !replace && self.root().lstat(&target).is_ok() {
            self.reply(
                550,
                "Permission denied: the file exists and this login may not replace files.",
            )
            .await?;
            return Ok(Flow::Continue);
        }
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
            && let Err(error) = upload.commit(replace)
        {
            outcome = Outcome::Done(Err(error));
        }
        self.finish_transfer("upload", &outcome).await
    }

    pub(super) async fn listing_text(
        &self,
        kind: ListKind,
        target: &str,
        shown_as: &str,
    ) -> io::Result<Vec<u8>> {
        let root = self.root().clone();
        let target = target.to_owned();
        let shown_as = shown_as.to_owned();
        let writable = self.writable();
        tokio::task::spawn_blocking(move || {
            listing::render(&root, kind, &target, &shown_as, writable)
        })
        .await
        .map_err(io::Error::other)?
    }

    pub(super) async fn list(&mut self, kind: ListKind, path: Option<String>) -> Reply0 {
        let target = fs::resolve(&self.cwd, path.as_deref().unwrap_or("."));
        if kind == ListKind::Machine && !self.root().is_dir(&target) {
            self.reply(501, "MLSD needs a directory.").await?;
            return Ok(Flow::Continue);
        }
        let text = match self
            .listing_text(kind, &target, path.as_deref().unwrap_or(""))
            .await
        {
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
}
