//! Public-key logins: the keys of user `NAME` are the file `NAME.authorized_keys` (OpenSSH
//! `authorized_keys` format) in the users file's directory, or in `sftp.authorized_keys_dir`. In
//! Kubernetes both are keys of the one users Secret, mounted as one directory. The file is read at
//! each login, so a changed Secret takes effect without a reload.

use std::path::{Path, PathBuf};

use russh::keys::PublicKey;
use russh::keys::ssh_key::AuthorizedKeys;

/// Whether a user name can name a key file: only what a Secret's keys allow (`[-._a-zA-Z0-9]`),
/// and never a hidden or relative name, so no name reaches outside the directory.
pub fn key_file_name(user: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    (!user.is_empty() && !user.starts_with('.') && user.chars().all(allowed))
        .then(|| format!("{user}.authorized_keys"))
}

/// The directory key files are read from: the configured one, else the users file's.
pub fn key_dir(configured: Option<&Path>, users_file: Option<&Path>) -> Option<PathBuf> {
    configured
        .map(Path::to_owned)
        .or_else(|| users_file.and_then(Path::parent).map(Path::to_owned))
}

/// Whether `offered` is one of the user's keys. Entries with options are skipped (a `from=` or
/// `expiry-time=` the server does not enforce must not let a key in more widely than meant);
/// unreadable files and lines that do not parse let no key in.
pub fn authorizes(dir: &Path, user: &str, offered: &PublicKey) -> bool {
    let Some(name) = key_file_name(user) else {
        return false;
    };
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "cannot read authorized keys");
            }
            return false;
        }
    };
    for entry in AuthorizedKeys::new(&text) {
        match entry {
            Ok(entry) if entry.public_key().key_data() == offered.key_data() => {
                if entry.config_opts().is_empty() {
                    return true;
                }
                tracing::warn!(path = %path.display(), options = entry.config_opts().as_str(),
                    "authorized key with options not honoured: remove the options to use it");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "authorized keys line skipped");
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::PrivateKey;

    fn public(text: &str) -> PublicKey {
        PrivateKey::from_openssh(text).unwrap().public_key().clone()
    }

    #[test]
    fn names_that_could_leave_the_directory_have_no_key_file() {
        assert_eq!(
            key_file_name("alice.b-c_1").as_deref(),
            Some("alice.b-c_1.authorized_keys")
        );
        for bad in ["", "..", ".hidden", "a/b", "../etc/passwd", "a b", "ä"] {
            assert_eq!(key_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_listed_keys_without_options_let_the_user_in() {
        let dir = tempfile::tempdir().unwrap();
        let key = |kind| public(&crate::sftp::host_keys::generate(kind).unwrap());
        let alice = key(crate::sftp::host_keys::KeyType::Ed25519);
        let restricted = key(crate::sftp::host_keys::KeyType::EcdsaP256);
        let stranger = key(crate::sftp::host_keys::KeyType::Ed25519);
        std::fs::write(
            dir.path().join("alice.authorized_keys"),
            format!(
                "# alice's laptop\n{}\nfrom=\"10.0.0.1\" {}\nnot a key\n",
                alice.to_openssh().unwrap(),
                restricted.to_openssh().unwrap()
            ),
        )
        .unwrap();
        assert!(authorizes(dir.path(), "alice", &alice));
        assert!(!authorizes(dir.path(), "alice", &restricted));
        assert!(!authorizes(dir.path(), "alice", &stranger));
        assert!(!authorizes(dir.path(), "bob", &alice));
        assert_eq!(
            key_dir(None, Some(Path::new("/etc/ftp/users/users"))),
            Some(PathBuf::from("/etc/ftp/users"))
        );
        assert_eq!(
            key_dir(Some(Path::new("/keys")), Some(Path::new("/etc/users"))),
            Some(PathBuf::from("/keys"))
        );
    }
}
