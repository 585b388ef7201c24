//! No adoption: a child's name held by an object this FtpServer does not control is reported,
//! never applied over (server-side apply with `force` would take the object, and the garbage
//! collector would later delete it with the FtpServer).

use std::fmt::Debug;

use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::FtpServer;

use crate::process::errors::ApplyError;
use crate::process::errors::Invalid;

/// The Stalled reason for a child name held by someone else.
pub const NAME_TAKEN: &str = "NameTaken";

/// Why `object` is not this server's to change, or None when `server` is its controller.
pub fn foreign_holder<K: Resource<DynamicType = ()>>(
    server: &FtpServer,
    object: &K,
) -> Option<Invalid> {
    let uid = server.uid();
    let controller = object
        .owner_references()
        .iter()
        .find(|owner| owner.controller == Some(true));
    if controller.is_some_and(|owner| Some(&owner.uid) == uid.as_ref()) {
        return None;
    }
    let kind = K::kind(&());
    let name = object.name_any();
    let held_by = match controller {
        Some(owner) if owner.kind == "FtpServer" && owner.name == server.name_any() => format!(
            "an earlier FtpServer {} (uid {}) that the garbage collector has not removed yet",
            owner.name, owner.uid
        ),
        Some(owner) => format!("{} {}", owner.kind, owner.name),
        None => "no controller: it was created outside this operator".to_owned(),
    };
    Some(Invalid {
        reason: NAME_TAKEN,
        message: format!(
            "{kind} {name} already exists and is controlled by {held_by}; this FtpServer needs \
             that name and changes nothing of it: delete or rename that {kind}, or give the \
             FtpServer another name"
        ),
    })
}

/// Checks who holds `name`: through the cache when it has the object, else with a read (the
/// caches hold only objects carrying this operator's labels, so a user's object is not there).
pub async fn check_name<K>(
    server: &FtpServer,
    api: &Api<K>,
    name: &str,
    cached: Option<&K>,
) -> Result<Option<Invalid>, ApplyError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    if let Some(cached) = cached {
        return Ok(foreign_holder(server, cached));
    }
    let found = api
        .get_metadata_opt(name)
        .await
        .map_err(|source| ApplyError::read::<K>(name, source))?;
    Ok(found.and_then(|meta| foreign_holder(server, &meta)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};
    use k8s_openapi::api::core::v1::ConfigMap;

    fn config_map(owner: &str) -> ConfigMap {
        serde_yaml::from_str(&format!("metadata: {{name: minimal-config{owner}}}")).unwrap()
    }

    #[test]
    fn a_child_this_server_controls_is_its_own() {
        let server = server(fixtures::MINIMAL);
        let mut child = config_map("");
        child.metadata.owner_references = server.controller_owner_ref(&()).map(|o| vec![o]);
        assert_eq!(foreign_holder(&server, &child), None);
    }

    #[test]
    fn a_users_object_or_another_owners_is_named_with_the_way_out() {
        let server = server(fixtures::MINIMAL);
        let taken = foreign_holder(&server, &config_map("")).unwrap();
        assert_eq!(taken.reason, "NameTaken");
        assert!(
            taken.message.starts_with(
                "ConfigMap minimal-config already exists and is controlled by no controller"
            ),
            "{}",
            taken.message
        );
        assert!(taken.message.contains("delete or rename that ConfigMap"));

        let mut earlier = config_map("");
        let mut owner = server.controller_owner_ref(&()).unwrap();
        owner.uid = "0000".into();
        earlier.metadata.owner_references = Some(vec![owner]);
        let taken = foreign_holder(&server, &earlier).unwrap();
        assert!(
            taken.message.contains("an earlier FtpServer"),
            "{}",
            taken.message
        );
    }
}
