//! Logins: the users file (`name:PHC-hash[:ACCESS[:HOME]]`), argon2id verification off the async runtime,
//! and a per-address lockout that spans connections. Replies never say whether a user exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::access::{self, Access, Permissions};

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "users file line {line}: {reason} (expected name:PHC-hash[:ACCESS[:HOME]], ACCESS ro, rw, \
         incoming or a list such as list,download,upload)"
    )]
    Line { line: usize, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct UserEntry {
    hash: String,
    access: Access,
}

/// The accounts of the users file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: HashMap<String, UserEntry>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Users::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |reason: &str| UsersError::Line {
                line: index + 1,
                reason: reason.to_owned(),
            };
            // A PHC string contains no ':', so the fields are simply ':'-separated. Without an
            // access field a user may do everything, as before homes and permissions existed.
            let mut fields = line.splitn(4, ':');
            let name = fields.next().unwrap_or_default();
            let hash = fields.next().ok_or_else(|| error("no ':'"))?;
            let permissions = match fields.next() {
                Some(text) => Permissions::parse(text).map_err(|reason| error(&reason))?,
                None => Permissions::read_write(),
            };
            let home = access::home_path(fields.next().unwrap_or_default())
                .map_err(|reason| error(&reason))?;
            if name.is_empty() {
                return Err(error("empty user name"));
            }
            PasswordHash::new(hash).map_err(|e| error(&format!("bad PHC hash: {e}")))?;
            users.insert(
                name.to_owned(),
                UserEntry {
                    hash: hash.to_owned(),
                    access: Access { permissions, home },
                },
            );
        }
        Ok(Users { users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password on a blocking thread; the user's access when it is right. Unknown users
    /// cost the same work as known ones, so timing does not reveal who exists.
    pub async fn verify(&self, name: &str, password: &str) -> Option<Access> {
        let (hash, access, known) = match self.users.get(name) {
            Some(entry) => (entry.hash.clone(), Some(entry.access.clone()), true),
            None => (dummy_hash().to_owned(), None, false),
        };
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if matches && known { access } else { None }
    }
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(&format!("{:032x}", rand::random::<u128>())).unwrap_or_default()
    })
}

/// An argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
}

/// Failed logins per client address, across connections.
#[derive(Debug, Default)]
pub struct Lockout {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

impl Lockout {
    pub fn is_locked(&self, address: IpAddr) -> bool {
        let Ok(mut map) = self.by_address.lock() else {
            return false;
        };
        match map.get(&address).and_then(|f| f.locked_until) {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                map.remove(&address);
                false
            }
            None => false,
        }
    }

    /// Counts a failure; returns true when this one locks the address out.
    pub fn record_failure(&self, address: IpAddr, threshold: u32, lock_for: Duration) -> bool {
        let Ok(mut map) = self.by_address.lock() else {
            return false;
        };
        // Bound the map so a scan from many addresses cannot grow it forever.
        if map.len() > 100_000 {
            map.clear();
        }
        let failures = map.entry(address).or_default();
        failures.count += 1;
        if threshold > 0 && failures.count >= threshold {
            failures.count = 0;
            failures.locked_until = Some(Instant::now() + lock_for);
            return true;
        }
        false
    }

    pub fn record_success(&self, address: IpAddr) {
        if let Ok(mut map) = self.by_address.lock() {
            map.remove(&address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_hashes_from_the_users_file() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let users = Users::parse(&format!(
            "# comment\nalice:{hash}:ro\nbob:{hash}:rw\ncarol:{hash}\n\
             dave:{hash}:incoming:/drop/dave\nerin:{hash}:list,download:erin\n"
        ))
        .unwrap();
        assert_eq!(users.len(), 5);
        let access = |permissions: Permissions, home: &str| {
            Some(Access {
                permissions,
                home: home.into(),
            })
        };
        assert_eq!(
            users.verify("alice", "s3cret").await,
            access(Permissions::read_only(), "")
        );
        assert_eq!(
            users.verify("bob", "s3cret").await,
            access(Permissions::read_write(), "")
        );
        assert_eq!(
            users.verify("carol", "s3cret").await,
            access(Permissions::read_write(), "")
        );
        assert_eq!(
            users.verify("dave", "s3cret").await,
            access(Permissions::incoming(), "drop/dave")
        );
        assert_eq!(
            users.verify("erin", "s3cret").await,
            access(Permissions::read_only(), "erin")
        );
        assert_eq!(users.verify("alice", "wrong").await, None);
        assert_eq!(users.verify("nobody", "s3cret").await, None);
    }

    #[test]
    fn rejects_bad_lines_with_their_number() {
        let error = Users::parse("alice:notahash\n").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        let error = Users::parse("\nalice\n").unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        let hash = hash_password("x").unwrap();
        let error = Users::parse(&format!("alice:{hash}:write\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1") && error.contains("incoming"),
            "{error}"
        );
    }

    #[test]
    fn locks_out_after_the_threshold() {
        let lockout = Lockout::default();
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!lockout.record_failure(address, 3, Duration::from_secs(60)));
        assert!(!lockout.record_failure(address, 3, Duration::from_secs(60)));
        assert!(!lockout.is_locked(address));
        assert!(lockout.record_failure(address, 3, Duration::from_secs(60)));
        assert!(lockout.is_locked(address));
        assert!(!lockout.is_locked("192.0.2.2".parse().unwrap()));
    }
}
