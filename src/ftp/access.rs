//! What a login may do and where it lives: its permissions (`ro`, `rw`, `incoming`, or a list of
//! single permissions) and its home directory beneath the server's root.

use std::fmt;

use super::fs;

/// One thing a login may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// LIST, NLST, MLSD, MLST, STAT of a path, SIZE, MDTM.
    List,
    /// RETR.
    Download,
    /// STOR, STOU, APPE of new files. Replacing or extending an existing file destroys what was
    /// there, so it needs `Delete` as well.
    Upload,
    /// DELE, RMD, and replacing an existing file by an upload or a rename.
    Delete,
    /// RNFR/RNTO.
    Rename,
    /// MKD.
    Mkdir,
}

impl Permission {
    const ALL: [(Permission, &'static str); 6] = [
        (Permission::List, "list"),
        (Permission::Download, "download"),
        (Permission::Upload, "upload"),
        (Permission::Delete, "delete"),
        (Permission::Rename, "rename"),
        (Permission::Mkdir, "mkdir"),
    ];

    pub fn name(self) -> &'static str {
        Permission::ALL
            .iter()
            .find(|(permission, _)| *permission == self)
            .map(|(_, name)| *name)
            .unwrap_or("?")
    }
}

/// The set of permissions of one login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    bits: u8,
}

impl Permissions {
    pub const NONE: Permissions = Permissions { bits: 0 };

    /// `ro`: list and download.
    pub fn read_only() -> Permissions {
        Permissions::of(&[Permission::List, Permission::Download])
    }

    /// `rw`: everything.
    pub fn read_write() -> Permissions {
        Permissions::of(&Permission::ALL.map(|(permission, _)| permission))
    }

    /// `incoming`: a drop box. Upload new files only: no listing, no download, no replacing.
    pub fn incoming() -> Permissions {
        Permissions::of(&[Permission::Upload])
    }

    pub fn of(permissions: &[Permission]) -> Permissions {
        Permissions {
            bits: permissions.iter().fold(0, |bits, p| bits | bit(*p)),
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        self.bits & bit(permission) != 0
    }

    /// May an upload or a rename put something where a file already is?
    pub fn may_replace(self) -> bool {
        self.allows(Permission::Delete)
    }

    /// Parses the access field of a users-file line: `ro`, `rw`, `incoming`, or permission names
    /// joined by `,` (`list,download,upload`).
    pub fn parse(text: &str) -> Result<Permissions, String> {
        match text {
            "ro" => return Ok(Permissions::read_only()),
            "rw" => return Ok(Permissions::read_write()),
            "incoming" => return Ok(Permissions::incoming()),
            _ => {}
        }
        let mut permissions = Permissions::NONE;
        for word in text.split(',').map(str::trim) {
            let Some((permission, _)) = Permission::ALL.iter().find(|(_, name)| *name == word)
            else {
                return Err(format!(
                    "access {text:?} is not ro, rw, incoming or a list of \
                     list,download,upload,delete,rename,mkdir"
                ));
            };
            permissions.bits |= bit(*permission);
        }
        Ok(permissions)
    }
}

fn bit(permission: Permission) -> u8 {
    1 << (permission as u8)
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Permission::ALL
            .iter()
            .filter(|(permission, _)| self.allows(*permission))
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// A home directory as written in the users file or the config (`alice`, `/home/alice`, `` for
/// the root itself), normalised to a path relative to the root. `..` cannot climb above the root
/// (and the home is opened with `openat2` beneath it anyway).
pub fn home_path(text: &str) -> Result<String, String> {
    if text.chars().any(char::is_control) {
        return Err(format!("home {text:?} contains a control character"));
    }
    Ok(fs::resolve("/", text).trim_start_matches('/').to_owned())
}

/// Who logged in, with what they may do and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub permissions: Permissions,
    /// Relative to the root; empty: the root itself.
    pub home: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_lists_parse() {
        let ro = Permissions::parse("ro").unwrap();
        assert!(ro.allows(Permission::List) && ro.allows(Permission::Download));
        assert!(!ro.allows(Permission::Upload) && !ro.may_replace());
        let rw = Permissions::parse("rw").unwrap();
        assert_eq!(rw.to_string(), "list,download,upload,delete,rename,mkdir");
        let incoming = Permissions::parse("incoming").unwrap();
        assert_eq!(incoming.to_string(), "upload");
        assert!(!incoming.may_replace());
        let some = Permissions::parse("list, upload,mkdir").unwrap();
        assert_eq!(some.to_string(), "list,upload,mkdir");
        let error = Permissions::parse("list,write").unwrap_err();
        assert!(error.contains("list,download,upload"), "{error}");
        assert!(Permissions::parse("").is_err());
    }

    #[test]
    fn homes_stay_beneath_the_root() {
        assert_eq!(home_path("alice").unwrap(), "alice");
        assert_eq!(home_path("/home//alice/").unwrap(), "home/alice");
        assert_eq!(home_path("../../etc").unwrap(), "etc");
        assert_eq!(home_path("").unwrap(), "");
        assert_eq!(home_path("/").unwrap(), "");
        assert!(home_path("a\rb").is_err());
    }
}
