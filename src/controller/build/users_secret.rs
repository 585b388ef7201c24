//! The generated Secret `<name>-generated-users` holding the server's users file (key `users`,
//! TOML form) and each SSH user's `<login>.authorized_keys` beside it. The pods mount it at
//! [`super::USERS_DIR`]; the server re-reads the file, so a change needs no restart.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::api::FtpServer;
use crate::controller::users::Gathered;

use super::{USERS_KEY, owned_metadata};

pub fn users_secret_name(server: &FtpServer) -> String {
    format!("{}-generated-users", server.name_any())
}

pub fn desired_users_secret(server: &FtpServer, gathered: &Gathered) -> Secret {
    let mut data = BTreeMap::from([(
        USERS_KEY.to_owned(),
        ByteString(gathered.file.clone().into_bytes()),
    )]);
    data.extend(
        gathered
            .authorized_keys
            .iter()
            .map(|(key, text)| (key.clone(), ByteString(text.clone().into_bytes()))),
    );
    Secret {
        metadata: owned_metadata(server, users_secret_name(server)),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// What the pods' mounted users files should hold, for their mounted-inputs annotation: a change
/// of it makes the kubelet refresh the volume at once.
pub fn users_digest(secret: &Secret) -> String {
    let mut all = Vec::new();
    for (key, value) in secret.data.iter().flatten() {
        all.extend_from_slice(key.as_bytes());
        all.push(0);
        all.extend_from_slice(&value.0);
        all.push(0);
    }
    let digest = crate::ftp::config::config_digest(&all);
    // The annotation names it; 16 hex digits tell versions apart.
    digest
        .strip_prefix("sha256:")
        .map_or(digest.clone(), |hex| hex.chars().take(16).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};
    use crate::controller::users::gather;

    #[test]
    fn the_secret_holds_the_file_and_the_key_files_and_is_owned_by_the_server() {
        let server = server(fixtures::FULL);
        let mut gathered = gather(&server, &[], None).unwrap();
        gathered
            .authorized_keys
            .insert("acme.authorized_keys".into(), "ssh-ed25519 AAAA\n".into());
        let secret = desired_users_secret(&server, &gathered);
        assert_eq!(secret.name_any(), "contoso-generated-users");
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["users"].0, gathered.file.as_bytes());
        assert_eq!(data["acme.authorized_keys"].0, b"ssh-ed25519 AAAA\n");
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("FtpServer", Some(true))
        );
        let before = users_digest(&secret);
        assert_eq!(before.len(), 16);
        gathered.authorized_keys.clear();
        assert_ne!(
            users_digest(&desired_users_secret(&server, &gathered)),
            before
        );
    }
}
