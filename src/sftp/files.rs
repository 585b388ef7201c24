//! The SFTP requests of one channel, served from the login's home through the storage seam, with
//! FTP's rules: the same permission for the same act, paths confined beneath the home (`..` stops
//! at its top, absolute paths start at it, links are followed only inside it), uploads invisible
//! until closed, and what the storage cannot do refused rather than served as something else.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use russh_sftp::protocol::{
    Attrs, Data, File as NameEntry, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};

use crate::ftp::access::{Permission, Permissions};
use crate::ftp::audit::{self, Actor, TransferResult};
use crate::ftp::auth::policy::Quota;
use crate::ftp::fs;
use crate::ftp::listing;
use crate::ftp::live_users::UserSession;
use crate::ftp::metrics::Metrics;
use crate::ftp::quota::{self, UploadQuota};
use crate::ftp::storage::{
    Capabilities, Download, Entries, FileKind, Home, Keep, Metadata, Upload, UploadBody,
};
use crate::ftp::upload_memory::{self, Reservation, UploadMemory};

/// Handles one channel may hold open at once (files and directories).
pub const MAX_OPEN_HANDLES: usize = 64;

/// Directory entries sent per `READDIR` reply.
const ENTRIES_PER_READDIR: usize = 128;

/// Who is logged in on the channel and what they may do.
pub struct Login {
    pub name: String,
    pub permissions: Permissions,
    pub home: Arc<dyn Home>,
    pub client: std::net::IpAddr,
    /// The session's share of its user: its bandwidth buckets and quota ledger.
    pub account: Arc<UserSession>,
    pub quota: Quota,
}

/// What the server allows beyond permissions.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub capabilities: Capabilities,
    /// `SETSTAT` of permission bits (FTP's `SITE CHMOD` switch).
    pub chmod: bool,
    /// The most a `READ` is answered with.
    pub max_read: u32,
    /// What one upload holds in the storage's own buffers, reserved from the server's budget
    /// at the open (`Storage::upload_memory_bytes`).
    pub upload_memory_bytes: u64,
}

enum Reader {
    File(std::fs::File),
    /// A stream read in order only; `position` is where it is.
    Stream {
        reader: Box<dyn Read + Send>,
        position: u64,
    },
}

enum Writer {
    File(std::fs::File),
    Stream {
        writer: Box<dyn Write + Send>,
        position: u64,
    },
}

enum Open {
    Read {
        path: String,
        reader: Option<Reader>,
        size: u64,
        bytes: u64,
        started: Instant,
    },
    Write {
        path: String,
        upload: Option<Box<dyn Upload>>,
        writer: Option<Writer>,
        replace: bool,
        bytes: u64,
        started: Instant,
        /// Times and modes a client set on the open handle, applied once it is committed.
        pending: FileAttributes,
        /// The user's quota check, when it has a quota: told how the upload ended.
        quota: Option<Box<UploadQuota>>,
        /// The upload's part buffers, held until it is committed or discarded.
        buffers: Option<Reservation>,
    },
    Dir {
        path: String,
        entries: Option<Entries>,
    },
}

/// A request's answer, or the status that answers it instead.
type Answer = Result<Packet, Status>;

fn status(id: u32, code: StatusCode, message: impl Into<String>) -> Status {
    Status {
        id,
        status_code: code,
        error_message: message.into(),
        language_tag: "en".into(),
    }
}

fn ok(id: u32) -> Packet {
    Packet::Status(status(id, StatusCode::Ok, "Ok"))
}

