//! Logins: the users file (lines `name:PHC-hash[:ACCESS[:HOME]]`, or `[[user]]` tables with
//! limits, [`users_toml`]), what an account allows beyond its password ([`policy`]), argon2id
//! verification in bounded memory ([`verify`]), and the failed-login bookkeeping ([`lockout`]).
//! Replies never say whether a user exists.

pub mod lockout;
pub mod policy;
pub mod users_toml;
pub mod verify;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};

use super::access::{self, Access, Permissions};
use super::config::{PROBE_HOME, ProbeUser};
use super::live_users::{LiveUsers, TooManySessions, UserSession};
use policy::{AccountRefusal, UserPolicy};
use verify::{Busy, Verifier};

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
    #[error("probe_user {name}: {reason}")]
    Probe { name: String, reason: String },
    #[error("users file{}{}: {reason}", .user.as_ref().map(|user| format!(", user {user:?}")).unwrap_or_default(), .line.map(|line| format!(" (line {line})")).unwrap_or_default())]
    Toml {
        user: Option<String>,
        line: Option<usize>,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct UserEntry {
    hash: String,
    access: Access,
    policy: Arc<UserPolicy>,
}

/// Why a login whose password was right is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefusal {
    /// Disabled or expired: the client hears only "Login incorrect".
    #[error("account {}", .0.as_str())]
    Account(AccountRefusal),
    #[error(transparent)]
    TooManySessions(#[from] TooManySessions),
}

impl LoginRefusal {
    /// The `result` of the audit line and of `ftp_logins_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LoginRefusal::Account(refusal) => refusal.as_str(),
            LoginRefusal::TooManySessions(_) => "max_sessions",
        }
    }
}

/// The accounts of the users file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: HashMap<String, UserEntry>,
    /// The strongest argon2 parameters of the file: an unknown user's dummy verification uses
    /// them, so it costs what the most expensive real one does.
    strongest: Option<Cost>,
}

/// argon2 cost parameters: memory (KiB), iterations, lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Cost {
    m: u32,
    t: u32,
    p: u32,
}

impl Cost {
    fn max(self, other: Cost) -> Cost {
        Cost {
            m: self.m.max(other.m),
            t: self.t.max(other.t),
            p: self.p.max(other.p),
        }
    }
}

