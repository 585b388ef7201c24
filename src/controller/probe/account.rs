//! The probe account: a Secret `<name>-probe` the controller owns, holding a user name and a
//! password made once, at random, and the password's argon2id hash. The hash reaches the server
//! through its configuration (`probe_user`); the password stays in the Secret and the
//! controller's memory. Never regenerated: a quiet reconcile reads it from memory and makes no
//! API call for it.
//!
//! The user name is random too (`ftp-operator-probe-<hex>`): the server's lockout counts failed
//! logins per user name, and replies never say whether a name exists, so nobody can lock the
//! probe out by guessing passwords for a name they cannot know.

use std::collections::BTreeMap;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::api::FtpServer;
use crate::controller::build::owned_metadata;
use crate::ftp::config::ProbeUser;

pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const PASSWORD_HASH_KEY: &str = "passwordHash";

pub fn probe_secret_name(server: &FtpServer) -> String {
    format!("{}-probe", server.name_any())
}

/// The probe's login, as the controller keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProbeAccount {
    pub user: String,
    pub password: String,
    pub password_hash: String,
}

impl std::fmt::Debug for ProbeAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log line.
        f.debug_struct("ProbeAccount")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ProbeAccount {
    /// A new account with a random name and a 256-bit random password. Hashing takes a few
    /// tens of milliseconds: call it off the async runtime.
    pub fn generate() -> Result<ProbeAccount, String> {
        let user = format!("ftp-operator-probe-{:016x}", rand::random::<u64>());
        let password = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let salt =
            SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
        let password_hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| e.to_string())?
            .to_string();
        Ok(ProbeAccount {
            user,
            password,
            password_hash,
        })
    }

    /// The account a Secret holds, when it holds a whole one.
    pub fn from_secret(secret: &Secret) -> Option<ProbeAccount> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| {
            data.get(key)
                .and_then(|value| String::from_utf8(value.0.clone()).ok())
                .filter(|value| !value.is_empty())
        };
        Some(ProbeAccount {
            user: text(USERNAME_KEY)?,
            password: text(PASSWORD_KEY)?,
            password_hash: text(PASSWORD_HASH_KEY)?,
        })
    }

    pub fn probe_user(&self) -> ProbeUser {
        ProbeUser {
            name: self.user.clone(),
            password_hash: self.password_hash.clone(),
        }
    }
}

/// The Secret holding `account`, owned by `server`.
pub fn desired_probe_secret(server: &FtpServer, account: &ProbeAccount) -> Secret {
    let bytes = |value: &str| ByteString(value.as_bytes().to_vec());
    Secret {
        metadata: owned_metadata(server, probe_secret_name(server)),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (USERNAME_KEY.to_owned(), bytes(&account.user)),
            (PASSWORD_KEY.to_owned(), bytes(&account.password)),
            (PASSWORD_HASH_KEY.to_owned(), bytes(&account.password_hash)),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    #[test]
    fn a_generated_account_round_trips_through_its_secret() {
        let server = server(fixtures::MINIMAL);
        let account = ProbeAccount::generate().unwrap();
        assert!(account.user.starts_with("ftp-operator-probe-"));
        assert_eq!(account.password.len(), 64);
        let parsed = PasswordHash::new(&account.password_hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(account.password.as_bytes(), &parsed)
                .is_ok()
        );
        let secret = desired_probe_secret(&server, &account);
        assert_eq!(secret.metadata.name.as_deref(), Some("minimal-probe"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("FtpServer", Some(true))
        );
        assert_eq!(ProbeAccount::from_secret(&secret), Some(account.clone()));
        assert!(!format!("{account:?}").contains(&account.password));
        // Two accounts never share a name or a password.
        let other = ProbeAccount::generate().unwrap();
        assert_ne!(
            (other.user, other.password),
            (account.user, account.password)
        );
    }

    #[test]
    fn a_secret_missing_a_key_holds_no_account() {
        let server = server(fixtures::MINIMAL);
        let mut secret = desired_probe_secret(&server, &ProbeAccount::generate().unwrap());
        secret.data.as_mut().unwrap().remove(PASSWORD_KEY);
        assert_eq!(ProbeAccount::from_secret(&secret), None);
    }
}
