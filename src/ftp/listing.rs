//! Directory listings: `LIST` in the Unix `ls -l` style every client parses, `NLST` names, and
//! RFC 3659 `MLSD`/`MLST` facts.

use std::io;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::storage::{Entries, Entry, FileKind, Home, Metadata};

/// A name as listings show it: control characters (possible in names made outside FTP) become
/// `?`, so no name can forge a line of the listing.
fn shown(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The entries of a directory, sorted by name (for callers that want them all, such as tests).
pub fn read_dir(home: &dyn Home, virtual_path: &str) -> io::Result<Vec<Entry>> {
    let mut entries = home.list(virtual_path)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn mtime(metadata: &Metadata) -> Timestamp {
    Timestamp::from_second(metadata.modified).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `YYYYMMDDHHMMSS` in UTC, for `MDTM` and the `modify` fact.
pub fn time_val(metadata: &Metadata) -> String {
    mtime(metadata)
        .to_zoned(TimeZone::UTC)
        .strftime("%Y%m%d%H%M%S")
        .to_string()
}

fn permissions(mode: u32) -> String {
    let mut text = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

/// One `ls -l` line; dates within six months show the time, older ones the year.
pub fn unix_line(name: &str, stat: &Metadata, target: Option<&str>, now: Timestamp) -> String {
    let kind = match stat.kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        FileKind::Other => '?',
    };
    let modified = mtime(stat);
    let age = now.as_second() - modified.as_second();
    let format = if (0..180 * 24 * 3600).contains(&age) {
        "%b %d %H:%M"
    } else {
        "%b %d  %Y"
    };
    let date = modified
        .to_zoned(TimeZone::UTC)
        .strftime(format)
        .to_string();
    let link = match target {
        Some(target) if kind == 'l' => format!(" -> {}", shown(target)),
        _ => String::new(),
    };
    format!(
        "{kind}{} {:>3} ftp      ftp      {:>12} {date} {}{link}",
        permissions(stat.mode),
        stat.links,
        stat.size,
        shown(name)
    )
}

/// What the `perm` facts offer: changing the tree at all (the login's permission), and appending
/// to files (that, and what the storage can do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writable {
    pub write: bool,
    pub append: bool,
}

impl Writable {
    pub const READ_ONLY: Writable = Writable {
        write: false,
        append: false,
    };
}

/// RFC 3659 facts, ending in `;` (the caller appends ` name`).
pub fn facts(stat: &Metadata, writable: Writable, current_dir: bool) -> String {
    let file_perm = match (writable.write, writable.append) {
        (true, true) => "adfrw",
        (true, false) => "dfrw",
        (false, _) => "r",
    };
    let dir_perm = if writable.write { "cdeflmp" } else { "el" };
    let (kind, perm) = match stat.kind {
        FileKind::Dir if current_dir => ("cdir", dir_perm),
        FileKind::Dir => ("dir", dir_perm),
        // RFC 3659 section 7.5.1 leaves other types to "OS." names; this is the one clients
        // parse (a link is not a file of the link's own size).
        FileKind::Symlink => ("OS.unix=symlink", file_perm),
        _ => ("file", file_perm),
    };
    let size = if kind == "file" {
        format!("size={};", stat.size)
    } else {
        String::new()
    };
    format!(
        "type={kind};{size}modify={};perm={perm};unique={};",
        time_val(stat),
        stat.unique
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Long,
    Names,
    Machine,
}

/// A `LIST`, `NLST` or `MLSD` body, opened (so a missing path is known before any data
/// connection) and then produced a chunk at a time.
pub struct Listing {
    kind: ListKind,
    writable: Writable,
    now: Timestamp,
    /// Lines ready to go out before (or instead of) directory entries.
    head: Vec<String>,
    entries: Option<Entries>,
    /// Set for a pattern (`NLST *.txt`): only matching names, each prefixed as the client wrote
    /// the directory.
    pattern: Option<(String, String)>,
}

/// Bytes of listing produced per chunk.
pub const CHUNK: usize = 64 * 1024;

impl Listing {
    /// Opens what `target` names: a directory, a single file, or a pattern in its last component
    /// that names nothing (`NLST *.txt`, which `mget` sends). `shown_as` is the argument as given.
    pub fn open(
        home: &dyn Home,
        kind: ListKind,
        target: &str,
        shown_as: &str,
        writable: Writable,
    ) -> io::Result<Listing> {
        let mut listing = Listing {
            kind,
            writable,
            now: Timestamp::now(),
            head: Vec::new(),
            entries: None,
            pattern: None,
        };
        let stat = match home.stat(target) {
            Ok(stat) => stat,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let (parent, pattern) = target.rsplit_once('/').unwrap_or(("", target));
                if !pattern.contains(['*', '?']) || kind == ListKind::Machine {
                    return Err(error);
                }
                let parent = if parent.is_empty() { "/" } else { parent };
                let prefix = shown_as
                    .rsplit_once('/')
                    .map(|(dir, _)| format!("{dir}/"))
                    .unwrap_or_default();
                listing.entries = Some(home.list(parent)?);
                listing.pattern = Some((pattern.to_owned(), prefix));
                return Ok(listing);
            }
            Err(error) => return Err(error),
        };
        if stat.kind != FileKind::Dir {
            let name = shown(target.rsplit('/').next().unwrap_or_default());
            listing.head.push(match kind {
                ListKind::Long => unix_line(&name, &stat, None, listing.now),
                ListKind::Names => name,
                ListKind::Machine => format!("{} {name}", facts(&stat, writable, false)),
            });
            return Ok(listing);
        }
        if kind == ListKind::Machine {
            listing
                .head
                .push(format!("{} .", facts(&stat, writable, true)));
        }
        listing.entries = Some(home.list(target)?);
        Ok(listing)
    }

    fn line(&self, entry: &Entry) -> Option<String> {
        if let Some((pattern, prefix)) = &self.pattern {
            if !glob_match(pattern, &entry.name) {
                return None;
            }
            if self.kind == ListKind::Names {
                return Some(format!("{prefix}{}", shown(&entry.name)));
            }
        }
        Some(match self.kind {
            ListKind::Long => unix_line(
                &entry.name,
                &entry.metadata,
                entry.target.as_deref(),
                self.now,
            ),
            ListKind::Names => shown(&entry.name),
            ListKind::Machine => format!(
                "{} {}",
                facts(&entry.metadata, self.writable, false),
                shown(&entry.name)
            ),
        })
    }

    /// The next lines, about `max` bytes of them (CRLF-terminated); `None` at the end. Blocking:
    /// call it off the async runtime.
    pub fn next_chunk(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut out = String::new();
        for line in self.head.drain(..) {
            out.push_str(&line);
            out.push_str("\r\n");
        }
        while out.len() < max {
            let Some(entries) = self.entries.as_mut() else {
                break;
            };
            let Some(entry) = entries.next() else {
                self.entries = None;
                break;
            };
            if let Some(line) = self.line(&entry?) {
                out.push_str(&line);
                out.push_str("\r\n");
            }
        }
        Ok((!out.is_empty()).then(|| out.into_bytes()))
    }

    /// The whole listing at once (for `STAT path` replies on the control connection).
    pub fn collect(mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(CHUNK)? {
            out.extend(chunk);
        }
        Ok(out)
    }
}

/// The whole body of a listing; see [`Listing::open`].
pub fn render(
    home: &dyn Home,
    kind: ListKind,
    target: &str,
    shown_as: &str,
    writable: Writable,
) -> io::Result<Vec<u8>> {
    Listing::open(home, kind, target, shown_as, writable)?.collect()
}

/// Shell-style matching of `*` (any run) and `?` (one character); nothing else is special.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, n));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            n = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftp::fs::Root;
    use crate::ftp::storage::local::LocalHome;

    fn home_in(dir: &std::path::Path) -> LocalHome {
        LocalHome::new(Root::open(dir).unwrap())
    }

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(glob_match("*.txt", ".txt"));
        assert!(!glob_match("*.txt", "a.txt.gz"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("?", ""));
        assert!(glob_match("*", ""));
        assert!(glob_match("data-*-2026.csv", "data-x-y-2026.csv"));
    }

    #[test]
    fn nlst_with_a_pattern_lists_the_matches() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        for name in ["a.txt", "b.txt", "c.csv"] {
            std::fs::write(dir.path().join("d").join(name), "x").unwrap();
        }
        let root = home_in(dir.path());
        let names = render(
            &root,
            ListKind::Names,
            "/d/*.txt",
            "d/*.txt",
            Writable::READ_ONLY,
        )
        .unwrap();
        let mut names: Vec<_> = String::from_utf8(names)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        names.sort();
        assert_eq!(names, ["d/a.txt", "d/b.txt"]);
        let none = render(
            &root,
            ListKind::Names,
            "/d/*.png",
            "d/*.png",
            Writable::READ_ONLY,
        )
        .unwrap();
        assert!(none.is_empty());
        assert!(
            render(
                &root,
                ListKind::Names,
                "/d/missing",
                "d/missing",
                Writable::READ_ONLY
            )
            .is_err()
        );
    }

    #[test]
    fn lists_files_with_unix_lines_and_facts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.txt"), "hello").unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join(".ftp-upload-1234"), "partial").unwrap();
        let root = home_in(dir.path());
        let entries = read_dir(&root, "/").unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b.txt"]);
        let line = unix_line("b.txt", &entries[1].metadata, None, Timestamp::now());
        assert!(line.starts_with("-rw"), "{line}");
        assert!(line.ends_with(" 5 ") || line.contains(" 5 "), "{line}");
        assert!(line.ends_with(" b.txt"), "{line}");
        let facts = facts(&entries[1].metadata, Writable::READ_ONLY, false);
        assert!(facts.starts_with("type=file;size=5;modify="), "{facts}");
        assert!(facts.contains("perm=r;"), "{facts}");
        assert!(unix_line("a", &entries[0].metadata, None, Timestamp::now()).starts_with('d'));
    }

    #[test]
    fn symlinks_show_their_target_and_their_type() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), "0123456789").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        std::fs::write(dir.path().join("bad\rname"), "").unwrap();
        let root = home_in(dir.path());
        let long =
            String::from_utf8(render(&root, ListKind::Long, "/", "", Writable::READ_ONLY).unwrap())
                .unwrap();
        let link = long.lines().find(|l| l.starts_with('l')).unwrap();
        assert!(link.ends_with(" link -> real"), "{link}");
        assert!(long.contains(" bad?name\r\n"), "{long:?}");
        let machine = String::from_utf8(
            render(&root, ListKind::Machine, "/", "", Writable::READ_ONLY).unwrap(),
        )
        .unwrap();
        let link = machine.lines().find(|l| l.ends_with(" link")).unwrap();
        assert!(link.starts_with("type=OS.unix=symlink;"), "{link}");
        let real = machine.lines().find(|l| l.ends_with(" real")).unwrap();
        assert!(real.starts_with("type=file;size=10;"), "{real}");
    }

    #[test]
    fn a_large_directory_comes_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3000 {
            std::fs::write(dir.path().join(format!("file-{i:05}")), "").unwrap();
        }
        let root = home_in(dir.path());
        let mut listing =
            Listing::open(&root, ListKind::Long, "/", "", Writable::READ_ONLY).unwrap();
        let mut chunks = 0;
        let mut lines = 0;
        while let Some(chunk) = listing.next_chunk(CHUNK).unwrap() {
            assert!(chunk.len() < CHUNK + 1024);
            chunks += 1;
            lines += chunk.iter().filter(|&&b| b == b'\n').count();
        }
        assert_eq!(lines, 3000);
        assert!(chunks > 1, "{chunks}");
    }
}
