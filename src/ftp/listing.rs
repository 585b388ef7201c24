//! Directory listings: `LIST` in the Unix `ls -l` style every client parses, `NLST` names, and
//! RFC 3659 `MLSD`/`MLST` facts.

use std::io;
use std::os::fd::AsFd;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rustix::fs::{AtFlags, Stat};

use super::fs::{FileKind, Root, UPLOAD_TEMP_PREFIX, file_kind};

/// Which listing a data command asks for.

#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub stat: Stat,
}

/// The entries of a directory (without `.`, `..` and uploads in progress), sorted by name.
pub fn read_dir(root: &Root, virtual_path: &str) -> io::Result<Vec<Entry>> {
    let dir = root.open_dir(virtual_path)?;
    let mut entries = Vec::new();
    for item in rustix::fs::Dir::read_from(&dir)? {
        let item = item?;
        let raw = item.file_name().to_bytes();
        if raw == b"." || raw == b".." || raw.starts_with(UPLOAD_TEMP_PREFIX.as_bytes()) {
            continue;
        }
        let Ok(stat) = rustix::fs::statat(dir.as_fd(), item.file_name(), AtFlags::SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        entries.push(Entry {
            name: String::from_utf8_lossy(raw).into_owned(),
            stat,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn mtime(stat: &Stat) -> Timestamp {
    Timestamp::from_second(stat.st_mtime).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `YYYYMMDDHHMMSS` in UTC, for `MDTM` and the `modify` fact.
pub fn time_val(stat: &Stat) -> String {
    mtime(stat)
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
pub fn unix_line(name: &str, stat: &Stat, now: Timestamp) -> String {
    let kind = match file_kind(stat) {
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
    format!(
        "{kind}{} {:>3} ftp      ftp      {:>12} {date} {name}",
        permissions(stat.st_mode),
        stat.st_nlink,
        stat.st_size
    )
}

/// RFC 3659 facts, ending in `;` (the caller appends ` name`).
pub fn facts(stat: &Stat, writable: bool, current_dir: bool) -> String {
    let (kind, perm) = match file_kind(stat) {
        FileKind::Dir if current_dir => ("cdir", if writable { "cdeflmp" } else { "el" }),
        FileKind::Dir => ("dir", if writable { "cdeflmp" } else { "el" }),
        _ => ("file", if writable { "adfrw" } else { "r" }),
    };
    let size = if kind == "file" {
        format!("size={};", stat.st_size)
    } else {
        String::new()
    };
    format!(
        "type={kind};{size}modify={};perm={perm};unique={:x}g{:x};",
        time_val(stat),
        stat.st_dev,
        stat.st_ino
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Long,
    Names,
    Machine,
}

/// The body of a `LIST`, `NLST` or `MLSD` reply for a directory, or a single file.
///
/// A last component with `*` or `?` that names nothing is a pattern (`NLST *.txt`, which `mget`
/// sends): the matching entries of its directory are listed, named as the client wrote the
/// directory (`shown_as` is the argument as given).
pub fn render(
    root: &Root,
    kind: ListKind,
    target: &str,
    shown_as: &str,
    writable: bool,
) -> io::Result<Vec<u8>> {
    let now = jiff::Timestamp::now();
    let stat = match root.stat(target) {
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
            let mut out = String::new();
            for entry in read_dir(root, parent)?
                .iter()
                .filter(|e| glob_match(pattern, &e.name))
            {
                match kind {
                    ListKind::Names => out.push_str(&format!("{prefix}{}", entry.name)),
                    _ => out.push_str(&unix_line(&entry.name, &entry.stat, now)),
                }
                out.push_str("\r\n");
            }
            return Ok(out.into_bytes());
        }
        Err(error) => return Err(error),
    };
    let mut out = String::new();
    if file_kind(&stat) != FileKind::Dir {
        let name = target.rsplit('/').next().unwrap_or_default();
        match kind {
            ListKind::Long => out.push_str(&unix_line(name, &stat, now)),
            ListKind::Names => out.push_str(name),
            ListKind::Machine => out.push_str(&format!("{} {name}", facts(&stat, writable, false))),
        }
        out.push_str("\r\n");
        return Ok(out.into_bytes());
    }
    if kind == ListKind::Machine {
        out.push_str(&format!("{} .\r\n", facts(&stat, writable, true)));
    }
    for entry in read_dir(root, target)? {
        match kind {
            ListKind::Long => out.push_str(&unix_line(&entry.name, &entry.stat, now)),
            ListKind::Names => out.push_str(&entry.name),
            ListKind::Machine => out.push_str(&format!(
                "{} {}",
                facts(&entry.stat, writable, false),
                entry.name
            )),
        }
        out.push_str("\r\n");
    }
    Ok(out.into_bytes())
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
        let root = Root::open(dir.path()).unwrap();
        let names = render(&root, ListKind::Names, "/d/*.txt", "d/*.txt", false).unwrap();
        assert_eq!(names, b"d/a.txt\r\nd/b.txt\r\n");
        let none = render(&root, ListKind::Names, "/d/*.png", "d/*.png", false).unwrap();
        assert!(none.is_empty());
        assert!(render(&root, ListKind::Names, "/d/missing", "d/missing", false).is_err());
    }

    #[test]
    fn lists_files_with_unix_lines_and_facts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.txt"), "hello").unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join(".ftp-upload-1234"), "partial").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let entries = read_dir(&root, "/").unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b.txt"]);
        let line = unix_line("b.txt", &entries[1].stat, Timestamp::now());
        assert!(line.starts_with("-rw"), "{line}");
        assert!(line.ends_with(" 5 ") || line.contains(" 5 "), "{line}");
        assert!(line.ends_with(" b.txt"), "{line}");
        let facts = facts(&entries[1].stat, false, false);
        assert!(facts.starts_with("type=file;size=5;modify="), "{facts}");
        assert!(facts.contains("perm=r;"), "{facts}");
        assert!(unix_line("a", &entries[0].stat, Timestamp::now()).starts_with('d'));
    }
}
