//! Storage quotas: the bytes and files under a user's home. Usage is read by walking the home
//! through the storage seam, plus what this process knows the walk cannot see yet (the user's
//! uploads in flight, commits since the walk began). A walk serves the user's uploads for
//! [`WALK_MAX_AGE`], or until a delete or rename of this process
//! ([`UploadLedger::forget_walk`]); so a burst
//! of uploads to a home of many files (or to object storage, where a walk is a listing of
//! requests) walks it once, and what other replicas changed counts from the next walk on. The
//! upload's body refuses the write that would cross the byte quota; the session then discards
//! the upload and answers `552`. Front ends (FTP, SFTP) call [`begin_upload`] before an upload's
//! body is written, and forget the walk after changing the home otherwise.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ftp::auth::policy::Quota;
use crate::ftp::live_users::{LedgerMark, UploadLedger, Walk};
use crate::ftp::storage::{FileKind, Home, Keep, UploadBody};

/// How long one walk of a home serves its user's uploads.
pub const WALK_MAX_AGE: Duration = Duration::from_secs(30);

/// Starts the quota check of an upload to `path` keeping `keep` (blocking: it walks the home).
/// `Ok(Err(_))`: the upload would add a file past `quota_files`, refuse it before any byte.
pub fn begin_upload(
    home: &dyn Home,
    quota: Quota,
    ledger: UploadLedger,
    path: &str,
    keep: Keep,
) -> io::Result<Result<UploadQuota, FilesExceeded>> {
    let existing = match home.lstat(path) {
        Ok(stat) => Some(stat),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let walk = match ledger.recent_walk(WALK_MAX_AGE) {
        Some(walk) => walk,
        None => {
            // Marked before the walk: a commit in between is counted twice at worst, never
            // missed.
            let (at, mark) = (Instant::now(), ledger.mark());
            let usage = usage(home)?;
            let walk = Walk {
                at,
                mark,
                bytes: usage.bytes,
                files: usage.files,
            };
            ledger.record_walk(walk);
            walk
        }
    };
    let usage = Usage {
        bytes: walk.bytes,
        files: walk.files,
    };
    let target = Target {
        existing: existing
            .as_ref()
            .filter(|stat| stat.kind == FileKind::File)
            .map_or(0, |stat| stat.size),
        new_file: existing.is_none(),
        keep,
    };
    Ok(UploadQuota::begin(quota, ledger, walk.mark, usage, target))
}

/// What a home holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
}

/// Walks the whole home (blocking): regular files count, links and directories do not; uploads
/// in progress are invisible to listings and so not counted here.
pub fn usage(home: &dyn Home) -> io::Result<Usage> {
    let mut usage = Usage::default();
    let mut directories = vec!["/".to_owned()];
    while let Some(directory) = directories.pop() {
        for entry in home.list(&directory)? {
            let entry = entry?;
            let path = if directory == "/" {
                format!("/{}", entry.name)
            } else {
                format!("{directory}/{}", entry.name)
            };
            match entry.metadata.kind {
                FileKind::File => {
                    usage.bytes += entry.metadata.size;
                    usage.files += 1;
                }
                FileKind::Dir => directories.push(path),
                _ => {}
            }
        }
    }
    Ok(usage)
}

/// What an upload to a path starts from: the file there now and what of it the upload keeps.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Size of the regular file there now (0: none).
    pub existing: u64,
    /// Whether the upload adds a file (nothing of that name yet).
    pub new_file: bool,
    pub keep: Keep,
}

impl Target {
    /// Bytes of the existing file the finished upload starts with.
    fn kept(&self) -> u64 {
        match self.keep {
            Keep::Nothing => 0,
            Keep::All => self.existing,
            Keep::Prefix(offset) => offset.min(self.existing),
        }
    }
}

/// Refused before any byte moves: the upload would add a file past `quota_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesExceeded {
    pub quota_files: u64,
}

/// One upload's check against the user's quota.
pub struct UploadQuota {
    ledger: UploadLedger,
    mark: LedgerMark,
    target: Target,
    /// Bytes stored once this upload commits, not counting what it writes and what others of
    /// the user's uploads add.
    base: i64,
    quota_bytes: Option<u64>,
    written: Arc<AtomicU64>,
}

impl UploadQuota {
    /// Checks the file quota and makes the byte check; `usage` must be walked after `mark`.
    pub fn begin(
        quota: Quota,
        ledger: UploadLedger,
        mark: LedgerMark,
        usage: Usage,
        target: Target,
    ) -> Result<UploadQuota, FilesExceeded> {
        let unseen = ledger.unseen(mark);
        if let Some(quota_files) = quota.files
            && target.new_file
            && usage.files as i64 + unseen.files + 1 > quota_files as i64
        {
            return Err(FilesExceeded { quota_files });
        }
        ledger.begin_upload(target.new_file);
        Ok(UploadQuota {
            base: usage.bytes as i64 - target.existing as i64 + target.kept() as i64,
            ledger,
            mark,
            target,
            quota_bytes: quota.bytes,
            written: Arc::default(),
        })
    }

    /// The upload's body, refusing the write that would cross the byte quota.
    pub fn guard(&self, body: UploadBody) -> UploadBody {
        let inner: Box<dyn Write + Send> = match body {
            UploadBody::File(file) => Box::new(file),
            UploadBody::Stream(writer) => writer,
        };
        UploadBody::Stream(Box::new(QuotaWriter {
            inner,
            ledger: self.ledger.clone(),
            mark: self.mark,
            base: self.base,
            quota_bytes: self.quota_bytes,
            written: Arc::clone(&self.written),
        }))
    }

