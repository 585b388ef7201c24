//! What an FtpServer's users file is made of, read for one reconcile: the FtpUsers bound to it
//! (from the controller's cache), each one's password Secret (read by name: a cache would hold
//! every Secret of the cluster), the users Secret's lines, and the generated Secret as it is.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::api::FtpServer;
use crate::api::user::FtpUser;
use crate::controller::build::{USERS_KEY, users_secret_name};
use crate::process::errors::ApplyError;

use super::file;
use super::gather::{Bound, Credential};
use super::passwords::{Password, PasswordHashes, classify};

#[derive(Debug, Clone, Default)]
pub struct ObservedUsers {
    pub bound: Vec<Bound>,
    /// The `users` key of `spec.users.secretRef` (None without `spec.users`, or while the Secret
    /// or its key is missing, which validation reports).
    pub users_secret: Option<String>,
    /// The `<login>.authorized_keys` keys of that Secret (SFTP key logins), copied beside the
    /// users file as the server reads them beside its own.
    pub users_secret_keys: BTreeMap<String, String>,
    /// The generated Secret as the API has it.
    pub generated: Option<Secret>,
}

/// The FtpUsers of `server`'s namespace that name it.
pub fn bound_users(server: &FtpServer, users: &Store<FtpUser>) -> Vec<Arc<FtpUser>> {
    let namespace = server.namespace();
    let name = server.name_any();
    let mut bound: Vec<_> = users
        .state()
        .into_iter()
        .filter(|u| u.namespace() == namespace && u.spec.server_ref.name == name)
        .collect();
    bound.sort_by_key(|u| u.name_any());
    bound
}

/// Reads what `server`'s users file is made of; clear passwords are hashed through `hashes`.
pub async fn observe_users(
    server: &FtpServer,
    users: &Store<FtpUser>,
    client: &Client,
    hashes: &Arc<PasswordHashes>,
) -> Result<ObservedUsers, ApplyError> {
    let namespace = server.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let read = |name: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(&name)
                .await
                .map_err(|source| ApplyError::read::<Secret>(&name, source))
        }
    };
    let generated = read(users_secret_name(server)).await?;
    let previous = generated
        .as_ref()
        .and_then(|s| value(s, USERS_KEY))
        .map(|bytes| file::hashes(&String::from_utf8_lossy(bytes)))
        .unwrap_or_default();
    let users_secret_object = match &server.spec.users {
        Some(users) => read(users.secret_ref.name.clone()).await?,
        None => None,
    };
    let users_secret = users_secret_object
        .as_ref()
        .and_then(|s| value(s, USERS_KEY).map(|v| String::from_utf8_lossy(v).into_owned()));
    let users_secret_keys = users_secret_object
        .as_ref()
        .map(authorized_keys_of)
        .unwrap_or_default();
    let mut password_secrets: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut bound = Vec::new();
    for user in bound_users(server, users) {
        let reference = &user.spec.password_secret_ref;
        if !password_secrets.contains_key(&reference.name) {
            let secret = read(reference.name.clone()).await?;
            password_secrets.insert(reference.name.clone(), secret);
        }
        let secret = password_secrets
            .get(&reference.name)
            .and_then(Option::as_ref);
        let credential = match secret {
            None => Credential::SecretMissing,
            Some(secret) => match value(secret, reference.key()) {
                None => Credential::KeyMissing(keys(secret)),
                Some(bytes) => match classify(bytes) {
                    Err(why) => Credential::BadHash(why),
                    Ok(Password::Hash(hash)) => Credential::Hash(hash),
                    Ok(Password::Clear(password)) => {
                        let owner = user.uid().unwrap_or_else(|| user.name_any());
                        let previous = previous.get(user.login_name()).cloned();
                        let hashes = Arc::clone(hashes);
                        // argon2 takes tens of milliseconds and 19 MiB: off the runtime.
                        let hashed = tokio::task::spawn_blocking(move || {
                            hashes.hash(&owner, &password, previous.as_deref())
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        match hashed {
                            Ok(hash) => Credential::Hash(hash),
                            Err(why) => Credential::BadHash(why),
                        }
                    }
                },
            },
        };
        bound.push(Bound { user, credential });
    }
    Ok(ObservedUsers {
        bound,
        users_secret,
        users_secret_keys,
        generated,
    })
}

/// The `<login>.authorized_keys` entries of a users Secret.
fn authorized_keys_of(secret: &Secret) -> BTreeMap<String, String> {
    keys(secret)
        .into_iter()
        .filter(|key| key.ends_with(".authorized_keys") && key.len() > ".authorized_keys".len())
        .filter_map(|key| {
            let text = String::from_utf8_lossy(value(secret, &key)?).into_owned();
            Some((key, text))
        })
        .collect()
}

/// A Secret's value for `key`, from `data` or (not yet merged by the apiserver) `stringData`.
fn value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|v| v.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(key))
                .map(String::as_bytes)
        })
}

fn keys(secret: &Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