/// Accepts only argon2id PHC strings (what `ftp-server hash-password` writes); returns their cost.
fn argon2id_cost(hash: &str) -> Result<Cost, String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("bad PHC hash: {e}"))?;
    if parsed.algorithm != argon2::Algorithm::Argon2id.ident() {
        return Err(format!(
            "hash scheme {} is not argon2id: make the hash with `ftp-server hash-password`",
            parsed.algorithm
        ));
    }
    let params =
        argon2::Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    Ok(Cost {
        m: params.m_cost(),
        t: params.t_cost(),
        p: params.p_cost(),
    })
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Users::parse(&text)
    }

    /// Parses either form of the users file: `[[user]]` tables when that is the first line that
    /// is neither blank nor a comment, else `name:PHC-hash[:ACCESS[:HOME]]` lines.
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        if users_toml::is_toml_form(text) {
            return Users::parse_toml(text);
        }
        let mut users = HashMap::new();
        let mut strongest: Option<Cost> = None;
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
            let cost = argon2id_cost(hash).map_err(|reason| error(&reason))?;
            strongest = Some(strongest.map_or(cost, |s| s.max(cost)));
            users.insert(
                name.to_owned(),
                UserEntry {
                    hash: hash.to_owned(),
                    access: Access { permissions, home },
                    policy: Arc::default(),
                },
            );
        }
        if let Some(cost) = strongest {
            // Made now, at load, so the first unknown user does not pay for it.
            dummy_hash(cost);
        }
        Ok(Users { users, strongest })
    }

    fn parse_toml(text: &str) -> Result<Users, UsersError> {
        let toml_error = |error: users_toml::TomlError| UsersError::Toml {
            user: error.user,
            line: error.line,
            reason: error.reason,
        };
        let mut users = HashMap::new();
        let mut strongest: Option<Cost> = None;
        for declared in users_toml::parse(text).map_err(toml_error)? {
            let cost = argon2id_cost(&declared.hash).map_err(|reason| UsersError::Toml {
                user: Some(declared.name.clone()),
                line: Some(declared.line),
                reason: format!("password_hash: {reason}"),
            })?;
            strongest = Some(strongest.map_or(cost, |s| s.max(cost)));
            users.insert(
                declared.name,
                UserEntry {
                    hash: declared.hash,
                    access: declared.access,
                    policy: Arc::new(declared.policy),
                },
            );
        }
        if let Some(cost) = strongest {
            dummy_hash(cost);
        }
        Ok(Users { users, strongest })
    }

    /// The account's policy; the default one (no limits) for line-format and unknown users.
    pub fn policy(&self, name: &str) -> Arc<UserPolicy> {
        self.users
            .get(name)
            .map(|entry| Arc::clone(&entry.policy))
            .unwrap_or_default()
    }

    /// Whether `client` may log in as `name`: false only for a known user whose `allowed_cidrs`
    /// leave the address out. Asked before any password (at `USER`), so a disallowed address
    /// cannot guess.
    pub fn address_allowed(&self, name: &str, client: std::net::IpAddr) -> bool {
        self.users
            .get(name)
            .is_none_or(|entry| entry.policy.address_allowed(client))
    }

    /// After the password of `name` was found right: refuses a disabled or expired account and
    /// one at its `max_sessions` in `live`, else takes the session's share of its user (hold it
    /// for as long as the session lasts).
    pub fn admit_session(
        &self,
        name: &str,
        live: &LiveUsers,
        now: jiff::Timestamp,
    ) -> Result<UserSession, LoginRefusal> {
        let policy = self.policy(name);
        if let Some(refusal) = policy.refusal(now) {
            return Err(LoginRefusal::Account(refusal));
        }
        Ok(live.open_session(name, &policy)?)
    }

    /// The users with series of their own in the metrics: those of the TOML form.
    pub fn metered_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .users
            .iter()
            .filter(|(_, entry)| entry.policy.metered)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Adds the operator's probe account: list only, in its own home. A user of the same name in
    /// the users file keeps their entry (the probe then fails to log in and says so).
    pub fn add_probe(&mut self, probe: &ProbeUser) -> Result<(), UsersError> {
        let error = |reason: String| UsersError::Probe {
            name: probe.name.clone(),
            reason,
        };
        if probe.name.is_empty() || probe.name.contains(char::is_whitespace) {
            return Err(error("the name is empty or has white space".into()));
        }
        let cost = argon2id_cost(&probe.password_hash).map_err(error)?;
        if self.users.contains_key(&probe.name) {
            tracing::warn!(user = %probe.name, "the users file names the probe account: the probe cannot log in");
            return Ok(());
        }
        self.strongest = Some(self.strongest.map_or(cost, |s| s.max(cost)));
        dummy_hash(self.strongest.unwrap_or(cost));
        self.users.insert(
            probe.name.clone(),
            UserEntry {
                hash: probe.password_hash.clone(),
                access: Access {
                    permissions: Permissions::of(&[access::Permission::List]),
                    home: PROBE_HOME.to_owned(),
                },
                policy: Arc::default(),
            },
        );
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// A user's access, for logins proven otherwise than by password (an SFTP public key).
    pub fn access(&self, name: &str) -> Option<Access> {
        self.users.get(name).map(|entry| entry.access.clone())
    }

    /// Working memory of the file's most expensive verification (argon2's `m`), in bytes; what
    /// each verification slot holds.
    pub fn verification_bytes(&self) -> u64 {
        u64::from(self.strongest.unwrap_or_else(default_cost).m) * 1024
    }

    /// Checks a password in one of `verifier`'s slots, waiting for one until `deadline`; the
    /// user's access when it is right. An unknown user costs a verification at the file's
    /// strongest parameters; the caller answers every failure at one fixed delay after `PASS`,
    /// so timing does not reveal who exists.
    pub async fn verify(
        &self,
        name: &str,
        password: &str,
        verifier: &Arc<Verifier>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Access>, Busy> {
        let (hash, access, known) = match self.users.get(name) {
            Some(entry) => (entry.hash.clone(), Some(entry.access.clone()), true),
            None => (
                dummy_hash(self.strongest.unwrap_or_else(default_cost)),
                None,
                false,
            ),
        };
        let matches = verifier.verify(hash, password.to_owned(), deadline).await?;
        Ok(if matches && known { access } else { None })
    }
}

fn default_cost() -> Cost {
    let params = argon2::Params::default();
    Cost {
        m: params.m_cost(),
        t: params.t_cost(),
        p: params.p_cost(),
    }
}

/// A hash of a random password at `cost`, made once per cost.
fn dummy_hash(cost: Cost) -> String {
    static HASHES: OnceLock<Mutex<HashMap<Cost, String>>> = OnceLock::new();
    let hashes = HASHES.get_or_init(Default::default);
    if let Some(hash) = hashes.lock().ok().and_then(|map| map.get(&cost).cloned()) {
        return hash;
    }
    let hash = argon2::Params::new(cost.m, cost.t, cost.p, None)
        .ok()
        .and_then(|params| {
            let argon2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).ok()?;
            argon2
                .hash_password(format!("{:032x}", rand::random::<u128>()).as_bytes(), &salt)
                .ok()
                .map(|hash| hash.to_string())
        })
        .unwrap_or_default();
    if let Ok(mut map) = hashes.lock() {
        map.insert(cost, hash.clone());
    }
    hash
}

