//! A user's password as its Secret holds it, in clear or as an argon2id PHC hash, and the hash
//! that reaches the users file.
//!
//! A clear password is hashed with argon2id at the server's default cost (argon2's defaults,
//! m=19456 KiB, t=2, p=1: what `ftp-server hash-password` makes), and never written anywhere
//! but its own Secret. It is not hashed again on every reconcile: [`PasswordHashes`] remembers,
//! per FtpUser, a keyed fingerprint of the password (HMAC-SHA256 under a key made at random when
//! the process starts, held in memory only, so the fingerprint tells nobody anything) with the
//! hash made for it. After a restart the memory is empty: the hash the generated Secret already
//! holds for the login is verified once against the password and kept when it matches, so the
//! rendered file does not change (and pods do not reload) because the operator restarted.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use ring::hmac;

/// What a password Secret's key holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// An argon2id PHC string, used as it is.
    Hash(String),
    /// A password in clear, to be hashed.
    Clear(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A clear password never reaches a log line.
        match self {
            Password::Hash(hash) => f.debug_tuple("Hash").field(hash).finish(),
            Password::Clear(_) => f.write_str("Clear(..)"),
        }
    }
}

/// Reads a Secret value: a PHC string (`$id$...$salt$hash`) is a hash and must be argon2id; anything else
/// is a password in clear. One trailing newline (as `echo` and `--from-file` leave) is dropped.
pub fn classify(value: &[u8]) -> Result<Password, String> {
    let text = std::str::from_utf8(value).map_err(|_| "is not UTF-8 text".to_owned())?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    // A PHC string with a hash in it (`$scrypt$...$salt$hash`) is a hash of another scheme; a
    // password that merely starts with `$` is not.
    let other_scheme = PasswordHash::new(text).is_ok_and(|parsed| parsed.hash.is_some());
    if text.starts_with("$argon2") || other_scheme {
        return match argon2id_problem(text) {
            Some(problem) => Err(problem),
            None => Ok(Password::Hash(text.to_owned())),
        };
    }
    Ok(Password::Clear(text.to_owned()))
}

/// Why `hash` is not an argon2id PHC string the server accepts; None when it is one.
pub fn argon2id_problem(hash: &str) -> Option<String> {
    let parsed = match PasswordHash::new(hash) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Some(format!(
                "is not an argon2id PHC hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {e}"
            ));
        }
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Some(format!(
            "hash scheme {} is not argon2id: put the password in clear, or an argon2id hash",
            parsed.algorithm
        ));
    }
    if let Err(e) = argon2::Params::try_from(&parsed) {
        return Some(format!("bad argon2 parameters: {e}"));
    }
    if parsed.hash.is_none() {
        return Some("is an argon2id PHC string without a hash".to_owned());
    }
    None
}

/// The hashes made for clear passwords, per FtpUser (by uid), with a keyed fingerprint of the
/// password each was made for.
pub struct PasswordHashes {
    key: hmac::Key,
    made: Mutex<HashMap<String, (hmac::Tag, String)>>,
}

impl Default for PasswordHashes {
    fn default() -> Self {
        PasswordHashes {
            key: hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
            made: Mutex::default(),
        }
    }
}

impl PasswordHashes {
    /// The hash for `password` of the FtpUser `owner`: the one made before for the same
    /// password, else `previous` (the generated Secret's) when it verifies, else a new one.
    /// Costs one argon2 computation at most; run it off the async runtime.
    pub fn hash(
        &self,
        owner: &str,
        password: &str,
        previous: Option<&str>,
    ) -> Result<String, String> {
        let fingerprint = hmac::sign(&self.key, password.as_bytes());
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tag, hash)) = made.get(owner)
            && tag.as_ref() == fingerprint.as_ref()
        {
            return Ok(hash.clone());
        }
        let hash = match previous.filter(|hash| verifies(hash, password)) {
            Some(previous) => previous.to_owned(),
            None => {
                let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
                    .map_err(|e| e.to_string())?;
                Argon2::default()
                    .hash_password(password.as_bytes(), &salt)
                    .map_err(|e| format!("cannot hash the password: {e}"))?
                    .to_string()
            }
        };
        made.insert(owner.to_owned(), (fingerprint, hash.clone()));
        Ok(hash)
    }
}

fn verifies(hash: &str, password: &str) -> bool {
    argon2id_problem(hash).is_none()
        && PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_value_is_a_hash_or_a_clear_password() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
        assert_eq!(classify(hash.as_bytes()), Ok(Password::Hash(hash.into())));
        assert_eq!(
            classify(format!("{hash}\n").as_bytes()),
            Ok(Password::Hash(hash.into()))
        );
        assert_eq!(classify(b"s3cret\n"), Ok(Password::Clear("s3cret".into())));
        assert_eq!(classify(b"$ecret"), Ok(Password::Clear("$ecret".into())));
        assert_eq!(classify(b"\n"), Err("is empty".into()));
        assert!(classify(&[0xff, 0xfe]).is_err());
        let bcrypt_like = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E";
        let why = classify(bcrypt_like.as_bytes()).unwrap_err();
        assert!(why.contains("scrypt is not argon2id"), "{why}");
        let why = classify(b"$argon2id$v=19$garbage").unwrap_err();
        assert!(why.contains("argon2id PHC string without a hash"), "{why}");
        let why = classify(b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$").unwrap_err();
        assert!(why.contains("is not an argon2id PHC hash"), "{why}");
        // Debug output never shows a clear password.
        assert_eq!(
            format!("{:?}", Password::Clear("s3cret".into())),
            "Clear(..)"
        );
    }

    #[test]
    fn a_clear_password_is_hashed_once_at_the_servers_default_cost() {
        let hashes = PasswordHashes::default();
        let first = hashes.hash("uid-1", "s3cret", None).unwrap();
        assert!(verifies(&first, "s3cret"));
        // The same parameters as the server's own hash-password.
        let server = crate::ftp::auth::hash_password("x").unwrap();
        let params = |hash: &str| {
            let parsed = PasswordHash::new(hash).unwrap();
            let params = argon2::Params::try_from(&parsed).unwrap();
            (
                parsed.algorithm.to_string(),
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
            )
        };
        assert_eq!(params(&first), params(&server));
        // Asked again for the same password: the same hash, not a new salt.
        assert_eq!(hashes.hash("uid-1", "s3cret", None).unwrap(), first);
        // A changed password gets a new hash that verifies it, and not the old one.
        let changed = hashes.hash("uid-1", "n3w", Some(&first)).unwrap();
        assert_ne!(changed, first);
        assert!(verifies(&changed, "n3w") && !verifies(&changed, "s3cret"));
        // Another user with the same password gets a hash of its own.
        assert_ne!(hashes.hash("uid-2", "n3w", None).unwrap(), changed);
    }

    #[test]
    fn after_a_restart_the_previous_hash_is_kept_when_it_verifies() {
        let before = PasswordHashes::default();
        let previous = before.hash("uid-1", "s3cret", None).unwrap();
        let restarted = PasswordHashes::default();
        assert_eq!(
            restarted.hash("uid-1", "s3cret", Some(&previous)).unwrap(),
            previous
        );
        let other = PasswordHashes::default();
        assert_ne!(
            other.hash("uid-1", "changed", Some(&previous)).unwrap(),
            previous
        );
    }
}
