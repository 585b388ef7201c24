//! Object storage (S3, Azure Blob) behind the storage interface, through opendal: directories
//! are key prefixes, uploads are multipart uploads (Azure: staged blocks) completed on commit and
//! aborted otherwise, downloads are ranged reads, listings are delimiter listings read a page at a
//! time.
//!
//! The interface is blocking; opendal is async. Every call runs to completion on a small runtime
//! of its own ([`runtime`]), reached from the session's blocking thread with `block_on`, so the
//! server's workers never wait on the network, and settings can be built (and dropped) anywhere.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use opendal::{EntryMode, ErrorKind as StoreErrorKind, Operator};
use tokio::runtime::Handle;

use super::{
    Capabilities, Download, Entries, Entry, FileKind, Home, Keep, Metadata, Storage, Upload,
    UploadBody,
};
use crate::ftp::config::{AzureBlobStorage, OBJECT_STORAGE_ERROR, S3Storage};
use crate::ftp::memory;

/// What an object store can do: read from an offset, nothing else beyond the basics.
pub const OBJECT_CAPABILITIES: Capabilities = Capabilities {
    append: false,
    resume_upload: false,
    resume_download: true,
    atomic_rename: false,
    chmod: false,
    set_mtime: false,
    zero_copy: false,
};

/// Keys per listing page: S3's largest, so a directory of n entries costs n/1000 requests.
const LIST_PAGE: usize = 1000;

/// Mode bits shown for objects and prefixes: what `ls -l` would show for files anyone may read.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// The runtime every object-store call runs on: two workers are plenty, since each call is
/// awaited by one blocked session thread, and all the work is waiting on sockets. Created once
/// and never dropped (a runtime may not be dropped from within another's workers).
fn runtime() -> io::Result<Handle> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-storage")
            .enable_all()
            .build()
            .map_err(|error| error.to_string())
    });
    match runtime {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(error) => Err(io::Error::other(format!(
            "cannot start the object storage runtime: {error}"
        ))),
    }
}

/// The store's error as an `io::Error` whose kind the session turns into its reply.
fn io_error(error: opendal::Error) -> io::Error {
    let kind = match error.kind() {
        StoreErrorKind::NotFound => io::ErrorKind::NotFound,
        StoreErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        StoreErrorKind::AlreadyExists | StoreErrorKind::ConditionNotMatch => {
            io::ErrorKind::AlreadyExists
        }
        StoreErrorKind::IsADirectory => io::ErrorKind::IsADirectory,
        StoreErrorKind::NotADirectory => io::ErrorKind::NotADirectory,
        StoreErrorKind::Unsupported => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}

/// Why the object storage could not be opened, naming the bucket or container.
#[derive(Debug)]
pub struct OpenError {
    /// `S3 bucket "name"`, `Azure Blob container "name" in account "account"`.
    pub store: String,
    pub endpoint: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{OBJECT_STORAGE_ERROR}: {}", self.store)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for OpenError {}

/// A bucket (beneath a prefix) holding every login's home.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Store,
}

/// The operator and what every call needs beside it; shared by the storage, its homes and
/// their uploads.
#[derive(Clone)]
struct Store {
    operator: Operator,
    handle: Handle,
    part_size: usize,
}

impl Store {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }
}

