//! Confinement: every path a client names is resolved lexically inside a virtual root, then opened
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to the root's directory fd, so
//! neither `..`, absolute paths nor symlinks (however they are planted) can leave the root.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, Stat};

/// Prefix of the temporary files uploads are written to; listings hide them.
pub const UPLOAD_TEMP_PREFIX: &str = ".ftp-upload-";

/// Joins `arg` to the virtual working directory `cwd` and normalises the result: always absolute,
/// no `.`/`..`/empty components; `..` at the top stays at the top.
pub fn resolve(cwd: &str, arg: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let start = if arg.starts_with('/') { "" } else { cwd };
    for part in start.split('/').chain(arg.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether a client-given path holds a control byte (CR, LF, NUL or any other C0): such names
/// forge lines in listings that clients parse, so no command may create or name one.
pub fn has_control_bytes(path: &str) -> bool {
    path.bytes().any(|byte| byte < 0x20)
}

/// The path relative to the root, as `openat2` wants it.
fn relative(virtual_path: &str) -> &str {
    let trimmed = virtual_path.trim_start_matches('/');
    if trimmed.is_empty() { "." } else { trimmed }
}

/// Splits a normalised virtual path into its parent (relative) and final name.
fn parent_and_name(virtual_path: &str) -> io::Result<(&str, &str)> {
    let trimmed = virtual_path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the root itself cannot be changed",
        ));
    }
    Ok(match trimmed.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => (".", trimmed),
    })
}

