//! The `FtpUser` custom resource, `ftpoperator.dev/v1alpha1`: one login of one FtpServer in the
//! same namespace, its password in a Secret of its own. The FtpServer's controller gathers the
//! users bound to it into the server's users file and says in each user's status whether it
//! was accepted (see docs/users.md).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Login names the operator's probe account takes; no user may have one.
pub const PROBE_NAME_PREFIX: &str = "ftp-operator-probe-";

/// The Secret key a password is read from when `passwordSecretRef.key` is absent: the key of a
/// `kubernetes.io/basic-auth` Secret.
pub const DEFAULT_PASSWORD_KEY: &str = "password";

/// A login of an FtpServer, with its own password Secret, home, permissions and limits.
// Each printer column repeats `type_ = "string"`, which clippy mistakes for a duplicate attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ftpoperator.dev",
    version = "v1alpha1",
    kind = "FtpUser",
    doc = "A login of an FtpServer in the same namespace, its password in a Secret of its own",
    namespaced,
    status = "FtpUserStatus",
    derive = "PartialEq",
    shortname = "ftpu",
    category = "ftp",
    cel,
    validation = Rule::new("has(self.spec.name) || (size(self.metadata.name) <= 64 && !self.metadata.name.startsWith('ftp-operator-probe-'))")
        .message("metadata.name is the login name when spec.name is absent: it must be at most 64 characters and must not start with ftp-operator-probe- (the operator's probe account); set spec.name"),
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.serverRef.name"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.access) || !has(self.permissions)")
        .message("set access or permissions, not both: access is the users file's shorthand (ro, rw, incoming), permissions the list")
        .field_path(".permissions"),
)]
#[serde(rename_all = "camelCase")]
pub struct FtpUserSpec {
    /// The FtpServer in this namespace the user logs in to.
    pub server_ref: ServerRef,

    /// The login name; absent: `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9._-]*$') && !self.startsWith('ftp-operator-probe-')")
        .message("name must be letters, digits, '.', '_' and '-', starting with a letter, digit or '_' (it names the user's key files too), and must not start with ftp-operator-probe- (the operator's probe account)"))]
    pub name: Option<String>,

    /// The Secret holding the password, in clear or as an argon2id PHC hash (`$argon2id$...`).
    pub password_secret_ref: PasswordSecretRef,

    /// The login's directory beneath the storage root, created at its first login; absent: the
    /// root. `..` may not climb above the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub home: Option<String>,

    /// What the user may do: `ro`, `rw` (the default) or `incoming` (upload new files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['ro', 'rw', 'incoming']")
        .message("access must be ro, rw or incoming; list single permissions in permissions instead"))]
    pub access: Option<String>,

    /// What the user may do, one permission at a time; instead of `access`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 6))]
    #[x_kube(validation = Rule::new("self.all(p, p in ['list', 'download', 'upload', 'delete', 'rename', 'mkdir'])")
        .message("permissions entries must be list, download, upload, delete, rename or mkdir"))]
    pub permissions: Vec<String>,

    /// False refuses new logins and keeps the user's files and declaration.
    #[serde(default = "default_enabled")]
    pub enabled: bool,

    /// From this time on new logins are refused (RFC 3339, e.g. `2027-01-31T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<UserLimits>,

    /// Client addresses the user may log in from (CIDRs); absent or empty: anywhere. Others are
    /// refused before their password is checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))")
        .message("allowedCidrs entries must be CIDRs such as 198.51.100.0/24 or 2001:db8::/32"))]
    pub allowed_cidrs: Vec<String>,

    /// SSH public keys (`ssh-ed25519 AAAA... comment`) the user may log in with over SFTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 16384)))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^(ssh|ecdsa|sk)-[^ ]+ [A-Za-z0-9+/=]+( .*)?$'))")
        .message("sshAuthorizedKeys entries must be one public key each, as in an authorized_keys file: ssh-ed25519 AAAA... comment"))]
    pub ssh_authorized_keys: Vec<String>,
}

fn default_enabled() -> bool {
    true
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServerRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PasswordSecretRef {
    /// A Secret in the FtpUser's namespace: type `kubernetes.io/basic-auth`, or any Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the password; absent: `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl PasswordSecretRef {
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_PASSWORD_KEY)
    }
}

/// Per-user limits; absent fields: no limit of the user's own (the server's limits still apply).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserLimits {
    /// Sessions the user may hold at once on one pod; one more gets `421`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("limits.maxSessions must be between 1 and 100000"))]
    pub max_sessions: Option<i64>,
    /// Bytes the user's home may hold; an upload that crosses it gets `552`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("limits.quotaBytes must be 0 or more"))]
    pub quota_bytes: Option<i64>,
    /// Files the user's home may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("limits.quotaFiles must be 0 or more"))]
    pub quota_files: Option<i64>,
    /// Upload rate of all the user's sessions together, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("limits.uploadBytesPerSecond must be at least 1"))]
    pub upload_bytes_per_second: Option<i64>,
    /// Download rate of all the user's sessions together, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("limits.downloadBytesPerSecond must be at least 1"))]
    pub download_bytes_per_second: Option<i64>,
    /// Upload rate of each session, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("limits.sessionUploadBytesPerSecond must be at least 1"))]
    pub session_upload_bytes_per_second: Option<i64>,
    /// Download rate of each session, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("limits.sessionDownloadBytesPerSecond must be at least 1"))]
    pub session_download_bytes_per_second: Option<i64>,
}

