//! The TOML form of the users file: `[[user]]` tables, each one account with its limits. Chosen
//! when the file's first line that is neither blank nor a `#` comment is `[[user]]`.

use std::collections::HashSet;

use serde::Deserialize;

use super::policy::{Bandwidth, Quota, UserPolicy};
use crate::ftp::access::{self, Access, Permissions};

/// One account as the file declares it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserTable {
    name: String,
    password_hash: String,
    access: Option<String>,
    home: Option<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    /// RFC 3339, quoted (as the operator renders it) or a TOML offset date-time.
    expires: Option<toml::Value>,
    max_sessions: Option<u32>,
    #[serde(default)]
    allowed_cidrs: Vec<String>,
    upload_bytes_per_second: Option<u64>,
    download_bytes_per_second: Option<u64>,
    session_upload_bytes_per_second: Option<u64>,
    session_download_bytes_per_second: Option<u64>,
    quota_bytes: Option<u64>,
    quota_files: Option<u64>,
}

fn enabled_by_default() -> bool {
    true
}

/// The file as tables, to find which user an error is in.
#[derive(Debug, Deserialize)]
struct LooseFile {
    #[serde(default)]
    user: Vec<toml::Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<toml::Spanned<UserTable>>,
}

/// A user of the file, checked except for the hash (which the caller checks with the line form's).
#[derive(Debug)]
pub struct Declared {
    pub name: String,
    pub hash: String,
    pub access: Access,
    pub policy: UserPolicy,
    /// The line of the user's `[[user]]` header.
    pub line: usize,
}

/// Why the TOML form did not load: the user at fault when there is one, and its line.
#[derive(Debug)]
pub struct TomlError {
    pub user: Option<String>,
    pub line: Option<usize>,
    pub reason: String,
}

/// Whether `text` is the TOML form.
pub fn is_toml_form(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .is_some_and(|line| line == "[[user]]")
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

pub fn parse(text: &str) -> Result<Vec<Declared>, TomlError> {
    let loose: LooseFile = toml::from_str(text).map_err(|error| TomlError {
        user: None,
        line: error.span().map(|span| line_of(text, span.start)),
        reason: error.message().to_owned(),
    })?;
    // The user an error is in: the last whose table starts before it.
    let user_at = |offset: usize| {
        loose
            .user
            .iter()
            .rfind(|table| table.span().start <= offset)
            .and_then(|table| table.get_ref().get("name"))
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
    };
    let file: UsersFile = toml::from_str(text).map_err(|error| {
        let start = error.span().map(|span| span.start);
        TomlError {
            user: start.and_then(user_at),
            line: start.map(|start| line_of(text, start)),
            reason: error.message().to_owned(),
        }
    })?;
    let mut names = HashSet::new();
    let mut users = Vec::with_capacity(file.user.len());
    for spanned in file.user {
        let line = line_of(text, spanned.span().start);
        let declared = spanned.into_inner();
        let named = declared.name.clone();
        let error = |reason: String| TomlError {
            user: Some(named.clone()),
            line: Some(line),
            reason,
        };
        let user = declared_user(declared, line).map_err(error)?;
        if !names.insert(user.name.clone()) {
            return Err(error(format!(
                "the name {:?} is declared more than once",
                user.name
            )));
        }
        users.push(user);
    }
    Ok(users)
}

fn declared_user(table: UserTable, line: usize) -> Result<Declared, String> {
    let name = table.name;
    // The line form's rules: a name is what fits before the first ':' of a trimmed line.
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
        return Err(format!(
            "name {name:?} is empty or has a ':' or a control character"
        ));
    }
    if name.trim() != name {
        return Err(format!("name {name:?} starts or ends with white space"));
    }
    let permissions = match table.access.as_deref() {
        Some(text) => Permissions::parse(text)?,
        None => Permissions::read_write(),
    };
    let home = access::home_path(table.home.as_deref().unwrap_or_default())?;
    let expires = match table.expires {
        None => None,
        Some(value) => Some(timestamp(&value)?),
    };
    let allowed_cidrs = table
        .allowed_cidrs
        .iter()
        .map(|text| network(text.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if table.max_sessions == Some(0) {
        return Err(
            "max_sessions is 0: no session could log in (disable the user with enabled = false)"
                .into(),
        );
    }
    let rates = [
        ("upload_bytes_per_second", table.upload_bytes_per_second),
        ("download_bytes_per_second", table.download_bytes_per_second),
        (
            "session_upload_bytes_per_second",
            table.session_upload_bytes_per_second,
        ),
        (
            "session_download_bytes_per_second",
            table.session_download_bytes_per_second,
        ),
    ];
    if let Some((key, _)) = rates.iter().find(|(_, rate)| *rate == Some(0)) {
        return Err(format!(
            "{key} is 0: no byte could move (leave it out for no limit)"
        ));
    }
    Ok(Declared {
        name,
        hash: table.password_hash,
        access: Access { permissions, home },
        policy: UserPolicy {
            enabled: table.enabled,
            expires,
            max_sessions: table.max_sessions,
            allowed_cidrs,
            bandwidth: Bandwidth {
                upload_bytes_per_second: table.upload_bytes_per_second,
                download_bytes_per_second: table.download_bytes_per_second,
                session_upload_bytes_per_second: table.session_upload_bytes_per_second,
                session_download_bytes_per_second: table.session_download_bytes_per_second,
            },
            quota: Quota {
                bytes: table.quota_bytes,
                files: table.quota_files,
            },
            metered: true,
        },
        line,
    })
}

/// A CIDR, or a single address (as its /32 or /128).
fn network(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!("allowed_cidrs entry {text:?} is not a network such as 198.51.100.0/24")
        })
}

