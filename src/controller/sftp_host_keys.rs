//! The SFTP host keys of a server: a Secret `<name>-sftp-host-keys` made once, when SFTP is first
//! enabled, and never written again. Every replica mounts it, so clients meet the same keys after
//! a rollout or a scale. A host key that changed is exactly what SSH clients warn about, so this
//! is the one child that is created rather than applied: an apply would make new keys each time.
//! A Secret of that name that already holds both keys is used as it is, whoever made it (that is
//! how existing keys are brought along, and how they are rotated: see docs/sftp.md).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use ssh_key::{Algorithm, EcdsaCurve, LineEnding, PrivateKey, PublicKey};

use crate::api::FtpServer;
use crate::process::api_writes::ApiWrites;
use crate::process::apply::Applied;
use crate::process::errors::{ApplyError, Invalid};

use super::build::owned_metadata;

/// The Secret's keys: one private key per type, OpenSSH format.
pub const ED25519_KEY: &str = "ssh_host_ed25519_key";
pub const ECDSA_KEY: &str = "ssh_host_ecdsa_key";
pub const HOST_KEYS: [&str; 2] = [ED25519_KEY, ECDSA_KEY];

/// The Stalled reason for a host-key Secret without the keys.
pub const HOST_KEYS_INCOMPLETE: &str = "SftpHostKeysIncomplete";
/// The Stalled reason for a host-key Secret whose keys are not OpenSSH private keys.
pub const HOST_KEYS_INVALID: &str = "SftpHostKeysInvalid";

pub fn host_keys_secret_name(server: &FtpServer) -> String {
    format!("{}-sftp-host-keys", server.name_any())
}

/// Whether the server serves SFTP.
pub fn sftp_enabled(server: &FtpServer) -> bool {
    server.spec.sftp.as_ref().is_some_and(|sftp| sftp.enabled)
}