impl ObjectStorage {
    /// Connects to the bucket and checks that it can be listed, so a missing bucket or
    /// credentials that do not work stop the server at startup (or a reload), not a client.
    pub fn s3(config: &S3Storage) -> Result<ObjectStorage, OpenError> {
        let mut builder = opendal::services::S3::default()
            .bucket(&config.bucket)
            .root(&root_of(&config.prefix));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.region(region);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.region("us-east-1");
        }
        if !config.path_style {
            builder = builder.enable_virtual_host_style();
        }
        ObjectStorage::open(
            builder,
            config.part_size_bytes,
            OpenError {
                store: format!("S3 bucket {:?}", config.bucket),
                endpoint: config.endpoint.clone(),
                reason: String::new(),
            },
        )
    }

    /// Connects to the container and checks that it can be listed, like [`ObjectStorage::s3`].
    pub fn azure_blob(config: &AzureBlobStorage) -> Result<ObjectStorage, OpenError> {
        let mut builder = opendal::services::Azblob::default()
            .container(&config.container)
            .account_name(&config.account)
            .endpoint(&config.endpoint())
            .root(&root_of(&config.prefix));
        // A key or SAS token from the environment signs every request; with neither, the
        // credential chain finds the workload identity.
        if let Ok(key) = std::env::var("AZURE_STORAGE_ACCOUNT_KEY") {
            builder = builder.account_key(&key);
        } else if let Ok(token) = std::env::var("AZURE_STORAGE_SAS_TOKEN") {
            builder = builder.sas_token(&token);
        }
        ObjectStorage::open(
            builder,
            config.block_size_bytes,
            OpenError {
                store: format!(
                    "Azure Blob container {:?} in account {:?}",
                    config.container, config.account
                ),
                endpoint: Some(config.endpoint()),
                reason: String::new(),
            },
        )
    }

    /// The operator for `builder`, once listing its root has worked; `failure` names the store
    /// in the error.
    fn open(
        builder: impl opendal::Builder,
        part_size: u64,
        failure: OpenError,
    ) -> Result<ObjectStorage, OpenError> {
        let failed = |reason: String| OpenError { reason, ..failure };
        // The HTTP client takes the process's TLS provider: ring, as everywhere in the server.
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal::HttpTransporter::install_default(
            opendal_http_transport_reqwest::ReqwestTransport::default(),
        );
        let handle = match runtime() {
            Ok(handle) => handle,
            Err(error) => return Err(failed(error.to_string())),
        };
        // The operator is built inside the runtime: its HTTP client binds to it.
        let operator = match handle.block_on(async { Operator::new(builder) }) {
            Ok(operator) => operator,
            Err(error) => return Err(failed(error.to_string())),
        };
        let store = Store {
            operator,
            handle,
            part_size: usize::try_from(part_size).unwrap_or(usize::MAX),
        };
        let listed = store.block_on(async {
            let mut lister = store.operator.lister_with("/").limit(1).await?;
            lister.next().await.transpose().map(drop)
        });
        match listed {
            Ok(()) => Ok(ObjectStorage { store }),
            Err(error) => Err(failed(reason_of(&error))),
        }
    }
}

/// The store's error for a person: its kind, the service's message and the causes beneath it,
/// without the request's context (the URI and every response header), which buries the message
/// in `kubectl describe` and adds nothing the bucket and endpoint named beside it do not say.
fn reason_of(error: &opendal::Error) -> String {
    let mut reason = error.kind().to_string();
    if !error.message().is_empty() {
        reason.push_str(": ");
        reason.push_str(error.message());
    }
    // The whole chain: an HTTP client's own words ("error sending request") only say that it
    // failed, its causes say why ("Connection refused").
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    reason
}

/// opendal's root for a configured prefix: absolute, the prefix's slashes trimmed.
fn root_of(prefix: &str) -> String {
    format!("/{}", prefix.trim_matches('/'))
}

impl Storage for ObjectStorage {
    fn capabilities(&self) -> Capabilities {
        OBJECT_CAPABILITIES
    }

    fn open_home(&self, home: &str) -> io::Result<Arc<dyn Home>> {
        let home = home.trim_matches('/');
        let base = if home.is_empty() {
            String::new()
        } else {
            format!("{home}/")
        };
        let opened = ObjectHome {
            store: self.store.clone(),
            base,
        };
        if !opened.base.is_empty() && opened.dir_exists(&opened.base)?.is_none() {
            opened
                .store
                .block_on(opened.store.operator.create_dir(&opened.base))
                .map_err(io_error)?;
        }
        Ok(Arc::new(opened))
    }

    /// Uploads a killed server left are incomplete multipart uploads, invisible and aborted by
    /// the bucket's lifecycle rule (docs/storage.md), which no replica could do more safely.
    fn remove_upload_leftovers(&self, _older_than: Duration) -> io::Result<usize> {
        Ok(0)
    }

    /// The part filling and the part being sent, and what sending one costs besides.
    fn upload_memory_bytes(&self) -> u64 {
        memory::object_upload_bytes(self.store.part_size as u64)
    }
}

/// One login's home: the keys beneath `base` (empty, or ending in `/`).
struct ObjectHome {
    store: Store,
    base: String,
}