fn timestamp(value: &toml::Value) -> Result<jiff::Timestamp, String> {
    let text = match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Datetime(datetime) => datetime.to_string(),
        other => {
            return Err(format!(
                "expires is a {}, not an RFC 3339 time such as \"2027-01-31T00:00:00Z\"",
                other.type_str()
            ));
        }
    };
    text.parse::<jiff::Timestamp>().map_err(|_| {
        format!(
            "expires {text:?} is not an RFC 3339 time with an offset, such as \"2027-01-31T00:00:00Z\""
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn one(extra: &str) -> String {
        format!("[[user]]\nname = \"acme\"\npassword_hash = \"{HASH}\"\n{extra}")
    }

    #[test]
    fn the_form_is_chosen_by_its_first_line() {
        assert!(is_toml_form("# users\n\n  [[user]]\nname = \"a\"\n"));
        assert!(!is_toml_form("# users\nalice:$argon2id$...\n"));
        assert!(!is_toml_form(""));
    }

    #[test]
    fn every_key_of_the_contract_parses() {
        let users = parse(&format!(
            "# partners\n{}",
            one("access = \"ro\"\nhome = \"homes/acme\"\nenabled = false\n\
                 expires = \"2027-01-31T00:00:00Z\"\nmax_sessions = 4\n\
                 allowed_cidrs = [\"198.51.100.0/24\"]\nupload_bytes_per_second = 1048576\n\
                 download_bytes_per_second = 2097152\nsession_upload_bytes_per_second = 524288\n\
                 session_download_bytes_per_second = 262144\nquota_bytes = 1073741824\n\
                 quota_files = 10000\n")
        ))
        .unwrap();
        let [user] = users.as_slice() else {
            panic!("one user expected")
        };
        assert_eq!((user.name.as_str(), user.line), ("acme", 2));
        assert_eq!(user.access.permissions, Permissions::read_only());
        assert_eq!(user.access.home, "homes/acme");
        let policy = &user.policy;
        assert!(!policy.enabled && policy.metered);
        assert_eq!(
            policy.expires,
            Some("2027-01-31T00:00:00Z".parse().unwrap())
        );
        assert_eq!(policy.max_sessions, Some(4));
        assert_eq!(
            policy.allowed_cidrs,
            vec!["198.51.100.0/24".parse::<ipnet::IpNet>().unwrap()]
        );
        assert_eq!(policy.bandwidth.upload_bytes_per_second, Some(1048576));
        assert_eq!(
            policy.bandwidth.session_download_bytes_per_second,
            Some(262144)
        );
        assert_eq!(
            policy.quota,
            Quota {
                bytes: Some(1073741824),
                files: Some(10000)
            }
        );
    }

    #[test]
    fn defaults_are_an_enabled_read_write_user_without_limits() {
        let users = parse(&one("")).unwrap();
        let policy = &users[0].policy;
        assert!(policy.enabled);
        assert_eq!(users[0].access.permissions, Permissions::read_write());
        assert_eq!(
            (
                policy.expires,
                policy.max_sessions,
                policy.allowed_cidrs.len()
            ),
            (None, None, 0)
        );
        assert!(!policy.quota.is_limited());
    }

    #[test]
    fn a_single_address_is_its_own_network() {
        let users = parse(&one(
            "allowed_cidrs = [\"198.51.100.7\", \"2001:db8::1\"]\n",
        ))
        .unwrap();
        let nets: Vec<String> = users[0]
            .policy
            .allowed_cidrs
            .iter()
            .map(|net| net.to_string())
            .collect();
        assert_eq!(nets, ["198.51.100.7/32", "2001:db8::1/128"]);
    }

    #[test]
    fn a_toml_date_time_is_accepted_as_expiry() {
        let users = parse(&one("expires = 2027-01-31T00:00:00Z\n")).unwrap();
        assert_eq!(
            users[0].policy.expires,
            Some("2027-01-31T00:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn errors_name_the_user_and_its_line() {
        let second = |extra: &str| {
            format!(
                "{}\n[[user]]\nname = \"bob\"\npassword_hash = \"{HASH}\"\n{extra}",
                one("")
            )
        };
        for (extra, says) in [
            ("quota = 5\n", "quota"),
            ("allowed_cidrs = [\"10.0.0.0/33\"]\n", "10.0.0.0/33"),
            ("expires = \"next week\"\n", "RFC 3339"),
            ("expires = 2027-01-31\n", "RFC 3339"),
            ("access = \"write\"\n", "incoming"),
            ("max_sessions = 0\n", "max_sessions"),
            ("upload_bytes_per_second = 0\n", "upload_bytes_per_second"),
            ("max_sessions = -1\n", "u32"),
        ] {
            let error = parse(&second(extra)).unwrap_err();
            assert_eq!(error.user.as_deref(), Some("bob"), "{extra}: {error:?}");
            // The user's header, or the very key where toml points at it.
            assert!(matches!(error.line, Some(5 | 8)), "{extra}: {error:?}");
            assert!(error.reason.contains(says), "{extra}: {error:?}");
        }
        let error = parse(&format!("{}\n{}", one(""), one(""))).unwrap_err();
        assert_eq!(error.user.as_deref(), Some("acme"));
        assert!(error.reason.contains("more than once"), "{error:?}");
        let error = parse("[[user]]\nname = \"a:b\"\npassword_hash = \"x\"\n").unwrap_err();
        assert!(error.reason.contains("':'"), "{error:?}");
        let error = parse("[[user]]\nname = \"a\"\npassword_hash = \n").unwrap_err();
        assert_eq!(
            (error.user, error.line),
            (None, Some(3)),
            "{}",
            error.reason
        );
        let error = parse("[[user]]\nname = \"a\"\n").unwrap_err();
        assert!(error.reason.contains("password_hash"), "{error:?}");
        let error = parse("[[users]]\nname = \"a\"\n").unwrap_err();
        assert!(error.reason.contains("users"), "{error:?}");
    }
}
