//! The local-disk back-end: the confinement of [`crate::ftp::fs::Root`] (openat2 beneath the
//! root, uploads to a temporary file renamed into place), behind the storage interface.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{AtFlags, Stat};

use super::{
    Capabilities, Download, Entries, Entry, FileKind, Home, Keep, Metadata, Storage, Upload,
    UploadBody,
};
use crate::ftp::fs::{self, Root, UPLOAD_TEMP_PREFIX, file_kind};

/// A directory on a local (or mounted) file system.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: Root,
}

impl LocalStorage {
    pub fn open(path: &Path) -> io::Result<LocalStorage> {
        Ok(LocalStorage {
            root: Root::open(path)?,
        })
    }
}

impl Storage for LocalStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn open_home(&self, home: &str) -> io::Result<Arc<dyn Home>> {
        Ok(Arc::new(LocalHome {
            root: self.root.open_home(home)?,
        }))
    }

    fn remove_upload_leftovers(&self, older_than: Duration) -> io::Result<usize> {
        self.root.remove_upload_leftovers(older_than)
    }
}

/// One login's home directory beneath the storage's root.
#[derive(Debug, Clone)]
pub struct LocalHome {
    root: Root,
}

impl LocalHome {
    /// A home confined to `root` (as [`LocalStorage::open_home`] gives, or a test's directory).
    pub fn new(root: Root) -> LocalHome {
        LocalHome { root }
    }
}

/// What the protocol layer shows of a `stat(2)`.
fn metadata(stat: &Stat) -> Metadata {
    Metadata {
        kind: file_kind(stat),
        size: u64::try_from(stat.st_size).unwrap_or(0),
        modified: stat.st_mtime,
        mode: stat.st_mode & 0o777,
        links: stat.st_nlink,
        unique: format!("{:x}g{:x}", stat.st_dev, stat.st_ino),
    }
}

impl Home for LocalHome {
    fn stat(&self, path: &str) -> io::Result<Metadata> {
        self.root.stat(path).map(|stat| metadata(&stat))
    }

    fn lstat(&self, path: &str) -> io::Result<Metadata> {
        self.root.lstat(path).map(|stat| metadata(&stat))
    }

    fn change_dir(&self, path: &str) -> io::Result<()> {
        self.root.open_dir(path).map(drop)
    }

    fn list(&self, path: &str) -> io::Result<Entries> {
        let dir = self.root.open_dir(path)?;
        let entries = rustix::fs::Dir::new(dir.try_clone()?)?;
        Ok(Box::new(DirEntries { entries, dir }))
    }

    fn open_read(&self, path: &str, offset: u64) -> io::Result<(Download, u64)> {
        let file = self.root.open_read(path)?;
        let size = file.metadata()?.len();
        Ok((Download::File { file, offset }, size))
    }

    fn begin_upload(&self, path: &str, keep: Keep) -> io::Result<Box<dyn Upload>> {
        Ok(Box::new(self.root.begin_upload(path, keep)?))
    }

    fn mkdir(&self, path: &str) -> io::Result<()> {
        self.root.mkdir(path)
    }

    fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.root.remove_dir(path)
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        if self.root.is_dir(path) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        self.root.remove_file(path)
    }

    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        self.root.rename(from, to, replace)
    }

    fn set_modified(&self, path: &str, seconds: i64) -> io::Result<()> {
        self.root.set_modified(path, seconds)
    }

    fn chmod(&self, path: &str, mode: u32) -> io::Result<()> {
        self.root.chmod(path, mode)
    }
}

impl Upload for fs::Upload {
    fn take_body(&mut self) -> Option<UploadBody> {
        self.take_file().map(UploadBody::File)
    }

    fn commit(self: Box<Self>, replace: bool) -> io::Result<()> {
        fs::Upload::commit(*self, replace)
    }

    fn discard(self: Box<Self>) -> io::Result<()> {
        fs::Upload::discard(*self)
    }
}

/// Reads directory entries one at a time (without `.`, `..` and uploads in progress), in the
/// order the file system gives them.
struct DirEntries {
    entries: rustix::fs::Dir,
    dir: OwnedFd,
}

impl Iterator for DirEntries {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<io::Result<Entry>> {
        loop {
            let item = match self.entries.next()? {
                Ok(item) => item,
                Err(error) => return Some(Err(error.into())),
            };
            let raw = item.file_name().to_bytes();
            if raw == b"." || raw == b".." || raw.starts_with(UPLOAD_TEMP_PREFIX.as_bytes()) {
                continue;
            }
            // Gone between readdir and stat: not an error, just no longer there.
            let Ok(stat) = rustix::fs::statat(
                self.dir.as_fd(),
                item.file_name(),
                AtFlags::SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            let target = (file_kind(&stat) == FileKind::Symlink)
                .then(|| rustix::fs::readlinkat(self.dir.as_fd(), item.file_name(), Vec::new()))
                .and_then(Result::ok)
                .map(|target| String::from_utf8_lossy(target.as_bytes()).into_owned());
            return Some(Ok(Entry {
                name: String::from_utf8_lossy(raw).into_owned(),
                metadata: metadata(&stat),
                target,
            }));
        }
    }
}