    /// The upload ended, committed or not.
    pub fn finish(self, committed: bool) {
        let written = self.written.load(Ordering::SeqCst);
        let change =
            committed.then(|| (self.target.kept() + written) as i64 - self.target.existing as i64);
        self.ledger
            .end_upload(self.target.new_file, written, change);
    }
}

struct QuotaWriter {
    inner: Box<dyn Write + Send>,
    ledger: UploadLedger,
    mark: LedgerMark,
    base: i64,
    quota_bytes: Option<u64>,
    written: Arc<AtomicU64>,
}

impl Write for QuotaWriter {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        if let Some(quota_bytes) = self.quota_bytes {
            // Others of the user's uploads count as they grow; this one's bytes are in `unseen`.
            let stored = self.base + self.ledger.unseen(self.mark).bytes + buffer.len() as i64;
            if stored > quota_bytes as i64 {
                return Err(io::Error::new(
                    io::ErrorKind::QuotaExceeded,
                    format!("the upload would pass the quota of {quota_bytes} bytes"),
                ));
            }
        }
        let wrote = self.inner.write(buffer)?;
        self.written.fetch_add(wrote as u64, Ordering::SeqCst);
        self.ledger.wrote(wrote as u64);
        Ok(wrote)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftp::auth::policy::UserPolicy;
    use crate::ftp::live_users::LiveUsers;
    use crate::ftp::storage::Storage;
    use crate::ftp::storage::local::LocalStorage;

    fn body_bytes(body: UploadBody, bytes: &[u8]) -> io::Result<()> {
        let UploadBody::Stream(mut writer) = body else {
            panic!("a guarded body is a stream")
        };
        writer.write_all(bytes)
    }

    #[test]
    fn the_walk_counts_regular_files_in_every_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("a/b/deep"), [0u8; 5]).unwrap();
        std::os::unix::fs::symlink("top", dir.path().join("link")).unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let home = storage.open_home("").unwrap();
        assert_eq!(
            usage(&*home).unwrap(),
            Usage {
                bytes: 15,
                files: 2
            }
        );
    }

    #[test]
    fn the_write_that_crosses_the_byte_quota_fails_and_others_uploads_count() {
        let live = LiveUsers::default();
        let policy = UserPolicy::default();
        let (one, two) = (
            live.open_session("acme", &policy).unwrap(),
            live.open_session("acme", &policy).unwrap(),
        );
        let quota = Quota {
            bytes: Some(100),
            files: Some(3),
        };
        let new = Target {
            existing: 0,
            new_file: true,
            keep: Keep::Nothing,
        };
        let used = Usage {
            bytes: 40,
            files: 1,
        };
        let first =
            UploadQuota::begin(quota, one.ledger(), one.ledger().mark(), used, new).unwrap();
        body_bytes(
            first.guard(UploadBody::Stream(Box::new(io::sink()))),
            &[0; 50],
        )
        .unwrap();
        // The second upload sees the first one's 50 bytes in flight: 40 + 50 + 11 > 100.
        let second =
            UploadQuota::begin(quota, two.ledger(), two.ledger().mark(), used, new).unwrap();
        let error = body_bytes(
            second.guard(UploadBody::Stream(Box::new(io::sink()))),
            &[0; 11],
        )
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::QuotaExceeded);
        // A third new file would pass quota_files: 1 stored + 2 in flight + 1.
        assert_eq!(
            UploadQuota::begin(quota, two.ledger(), two.ledger().mark(), used, new).err(),
            Some(FilesExceeded { quota_files: 3 })
        );
        second.finish(false);
        first.finish(true);
        // Replacing the 40-byte file frees its bytes: 40 - 40 + 50 is room enough; a second such
        // upload beside it has 50 left.
        let replace = Target {
            existing: 40,
            new_file: false,
            keep: Keep::Nothing,
        };
        let mark = one.ledger().mark();
        let third = UploadQuota::begin(quota, one.ledger(), mark, used, replace).unwrap();
        body_bytes(
            third.guard(UploadBody::Stream(Box::new(io::sink()))),
            &[0; 50],
        )
        .unwrap();
        let fourth = UploadQuota::begin(quota, two.ledger(), mark, used, replace).unwrap();
        assert!(
            body_bytes(
                fourth.guard(UploadBody::Stream(Box::new(io::sink()))),
                &[0; 51]
            )
            .is_err()
        );
    }

    #[test]
    fn one_walk_serves_a_burst_of_uploads_until_a_delete_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), [0u8; 60]).unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let home = storage.open_home("").unwrap();
        let live = LiveUsers::default();
        let session = live.open_session("acme", &UserPolicy::default()).unwrap();
        let quota = Quota {
            bytes: Some(100),
            files: None,
        };
        let upload = |path: &str, bytes: usize| {
            let quota = begin_upload(&*home, quota, session.ledger(), path, Keep::Nothing)
                .unwrap()
                .unwrap();
            let written = body_bytes(
                quota.guard(UploadBody::Stream(Box::new(io::sink()))),
                &vec![0; bytes],
            );
            quota.finish(written.is_ok());
            written.is_ok()
        };
        // The first upload walks the home (60 bytes) and the ledger counts what it commits.
        assert!(upload("/a", 30));
        std::fs::write(dir.path().join("a"), [0u8; 30]).unwrap();
        // A file the walk did not see (another replica's): the recent walk still serves, so only
        // the 60 + 30 counted bytes stand against this upload.
        std::fs::write(dir.path().join("behind"), [0u8; 5]).unwrap();
        assert!(upload("/b", 10));
        // A delete forgets the walk: the next upload sees the home as it is (60 + 30 + 5 + 0).
        std::fs::remove_file(dir.path().join("old")).unwrap();
        session.ledger().forget_walk();
        assert!(upload("/c", 60));
        assert!(
            !upload("/d", 6),
            "the fresh walk must count the file written behind the server"
        );
    }
}