/// An argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn verify(users: &Users, name: &str, password: &str) -> Option<Access> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        users
            .verify(name, password, &Verifier::new(1), deadline)
            .await
            .expect("no slot free in time")
    }

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
            verify(&users, "alice", "s3cret").await,
            access(Permissions::read_only(), "")
        );
        assert_eq!(
            verify(&users, "bob", "s3cret").await,
            access(Permissions::read_write(), "")
        );
        assert_eq!(
            verify(&users, "carol", "s3cret").await,
            access(Permissions::read_write(), "")
        );
        assert_eq!(
            verify(&users, "dave", "s3cret").await,
            access(Permissions::incoming(), "drop/dave")
        );
        assert_eq!(
            verify(&users, "erin", "s3cret").await,
            access(Permissions::read_only(), "erin")
        );
        assert_eq!(verify(&users, "alice", "wrong").await, None);
        assert_eq!(verify(&users, "nobody", "s3cret").await, None);
    }

    #[tokio::test]
    async fn the_probe_account_may_only_list_in_its_own_home() {
        let hash = hash_password("s3cret").unwrap();
        let probe_hash = hash_password("probe-pw").unwrap();
        let mut users = Users::parse(&format!("alice:{hash}:rw\n")).unwrap();
        users
            .add_probe(&ProbeUser {
                name: "ftp-operator-probe-1f".into(),
                password_hash: probe_hash.clone(),
            })
            .unwrap();
        assert_eq!(
            verify(&users, "ftp-operator-probe-1f", "probe-pw").await,
            Some(Access {
                permissions: Permissions::of(&[access::Permission::List]),
                home: PROBE_HOME.into(),
            })
        );
        assert_eq!(
            verify(&users, "ftp-operator-probe-1f", "s3cret").await,
            None
        );
        // A user of that name in the users file keeps their own entry.
        users
            .add_probe(&ProbeUser {
                name: "alice".into(),
                password_hash: probe_hash.clone(),
            })
            .unwrap();
        assert_eq!(verify(&users, "alice", "probe-pw").await, None);
        assert!(verify(&users, "alice", "s3cret").await.is_some());
        let error = users
            .add_probe(&ProbeUser {
                name: "p".into(),
                password_hash: "plain".into(),
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("probe_user p"), "{error}");
    }

    #[test]
    fn only_argon2id_hashes_are_accepted() {
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Jm+2QNw8yA4ZqS9o4ONIfQ";
        let error = Users::parse(&format!("alice:{argon2i}:rw\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not argon2id"), "{error}");
        let scrypt = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E";
        assert!(Users::parse(&format!("bob:{scrypt}\n")).is_err());
    }

    #[tokio::test]
    async fn the_toml_form_verifies_and_refuses_by_its_policy() {
        let hash = hash_password("s3cret").unwrap();
        let users = Users::parse(&format!(
            "# partners\n[[user]]\nname = \"acme\"\npassword_hash = \"{hash}\"\n\
             access = \"ro\"\nhome = \"homes/acme\"\nmax_sessions = 1\n\
             allowed_cidrs = [\"198.51.100.0/24\"]\n\n\
             [[user]]\nname = \"gone\"\npassword_hash = \"{hash}\"\nenabled = false\n"
        ))
        .unwrap();
        assert_eq!(
            verify(&users, "acme", "s3cret").await,
            Some(Access {
                permissions: Permissions::read_only(),
                home: "homes/acme".into(),
            })
        );
        assert!(users.address_allowed("acme", "198.51.100.9".parse().unwrap()));
        assert!(!users.address_allowed("acme", "127.0.0.1".parse().unwrap()));
        // Unknown users are refused by their password, as before: nothing says who exists.
        assert!(users.address_allowed("nobody", "127.0.0.1".parse().unwrap()));
        let live = LiveUsers::default();
        let now = jiff::Timestamp::now();
        let session = users.admit_session("acme", &live, now).unwrap();
        assert_eq!(
            users
                .admit_session("acme", &live, now)
                .unwrap_err()
                .as_str(),
            "max_sessions"
        );
        drop(session);
        assert!(users.admit_session("acme", &live, now).is_ok());
        assert_eq!(
            users
                .admit_session("gone", &live, now)
                .unwrap_err()
                .as_str(),
            "disabled"
        );
        assert_eq!(users.metered_names(), ["acme", "gone"]);
        let lines = Users::parse(&format!("alice:{hash}\n")).unwrap();
        assert!(lines.metered_names().is_empty());
    }

    #[test]
    fn a_bad_hash_in_the_toml_form_names_the_user_and_line() {
        let error = Users::parse(
            "[[user]]\nname = \"a\"\npassword_hash = \"$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Jm+2QNw8yA4ZqS9o4ONIfQ\"\n\
             [[user]]\nname = \"b\"\npassword_hash = \"plain\"\n",
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("user \"b\"")
                && text.contains("line 4")
                && text.contains("password_hash"),
            "{text}"
        );
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
}
