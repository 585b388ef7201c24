//! The server's memory budget: the limit it runs under (a config key, else its cgroup's), what
//! it uses now, and the model that turns the limit into how many password verifications may run
//! at once, how much uploads to object storage may hold in part buffers, and how many sessions it
//! admits. Near the limit new sessions are refused with a `421`, and uploads beyond the buffer
//! budget with a `452`, rather than the kernel killing the server with every session in it.
//!
//! The model's figures are measured by `scripts/bench-memory.sh` and documented in
//! `docs/memory.md`; change them together.

use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// Resident memory of a started server with no session (binary, runtime, TLS configuration,
/// metrics), rounded up: 7 MiB measured at start, 13 MiB once every session of a heavy
/// transfer mix has closed (what the allocator keeps).
pub const BASE_BYTES: u64 = 16 * MIB;
/// The most one session costs: an idle control connection after `AUTH TLS` (10 KiB measured)
/// and one transfer in flight on a TLS data connection (TLS RETR, the largest case: 575 KiB
/// measured), rounded up.
pub const SESSION_BYTES: u64 = 640 * 1024;
/// The share of the limit password verifications may hold (their slots' memory).
const VERIFICATION_SHARE: f64 = 0.25;
/// Resident memory, as a share of the limit, past which new sessions are refused: the rest is
/// headroom for the sessions already in.
const REFUSE_ABOVE: f64 = 0.85;
/// With object storage, the share of what is left after the base and the verifier that upload
/// part buffers may hold; sessions get the rest.
const UPLOAD_SHARE: f64 = 0.5;
/// Part buffers uploads may hold together when no limit is known: a bound, not a model.
const UNLIMITED_UPLOAD_BYTES: u64 = 1024 * MIB;
/// What one upload to object storage holds beyond its session's own cost and its two part
/// buffers (the one filling, the one being sent): the HTTP client's and the signer's. 1 MiB
/// measured (peak RSS over 8 concurrent S3 uploads, with 5 and with 8 MiB parts), rounded up.
const UPLOAD_OVERHEAD_BYTES: u64 = 2 * MIB;

/// The most one upload to object storage holds with parts of `part_size` bytes: two parts and
/// [`UPLOAD_OVERHEAD_BYTES`].
pub fn object_upload_bytes(part_size: u64) -> u64 {
    part_size
        .saturating_mul(2)
        .saturating_add(UPLOAD_OVERHEAD_BYTES)
}

/// Part buffers uploads of `upload_bytes` each may hold at once without a known limit: whole
/// uploads within [`UNLIMITED_UPLOAD_BYTES`], at least one; 0 when uploads hold none.
pub fn upload_budget_unlimited(upload_bytes: u64) -> u64 {
    whole_uploads(UNLIMITED_UPLOAD_BYTES, upload_bytes)
}

/// `bytes` rounded down to whole uploads of `upload_bytes`, at least one (a server that can never
/// upload is no use; one upload over the budget still runs, alone); 0 when uploads hold none.
fn whole_uploads(bytes: u64, upload_bytes: u64) -> u64 {
    if upload_bytes == 0 {
        return 0;
    }
    (bytes / upload_bytes).max(1) * upload_bytes
}

/// The limit the server keeps to, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// `limits.memory_limit_bytes` in the configuration.
    Config,
    /// The memory cgroup the process runs in (a container's `resources.limits.memory`).
    Cgroup,
}

