//! The storage seam: what the protocol layer asks of wherever files live, and what that back-end
//! declares it can do, so every command is either served honestly or refused plainly.
//!
//! The interface is synchronous. Today's sessions already run every file-system call on a
//! blocking thread (`spawn_blocking`), and transfers stream through blocking readers and writers
//! there; a back-end whose client is async (an object store's SDK) runs its calls to completion on
//! that same blocking thread (`Handle::block_on`). Async methods in a trait object would cost a
//! boxed future per call and a second copy of every call site, for no gain on the local disk,
//! which is what most servers run on.
//!
//! Paths are the session's virtual paths, already normalised by [`super::fs::resolve`]: absolute,
//! no `.` or `..`; `/` is the login's home.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Duration;

pub use super::fs::{FileKind, Keep};

pub mod local;
pub mod object;

/// Where the server's files live: opens each login's home.
pub trait Storage: Send + Sync + 'static {
    /// What this back-end can do; the same for every home it opens.
    fn capabilities(&self) -> Capabilities;

    /// The home of one login: `home` relative to the storage's root (empty: the root itself),
    /// created if missing. Nothing a session does through it reaches outside it.
    fn open_home(&self, home: &str) -> io::Result<Arc<dyn Home>>;

    /// Removes what uploads of a killed server left, idle for at least `older_than` (so uploads
    /// still running elsewhere on the same storage are spared); returns how many went.
    fn remove_upload_leftovers(&self, older_than: Duration) -> io::Result<usize>;

    /// Memory one upload holds in buffers of the back-end's own, beyond the session's transfer
    /// buffer (which the session's cost counts): an object store's parts. Uploads reserve it
    /// from the server's budget (`upload_memory.rs`) before their data is read; 0 reserves
    /// nothing.
    fn upload_memory_bytes(&self) -> u64 {
        0
    }
}

/// What a back-end can do beyond reading, writing whole files, listing and deleting, which every
/// back-end must. The protocol layer refuses (and FEAT does not advertise) what is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `APPE`: an upload may start from the whole existing file ([`Keep::All`]).
    pub append: bool,
    /// `REST` + `STOR`: an upload may start from the first n bytes ([`Keep::Prefix`]).
    pub resume_upload: bool,
    /// `REST` + `RETR`: a download may start at an offset (a ranged read).
    pub resume_download: bool,
    /// `RNTO` is one atomic step, and refusing to replace an existing target is race-free; when
    /// false, rename is copy + delete, and a failure midway may leave both names.
    pub atomic_rename: bool,
    /// `SITE CHMOD`: permission bits can be set.
    pub chmod: bool,
    /// `MFMT`: the modification time can be set.
    pub set_mtime: bool,
    /// Downloads are files the kernel can send itself (`sendfile(2)`), with no copy through the
    /// server's memory.
    pub zero_copy: bool,
}

impl Capabilities {
    /// Everything: what a POSIX file system gives.
    pub const ALL: Capabilities = Capabilities {
        append: true,
        resume_upload: true,
        resume_download: true,
        atomic_rename: true,
        chmod: true,
        set_mtime: true,
        zero_copy: true,
    };
}

/// What listings and `SIZE`/`MDTM`/`MLST` show of a file, directory or link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub kind: FileKind,
    pub size: u64,
    /// Last modification, in seconds since the Unix epoch.
    pub modified: i64,
    /// Permission bits (`rwxrwxrwx`); back-ends without them give what reads as such.
    pub mode: u32,
    /// Hard links, as `ls -l` shows them; 1 where there is no such thing.
    pub links: u64,
    /// Stable identity for the MLSD `unique` fact: equal for two names of the same file.
    pub unique: String,
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name as stored (listings replace control bytes when they show it).
    pub name: String,
    pub metadata: Metadata,
    /// Where a symlink points, as stored in the link.
    pub target: Option<String>,
}

/// A directory's entries, read as they are consumed: a listing of any size is never held whole
/// in memory (a back-end with pages fetches the next page when the last one is used up).
pub type Entries = Box<dyn Iterator<Item = io::Result<Entry>> + Send>;

/// A download's bytes.
pub enum Download {
    /// A regular file, sent from `offset` (with `sendfile(2)` on plain connections).
    File { file: File, offset: u64 },
    /// A stream already positioned at the requested offset (a ranged read).
    Stream(Box<dyn io::Read + Send>),
}

/// Where an upload's bytes go.
pub enum UploadBody {
    File(File),
    Stream(Box<dyn io::Write + Send>),
}

/// An upload in progress: invisible under its name until [`Upload::commit`]; discarded or dropped
/// without commit, it leaves nothing behind. The body taken from it and the upload may share
/// state (a multipart upload's parts); the body is flushed and dropped before commit.
pub trait Upload: Send {
    /// The body to write into; `None` once taken.
    fn take_body(&mut self) -> Option<UploadBody>;

    /// Makes the upload visible under its name; when not `replace`, fails with `AlreadyExists` if
    /// the name was taken meanwhile.
    fn commit(self: Box<Self>, replace: bool) -> io::Result<()>;

    /// Removes what the upload wrote, now.
    fn discard(self: Box<Self>) -> io::Result<()>;
}

/// One login's tree. Every method is blocking: call it off the async runtime.
pub trait Home: Send + Sync {
    /// What the path names, following links that stay inside the home.
    fn stat(&self, path: &str) -> io::Result<Metadata>;

    /// What the path itself is (a link is not followed).
    fn lstat(&self, path: &str) -> io::Result<Metadata>;

    /// Succeeds when the path is a directory a session may make its working directory.
    fn change_dir(&self, path: &str) -> io::Result<()>;

    /// The entries of a directory, without `.`, `..` and uploads in progress.
    fn list(&self, path: &str) -> io::Result<Entries>;

    /// Opens a regular file for a download from `offset`, with its whole size.
    fn open_read(&self, path: &str, offset: u64) -> io::Result<(Download, u64)>;

    /// Starts an upload to `path` keeping `keep` of the existing file; `Keep::All` and a non-zero
    /// `Keep::Prefix` are only asked of back-ends that declare `append` and `resume_upload`.
    fn begin_upload(&self, path: &str, keep: Keep) -> io::Result<Box<dyn Upload>>;

    fn mkdir(&self, path: &str) -> io::Result<()>;

    fn remove_dir(&self, path: &str) -> io::Result<()>;

    /// Removes a file (never a directory: `IsADirectory`).
    fn remove_file(&self, path: &str) -> io::Result<()>;

    /// Renames `from` to `to`; over an existing `to` only when `replace` (`AlreadyExists`
    /// otherwise).
    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()>;

    /// Sets the modification time (only asked when the back-end declares `set_mtime`).
    fn set_modified(&self, path: &str, seconds: i64) -> io::Result<()>;

    /// Sets the permission bits (only asked when the back-end declares `chmod`).
    fn chmod(&self, path: &str, mode: u32) -> io::Result<()>;
}
