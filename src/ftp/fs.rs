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

    pub fn open_read(&self, virtual_path: &str) -> io::Result<File> {
        let fd = self.open_at(virtual_path, OFlags::RDONLY, 0)?;
        let file = File::from(fd);
        if file.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        Ok(file)
    }

    pub fn open_dir(&self, virtual_path: &str) -> io::Result<OwnedFd> {
        self.open_at(virtual_path, OFlags::RDONLY | OFlags::DIRECTORY, 0)
    }

    /// Opens for writing without truncating (REST + STOR resumes), creating the file if absent.
    pub fn open_write(&self, virtual_path: &str, append: bool) -> io::Result<File> {
        let mut flags = OFlags::WRONLY | OFlags::CREATE;
        if append {
            flags |= OFlags::APPEND;
        }
        Ok(File::from(self.open_at(virtual_path, flags, 0o644)?))
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
    /// target by [`Upload::commit`]; dropped without commit, it is removed.
    pub fn begin_upload(&self, virtual_path: &str) -> io::Result<Upload> {
        let (dir, name) = self.parent_dir(virtual_path)?;
        if name.starts_with(UPLOAD_TEMP_PREFIX) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "reserved file name",
            ));
        }
        if let Ok(stat) = rustix::fs::statat(&dir, name.as_str(), AtFlags::empty())
            && file_kind(&stat) == FileKind::Dir
        {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        let dir = rustix::fs::openat(
            &dir,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for _ in 0..16 {
            let temp_name = format!("{UPLOAD_TEMP_PREFIX}{:016x}", rand::random::<u64>());
            match rustix::fs::openat(
                &dir,
                temp_name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(fd) => {
                    return Ok(Upload {
                        dir,
                        temp_name,
                        final_name: name,
                        file: Some(File::from(fd)),
                        committed: false,
                    });
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(io::Error::other("could not create a temporary upload file"))
    }
}

/// An upload in progress: see [`Root::begin_upload`].
#[derive(Debug)]
pub struct Upload {
    dir: OwnedFd,
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

    /// Moves the finished file over the target in one atomic rename; when not `replace`, the
    /// upload fails with `AlreadyExists` if a file of that name appeared meanwhile.
    pub fn commit(mut self, replace: bool) -> io::Result<()> {
        rustix::fs::renameat_with(
            &self.dir,
            self.temp_name.as_str(),
            &self.dir,
            self.final_name.as_str(),
            rename_flags(replace),
        )?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(&self.dir, self.temp_name.as_str(), AtFlags::empty());
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
            let mut upload = root.begin_upload("/f").unwrap();
            std::io::Write::write_all(&mut upload.take_file().unwrap(), b"partial").unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f")).unwrap(),
            "old"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut upload = root.begin_upload("/f").unwrap();
        std::io::Write::write_all(&mut upload.take_file().unwrap(), b"new").unwrap();
        upload.commit(true).unwrap();
        std::fs::write(dir.path().join("g"), "there").unwrap();
        let upload = root.begin_upload("/g").unwrap();
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