/// What a failed storage call tells the client.
fn io_status(id: u32, error: &io::Error) -> Status {
    let (code, message) = match error.kind() {
        io::ErrorKind::NotFound => (StatusCode::NoSuchFile, "No such file or directory".into()),
        io::ErrorKind::PermissionDenied => (StatusCode::PermissionDenied, error.to_string()),
        io::ErrorKind::AlreadyExists => (StatusCode::Failure, "File exists".into()),
        io::ErrorKind::Unsupported => (StatusCode::OpUnsupported, error.to_string()),
        _ if error.raw_os_error() == Some(libc::EXDEV) => (
            StatusCode::PermissionDenied,
            "Permission denied: the path leads outside your home".into(),
        ),
        _ => (StatusCode::Failure, error.to_string()),
    };
    status(id, code, message)
}

/// Runs a blocking storage call off the runtime.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(io::Error::other)?
}

/// The attributes SFTP shows of a file (type bits with the mode, as `stat(2)` gives them).
pub fn attributes(metadata: &Metadata) -> FileAttributes {
    let kind = match metadata.kind {
        FileKind::File => 0o100000,
        FileKind::Dir => 0o040000,
        FileKind::Symlink => 0o120000,
        FileKind::Other => 0,
    };
    let mtime = u32::try_from(metadata.modified.max(0)).unwrap_or(u32::MAX);
    FileAttributes {
        size: Some(metadata.size),
        uid: Some(0),
        user: None,
        gid: Some(0),
        group: None,
        permissions: Some(kind | (metadata.mode & 0o7777)),
        atime: Some(mtime),
        mtime: Some(mtime),
    }
}