/// Turns the errors `RESOLVE_BENEATH` gives for an escape into "permission denied".
fn confined(error: rustix::io::Errno) -> io::Error {
    if error == rustix::io::Errno::XDEV || error == rustix::io::Errno::LOOP {
        io::Error::new(io::ErrorKind::PermissionDenied, "path leaves the root")
    } else {
        error.into()
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// The directory every session of the server is confined to.
#[derive(Clone, Debug)]
pub struct Root {
    fd: Arc<OwnedFd>,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd: Arc::new(fd) })
    }

    /// A root for one login: the directory `home` (relative, as [`super::access::home_path`]
    /// gives it) beneath this root, created if missing. Every path of the session then resolves
    /// beneath it, exactly as paths resolve beneath the server's root.
    pub fn open_home(&self, home: &str) -> io::Result<Root> {
        if home.is_empty() {
            return Ok(self.clone());
        }
        let mut made = String::new();
        for part in home.split('/').filter(|part| !part.is_empty()) {
            let parent = self.open_at(&made, OFlags::DIRECTORY | OFlags::PATH, 0)?;
            match rustix::fs::mkdirat(&parent, part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(error) => return Err(error.into()),
            }
            made = format!("{made}/{part}");
        }
        let fd = self.open_at(home, OFlags::DIRECTORY | OFlags::RDONLY, 0)?;
        Ok(Root { fd: Arc::new(fd) })
    }

    fn open_at(&self, virtual_path: &str, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        // openat2 rejects O_PATH combined with anything but O_CLOEXEC/O_DIRECTORY/O_NOFOLLOW.
        let extra = if flags.contains(OFlags::PATH) {
            OFlags::CLOEXEC
        } else {
            OFlags::CLOEXEC | OFlags::NOCTTY
        };
        rustix::fs::openat2(
            self.fd.as_fd(),
            relative(virtual_path),
            flags | extra,
            Mode::from_raw_mode(mode),
            RESOLVE,
        )
        .map_err(confined)
    }

    fn parent_dir(&self, virtual_path: &str) -> io::Result<(OwnedFd, String)> {
        let (parent, name) = parent_and_name(virtual_path)?;
        let dir = self.open_at(parent, OFlags::DIRECTORY | OFlags::PATH, 0)?;
        Ok((dir, name.to_owned()))
    }

    /// Metadata of what the path names, following symlinks that stay inside the root.
    pub fn stat(&self, virtual_path: &str) -> io::Result<Stat> {
        let fd = self.open_at(virtual_path, OFlags::PATH, 0)?;
        Ok(rustix::fs::fstat(&fd)?)
    }

    /// Metadata of the path itself (a symlink is not followed).
    pub fn lstat(&self, virtual_path: &str) -> io::Result<Stat> {
        let (dir, name) = self.parent_dir(virtual_path)?;
        Ok(rustix::fs::statat(
            &dir,
            name.as_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    pub fn is_dir(&self, virtual_path: &str) -> bool {
        self.stat(virtual_path)
            .map(|stat| file_kind(&stat) == FileKind::Dir)
            .unwrap_or(false)
    }

    /// Opens a regular file for a download. `O_NONBLOCK` so that opening a FIFO cannot hang
    /// the thread waiting for a writer; FIFOs, devices and sockets are then refused (reading one
    /// never ends, or reads what is not a file).
    pub fn open_read(&self, virtual_path: &str) -> io::Result<File> {
        let fd = self.open_at(virtual_path, OFlags::RDONLY | OFlags::NONBLOCK, 0)?;
        match file_kind(&rustix::fs::fstat(&fd)?) {
            FileKind::File => {}
            FileKind::Dir => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ));
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "not a regular file",
                ));
            }
        }
        // Regular files ignore O_NONBLOCK; cleared anyway so the descriptor means what it says.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(File::from(fd))
    }

    pub fn open_dir(&self, virtual_path: &str) -> io::Result<OwnedFd> {
        self.open_at(virtual_path, OFlags::RDONLY | OFlags::DIRECTORY, 0)
    }

    /// Opens what the path names (following symlinks that stay inside the root) to change its
    /// attributes; `O_NONBLOCK` so a FIFO does not hang the open.
    fn open_for_attributes(&self, virtual_path: &str) -> io::Result<OwnedFd> {
        parent_and_name(virtual_path)?;
        self.open_at(virtual_path, OFlags::RDONLY | OFlags::NONBLOCK, 0)
    }

    /// Sets the modification time (`MFMT`), leaving the access time alone.
    pub fn set_modified(&self, virtual_path: &str, seconds: i64) -> io::Result<()> {
        let fd = self.open_for_attributes(virtual_path)?;
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: seconds,
                tv_nsec: 0,
            },
        };
        Ok(rustix::fs::futimens(&fd, &times)?)
    }

    /// Sets the permission bits (`SITE CHMOD`); never set-id or sticky bits.
    pub fn chmod(&self, virtual_path: &str, mode: u32) -> io::Result<()> {
        let fd = self.open_for_attributes(virtual_path)?;
        Ok(rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))?)
    }

    pub fn mkdir(&self, virtual_path: &str) -> io::Result<()> {
        let (dir, name) = self.parent_dir(virtual_path)?;
        Ok(rustix::fs::mkdirat(
            &dir,
            name.as_str(),
            Mode::from_raw_mode(0o755),
        )?)
    }

    pub fn remove_file(&self, virtual_path: &str) -> io::Result<()> {
        let (dir, name) = self.parent_dir(virtual_path)?;
        Ok(rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty())?)
    }

    pub fn remove_dir(&self, virtual_path: &str) -> io::Result<()> {
        let (dir, name) = self.parent_dir(virtual_path)?;
        Ok(rustix::fs::unlinkat(
            &dir,
            name.as_str(),
            AtFlags::REMOVEDIR,
        )?)
    }

    /// Renames `from` to `to`; over an existing `to` only when `replace` (atomically refused
    /// otherwise, with `AlreadyExists`).
    pub fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        let (from_dir, from_name) = self.parent_dir(from)?;
        let (to_dir, to_name) = self.parent_dir(to)?;
        Ok(rustix::fs::renameat_with(
            &from_dir,
            from_name.as_str(),
            &to_dir,
            to_name.as_str(),
            rename_flags(replace),
        )?)
    }

    /// Starts an upload to `virtual_path`: a hidden temporary file beside it, renamed over the
    /// target by [`Upload::commit`]; dropped without commit, it is removed. `keep` says how much
    /// of the existing file the temporary file starts with (APPE, REST + STOR), so even a resumed
    /// upload that fails leaves the target exactly as it was.
    pub fn begin_upload(&self, virtual_path: &str, keep: Keep) -> io::Result<Upload> {
        let (dir, name) = self.parent_dir(virtual_path)?;
        if is_upload_temp(&name) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "reserved file name",
            ));
        }
        let existing = match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Some(stat),
            Err(rustix::io::Errno::NOENT) => None,
            Err(error) => return Err(error.into()),
        };
        match existing.as_ref().map(file_kind) {
            Some(FileKind::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ));
            }
            // A FIFO or device is never replaced; a symlink is (the link itself, as before), but
            // resuming through one would read outside what the confinement checked.
            Some(FileKind::Other) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "not a regular file",
                ));
            }
            Some(FileKind::Symlink) if keep != Keep::Nothing => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "cannot resume an upload through a symlink",
                ));
            }
            Some(_) | None => {}
        }
        let keep_bytes = match (keep, &existing) {
            (Keep::Nothing | Keep::Prefix(0), _) => 0,
            (Keep::All, None) => 0,
            (Keep::All, Some(stat)) => stat.st_size as u64,
            (Keep::Prefix(offset), Some(stat)) if offset <= stat.st_size as u64 => offset,
            (Keep::Prefix(_), _) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "restart offset is past the end of the file",
                ));
            }
        };
        let dir = rustix::fs::openat(
            &dir,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mode = existing.map_or(0o644, |stat| stat.st_mode & 0o777);
        for _ in 0..16 {
            let temp_name = format!("{UPLOAD_TEMP_PREFIX}{:016x}", rand::random::<u64>());
            match rustix::fs::openat(
                &dir,
                temp_name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            ) {
                Ok(fd) => {
                    let mut upload = Upload {
                        dir: Arc::new(dir),
                        temp_name,
                        final_name: name,
                        file: Some(File::from(fd)),
                        committed: false,
                    };
                    if keep_bytes > 0 {
                        upload.copy_from_target(keep_bytes)?;
                    }
                    return Ok(upload);
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(io::Error::other("could not create a temporary upload file"))
    }
}

impl Root {
    /// Removes temporary upload files (anywhere under the root) not written to for `older_than`:
    /// what a killed server left. A live upload, of this server or of another sharing the
    /// volume, writes at least once per stall bound, so giving that bound here spares it.
    /// Symlinks are not followed. Returns how many files went.
    pub fn remove_upload_leftovers(&self, older_than: std::time::Duration) -> io::Result<usize> {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        let mut stack = vec![rustix::fs::openat(
            self.fd.as_fd(),
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?];
        while let Some(dir) = stack.pop() {
            for item in rustix::fs::Dir::read_from(&dir)? {
                let Ok(item) = item else { continue };
                let name = item.file_name();
                let bytes = name.to_bytes();
                if bytes == b"." || bytes == b".." {
                    continue;
                }
                let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                    continue;
                };
                match file_kind(&stat) {
                    FileKind::Dir => {
                        if let Ok(child) = rustix::fs::openat(
                            &dir,
                            name,
                            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        ) {
                            stack.push(child);
                        }
                    }
                    FileKind::File if bytes.starts_with(UPLOAD_TEMP_PREFIX.as_bytes()) => {
                        let modified = std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(stat.st_mtime.max(0) as u64);
                        let idle = now.duration_since(modified).unwrap_or_default();
                        if idle >= older_than
                            && rustix::fs::unlinkat(&dir, name, AtFlags::empty()).is_ok()
                        {
                            removed += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(removed)
    }
}

/// How much of an existing file an upload keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// STOR, STOU: the upload is the whole new content.
    Nothing,
    /// REST n + STOR: the first n bytes, then the upload.
    Prefix(u64),
    /// APPE: all of it, then the upload.
    All,
}

/// Whether a name is one of the server's temporary upload files.
pub fn is_upload_temp(name: &str) -> bool {
    name.starts_with(UPLOAD_TEMP_PREFIX)
}

/// Whether any component of a client-given path names a temporary upload file: clients may not
/// create, rename to, open or list those.
pub fn names_upload_temp(path: &str) -> bool {
    path.split('/').any(is_upload_temp)
}

/// An upload in progress: see [`Root::begin_upload`].
#[derive(Debug)]
pub struct Upload {
    dir: Arc<OwnedFd>,
    temp_name: String,
    final_name: String,
    file: Option<File>,
    committed: bool,
}

impl Upload {
    pub fn take_file(&mut self) -> Option<File> {
        self.file.take()
    }

    pub fn final_name(&self) -> &str {
        &self.final_name
    }

    /// Fills the temporary file with the first `bytes` of the target, in the kernel
    /// (`copy_file_range`, a reflink where the file system has them).
    fn copy_from_target(&mut self, bytes: u64) -> io::Result<()> {
        let source = rustix::fs::openat(
            &*self.dir,
            self.final_name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut source = File::from(source);
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("upload file already taken"));
        };
        let mut left = bytes;
        while left > 0 {
            let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
            match rustix::fs::copy_file_range(&source, None, &*file, None, chunk) {
                Ok(0) => break,
                Ok(copied) => left -= copied as u64,
                Err(rustix::io::Errno::INTR) => {}
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::INVAL
                    | rustix::io::Errno::OPNOTSUPP,
                ) => {
                    left -= io::copy(&mut io::Read::take(&mut source, left), file)?;
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
        if left > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while an upload resumed it",
            ));
        }
        Ok(())
    }

    /// Removes the temporary file now (dropping does it too, on a blocking thread, later).
    pub fn discard(mut self) -> io::Result<()> {
        self.committed = true;
        Ok(rustix::fs::unlinkat(
            &*self.dir,
            self.temp_name.as_str(),
            AtFlags::empty(),
        )?)
    }

    /// Moves the finished file over the target in one atomic rename; when not `replace`, the
    /// upload fails with `AlreadyExists` if a file of that name appeared meanwhile.
    pub fn commit(mut self, replace: bool) -> io::Result<()> {
        rustix::fs::renameat_with(
            &*self.dir,
            self.temp_name.as_str(),
            &*self.dir,
            self.final_name.as_str(),
            rename_flags(replace),
        )?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let dir = Arc::clone(&self.dir);
        let temp_name = std::mem::take(&mut self.temp_name);
        let remove = move || {
            let _ = rustix::fs::unlinkat(&*dir, temp_name.as_str(), AtFlags::empty());
        };
        // Dropped on the async runtime (a failed transfer): the unlink runs on a blocking thread.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

fn rename_flags(replace: bool) -> RenameFlags {
    if replace {
        RenameFlags::empty()
    } else {
        RenameFlags::NOREPLACE
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

pub fn file_kind(stat: &Stat) -> FileKind {
    match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
        rustix::fs::FileType::RegularFile => FileKind::File,
        rustix::fs::FileType::Directory => FileKind::Dir,
        rustix::fs::FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resolves_relative_absolute_and_dots() {
        assert_eq!(resolve("/", "a/b"), "/a/b");
        assert_eq!(resolve("/a", "b"), "/a/b");
        assert_eq!(resolve("/a", "/c"), "/c");
        assert_eq!(resolve("/a/b", ".."), "/a");
        assert_eq!(resolve("/", "../../etc/passwd"), "/etc/passwd");
        assert_eq!(resolve("/a", "./b//c/./"), "/a/b/c");
    }

    #[test]
    fn symlinks_and_dotdot_cannot_leave_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root_dir = outer.path().join("root");
        std::fs::create_dir(&root_dir).unwrap();
        std::fs::write(outer.path().join("secret"), "secret").unwrap();
        std::fs::write(root_dir.join("inside"), "ok").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret"), root_dir.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("../secret", root_dir.join("rel-link")).unwrap();
        std::os::unix::fs::symlink("inside", root_dir.join("good-link")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        assert!(root.open_read("/inside").is_ok());
        assert_eq!(root.stat("/inside").unwrap().st_size, 2);
        assert!(root.is_dir("/"));
        assert!(root.open_read("/good-link").is_ok());
        for escape in ["/abs-link", "/rel-link", &resolve("/", "../secret")] {
            assert!(root.open_read(escape).is_err(), "{escape} escaped");
        }
        // Raw relative paths with dots are refused by openat2 itself too.
        assert!(root.open_at("../secret", OFlags::RDONLY, 0).is_err());
    }

    #[test]
    fn a_home_is_created_beneath_the_root_and_confines_like_it() {
        let (outer, root) = planted_root();
        let home = root.open_home("homes/alice").unwrap();
        assert!(outer.path().join("root/homes/alice").is_dir());
        std::fs::write(outer.path().join("root/homes/alice/mine"), "mine").unwrap();
        assert!(home.open_read("/mine").is_ok());
        // The rest of the root is outside this home, as the outside is outside the root.
        for escape in ["/inside", "/../inside", "/../../secret"] {
            let path = resolve("/", escape);
            assert!(home.open_read(&path).is_err(), "{escape} escaped the home");
        }
        assert!(home.open_at("../../inside", OFlags::RDONLY, 0).is_err());
        // A symlinked home that points outside the root is refused.
        assert!(root.open_home("d/out-dir").is_err());
    }

    #[test]
    fn uncommitted_upload_leaves_nothing_and_commit_replaces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "old").unwrap();
        let root = Root::open(dir.path()).unwrap();
        {
            let mut upload = root.begin_upload("/f", Keep::Nothing).unwrap();
            std::io::Write::write_all(&mut upload.take_file().unwrap(), b"partial").unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f")).unwrap(),
            "old"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut upload = root.begin_upload("/f", Keep::Nothing).unwrap();
        std::io::Write::write_all(&mut upload.take_file().unwrap(), b"new").unwrap();
        upload.commit(true).unwrap();
        std::fs::write(dir.path().join("g"), "there").unwrap();
        let upload = root.begin_upload("/g", Keep::Nothing).unwrap();
        let error = upload.commit(false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("g")).unwrap(),
            "there"
        );
        std::fs::remove_file(dir.path().join("g")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f")).unwrap(),
            "new"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn resumed_uploads_start_from_the_kept_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "0123456789").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut upload = root.begin_upload("/f", Keep::Prefix(3)).unwrap();
        std::io::Write::write_all(&mut upload.take_file().unwrap(), b"abc").unwrap();
        upload.commit(true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"012abc");
        let mut upload = root.begin_upload("/f", Keep::All).unwrap();
        std::io::Write::write_all(&mut upload.take_file().unwrap(), b"!").unwrap();
        upload.commit(true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"012abc!");
        let error = root.begin_upload("/f", Keep::Prefix(99)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        // APPE to a file that does not exist yet creates it.
        let mut upload = root.begin_upload("/new", Keep::All).unwrap();
        std::io::Write::write_all(&mut upload.take_file().unwrap(), b"n").unwrap();
        upload.commit(true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("new")).unwrap(), b"n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// A root holding `inside`, a directory `d`, and links that point in and out; beside it, the
    /// file `secret`.
    fn planted_root() -> (tempfile::TempDir, Root) {
        let outer = tempfile::tempdir().unwrap();
        let root_dir = outer.path().join("root");
        std::fs::create_dir_all(root_dir.join("d")).unwrap();
        std::fs::write(outer.path().join("secret"), "SECRET").unwrap();
        std::fs::write(root_dir.join("inside"), "inside").unwrap();
        std::os::unix::fs::symlink("../secret", root_dir.join("out-rel")).unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret"), root_dir.join("out-abs")).unwrap();
        std::os::unix::fs::symlink(outer.path(), root_dir.join("d").join("out-dir")).unwrap();
        std::os::unix::fs::symlink("../inside", root_dir.join("d").join("in-rel")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", root_dir.join("magic")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        (outer, root)
    }

    proptest! {
        /// Whatever a client writes, reading goes nowhere outside the root.
        #[test]
        fn no_path_reaches_outside_the_root(
            absolute: bool,
            parts in proptest::collection::vec(
                proptest::sample::select(vec!["..", ".", "", "d", "inside", "secret", "out-rel", "out-abs", "out-dir", "in-rel", "magic", "root", "tmp"]),
                0..8,
            ),
        ) {
            let (_outer, root) = planted_root();
            let arg = format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"));
            for cwd in ["/", "/d"] {
                let path = resolve(cwd, &arg);
                if let Ok(mut file) = root.open_read(&path) {
                    let mut text = String::new();
                    let _ = std::io::Read::read_to_string(&mut file, &mut text);
                    prop_assert_ne!(text, "SECRET", "{} from {} reached the outside", arg, cwd);
                }
            }
        }

        #[test]
        fn resolved_paths_are_normal(cwd in "(/[a-z.]{0,4}){0,5}", arg in "[a-z./]{0,30}") {
            let cwd = resolve("/", &cwd);
            let path = resolve(&cwd, &arg);
            prop_assert!(path.starts_with('/'));
            prop_assert!(path == "/" || !path.ends_with('/'));
            prop_assert!(!path.contains("//"));
            prop_assert!(path.split('/').all(|part| part != ".." && part != "."));
            prop_assert_eq!(resolve("/", &path), path.clone());
            prop_assert_eq!(resolve(&cwd, &path), path);
        }
    }
}
