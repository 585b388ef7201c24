//! The probe account: a Secret `<name>-probe` the controller owns, holding a user name and a
//! password made once, at random, and the password's argon2id hash. The hash reaches the server
//! through its configuration (`probe_user`); the password stays in the Secret and the
//! controller's memory. Never regenerated: a quiet reconcile reads it from memory and makes no
//! API call for it.
//!
//! The hash is argon2id at its minimal cost (see `PROBE_HASH_COST`): the password is 256
//! random bits, so no hash cost adds to what guessing it already takes, while the memory cost
//! would be paid by the controller for each account and by every pod at each probe login.
//!
//! The user name is random too (`ftp-operator-probe-<hex>`): the server's lockout counts failed
//! logins per user name, and replies never say whether a name exists, so nobody can lock the
//! probe out by guessing passwords for a name they cannot know.

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
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

/// argon2id at the smallest cost argon2 allows: 8 KiB, one pass, one lane. A memory-hard hash
/// makes guessing a person's weak password expensive; the probe's password is 256 random bits,
/// which no amount of guessing finds, so a costly hash would protect nothing and only cost 19 MiB
/// in the controller per account made and in each pod at every probe login. The ftp-server
/// accepts any argon2id PHC string, whatever its parameters.
const PROBE_HASH_COST: (u32, u32, u32) =
    (Params::MIN_M_COST, Params::MIN_T_COST, Params::MIN_P_COST);

fn probe_hasher() -> Result<Argon2<'static>, String> {
    let (m, t, p) = PROBE_HASH_COST;
    let params = Params::new(m, t, p, None).map_err(|e| e.to_string())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

impl ProbeAccount {
    /// A new account with a random name and a 256-bit random password.
    pub fn generate() -> Result<ProbeAccount, String> {
        let user = format!("ftp-operator-probe-{:016x}", rand::random::<u64>());
        let password = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        ProbeAccount::with_password(user, password)
    }

    /// The account for `user` and `password`, hashed now with the probe's parameters.
    pub fn with_password(user: String, password: String) -> Result<ProbeAccount, String> {
        let salt =
            SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
        let password_hash = probe_hasher()?
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| e.to_string())?
            .to_string();
        Ok(ProbeAccount {
            user,
            password,
            password_hash,
        })
    }

    /// Whether the hash is argon2id at the probe's parameters. An account made by an earlier
    /// version (argon2's default cost) is not, and is hashed again, keeping its name and password.
    pub fn has_probe_hash(&self) -> bool {
        let Ok(parsed) = PasswordHash::new(&self.password_hash) else {
            return false;
        };
        parsed.algorithm == Algorithm::Argon2id.ident()
            && Params::try_from(&parsed).is_ok_and(|params| {
                (params.m_cost(), params.t_cost(), params.p_cost()) == PROBE_HASH_COST
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
    use argon2::password_hash::PasswordVerifier;

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
    fn the_probe_hash_is_argon2id_at_the_minimal_cost_and_verifies() {
        let account = ProbeAccount::generate().unwrap();
        assert!(
            account
                .password_hash
                .starts_with("$argon2id$v=19$m=8,t=1,p=1$"),
            "{}",
            account.password_hash
        );
        assert!(account.has_probe_hash());
        let parsed = PasswordHash::new(&account.password_hash).unwrap();
        // Verified as the ftp-server verifies any user's hash: with the parameters it names.
        assert!(
            Argon2::default()
                .verify_password(account.password.as_bytes(), &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"not the password", &parsed)
                .is_err()
        );
    }

    #[test]
    fn an_account_with_a_default_cost_hash_is_hashed_again() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let old = ProbeAccount {
            user: "ftp-operator-probe-0000000000000001".into(),
            password: "p".repeat(64),
            password_hash: Argon2::default()
                .hash_password(&[b'p'; 64], &salt)
                .unwrap()
                .to_string(),
        };
        assert!(!old.has_probe_hash());
        let garbage = ProbeAccount {
            password_hash: "not a hash".into(),
            ..old.clone()
        };
        assert!(!garbage.has_probe_hash());
        let again = ProbeAccount::with_password(old.user.clone(), old.password.clone()).unwrap();
        assert!(again.has_probe_hash());
        assert_eq!((&again.user, &again.password), (&old.user, &old.password));
    }

    #[test]
    fn a_secret_missing_a_key_holds_no_account() {
        let server = server(fixtures::MINIMAL);
        let mut secret = desired_probe_secret(&server, &ProbeAccount::generate().unwrap());
        secret.data.as_mut().unwrap().remove(PASSWORD_KEY);
        assert_eq!(ProbeAccount::from_secret(&secret), None);
    }
}