/// A directory's metadata: from its marker object when there is one.
fn dir_metadata(modified: i64, unique: String) -> Metadata {
    Metadata {
        kind: FileKind::Dir,
        size: 0,
        modified,
        mode: DIR_MODE,
        links: 1,
        unique,
    }
}

fn object_metadata(key: &str, metadata: &opendal::Metadata) -> Metadata {
    let modified = metadata
        .last_modified()
        .map_or(0, |time| time.into_inner().as_second());
    if metadata.mode() == EntryMode::DIR {
        return dir_metadata(modified, key.to_owned());
    }
    Metadata {
        kind: FileKind::File,
        size: metadata.content_length(),
        modified,
        mode: FILE_MODE,
        links: 1,
        unique: metadata
            .etag()
            .map_or_else(|| key.to_owned(), |etag| etag.trim_matches('"').to_owned()),
    }
}

impl ObjectHome {
    /// The object key of a virtual path (`/a/b` → `base` + `a/b`); the home itself is `base`.
    fn key(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_matches('/'))
    }

    /// The prefix of a directory's entries (ends in `/`, or empty for the bucket's top).
    fn dir_key(&self, path: &str) -> String {
        let key = self.key(path);
        if key.is_empty() || key.ends_with('/') {
            key
        } else {
            format!("{key}/")
        }
    }

    /// A directory at `dir_key`, if there is one: its marker object, or any key beneath it.
    fn dir_exists(&self, dir_key: &str) -> io::Result<Option<Metadata>> {
        if dir_key.is_empty() {
            return Ok(Some(dir_metadata(0, "/".into())));
        }
        let operator = &self.store.operator;
        match self.store.block_on(operator.stat(dir_key)) {
            Ok(metadata) => {
                let modified = metadata
                    .last_modified()
                    .map_or(0, |time| time.into_inner().as_second());
                return Ok(Some(dir_metadata(modified, dir_key.to_owned())));
            }
            Err(error) if error.kind() == StoreErrorKind::NotFound => {}
            Err(error) => return Err(io_error(error)),
        }
        let found = self
            .store
            .block_on(async {
                let mut lister = operator.lister_with(dir_key).limit(1).await?;
                lister.next().await.transpose()
            })
            .map_err(io_error)?;
        Ok(found.map(|_| dir_metadata(0, dir_key.to_owned())))
    }

    /// The object at `path`, if it is a file.
    fn file_metadata(&self, path: &str) -> io::Result<Option<Metadata>> {
        let key = self.key(path);
        if key.is_empty() || key.ends_with('/') {
            return Ok(None);
        }
        match self.store.block_on(self.store.operator.stat(&key)) {
            Ok(metadata) if metadata.mode() == EntryMode::FILE => {
                Ok(Some(object_metadata(&key, &metadata)))
            }
            Ok(_) => Ok(None),
            Err(error) if error.kind() == StoreErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(error)),
        }
    }

    /// Fails unless the directory `path` would be created in exists (the home always does).
    fn require_parent(&self, path: &str) -> io::Result<()> {
        let parent = match path.trim_end_matches('/').rsplit_once('/') {
            Some((parent, _)) if !parent.is_empty() => parent,
            _ => return Ok(()),
        };
        if self.file_metadata(parent)?.is_some() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        match self.dir_exists(&self.dir_key(parent))? {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn is_home(path: &str) -> bool {
        path.trim_matches('/').is_empty()
    }
}

impl Home for ObjectHome {
    fn stat(&self, path: &str) -> io::Result<Metadata> {
        if let Some(file) = self.file_metadata(path)? {
            return Ok(file);
        }
        self.dir_exists(&self.dir_key(path))?
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn lstat(&self, path: &str) -> io::Result<Metadata> {
        self.stat(path)
    }

    fn change_dir(&self, path: &str) -> io::Result<()> {
        match self.stat(path)?.kind {
            FileKind::Dir => Ok(()),
            _ => Err(io::ErrorKind::NotADirectory.into()),
        }
    }

    fn list(&self, path: &str) -> io::Result<Entries> {
        self.change_dir(path)?;
        let dir_key = self.dir_key(path);
        let lister = self
            .store
            .block_on(async {
                self.store
                    .operator
                    .lister_with(if dir_key.is_empty() { "/" } else { &dir_key })
                    .limit(LIST_PAGE)
                    .await
            })
            .map_err(io_error)?;
        Ok(Box::new(ObjectEntries {
            store: self.store.clone(),
            lister,
            dir_key,
        }))
    }

    fn open_read(&self, path: &str, offset: u64) -> io::Result<(Download, u64)> {
        let Some(metadata) = self.file_metadata(path)? else {
            return Err(match self.dir_exists(&self.dir_key(path))? {
                Some(_) => io::ErrorKind::IsADirectory.into(),
                None => io::ErrorKind::NotFound.into(),
            });
        };
        let size = metadata.size;
        if offset > size {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let key = self.key(path);
        let reader: Box<dyn Read + Send> = if offset == size {
            Box::new(io::empty())
        } else {
            // One ranged GET, streamed as it arrives: REST n reads from byte n.
            let store = &self.store;
            let stream = store
                .block_on(async {
                    let reader = store.operator.reader(&key).await?;
                    reader.into_bytes_stream(offset..size).await
                })
                .map_err(io_error)?;
            Box::new(ObjectRead {
                handle: store.handle.clone(),
                stream: Box::pin(stream),
                current: Bytes::new(),
            })
        };
        Ok((Download::Stream(reader), size))
    }

    fn begin_upload(&self, path: &str, keep: Keep) -> io::Result<Box<dyn Upload>> {
        if matches!(keep, Keep::All | Keep::Prefix(1..)) {
            // The session refuses these before asking (the capabilities say so); never overwrite.
            return Err(io::ErrorKind::Unsupported.into());
        }
        if Self::is_home(path) || self.dir_exists(&self.dir_key(path))?.is_some() {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        self.require_parent(path)?;
        let key = self.key(path);
        let writer = self
            .store
            .block_on(async {
                self.store
                    .operator
                    .writer_with(&key)
                    .chunk(self.store.part_size)
                    .await
            })
            .map_err(io_error)?;
        Ok(Box::new(MultipartUpload {
            store: self.store.clone(),
            key,
            writer: Arc::new(Mutex::new(Some(writer))),
            body_taken: false,
        }))
    }

    fn mkdir(&self, path: &str) -> io::Result<()> {
        if Self::is_home(path) || self.stat(path).is_ok() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        self.require_parent(path)?;
        let dir_key = self.dir_key(path);
        self.store
            .block_on(self.store.operator.create_dir(&dir_key))
            .map_err(io_error)
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        if Self::is_home(path) {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        if self.file_metadata(path)?.is_some() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        let dir_key = self.dir_key(path);
        let operator = &self.store.operator;
        // Two keys are enough to tell: the marker itself, and anything else.
        let first_two: Vec<String> = self
            .store
            .block_on(async {
                let lister = operator.lister_with(&dir_key).limit(2).await?;
                let entries: Vec<_> = lister.take(2).collect().await;
                entries
                    .into_iter()
                    .map(|entry| entry.map(|entry| entry.path().to_owned()))
                    .collect::<opendal::Result<Vec<_>>>()
            })
            .map_err(io_error)?;
        if first_two.is_empty() {
            return Err(io::ErrorKind::NotFound.into());
        }
        if first_two.iter().any(|key| *key != dir_key) {
            return Err(io::ErrorKind::DirectoryNotEmpty.into());
        }
        self.store
            .block_on(operator.delete(&dir_key))
            .map_err(io_error)
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        if self.file_metadata(path)?.is_none() {
            return Err(match self.dir_exists(&self.dir_key(path))? {
                Some(_) => io::ErrorKind::IsADirectory.into(),
                None => io::ErrorKind::NotFound.into(),
            });
        }
        self.store
            .block_on(self.store.operator.delete(&self.key(path)))
            .map_err(io_error)
    }

    /// A server-side copy, then the delete of the source: not atomic, and a copy of every byte
    /// (S3 copies at most 5 GiB in one request). Directories are refused: they would mean
    /// copying every key beneath the prefix.
    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        if self.file_metadata(from)?.is_none() {
            return Err(match self.dir_exists(&self.dir_key(from))? {
                Some(_) => io::Error::new(
                    io::ErrorKind::Unsupported,
                    "directories cannot be renamed on object storage",
                ),
                None => io::ErrorKind::NotFound.into(),
            });
        }
        if Self::is_home(to) || self.dir_exists(&self.dir_key(to))?.is_some() {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        if !replace && self.file_metadata(to)?.is_some() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        self.require_parent(to)?;
        let (from, to) = (self.key(from), self.key(to));
        if from == to {
            return Ok(());
        }
        let operator = &self.store.operator;
        self.store
            .block_on(async {
                operator.copy(&from, &to).await?;
                operator.delete(&from).await
            })
            .map_err(io_error)
    }

    fn set_modified(&self, _path: &str, _seconds: i64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn chmod(&self, _path: &str, _mode: u32) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A listing read a page at a time: the next page is fetched when this one is used up.
struct ObjectEntries {
    store: Store,
    lister: opendal::Lister,
    dir_key: String,
}

impl Iterator for ObjectEntries {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<io::Result<Entry>> {
        loop {
            let entry = match self.store.handle.block_on(self.lister.next())? {
                Ok(entry) => entry,
                Err(error) => return Some(Err(io_error(error))),
            };
            let key = entry.path();
            // The listing names the directory's own marker too.
            let Some(name) = key.strip_prefix(self.dir_key.as_str()) else {
                continue;
            };
            let name = name.trim_end_matches('/');
            if name.is_empty() {
                continue;
            }
            return Some(Ok(Entry {
                name: name.to_owned(),
                metadata: object_metadata(key, entry.metadata()),
                target: None,
            }));
        }
    }
}

/// A ranged GET's body as a blocking reader.
struct ObjectRead {
    handle: Handle,
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = io::Result<Bytes>> + Send>>,
    current: Bytes,
}

impl Read for ObjectRead {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = buffer.len().min(self.current.len());
        buffer[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// One multipart upload: parts are sent as the body fills them, the object appears on
/// [`Upload::commit`] (complete), and [`Upload::discard`] or drop aborts it.
struct MultipartUpload {
    store: Store,
    key: String,
    /// Shared with the body; taken by commit, discard or drop.
    writer: Arc<Mutex<Option<opendal::Writer>>>,
    body_taken: bool,
}

impl MultipartUpload {
    fn take_writer(&self) -> Option<opendal::Writer> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl Upload for MultipartUpload {
    fn take_body(&mut self) -> Option<UploadBody> {
        if self.body_taken {
            return None;
        }
        self.body_taken = true;
        Some(UploadBody::Stream(Box::new(PartWriter {
            handle: self.store.handle.clone(),
            writer: Arc::clone(&self.writer),
        })))
    }

    fn commit(self: Box<Self>, replace: bool) -> io::Result<()> {
        let Some(mut writer) = self.take_writer() else {
            return Err(io::Error::other("upload already finished"));
        };
        let operator = &self.store.operator;
        let key = &self.key;
        self.store.block_on(async {
            // Not race-free: an object stored between this check and completion is replaced.
            if !replace && operator.exists(key).await.map_err(io_error)? {
                let _ = writer.abort().await;
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            match writer.close().await {
                Ok(_) => Ok(()),
                Err(error) => {
                    let _ = writer.abort().await;
                    Err(io_error(error))
                }
            }
        })
    }

    fn discard(self: Box<Self>) -> io::Result<()> {
        match self.take_writer() {
            Some(mut writer) => self.store.block_on(writer.abort()).map_err(io_error),
            None => Ok(()),
        }
    }
}

impl Drop for MultipartUpload {
    /// Dropped unfinished (the session went away): abort on the storage runtime, from whatever
    /// thread this is.
    fn drop(&mut self) {
        if let Some(mut writer) = self.take_writer() {
            self.store.handle.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}

/// The body of a multipart upload: opendal gathers writes into parts of the configured size and
/// sends each when full, so memory per upload stays near two parts.
struct PartWriter {
    handle: Handle,
    writer: Arc<Mutex<Option<opendal::Writer>>>,
}

impl Write for PartWriter {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(writer) = writer.as_mut() else {
            return Err(io::Error::other("upload already finished"));
        };
        self.handle
            .block_on(writer.write(buffer.to_vec()))
            .map_err(io_error)?;
        Ok(buffer.len())
    }

    /// Parts are sent as they fill; the last one goes on commit.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