/// New keys: ed25519 for every current client, ECDSA P-256 for older ones.
pub fn generate_host_keys() -> Result<BTreeMap<String, String>, ssh_key::Error> {
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    let mut keys = BTreeMap::new();
    for (name, algorithm) in [
        (ED25519_KEY, Algorithm::Ed25519),
        (
            ECDSA_KEY,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
    ] {
        let key = PrivateKey::random(&mut rng, algorithm)?;
        keys.insert(name.to_owned(), key.to_openssh(LineEnding::LF)?.to_string());
    }
    Ok(keys)
}

/// The Secret holding `keys`, owned by `server` (so it goes with it).
pub fn desired_host_keys_secret(server: &FtpServer, keys: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: owned_metadata(server, host_keys_secret_name(server)),
        type_: Some("Opaque".to_owned()),
        data: Some(
            keys.iter()
                .map(|(name, key)| (name.clone(), ByteString(key.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The keys a Secret lacks.
fn missing_keys(secret: &Secret) -> Vec<&'static str> {
    HOST_KEYS
        .into_iter()
        .filter(|key| {
            secret
                .data
                .as_ref()
                .and_then(|data| data.get(*key))
                .is_none_or(|value| value.0.is_empty())
        })
        .collect()
}

/// The public halves of the Secret's keys (what clients see and remember), or the key that is
/// not an OpenSSH private key.
fn public_keys(secret: &Secret) -> Result<Vec<PublicKey>, (&'static str, ssh_key::Error)> {
    let data = secret.data.as_ref();
    HOST_KEYS
        .into_iter()
        .filter_map(|name| data.and_then(|data| data.get(name)).map(|key| (name, key)))
        .map(|(name, key)| {
            PrivateKey::from_openssh(&key.0)
                .map(|key| key.public_key().clone())
                .map_err(|error| (name, error))
        })
        .collect()
}

/// What became of the host keys.
pub enum HostKeysState {
    /// SFTP is off (no keys), or the Secret holds the keys: their public halves, and the Secret
    /// when it was created now.
    Ready {
        written: Option<(ObjectReference, Applied)>,
        public_keys: Vec<PublicKey>,
    },
    /// A Secret of that name lacks keys, or holds one that is not a key: the user must fix or
    /// remove it.
    Unusable(Invalid),
}

/// Makes the host-key Secret if there is none; never changes one that exists.
pub async fn ensure(
    server: &FtpServer,
    client: &Client,
    writes: &ApiWrites,
) -> Result<HostKeysState, ApplyError> {
    if !sftp_enabled(server) {
        return Ok(HostKeysState::Ready {
            written: None,
            public_keys: Vec::new(),
        });
    }
    let name = host_keys_secret_name(server);
    let api: Api<Secret> = Api::namespaced(client.clone(), &server.namespace().unwrap_or_default());
    // Metadata would not show the keys; the Secret is read whole, by name, once per reconcile.
    if let Some(found) = api
        .get_opt(&name)
        .await
        .map_err(|source| ApplyError::read::<Secret>(&name, source))?
    {
        let missing = missing_keys(&found);
        if missing.is_empty() {
            return Ok(match public_keys(&found) {
                Ok(public_keys) => HostKeysState::Ready {
                    written: None,
                    public_keys,
                },
                Err((key, error)) => HostKeysState::Unusable(Invalid {
                    reason: HOST_KEYS_INVALID,
                    message: format!(
                        "Secret {name}: {key} is not an OpenSSH private key ({error}): put the \
                         file ssh-keygen wrote there, or delete the Secret to have new keys made"
                    ),
                }),
            });
        }
        return Ok(HostKeysState::Unusable(Invalid {
            reason: HOST_KEYS_INCOMPLETE,
            message: format!(
                "Secret {name} has no {}: add the OpenSSH private keys (ssh-keygen -t ed25519 and \
                 -t ecdsa -b 256) under those keys, or delete the Secret to have new ones made",
                missing.join(" or ")
            ),
        }));
    }
    let keys = tokio::task::spawn_blocking(generate_host_keys)
        .await
        .map_err(|error| {
            ApplyError::of::<Secret>(&name, kube::Error::Service(error.to_string().into()))
        })?
        .map_err(|error| {
            ApplyError::of::<Secret>(
                &name,
                kube::Error::Service(format!("cannot make SFTP host keys: {error}").into()),
            )
        })?;
    let secret = desired_host_keys_secret(server, &keys);
    let created = api.create(&PostParams::default(), &secret).await;
    writes.record("Secret");
    match created {
        Ok(created) => Ok(HostKeysState::Ready {
            written: Some((created.object_ref(&()), Applied::Created)),
            // Just generated, so they parse; an empty list would only make the probe refuse.
            public_keys: public_keys(&secret).unwrap_or_default(),
        }),
        // Made meanwhile (by another replica of the operator before its lease ran out): its
        // keys are the ones the pods mount.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let found = api
                .get_opt(&name)
                .await
                .map_err(|source| ApplyError::read::<Secret>(&name, source))?;
            Ok(HostKeysState::Ready {
                written: None,
                public_keys: found
                    .as_ref()
                    .and_then(|secret| public_keys(secret).ok())
                    .unwrap_or_default(),
            })
        }
        Err(source) => Err(ApplyError::of::<Secret>(&name, source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};

    #[test]
    fn the_secret_holds_two_keys_of_two_types_and_is_owned_by_the_server() {
        let server = server(fixtures::MINIMAL);
        let keys = generate_host_keys().unwrap();
        let secret = desired_host_keys_secret(&server, &keys);
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("minimal-sftp-host-keys")
        );
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("FtpServer", Some(true))
        );
        assert!(missing_keys(&secret).is_empty());
        let algorithms: Vec<String> = HOST_KEYS
            .iter()
            .map(|name| {
                let text = &secret.data.as_ref().unwrap()[*name].0;
                PrivateKey::from_openssh(text)
                    .unwrap()
                    .algorithm()
                    .to_string()
            })
            .collect();
        assert_eq!(algorithms, ["ssh-ed25519", "ecdsa-sha2-nistp256"]);
        // Two makings are two identities: which is why the Secret is made only once.
        assert_ne!(generate_host_keys().unwrap(), keys);
        let mut partial = secret.clone();
        partial.data.as_mut().unwrap().remove(ECDSA_KEY);
        assert_eq!(missing_keys(&partial), [ECDSA_KEY]);
        // The public halves, as clients see them, in the Secret's order.
        let public = public_keys(&secret).unwrap();
        assert_eq!(
            public
                .iter()
                .map(|k| k.algorithm().to_string())
                .collect::<Vec<_>>(),
            ["ssh-ed25519", "ecdsa-sha2-nistp256"]
        );
        let mut garbled = secret.clone();
        garbled
            .data
            .as_mut()
            .unwrap()
            .insert(ED25519_KEY.to_owned(), ByteString(b"not a key".to_vec()));
        assert_eq!(public_keys(&garbled).unwrap_err().0, ED25519_KEY);
    }
}
