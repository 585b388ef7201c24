//! The users file as the controller renders it. Its TOML form has one `[[user]]` table per
//! login; the server takes a file whose first line that is neither blank nor a comment is
//! `[[user]]` as this form, and the field names are its contract. Users that need nothing but a
//! name, a hash, an access and a home are written in the line form instead
//! (`name:PHC-hash[:ACCESS[:HOME]]`), which every server image reads: a server still on an older
//! image (`spec.image`, or waiting for its turn to move to the operator's) keeps loading the
//! users it had. Anything only the TOML form can say (disabled, expiry, limits, allowed
//! addresses) needs an image as new as the operator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One login of the rendered file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct FileUser {
    pub name: String,
    /// An argon2id PHC string.
    pub password_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Written only when false: absent means enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_bytes_per_second: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_bytes_per_second: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_upload_bytes_per_second: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_download_bytes_per_second: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_files: Option<i64>,
}

#[derive(Serialize, Deserialize, Default)]
struct UsersFile {
    #[serde(default)]
    user: Vec<FileUser>,
}

impl FileUser {
    /// Whether the line form says all of it.
    fn fits_a_line(&self) -> bool {
        let FileUser {
            name: _,
            password_hash: _,
            access: _,
            home: _,
            enabled,
            expires,
            max_sessions,
            allowed_cidrs,
            upload_bytes_per_second,
            download_bytes_per_second,
            session_upload_bytes_per_second,
            session_download_bytes_per_second,
            quota_bytes,
            quota_files,
        } = self;
        enabled.is_none_or(|enabled| enabled)
            && expires.is_none()
            && max_sessions.is_none()
            && allowed_cidrs.is_empty()
            && upload_bytes_per_second.is_none()
            && download_bytes_per_second.is_none()
            && session_upload_bytes_per_second.is_none()
            && session_download_bytes_per_second.is_none()
            && quota_bytes.is_none()
            && quota_files.is_none()
    }

    fn line(&self) -> String {
        let mut line = format!("{}:{}", self.name, self.password_hash);
        match (&self.access, &self.home) {
            (access, Some(home)) => {
                // An empty access field is refused: the default, spelled out.
                line.push_str(&format!(":{}:{home}", access.as_deref().unwrap_or("rw")));
            }
            (Some(access), None) => line.push_str(&format!(":{access}")),
            (None, None) => {}
        }
        line.push('\n');
        line
    }
}

/// The file for `users`, sorted by name, under a header saying where it comes from: in the line
/// form when every user fits one, else in the TOML form. With no users it is the header alone,
/// which the server reads as a file of no users.
pub fn render(header: &str, users: &[FileUser]) -> String {
    let mut sorted = users.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let body = if sorted.iter().all(FileUser::fits_a_line) {
        sorted.iter().map(FileUser::line).collect()
    } else {
        toml::to_string(&UsersFile { user: sorted }).unwrap_or_default()
    };
    let mut text: String = header.lines().map(|line| format!("# {line}\n")).collect();
    if !body.trim().is_empty() {
        text.push('\n');
        text.push_str(&body);
    }
    text
}

