//! What one FtpServer's users file holds, decided purely: its FtpUsers (each with its password
//! already read and hashed) merged with the lines of its users Secret, and for each FtpUser
//! whether it was accepted and, if not, why. A bad FtpUser is left out alone; the others stay.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::FtpServer;
use crate::api::user::{FtpUser, PROBE_NAME_PREFIX};
use crate::process::errors::Invalid;

use super::file::{self, FileUser};
use super::legacy;

/// The reasons of an FtpUser's `Accepted` condition.
pub const ACCEPTED: &str = "Accepted";
pub const SECRET_MISSING: &str = "SecretMissing";
pub const KEY_MISSING: &str = "KeyMissing";
pub const BAD_HASH: &str = "BadHash";
pub const HOME_OUTSIDE_STORAGE: &str = "HomeOutsideStorage";
pub const DUPLICATE_NAME: &str = "DuplicateName";
pub const SERVER_MISSING: &str = "ServerMissing";
pub const INVALID_NAME: &str = "InvalidName";
/// The FtpServer's reason when its users Secret has a line the server would refuse.
pub const USERS_SECRET_INVALID: &str = "UsersSecretInvalid";

/// A user's password, as far as its Secret could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The argon2id hash to serve.
    Hash(String),
    SecretMissing,
    /// The Secret exists without the key; these are the keys it has.
    KeyMissing(Vec<String>),
    /// The value is neither a password nor an argon2id hash: why.
    BadHash(String),
}

/// An FtpUser bound to the server, with its credential.
#[derive(Debug, Clone)]
pub struct Bound {
    pub user: Arc<FtpUser>,
    pub credential: Credential,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub accepted: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Gathered {
    /// The users file (TOML form).
    pub file: String,
    /// `<login>.authorized_keys` files of the accepted users with SSH keys.
    pub authorized_keys: BTreeMap<String, String>,
    pub verdicts: Vec<(Arc<FtpUser>, Verdict)>,
}

/// The users file of `server` from its FtpUsers and the text of its users Secret's `users` key
/// (None: no `spec.users`). A bad line of that Secret stalls the server: nothing is applied, so
/// the pods keep the users they have.
pub fn gather(
    server: &FtpServer,
    bound: &[Bound],
    users_secret: Option<&str>,
) -> Result<Gathered, Invalid> {
    let secret_name = server
        .spec
        .users
        .as_ref()
        .map(|u| u.secret_ref.name.clone())
        .unwrap_or_default();
    let legacy_users = match users_secret.map(legacy::parse).transpose() {
        Ok(users) => users.unwrap_or_default(),
        Err((line, why)) => {
            return Err(Invalid {
                reason: USERS_SECRET_INVALID,
                message: format!(
                    "Secret {secret_name} named by spec.users.secretRef, key users, line {line}: \
                     {why}. Nothing changes until it is fixed: the pods keep the users they have. \
                     Each line is name:PHC-hash[:ACCESS[:HOME]] with an argon2id hash (or declare \
                     the user as an FtpUser instead)"
                ),
            });
        }
    };
    // The oldest declaration of a login name keeps it, whatever else is wrong with it, so a
    // Secret being fixed never moves a name from one FtpUser to another.
    let mut ordered: Vec<&Bound> = bound.iter().collect();
    ordered.sort_by_key(|b| {
        (
            b.user.metadata.creation_timestamp.as_ref().map(|t| t.0),
            b.user.name_any(),
        )
    });
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let mut served = Vec::new();
    let mut authorized_keys = BTreeMap::new();
    let mut verdicts = Vec::new();
    let legacy_names: BTreeSet<&str> = legacy_users.iter().map(|u| u.name.as_str()).collect();
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    for b in ordered {
        let login = b.user.login_name().to_owned();
        let verdict = match judge(server, b, &login, &claimed) {
            Err(verdict) => verdict,
            Ok(hash) => {
                let replaces = legacy_names.contains(login.as_str());
                if replaces {
                    replaced.insert(login.clone());
                }
                served.push(file_user(&b.user, &login, hash));
                if !b.user.spec.ssh_authorized_keys.is_empty() {
                    let mut keys = b.user.spec.ssh_authorized_keys.join("\n");
                    keys.push('\n');
                    authorized_keys.insert(format!("{login}.authorized_keys"), keys);
                }
                Verdict {
                    accepted: true,
                    reason: ACCEPTED,
                    message: format!(
                        "login {login} is in the users file of FtpServer {}{}",
                        server.name_any(),
                        if replaces {
                            format!(
                                ", in place of its line in users Secret {secret_name} (remove \
                                 that line)"
                            )
                        } else {
                            String::new()
                        }
                    ),
                }
            }
        };
        claimed.entry(login).or_insert_with(|| b.user.name_any());
        verdicts.push((b.user.clone(), verdict));
    }
    served.extend(
        legacy_users
            .into_iter()
            .filter(|u| !replaced.contains(&u.name)),
    );
    let mut header = format!(
        "Users of FtpServer {}, generated by ftp-operator from its FtpUsers",
        server.name_any()
    );
    if users_secret.is_some() {
        header.push_str(&format!(" and users Secret {secret_name}"));
    }
    header.push_str(".\nDo not edit: the operator writes over it.");
    Ok(Gathered {
        file: file::render(&header, &served),
        authorized_keys,
        verdicts,
    })
}

/// The hash to serve for `b`, or why it is not accepted.
fn judge<'a>(
    server: &FtpServer,
    b: &'a Bound,
    login: &str,
    claimed: &BTreeMap<String, String>,
) -> Result<&'a str, Verdict> {
    let refuse = |reason: &'static str, message: String| Verdict {
        accepted: false,
        reason,
        message,
    };
    let spec = &b.user.spec;
    let secret = &spec.password_secret_ref.name;
    let key = spec.password_secret_ref.key();
    if let Some(why) = login_problem(login) {
        return Err(refuse(
            INVALID_NAME,
            format!("login name {login:?} {why}: set spec.name"),
        ));
    }
    if let Some(owner) = claimed.get(login) {
        return Err(refuse(
            DUPLICATE_NAME,
            format!(
                "login name {login} is already FtpUser {owner}'s on FtpServer {} (the older \
                 declaration keeps it): set spec.name to another name, or delete one of them",
                server.name_any()
            ),
        ));
    }
    if let Some(home) = &spec.home
        && let Some(why) = home_problem(home)
    {
        return Err(refuse(
            HOME_OUTSIDE_STORAGE,
            format!(
                "home {home:?} {why}: name a directory beneath the storage root, such as homes/{login}"
            ),
        ));
    }
    match &b.credential {
        Credential::Hash(hash) => Ok(hash),
        Credential::SecretMissing => Err(refuse(
            SECRET_MISSING,
            format!(
                "Secret {secret} named by spec.passwordSecretRef does not exist: create it in \
                 this namespace (e.g. of type kubernetes.io/basic-auth with keys username and \
                 password) or fix the name"
            ),
        )),
        Credential::KeyMissing(keys) => Err(refuse(
            KEY_MISSING,
            format!(
                "Secret {secret} has no key {key} (its keys: {}): add it, or name the key \
                 holding the password in spec.passwordSecretRef.key",
                if keys.is_empty() {
                    "none".to_owned()
                } else {
                    keys.join(", ")
                }
            ),
        )),
        Credential::BadHash(why) => Err(refuse(
            BAD_HASH,
            format!(
                "Secret {secret} key {key} {why}: put the password there in clear, or an \
                 argon2id PHC hash"
            ),
        )),
    }
}