/// Whether the user's server serves it, in kstatus form.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FtpUserStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl FtpUser {
    /// The login name: `spec.name`, else `metadata.name`.
    pub fn login_name(&self) -> &str {
        self.spec
            .name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }

    /// The CRD as YAML, as `ftp-operator crd ftpuser` prints it and `crds/ftpuser.yaml` holds it.
    pub fn crd_yaml() -> String {
        use kube::CustomResourceExt;
        let yaml = serde_yaml::to_string(&FtpUser::crd()).unwrap_or_default();
        format!("# Generated by `ftp-operator crd ftpuser`; do not edit.\n{yaml}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(spec: &str) -> FtpUser {
        serde_yaml::from_str(&format!(
            "metadata: {{name: acme}}\nspec: {{serverRef: {{name: contoso}}, passwordSecretRef: {{name: acme-password}}, {spec}}}\n"
        ))
        .unwrap()
    }

    /// The messages of the rules the user breaks; empty when it is valid.
    fn broken_rules(spec: &str) -> String {
        match user(spec).validate_cel() {
            Ok(()) => String::new(),
            Err(errors) => errors.to_string(),
        }
    }

    #[test]
    fn a_full_user_passes_and_defaults_apply() {
        assert_eq!(
            broken_rules(
                "name: acme.partner, home: homes/acme, access: rw, enabled: false, \
                 expires: '2027-01-31T00:00:00Z', allowedCidrs: [198.51.100.0/24, '2001:db8::/32'], \
                 limits: {maxSessions: 4, quotaBytes: 0, quotaFiles: 10000, uploadBytesPerSecond: 1048576, \
                 downloadBytesPerSecond: 1, sessionUploadBytesPerSecond: 1, sessionDownloadBytesPerSecond: 1}, \
                 sshAuthorizedKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ acme@laptop']"
            ),
            ""
        );
        let minimal = user("");
        assert!(minimal.spec.enabled);
        assert_eq!(minimal.login_name(), "acme");
        assert_eq!(minimal.spec.password_secret_ref.key(), "password");
        assert_eq!(user("name: partner").login_name(), "partner");
    }

    #[test]
    fn each_bad_field_is_rejected_with_its_message() {
        for (spec, message) in [
            ("name: 'a b'", "name must be letters, digits"),
            ("name: 'a:b'", "name must be letters, digits"),
            (
                "name: ftp-operator-probe-1f",
                "must not start with ftp-operator-probe-",
            ),
            ("access: write", "access must be ro, rw or incoming"),
            (
                "permissions: [list, write]",
                "permissions entries must be list",
            ),
            (
                "access: ro, permissions: [list]",
                "set access or permissions, not both",
            ),
            (
                "allowedCidrs: [198.51.100.1]",
                "allowedCidrs entries must be CIDRs",
            ),
            (
                "limits: {maxSessions: 0}",
                "limits.maxSessions must be between 1 and 100000",
            ),
            (
                "limits: {quotaBytes: -1}",
                "limits.quotaBytes must be 0 or more",
            ),
            (
                "limits: {quotaFiles: -1}",
                "limits.quotaFiles must be 0 or more",
            ),
            (
                "limits: {uploadBytesPerSecond: 0}",
                "limits.uploadBytesPerSecond must be at least 1",
            ),
            (
                "limits: {downloadBytesPerSecond: 0}",
                "limits.downloadBytesPerSecond must be at least 1",
            ),
            (
                "limits: {sessionUploadBytesPerSecond: 0}",
                "limits.sessionUploadBytesPerSecond must be at least 1",
            ),
            (
                "limits: {sessionDownloadBytesPerSecond: 0}",
                "limits.sessionDownloadBytesPerSecond must be at least 1",
            ),
            (
                "sshAuthorizedKeys: ['not a key']",
                "sshAuthorizedKeys entries must be one public key each",
            ),
        ] {
            let errors = broken_rules(spec);
            assert!(
                errors.contains(message),
                "{spec}: expected {message:?}, got {errors:?}"
            );
        }
    }

    #[test]
    fn a_metadata_name_taken_as_the_login_is_checked_too() {
        let mut probe = user("");
        probe.metadata.name = Some("ftp-operator-probe-00".into());
        let errors = probe.validate_cel().unwrap_err().to_string();
        assert!(
            errors.contains("metadata.name is the login name"),
            "{errors}"
        );
        probe.spec.name = Some("acme".into());
        probe.validate_cel().unwrap();
    }

    #[test]
    fn the_example_is_valid() {
        let user: FtpUser =
            serde_yaml::from_str(include_str!("../../examples/ftpuser.yaml")).unwrap();
        user.validate_cel().unwrap();
        assert_eq!(user.login_name(), "partner");
    }

    #[test]
    fn committed_crd_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/ftpuser.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == FtpUser::crd_yaml(),
            "crds/ftpuser.yaml is out of date: run `cargo run --bin ftp-operator -- crd ftpuser > crds/ftpuser.yaml`"
        );
    }
}