/// The hash each login has in a file this module rendered, in either form.
pub fn hashes(text: &str) -> BTreeMap<String, String> {
    if let Ok(file) = toml::from_str::<UsersFile>(text)
        && !file.user.is_empty()
    {
        return file
            .user
            .into_iter()
            .map(|user| (user.name, user.password_hash))
            .collect();
    }
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

    #[test]
    fn the_file_is_the_contracts_toml_sorted_by_name() {
        let acme = FileUser {
            name: "acme".into(),
            password_hash: HASH.into(),
            access: Some("rw".into()),
            home: Some("homes/acme".into()),
            enabled: Some(false),
            expires: Some("2027-01-31T00:00:00Z".into()),
            max_sessions: Some(4),
            allowed_cidrs: vec!["198.51.100.0/24".into()],
            upload_bytes_per_second: Some(1048576),
            download_bytes_per_second: Some(1048576),
            session_upload_bytes_per_second: Some(524288),
            session_download_bytes_per_second: Some(524288),
            quota_bytes: Some(1073741824),
            quota_files: Some(10000),
        };
        let bob = FileUser {
            name: "bob".into(),
            password_hash: HASH.into(),
            ..FileUser::default()
        };
        let text = render("Generated; do not edit.", &[bob, acme]);
        let expected = format!(
            "# Generated; do not edit.\n\n\
             [[user]]\nname = \"acme\"\npassword_hash = \"{HASH}\"\naccess = \"rw\"\n\
             home = \"homes/acme\"\nenabled = false\nexpires = \"2027-01-31T00:00:00Z\"\n\
             max_sessions = 4\nallowed_cidrs = [\"198.51.100.0/24\"]\n\
             upload_bytes_per_second = 1048576\ndownload_bytes_per_second = 1048576\n\
             session_upload_bytes_per_second = 524288\nsession_download_bytes_per_second = 524288\n\
             quota_bytes = 1073741824\nquota_files = 10000\n\n\
             [[user]]\nname = \"bob\"\npassword_hash = \"{HASH}\"\n"
        );
        assert_eq!(text, expected);
        // The first line that is neither blank nor a comment marks the TOML form.
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        assert_eq!(first, Some("[[user]]"));
        assert_eq!(hashes(&text)["acme"], HASH);
        assert_eq!(hashes(&text).len(), 2);
    }

    #[test]
    fn users_the_line_form_says_all_of_are_written_in_it() {
        let user = |name: &str, access: Option<&str>, home: Option<&str>| FileUser {
            name: name.into(),
            password_hash: HASH.into(),
            access: access.map(str::to_owned),
            home: home.map(str::to_owned),
            ..FileUser::default()
        };
        let text = render(
            "Generated.",
            &[
                user("dave", None, Some("drop/dave")),
                user("carol", Some("list,download"), Some("carol")),
                user("bob", Some("ro"), None),
                user("alice", None, None),
            ],
        );
        assert_eq!(
            text,
            format!(
                "# Generated.\n\nalice:{HASH}\nbob:{HASH}:ro\ncarol:{HASH}:list,download:carol\n\
                 dave:{HASH}:rw:drop/dave\n"
            )
        );
        assert_eq!(hashes(&text).len(), 4);
        assert_eq!(hashes(&text)["dave"], HASH);
        // One user the line form cannot say (enabled = false) turns the whole file to TOML.
        let disabled = FileUser {
            enabled: Some(false),
            ..user("erin", None, None)
        };
        let text = render("Generated.", &[user("alice", None, None), disabled]);
        assert!(text.contains("[[user]]\nname = \"alice\""), "{text}");
        assert!(text.contains("enabled = false"), "{text}");
        assert_eq!(hashes(&text).len(), 2);
    }

    /// What the controller renders is what the server loads: every field of the contract reaches
    /// the server's policy, in the TOML form and in the line form.
    #[test]
    fn the_server_loads_what_the_controller_renders() {
        use crate::ftp::auth::Users;
        let hash = crate::ftp::auth::hash_password("acme-pw").unwrap();
        let acme = FileUser {
            name: "acme".into(),
            password_hash: hash.clone(),
            access: Some("list,download,upload".into()),
            home: Some("homes/acme".into()),
            enabled: Some(false),
            expires: Some("2027-01-31T00:00:00Z".into()),
            max_sessions: Some(4),
            allowed_cidrs: vec!["198.51.100.0/24".into()],
            upload_bytes_per_second: Some(1048576),
            download_bytes_per_second: Some(2097152),
            session_upload_bytes_per_second: Some(524288),
            session_download_bytes_per_second: Some(262144),
            quota_bytes: Some(1073741824),
            quota_files: Some(10000),
        };
        let bob = FileUser {
            name: "bob".into(),
            password_hash: hash.clone(),
            access: Some("ro".into()),
            ..FileUser::default()
        };
        let users = Users::parse(&render("Generated.", &[acme, bob.clone()])).unwrap();
        assert_eq!(users.len(), 2);
        let policy = users.policy("acme");
        assert!(!policy.enabled);
        assert_eq!(
            policy.expires,
            Some("2027-01-31T00:00:00Z".parse().unwrap())
        );
        assert_eq!(policy.max_sessions, Some(4));
        assert!(policy.address_allowed("198.51.100.9".parse().unwrap()));
        assert!(!policy.address_allowed("192.0.2.1".parse().unwrap()));
        assert_eq!(policy.bandwidth.upload_bytes_per_second, Some(1048576));
        assert_eq!(policy.bandwidth.download_bytes_per_second, Some(2097152));
        assert_eq!(
            policy.bandwidth.session_upload_bytes_per_second,
            Some(524288)
        );
        assert_eq!(
            policy.bandwidth.session_download_bytes_per_second,
            Some(262144)
        );
        assert_eq!(policy.quota.bytes, Some(1073741824));
        assert_eq!(policy.quota.files, Some(10000));
        assert!(policy.metered);
        // The line form, when every user fits it, loads as well.
        let users = Users::parse(&render("Generated.", &[bob])).unwrap();
        assert_eq!(users.len(), 1);
        assert!(users.policy("bob").enabled);
    }

    #[test]
    fn no_users_is_the_header_alone() {
        assert_eq!(render("a\nb", &[]), "# a\n# b\n");
        assert!(hashes("# a\n").is_empty());
    }
}