/// Why a login name cannot be served (a name stored before the CEL rules); None when it can.
fn login_problem(login: &str) -> Option<&'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if login.is_empty() || login.len() > 64 || !login.chars().all(allowed) {
        return Some(
            "must be 1 to 64 letters, digits, '.', '_' and '-' (it names the user's key files too)",
        );
    }
    if login.starts_with('.') || login.starts_with('-') {
        return Some("must start with a letter, digit or '_'");
    }
    if login.starts_with(PROBE_NAME_PREFIX) {
        return Some("starts with ftp-operator-probe-, the operator's probe account");
    }
    None
}

/// Why `home` is not beneath the storage root; None when it is.
fn home_problem(home: &str) -> Option<&'static str> {
    if home.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    let mut depth = 0_usize;
    for part in home.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return Some("climbs above the storage root with '..'"),
            },
            _ => depth += 1,
        }
    }
    None
}

fn file_user(user: &FtpUser, login: &str, hash: &str) -> FileUser {
    let spec = &user.spec;
    let limits = spec.limits.unwrap_or_default();
    let access = spec
        .access
        .clone()
        .or_else(|| (!spec.permissions.is_empty()).then(|| spec.permissions.join(",")));
    FileUser {
        name: login.to_owned(),
        password_hash: hash.to_owned(),
        access,
        home: spec.home.clone(),
        enabled: (!spec.enabled).then_some(false),
        expires: spec.expires.as_ref().map(|t| t.0.to_string()),
        max_sessions: limits.max_sessions,
        allowed_cidrs: spec.allowed_cidrs.clone(),
        upload_bytes_per_second: limits.upload_bytes_per_second,
        download_bytes_per_second: limits.download_bytes_per_second,
        session_upload_bytes_per_second: limits.session_upload_bytes_per_second,
        session_download_bytes_per_second: limits.session_download_bytes_per_second,
        quota_bytes: limits.quota_bytes,
        quota_files: limits.quota_files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    const OTHER_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$b3RoZXJoYXNoaGFzaA";

    /// An FtpUser of fixture server `contoso`, created at minute `minute`.
    fn user(name: &str, minute: u32, spec: &str) -> Arc<FtpUser> {
        let password = if spec.contains("passwordSecretRef") {
            String::new()
        } else {
            format!("passwordSecretRef: {{name: {name}-password}}, ")
        };
        Arc::new(
            serde_yaml::from_str(&format!(
                "metadata: {{name: {name}, namespace: ftp, uid: uid-{name}, creationTimestamp: '2026-01-01T00:{minute:02}:00Z'}}\n\
                 spec: {{serverRef: {{name: contoso}}, {password}{spec}}}\n"
            ))
            .unwrap(),
        )
    }

    fn bound(user: Arc<FtpUser>, credential: Credential) -> Bound {
        Bound { user, credential }
    }

    fn ready(user: Arc<FtpUser>) -> Bound {
        bound(user, Credential::Hash(HASH.into()))
    }

    fn verdict_of<'a>(gathered: &'a Gathered, name: &str) -> &'a Verdict {
        &gathered
            .verdicts
            .iter()
            .find(|(u, _)| u.name_any() == name)
            .unwrap()
            .1
    }

    fn logins(gathered: &Gathered) -> Vec<String> {
        file::hashes(&gathered.file).into_keys().collect()
    }

    #[test]
    fn an_accepted_user_renders_every_field_and_its_keys() {
        let server = server(fixtures::FULL);
        let acme = user(
            "acme",
            0,
            "name: acme-partner, home: homes/acme, permissions: [list, download], enabled: false, \
             expires: '2027-01-31T00:00:00Z', allowedCidrs: [198.51.100.0/24], \
             limits: {maxSessions: 4, quotaBytes: 1073741824, quotaFiles: 10000, uploadBytesPerSecond: 1048576, \
             downloadBytesPerSecond: 2097152, sessionUploadBytesPerSecond: 524288, sessionDownloadBytesPerSecond: 262144}, \
             sshAuthorizedKeys: ['ssh-ed25519 AAAAkey1 a@b', 'ssh-ed25519 AAAAkey2']",
        );
        let gathered = gather(&server, &[ready(acme)], None).unwrap();
        assert!(gathered.file.contains(
            "[[user]]\nname = \"acme-partner\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\n\
             access = \"list,download\"\nhome = \"homes/acme\"\nenabled = false\n\
             expires = \"2027-01-31T00:00:00Z\"\nmax_sessions = 4\nallowed_cidrs = [\"198.51.100.0/24\"]\n\
             upload_bytes_per_second = 1048576\ndownload_bytes_per_second = 2097152\n\
             session_upload_bytes_per_second = 524288\nsession_download_bytes_per_second = 262144\n\
             quota_bytes = 1073741824\nquota_files = 10000\n"
        ), "{}", gathered.file);
        assert_eq!(
            gathered.authorized_keys["acme-partner.authorized_keys"],
            "ssh-ed25519 AAAAkey1 a@b\nssh-ed25519 AAAAkey2\n"
        );
        let verdict = verdict_of(&gathered, "acme");
        assert!(verdict.accepted);
        assert_eq!(
            verdict.message,
            "login acme-partner is in the users file of FtpServer contoso"
        );
    }

    #[test]
    fn a_bad_user_is_left_out_alone_with_the_reason_and_the_fix() {
        let server = server(fixtures::FULL);
        let users = [
            ready(user("good", 0, "")),
            bound(user("nosecret", 1, ""), Credential::SecretMissing),
            bound(
                user("nokey", 2, "passwordSecretRef: {name: shared, key: nokey}"),
                Credential::KeyMissing(vec!["username".into()]),
            ),
            bound(
                user("badhash", 3, ""),
                Credential::BadHash("hash scheme scrypt is not argon2id".into()),
            ),
            ready(user("escape", 4, "home: ../../etc")),
            ready(user("copycat", 5, "name: good")),
        ];
        let gathered = gather(&server, &users, None).unwrap();
        assert_eq!(logins(&gathered), ["good"]);
        let expect = [
            ("good", ACCEPTED, "login good is in the users file"),
            (
                "nosecret",
                SECRET_MISSING,
                "Secret nosecret-password named by spec.passwordSecretRef does not exist",
            ),
            (
                "nokey",
                KEY_MISSING,
                "Secret shared has no key nokey (its keys: username)",
            ),
            (
                "badhash",
                BAD_HASH,
                "Secret badhash-password key password hash scheme scrypt is not argon2id",
            ),
            (
                "escape",
                HOME_OUTSIDE_STORAGE,
                "home \"../../etc\" climbs above the storage root",
            ),
            (
                "copycat",
                DUPLICATE_NAME,
                "login name good is already FtpUser good's on FtpServer contoso",
            ),
        ];
        for (name, reason, message) in expect {
            let verdict = verdict_of(&gathered, name);
            assert_eq!(verdict.reason, reason, "{name}");
            assert_eq!(verdict.accepted, reason == ACCEPTED, "{name}");
            assert!(
                verdict.message.contains(message),
                "{name}: {}",
                verdict.message
            );
        }
    }

    #[test]
    fn the_older_declaration_keeps_a_name_even_while_it_is_broken() {
        let server = server(fixtures::FULL);
        let older = bound(user("first", 0, "name: shared"), Credential::SecretMissing);
        let newer = ready(user("second", 1, "name: shared"));
        let gathered = gather(&server, &[newer, older], None).unwrap();
        assert!(logins(&gathered).is_empty());
        assert_eq!(verdict_of(&gathered, "first").reason, SECRET_MISSING);
        assert_eq!(verdict_of(&gathered, "second").reason, DUPLICATE_NAME);
    }

    #[test]
    fn homes_beneath_the_root_pass_and_names_the_server_cannot_take_are_refused() {
        for good in ["homes/acme", "/homes/acme", "a/../b", "./a", ""] {
            assert_eq!(home_problem(good), None, "{good}");
        }
        for bad in ["..", "a/../../b", "/../x"] {
            assert!(home_problem(bad).is_some(), "{bad}");
        }
        assert!(home_problem("a\nb").is_some());
        for good in ["acme", "acme.partner_1", "_svc", "a-b"] {
            assert_eq!(login_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "a b",
            "a:b",
            ".hidden",
            "ftp-operator-probe-1",
            &"a".repeat(65),
        ] {
            assert!(login_problem(bad).is_some(), "{bad}");
        }
        let server = server(fixtures::FULL);
        let gathered = gather(&server, &[ready(user("x", 0, "name: 'a:b'"))], None).unwrap();
        assert_eq!(verdict_of(&gathered, "x").reason, INVALID_NAME);
    }

    #[test]
    fn the_users_secret_is_merged_and_an_ftpuser_of_the_same_name_wins() {
        let server = server(fixtures::FULL);
        let secret = format!("alice:{OTHER_HASH}:ro\nacme:{OTHER_HASH}\n");
        let gathered = gather(&server, &[ready(user("acme", 0, ""))], Some(&secret)).unwrap();
        let hashes = file::hashes(&gathered.file);
        assert_eq!(hashes["acme"], HASH);
        assert_eq!(hashes["alice"], OTHER_HASH);
        assert!(
            gathered
                .file
                .contains(&format!("\nalice:{OTHER_HASH}:ro\n")),
            "{}",
            gathered.file
        );
        assert!(
            verdict_of(&gathered, "acme")
                .message
                .contains("in place of its line in users Secret ftp-users"),
        );
        assert!(gathered.file.contains("and users Secret ftp-users"));
        // A broken FtpUser does not take the line's place: the line keeps serving.
        let broken = bound(user("acme", 0, ""), Credential::SecretMissing);
        let gathered = gather(&server, &[broken], Some(&secret)).unwrap();
        assert_eq!(file::hashes(&gathered.file)["acme"], OTHER_HASH);
    }

    #[test]
    fn a_bad_line_of_the_users_secret_stalls_the_server_naming_it() {
        let server = server(fixtures::FULL);
        let secret = format!("alice:{HASH}\nbob:plain\n");
        let invalid = gather(&server, &[ready(user("acme", 0, ""))], Some(&secret)).unwrap_err();
        assert_eq!(invalid.reason, USERS_SECRET_INVALID);
        assert!(
            invalid
                .message
                .contains("Secret ftp-users named by spec.users.secretRef, key users, line 2"),
            "{}",
            invalid.message
        );
    }

    #[test]
    fn disabling_expiring_and_removing_a_user_each_change_the_file() {
        let server = server(fixtures::FULL);
        let file = |users: &[Bound]| gather(&server, users, None).unwrap().file;
        let plain = file(&[ready(user("acme", 0, ""))]);
        let disabled = file(&[ready(user("acme", 0, "enabled: false"))]);
        let expiring = file(&[ready(user("acme", 0, "expires: '2026-02-01T00:00:00Z'"))]);
        let removed = file(&[]);
        assert!(disabled.contains("enabled = false") && !plain.contains("enabled"));
        assert!(expiring.contains("expires = \"2026-02-01T00:00:00Z\""));
        assert!(!removed.contains("acme"));
        assert!(removed.starts_with("# Users of FtpServer contoso"));
    }
}