/// Up to `len` bytes from `offset`; fewer only at the end of the file.
fn read_at(reader: &mut Reader, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buffer = vec![0; len];
    let mut filled = 0;
    match reader {
        Reader::File(file) => {
            while filled < len {
                match file.read_at(&mut buffer[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Reader::Stream { position, .. } if offset != *position => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this server's storage reads a file in order only",
            ));
        }
        Reader::Stream { reader, position } => {
            while filled < len {
                match reader.read(&mut buffer[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            *position += filled as u64;
        }
    }
    buffer.truncate(filled);
    Ok(buffer)
}

pub struct Files {
    login: Login,
    rules: Rules,
    metrics: Arc<Metrics>,
    upload_memory: Arc<UploadMemory>,
    handles: HashMap<String, Open>,
    next_handle: u64,
    /// Files open for a transfer on every channel of the connection: a server shutting down
    /// ends the connection once it is 0, as FTP closes a session between transfers.
    transfers: Arc<AtomicUsize>,
    /// This channel's share of `transfers`.
    counted: usize,
}

impl Files {
    pub fn new(
        login: Login,
        rules: Rules,
        metrics: Arc<Metrics>,
        upload_memory: Arc<UploadMemory>,
        transfers: Arc<AtomicUsize>,
    ) -> Files {
        Files {
            login,
            rules,
            metrics,
            upload_memory,
            handles: HashMap::new(),
            next_handle: 0,
            transfers,
            counted: 0,
        }
    }

    /// Brings the connection's count of open transfers up to date with this channel's handles.
    fn count_transfers(&mut self) {
        let open = self
            .handles
            .values()
            .filter(|open| !matches!(open, Open::Dir { .. }))
            .count();
        if open > self.counted {
            self.transfers
                .fetch_add(open - self.counted, Ordering::SeqCst);
        } else {
            self.transfers
                .fetch_sub(self.counted - open, Ordering::SeqCst);
        }
        self.counted = open;
    }

    fn actor(&self) -> Actor<'_> {
        Actor {
            client: self.login.client,
            user: &self.login.name,
        }
    }

    /// The answer to one request; every request gets one.
    pub async fn serve(&mut self, packet: Packet) -> Packet {
        let id = packet.get_request_id();
        let answer = match packet {
            Packet::Init(_) => Ok(Packet::Version(Version::new())),
            Packet::Open(open) => self.open(open.id, &open.filename, open.pflags).await,
            Packet::Close(close) => self.close(close.id, &close.handle).await,
            Packet::Read(read) => {
                self.read(read.id, &read.handle, read.offset, read.len)
                    .await
            }
            Packet::Write(write) => {
                self.write(write.id, &write.handle, write.offset, write.data)
                    .await
            }
            Packet::Lstat(stat) => self.stat(stat.id, &stat.path, false).await,
            Packet::Stat(stat) => self.stat(stat.id, &stat.path, true).await,
            Packet::Fstat(fstat) => self.fstat(fstat.id, &fstat.handle).await,
            Packet::SetStat(set) => self.set_stat(set.id, &set.path, set.attrs).await,
            Packet::FSetStat(set) => self.fset_stat(set.id, &set.handle, set.attrs).await,
            Packet::OpenDir(open) => self.open_dir(open.id, &open.path).await,
            Packet::ReadDir(read) => self.read_dir(read.id, &read.handle).await,
            Packet::Remove(remove) => self.remove(remove.id, &remove.filename).await,
            Packet::MkDir(mkdir) => self.mkdir(mkdir.id, &mkdir.path).await,
            Packet::RmDir(rmdir) => self.rmdir(rmdir.id, &rmdir.path).await,
            Packet::RealPath(real) => self.real_path(real.id, &real.path),
            Packet::Rename(rename) => {
                self.rename(rename.id, &rename.oldpath, &rename.newpath)
                    .await
            }
            Packet::ReadLink(read) => Err(status(
                read.id,
                StatusCode::OpUnsupported,
                "Reading links is not available",
            )),
            Packet::Symlink(link) => Err(status(
                link.id,
                StatusCode::PermissionDenied,
                "Permission denied: links cannot be made on this server",
            )),
            Packet::Extended(extended) => Err(status(
                extended.id,
                StatusCode::OpUnsupported,
                format!("Extension {} is not available", extended.request),
            )),
            _ => Err(status(id, StatusCode::BadMessage, "Not a request")),
        };
        self.count_transfers();
        answer.unwrap_or_else(Packet::Status)
    }

    /// The client's path as a path of the home, or the refusal FTP gives the same name.
    fn path(&self, id: u32, path: &str, creates: bool) -> Result<String, Status> {
        if fs::has_control_bytes(path) {
            return Err(status(
                id,
                StatusCode::Failure,
                "File name not allowed: it contains control characters",
            ));
        }
        if fs::names_upload_temp(path) {
            return Err(if creates {
                status(
                    id,
                    StatusCode::PermissionDenied,
                    "File name not allowed: reserved for uploads in progress",
                )
            } else {
                status(id, StatusCode::NoSuchFile, "No such file or directory")
            });
        }
        Ok(fs::resolve("/", path))
    }

    fn permit(&self, id: u32, permission: Permission) -> Result<(), Status> {
        if self.login.permissions.allows(permission) {
            Ok(())
        } else {
            Err(status(
                id,
                StatusCode::PermissionDenied,
                format!(
                    "Permission denied: this login may not {}",
                    permission.name()
                ),
            ))
        }
    }

    fn new_handle(&mut self, id: u32, open: Open) -> Answer {
        if self.handles.len() >= MAX_OPEN_HANDLES {
            return Err(status(
                id,
                StatusCode::Failure,
                format!("Too many open files: close some (at most {MAX_OPEN_HANDLES})"),
            ));
        }
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        Ok(Packet::Handle(Handle { id, handle }))
    }

    fn home(&self) -> Arc<dyn Home> {
        Arc::clone(&self.login.home)
    }

    async fn open(&mut self, id: u32, filename: &str, flags: OpenFlags) -> Answer {
        let writes = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        let path = self.path(id, filename, writes)?;
        if !writes {
            self.permit(id, Permission::Download)?;
            let home = self.home();
            let opened = {
                let path = path.clone();
                blocking(move || home.open_read(&path, 0)).await
            };
            let (download, size) = opened.map_err(|e| io_status(id, &e))?;
            let reader = match download {
                Download::File { file, .. } => Reader::File(file),
                Download::Stream(reader) => Reader::Stream {
                    reader,
                    position: 0,
                },
            };
            return self.new_handle(
                id,
                Open::Read {
                    path,
                    reader: Some(reader),
                    size,
                    bytes: 0,
                    started: Instant::now(),
                },
            );
        }
        self.permit(id, Permission::Upload)?;
        let home = self.home();
        let existing = {
            let path = path.clone();
            blocking(move || match home.lstat(&path) {
                Ok(metadata) => Ok(Some(metadata)),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(error),
            })
            .await
            .map_err(|e| io_status(id, &e))?
        };
        let exclusive = flags.contains(OpenFlags::EXCLUDE);
        let keep = match &existing {
            None if !flags.contains(OpenFlags::CREATE) => {
                return Err(status(id, StatusCode::NoSuchFile, "No such file"));
            }
            None => Keep::Nothing,
            Some(_) if exclusive => {
                return Err(status(id, StatusCode::Failure, "File exists"));
            }
            Some(_) if !self.login.permissions.may_replace() => {
                return Err(status(
                    id,
                    StatusCode::PermissionDenied,
                    "Permission denied: this login may not replace or extend existing files",
                ));
            }
            Some(_) if flags.contains(OpenFlags::TRUNCATE) => Keep::Nothing,
            // Without TRUNCATE the file's bytes stay and writes land at their offsets: a resumed
            // upload (`reput`) or an append.
            Some(_) if !self.rules.capabilities.append => {
                return Err(status(
                    id,
                    StatusCode::OpUnsupported,
                    "This server's storage cannot extend a file: upload the whole file",
                ));
            }
            Some(_) => Keep::All,
        };
        // An upload to object storage reserves its part buffers before any data is taken, as
        // FTP's STOR does; the refusal is retryable.
        let buffers = match self
            .upload_memory
            .reserve(self.rules.upload_memory_bytes, upload_memory::WAIT)
            .await
        {
            Ok(reservation) => reservation,
            Err(at_capacity) => {
                tracing::warn!(%path, "upload refused: no part-buffer memory in time");
                return Err(status(id, StatusCode::Failure, at_capacity.to_string()));
            }
        };
        let quota = self.upload_quota(id, &path, keep).await?;
        let home = self.home();
        let mut upload = {
            let path = path.clone();
            blocking(move || home.begin_upload(&path, keep))
                .await
                .map_err(|e| io_status(id, &e))?
        };
        let body = match (upload.take_body(), &quota) {
            (Some(body), Some(quota)) => Some(quota.guard(body)),
            (body, None) => body,
            (None, Some(_)) => None,
        };
        let writer = match body {
            Some(UploadBody::File(file)) => Writer::File(file),
            // A body that keeps the file's bytes starts after them: a resumed upload of a login
            // with a quota (whose body is a stream) goes on at the file's end, in order.
            Some(UploadBody::Stream(writer)) => Writer::Stream {
                writer,
                position: match keep {
                    Keep::All => existing.as_ref().map_or(0, |stat| stat.size),
                    Keep::Nothing | Keep::Prefix(_) => 0,
                },
            },
            None => return Err(status(id, StatusCode::Failure, "Upload has no body")),
        };
        self.new_handle(
            id,
            Open::Write {
                path,
                upload: Some(upload),
                writer: Some(writer),
                replace: !exclusive,
                bytes: 0,
                started: Instant::now(),
                pending: FileAttributes::empty(),
                quota,
                buffers,
            },
        )
    }

    /// The quota check of an upload to `path`, when the user has a quota: refused (as FTP's
    /// `552`) when it would add a file past `quota_files`. The byte quota is kept by the guarded
    /// body, which writes in order only: a resumed upload goes on from the file's end.
    async fn upload_quota(
        &mut self,
        id: u32,
        path: &str,
        keep: Keep,
    ) -> Result<Option<Box<UploadQuota>>, Status> {
        if !self.login.quota.is_limited() {
            return Ok(None);
        }
        let home = self.home();
        let limit = self.login.quota;
        let ledger = self.login.account.ledger();
        let target = path.to_owned();
        match blocking(move || quota::begin_upload(&*home, limit, ledger, &target, keep)).await {
            Ok(Ok(quota)) => Ok(Some(Box::new(quota))),
            Ok(Err(exceeded)) => Err(status(
                id,
                StatusCode::Failure,
                format!(
                    "Quota exceeded: this login may store at most {} files",
                    exceeded.quota_files
                ),
            )),
            Err(error) => {
                tracing::warn!(%error, "cannot read the home's usage for its quota");
                Err(status(
                    id,
                    StatusCode::Failure,
                    "Cannot check the quota: the home's usage cannot be read",
                ))
            }
        }
    }

    fn no_handle(id: u32) -> Status {
        status(id, StatusCode::Failure, "No such handle")
    }

    async fn read(&mut self, id: u32, handle: &str, offset: u64, len: u32) -> Answer {
        let len = len.min(self.rules.max_read) as usize;
        let Some(Open::Read {
            reader: slot,
            bytes,
            ..
        }) = self.handles.get_mut(handle)
        else {
            return Err(Self::no_handle(id));
        };
        let Some(reader) = slot.take() else {
            return Err(Self::no_handle(id));
        };
        let result = blocking(move || {
            let mut reader = reader;
            let data = read_at(&mut reader, offset, len);
            Ok((reader, data))
        })
        .await;
        let (reader, data) = match result {
            Ok(done) => done,
            Err(error) => return Err(io_status(id, &error)),
        };
        *slot = Some(reader);
        let data = data.map_err(|e| io_status(id, &e))?;
        if data.is_empty() && len > 0 {
            return Err(status(id, StatusCode::Eof, "End of file"));
        }
        *bytes += data.len() as u64;
        self.login
            .account
            .download_throttle()
            .pace(data.len())
            .await;
        Ok(Packet::Data(Data { id, data }))
    }

    async fn write(&mut self, id: u32, handle: &str, offset: u64, data: Vec<u8>) -> Answer {
        let Some(Open::Write {
            writer: slot,
            upload,
            bytes,
            buffers,
            ..
        }) = self.handles.get_mut(handle)
        else {
            return Err(status(
                id,
                StatusCode::Failure,
                "No such handle open for writing",
            ));
        };
        let Some(mut writer) = slot.take() else {
            return Err(Self::no_handle(id));
        };
        let length = data.len() as u64;
        let throttle = self.login.account.upload_throttle();
        throttle.pace(data.len()).await;
        let (writer, result) = blocking(move || {
            let result = match &mut writer {
                Writer::File(file) => file.write_all_at(&data, offset),
                Writer::Stream { position, .. } if offset != *position => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this server's storage writes a file in order only",
                )),
                Writer::Stream { writer, position } => {
                    let written = writer.write_all(&data);
                    if written.is_ok() {
                        *position += length;
                    }
                    written
                }
            };
            Ok((writer, result))
        })
        .await
        .map_err(|e| io_status(id, &e))?;
        *slot = Some(writer);
        if let Err(error) = result {
            // A write that failed (the quota, a full disk) spoils the upload: it is discarded
            // now, and the handle's close reports the failure instead of committing a part.
            *upload = None;
            *buffers = None;
            return Err(io_status(id, &error));
        }
        *bytes += length;
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: &str) -> Answer {
        let Some(open) = self.handles.remove(handle) else {
            return Err(Self::no_handle(id));
        };
        match open {
            Open::Read {
                path,
                bytes,
                started,
                size,
                ..
            } => {
                // A download read to its end is complete; one closed earlier was stopped.
                let result = if bytes >= size {
                    TransferResult::Ok
                } else {
                    TransferResult::Aborted
                };
                self.audit_transfer(&path, "download", bytes, started, result);
                Ok(ok(id))
            }
            Open::Dir { path, .. } => {
                self.audit_transfer(&path, "listing", 0, Instant::now(), TransferResult::Ok);
                Ok(ok(id))
            }
            Open::Write {
                path,
                upload,
                writer,
                replace,
                bytes,
                started,
                pending,
                quota,
                buffers: _buffers,
            } => {
                let Some(upload) = upload else {
                    // A write failed: the upload was discarded then.
                    if let Some(quota) = quota {
                        quota.finish(false);
                    }
                    self.audit_transfer(&path, "upload", bytes, started, TransferResult::Failed);
                    return Err(status(
                        id,
                        StatusCode::Failure,
                        "The upload failed and was discarded: nothing was stored",
                    ));
                };
                let home = self.home();
                let committed = {
                    let path = path.clone();
                    blocking(move || {
                        // The body is flushed and dropped before the upload is committed.
                        match writer {
                            Some(Writer::Stream { mut writer, .. }) => writer.flush()?,
                            other => drop(other),
                        }
                        upload.commit(replace)?;
                        // What the client set on the open handle, now the file has its name.
                        if let Some(mtime) = pending.mtime {
                            home.set_modified(&path, i64::from(mtime))?;
                        }
                        if let Some(mode) = pending.permissions {
                            home.chmod(&path, mode & 0o777)?;
                        }
                        Ok(())
                    })
                    .await
                };
                let result = if committed.is_ok() {
                    TransferResult::Ok
                } else {
                    TransferResult::Failed
                };
                if let Some(quota) = quota {
                    quota.finish(committed.is_ok());
                }
                self.audit_transfer(&path, "upload", bytes, started, result);
                committed.map_err(|e| io_status(id, &e))?;
                Ok(ok(id))
            }
        }
    }

    fn audit_transfer(
        &self,
        path: &str,
        direction: &str,
        bytes: u64,
        started: Instant,
        result: TransferResult,
    ) {
        if self.login.account.metered() {
            self.metrics
                .user_bytes(self.login.account.name(), direction, bytes);
        }
        audit::transfer(
            &self.metrics,
            self.actor(),
            audit::Transfer {
                path,
                direction,
                bytes,
                elapsed: started.elapsed(),
                result,
            },
        );
    }

    async fn stat(&mut self, id: u32, path: &str, follow: bool) -> Answer {
        let path = self.path(id, path, false)?;
        let home = self.home();
        let metadata = blocking(move || {
            // The home itself is no link (and has no parent to look it up in).
            if follow || path == "/" {
                home.stat(&path)
            } else {
                home.lstat(&path)
            }
        })
        .await
        .map_err(|e| io_status(id, &e))?;
        // A directory may be known without `list`, as FTP's CWD knows it; a file may not.
        if metadata.kind != FileKind::Dir {
            self.permit(id, Permission::List)?;
        }
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attributes(&metadata),
        }))
    }

    async fn fstat(&mut self, id: u32, handle: &str) -> Answer {
        let path = match self.handles.get(handle) {
            Some(Open::Read { path, .. } | Open::Dir { path, .. }) => path.clone(),
            Some(Open::Write { bytes, .. }) => {
                // The upload is not there under its name yet: what was written so far.
                let mut attrs = FileAttributes::empty();
                attrs.size = Some(*bytes);
                attrs.permissions = Some(0o100644);
                return Ok(Packet::Attrs(Attrs { id, attrs }));
            }
            None => return Err(Self::no_handle(id)),
        };
        let home = self.home();
        let metadata = blocking(move || home.stat(&path))
            .await
            .map_err(|e| io_status(id, &e))?;
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attributes(&metadata),
        }))
    }

    /// Which of `attrs` may be set: the time where the storage can, the mode where FTP's
    /// `SITE CHMOD` is allowed; a size (truncation) or owner never.
    fn settable(&self, id: u32, attrs: &FileAttributes) -> Result<(), Status> {
        self.permit(id, Permission::Upload)?;
        if attrs.size.is_some() || attrs.uid.is_some() || attrs.gid.is_some() {
            return Err(status(
                id,
                StatusCode::OpUnsupported,
                "Changing a file's size or owner is not available",
            ));
        }
        if attrs.mtime.is_some() && !self.rules.capabilities.set_mtime {
            return Err(status(
                id,
                StatusCode::OpUnsupported,
                "This server's storage cannot set modification times",
            ));
        }
        if attrs.permissions.is_some() && !(self.rules.chmod && self.rules.capabilities.chmod) {
            return Err(status(
                id,
                StatusCode::PermissionDenied,
                "Permission denied: changing modes is off on this server (site_chmod)",
            ));
        }
        Ok(())
    }

    async fn set_stat(&mut self, id: u32, path: &str, attrs: FileAttributes) -> Answer {
        let path = self.path(id, path, false)?;
        self.settable(id, &attrs)?;
        let home = self.home();
        let changed = {
            let path = path.clone();
            blocking(move || {
                if let Some(mtime) = attrs.mtime {
                    home.set_modified(&path, i64::from(mtime))?;
                }
                if let Some(mode) = attrs.permissions {
                    home.chmod(&path, mode & 0o777)?;
                }
                Ok(())
            })
            .await
        };
        let operation = if attrs.permissions.is_some() {
            "chmod"
        } else {
            "set_mtime"
        };
        audit::file_change(
            &self.metrics,
            self.actor(),
            operation,
            &path,
            None,
            changed.is_ok(),
        );
        changed.map_err(|e| io_status(id, &e))?;
        Ok(ok(id))
    }

    async fn fset_stat(&mut self, id: u32, handle: &str, attrs: FileAttributes) -> Answer {
        self.settable(id, &attrs)?;
        match self.handles.get_mut(handle) {
            Some(Open::Write { pending, .. }) => {
                pending.mtime = attrs.mtime.or(pending.mtime);
                pending.permissions = attrs.permissions.or(pending.permissions);
                Ok(ok(id))
            }
            Some(Open::Read { path, .. } | Open::Dir { path, .. }) => {
                let path = path.clone();
                self.set_stat(id, &path, attrs).await
            }
            None => Err(Self::no_handle(id)),
        }
    }

    async fn open_dir(&mut self, id: u32, path: &str) -> Answer {
        let path = self.path(id, path, false)?;
        self.permit(id, Permission::List)?;
        let home = self.home();
        let entries = {
            let path = path.clone();
            blocking(move || home.list(&path))
                .await
                .map_err(|e| io_status(id, &e))?
        };
        self.new_handle(
            id,
            Open::Dir {
                path,
                entries: Some(entries),
            },
        )
    }

    async fn read_dir(&mut self, id: u32, handle: &str) -> Answer {
        let Some(Open::Dir { entries: slot, .. }) = self.handles.get_mut(handle) else {
            return Err(Self::no_handle(id));
        };
        let Some(mut entries) = slot.take() else {
            return Err(status(id, StatusCode::Eof, "End of directory"));
        };
        let (entries, page) = blocking(move || {
            let now = jiff::Timestamp::now();
            let mut page = Vec::new();
            for entry in entries.by_ref() {
                let entry = entry?;
                let longname =
                    listing::unix_line(&entry.name, &entry.metadata, entry.target.as_deref(), now);
                page.push(NameEntry {
                    filename: entry.name,
                    longname: longname.trim_end().to_owned(),
                    attrs: attributes(&entry.metadata),
                });
                if page.len() == ENTRIES_PER_READDIR {
                    break;
                }
            }
            Ok((entries, page))
        })
        .await
        .map_err(|e| io_status(id, &e))?;
        if page.is_empty() {
            return Err(status(id, StatusCode::Eof, "End of directory"));
        }
        *slot = Some(entries);
        Ok(Packet::Name(Name { id, files: page }))
    }

    async fn change(
        &mut self,
        id: u32,
        operation: &'static str,
        path: String,
        to: Option<String>,
        call: impl FnOnce(&dyn Home) -> io::Result<()> + Send + 'static,
    ) -> Answer {
        let home = self.home();
        let result = blocking(move || call(home.as_ref())).await;
        audit::file_change(
            &self.metrics,
            self.actor(),
            operation,
            &path,
            to.as_deref(),
            result.is_ok(),
        );
        result.map_err(|e| io_status(id, &e))?;
        if matches!(operation, "delete" | "rename" | "rmdir") {
            // A delete or rename: the quota walks the home again.
            self.login.account.ledger().forget_walk();
        }
        Ok(ok(id))
    }

    async fn remove(&mut self, id: u32, path: &str) -> Answer {
        let path = self.path(id, path, false)?;
        self.permit(id, Permission::Delete)?;
        let target = path.clone();
        self.change(id, "delete", path, None, move |home| {
            home.remove_file(&target)
        })
        .await
    }

    async fn mkdir(&mut self, id: u32, path: &str) -> Answer {
        let path = self.path(id, path, true)?;
        self.permit(id, Permission::Mkdir)?;
        let target = path.clone();
        self.change(id, "mkdir", path, None, move |home| home.mkdir(&target))
            .await
    }

    async fn rmdir(&mut self, id: u32, path: &str) -> Answer {
        let path = self.path(id, path, false)?;
        self.permit(id, Permission::Delete)?;
        if path == "/" {
            return Err(status(
                id,
                StatusCode::PermissionDenied,
                "Permission denied: your home cannot be removed",
            ));
        }
        let target = path.clone();
        self.change(id, "rmdir", path, None, move |home| {
            home.remove_dir(&target)
        })
        .await
    }

    /// SFTP v3's rename never replaces an existing name.
    async fn rename(&mut self, id: u32, from: &str, to: &str) -> Answer {
        let from = self.path(id, from, false)?;
        let to = self.path(id, to, true)?;
        self.permit(id, Permission::Rename)?;
        let (source, target) = (from.clone(), to.clone());
        self.change(id, "rename", from, Some(to), move |home| {
            home.rename(&source, &target, false)
        })
        .await
    }

    /// The canonical form of a path: absolute beneath the home, `..` stopping at its top.
    fn real_path(&self, id: u32, path: &str) -> Answer {
        let path = self.path(id, path, false)?;
        let mut attrs = FileAttributes::empty();
        attrs.permissions = None;
        Ok(Packet::Name(Name {
            id,
            files: vec![NameEntry {
                filename: path.clone(),
                longname: path,
                attrs,
            }],
        }))
    }
}

impl Drop for Files {
    /// A channel that ends with files open: downloads stopped, uploads discarded (their bytes
    /// never appear under the name).
    fn drop(&mut self) {
        self.transfers.fetch_sub(self.counted, Ordering::SeqCst);
        for (_, open) in self.handles.drain() {
            let (path, direction, bytes, started) = match open {
                Open::Read {
                    path,
                    bytes,
                    started,
                    ..
                } => (path, "download", bytes, started),
                Open::Write {
                    path,
                    bytes,
                    started,
                    quota,
                    ..
                } => {
                    if let Some(quota) = quota {
                        quota.finish(false);
                    }
                    (path, "upload", bytes, started)
                }
                Open::Dir { .. } => continue,
            };
            audit::transfer(
                &self.metrics,
                Actor {
                    client: self.login.client,
                    user: &self.login.name,
                },
                audit::Transfer {
                    path: &path,
                    direction,
                    bytes,
                    elapsed: started.elapsed(),
                    result: TransferResult::Aborted,
                },
            );
        }
    }
}