impl MemoryLimit {
    /// The configured limit, else the cgroup's; None when neither sets one.
    pub fn detect(configured: Option<u64>) -> Option<MemoryLimit> {
        if let Some(bytes) = configured.filter(|&bytes| bytes > 0) {
            return Some(MemoryLimit {
                bytes,
                source: LimitSource::Config,
            });
        }
        cgroup_limit(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup")).map(|bytes| {
            MemoryLimit {
                bytes,
                source: LimitSource::Cgroup,
            }
        })
    }

    /// Resident bytes past which new sessions are refused.
    pub fn refuse_above(&self) -> u64 {
        (self.bytes as f64 * REFUSE_ABOVE) as u64
    }

    /// How many verifications may run at once, each holding `verification_bytes`: a quarter of
    /// the limit's worth, at least one, and no more than the CPUs can run (more would only wait
    /// for a core while holding memory).
    pub fn verification_slots(&self, verification_bytes: u64, cpus: usize) -> usize {
        let budget = (self.bytes as f64 * VERIFICATION_SHARE) as u64;
        let fit = budget / verification_bytes.max(1);
        usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .clamp(1, cpus.max(1))
    }

    /// What is left below the refusal line after the base and `verification_bytes`.
    fn left(&self, verification_bytes: u64) -> u64 {
        self.refuse_above()
            .saturating_sub(BASE_BYTES)
            .saturating_sub(verification_bytes)
    }

    /// Part buffers uploads to object storage may hold at once, each upload `upload_bytes`
    /// ([`object_upload_bytes`]; 0 on local disk, which holds none): [`UPLOAD_SHARE`] of what
    /// is left after the base and the verifier, in whole uploads, at least one.
    pub fn upload_budget(&self, verification_bytes: u64, upload_bytes: u64) -> u64 {
        let share = (self.left(verification_bytes) as f64 * UPLOAD_SHARE) as u64;
        whole_uploads(share, upload_bytes)
    }

    /// Sessions the limit holds, with `verification_bytes` set aside for the verifier and
    /// `upload_budget` for upload buffers: what is left below the refusal line after the base,
    /// divided by one session's cost.
    pub fn sessions(&self, verification_bytes: u64, upload_budget: u64) -> u32 {
        let left = self.left(verification_bytes).saturating_sub(upload_budget);
        u32::try_from(left / SESSION_BYTES)
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

/// Allocations from this size up are mapped on their own and returned to the kernel when
/// freed: transfer buffers (256 KiB) and hash memory. glibc raises this threshold by itself each
/// time such a block is freed (up to 32 MiB), after which those blocks come from per-thread
/// arenas that keep their pages; fixing it stops that.
const MMAP_THRESHOLD: i32 = 128 * 1024;
/// At most this many malloc arenas: the blocking threads that run transfers and file calls
/// otherwise each get one (8 per CPU), and each keeps what it once held.
const ARENAS: i32 = 4;

/// Set to `1`, leaves glibc's malloc at its own defaults: for telling an allocator problem from
/// another one, never for production (see `docs/ftp-server.md`).
pub const MALLOC_DEFAULTS_ENV: &str = "FTP_SERVER_MALLOC_DEFAULTS";

/// Sets glibc's malloc to give memory back (see [`MMAP_THRESHOLD`], [`ARENAS`]) unless
/// [`MALLOC_DEFAULTS_ENV`] says not to; measured in `docs/memory.md`. Call first thing, before
/// threads start.
pub fn tune_allocator() {
    if std::env::var_os(MALLOC_DEFAULTS_ENV).is_some_and(|value| value == "1") {
        tracing::warn!("{MALLOC_DEFAULTS_ENV}=1: malloc left at glibc's defaults");
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Verifications at once without a known limit: one per CPU.
pub fn verification_slots_unlimited(cpus: usize) -> usize {
    cpus.max(1)
}

/// CPUs this process may use (its cgroup's quota counted).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resident memory of this process now; None where `/proc` cannot tell.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Values at or above this mean "no limit" (cgroup v1 writes 2^63 rounded to a page).
const UNLIMITED: u64 = 1 << 60;

/// The memory limit of the cgroup `proc_cgroup` (a `/proc/<pid>/cgroup` file) names, read under
/// `root` (`/sys/fs/cgroup`): cgroup v2's `memory.max`, or v1's `memory.limit_in_bytes`. Inside a
/// container the cgroup is the root of what is mounted, so the mount's root file is tried too.
fn cgroup_limit(proc_cgroup: &Path, root: &Path) -> Option<u64> {
    let own = std::fs::read_to_string(proc_cgroup).unwrap_or_default();
    let mut candidates: Vec<PathBuf> = Vec::new();
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            candidates.push(root.join(relative).join("memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(
                root.join("memory")
                    .join(relative)
                    .join("memory.limit_in_bytes"),
            );
        }
    }
    candidates.push(root.join("memory.max"));
    candidates.push(root.join("memory").join("memory.limit_in_bytes"));
    candidates
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .find(|&bytes| bytes < UNLIMITED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(mib: u64) -> MemoryLimit {
        MemoryLimit {
            bytes: mib * MIB,
            source: LimitSource::Config,
        }
    }

    #[test]
    fn the_example_limit_verifies_one_default_hash_at_a_time_and_admits_sessions_to_match() {
        let default_hash = 19 * MIB;
        let example = limit(128);
        assert_eq!(example.verification_slots(default_hash, 2), 1);
        let sessions = example.sessions(default_hash, 0);
        // 128 MiB * 0.85 - 16 - 19 = 73.8 MiB of 640 KiB sessions.
        assert_eq!(sessions, 118);
        assert_eq!(limit(1024).verification_slots(default_hash, 2), 2);
        assert_eq!(limit(1024).verification_slots(default_hash, 64), 13);
        assert_eq!(limit(16).verification_slots(default_hash, 2), 1);
        assert_eq!(limit(16).sessions(default_hash, 0), 1);
    }

    #[test]
    fn object_storage_uploads_get_half_of_what_is_left_in_whole_uploads() {
        let default_hash = 19 * MIB;
        let example = limit(128);
        // Local disk: no part buffers, the sessions as before.
        assert_eq!(example.upload_budget(default_hash, 0), 0);
        // 8 MiB parts: 18 MiB an upload; half of 73.8 MiB holds 2 of them.
        let upload = object_upload_bytes(8 * MIB);
        assert_eq!(upload, 18 * MIB);
        let budget = example.upload_budget(default_hash, upload);
        assert_eq!(budget, 2 * upload);
        // The sessions get the rest: (73.8 - 36) MiB of 640 KiB sessions.
        assert_eq!(example.sessions(default_hash, budget), 60);
        // 5 MiB parts (the smallest S3 allows): 12 MiB an upload, 3 at once.
        assert_eq!(
            example.upload_budget(default_hash, object_upload_bytes(5 * MIB)),
            3 * 12 * MIB
        );
        // 1 GiB holds 23 uploads of 8 MiB parts beside 674 sessions.
        let large = limit(1024).upload_budget(default_hash, upload);
        assert_eq!(large / upload, 23);
        assert_eq!(limit(1024).sessions(default_hash, large), 674);
        // A limit too small for one upload still lets one run, alone.
        assert_eq!(limit(32).upload_budget(default_hash, upload), upload);
        assert_eq!(limit(32).sessions(default_hash, upload), 1);
        // No limit: whole uploads within 1 GiB.
        assert_eq!(upload_budget_unlimited(upload), 56 * upload);
        assert_eq!(upload_budget_unlimited(0), 0);
        assert_eq!(upload_budget_unlimited(4096 * MIB), 4096 * MIB);
    }

    #[test]
    fn reads_cgroup_v1_and_v2_limits_and_ignores_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cgroup");
        let write = |path: &Path, text: &str| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // v2: the process's own cgroup.
        let proc_v2 = dir.path().join("v2");
        write(&proc_v2, "0::/kubepods/pod1/ctr\n");
        write(&root.join("kubepods/pod1/ctr/memory.max"), "134217728\n");
        write(&root.join("memory.max"), "max\n");
        assert_eq!(cgroup_limit(&proc_v2, &root), Some(128 * MIB));
        // v1, hybrid: the memory controller's line; 2^63 (no limit) at the top is skipped.
        let proc_v1 = dir.path().join("v1");
        write(
            &proc_v1,
            "12:cpu,cpuacct:/x\n7:memory:/kubepods/pod2\n0::/\n",
        );
        write(
            &root.join("memory/kubepods/pod2/memory.limit_in_bytes"),
            "268435456\n",
        );
        write(
            &root.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        assert_eq!(cgroup_limit(&proc_v1, &root), Some(256 * MIB));
        // Inside a container the own path may not exist under the mount: its root is the cgroup.
        let proc_ctr = dir.path().join("ctr");
        write(&proc_ctr, "7:memory:/kubepods/elsewhere\n");
        write(&root.join("memory/memory.limit_in_bytes"), "67108864\n");
        assert_eq!(cgroup_limit(&proc_ctr, &root), Some(64 * MIB));
        let empty = dir.path().join("none");
        assert_eq!(cgroup_limit(&empty, &dir.path().join("nothing")), None);
    }

    #[test]
    fn the_own_resident_memory_is_read() {
        let resident = resident_bytes().unwrap();
        assert!(resident > MIB, "{resident}");
    }
}
