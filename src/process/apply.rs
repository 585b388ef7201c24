//! Server-side apply of the desired objects, one field manager, `force` kept. An apply is skipped
//! when the cached object already holds what applying would produce: every field we want has our
//! value, and we own no field we no longer want. Fields of other managers (a policy engine's
//! volume, `kubectl rollout restart`'s annotation) are neither compared nor touched, so a quiet
//! reconcile makes no API call and nothing fights over a list.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api_writes::ApiWrites;
use super::errors::ApplyError;

/// The field manager of every apply, and the value of the children's `managed-by` label.
pub const MANAGER: &str = "ftp-operator";

/// Whether an apply changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Created,
    Updated,
}

/// Applies `desired` unless `cached` already holds it; returns what happened.
pub async fn apply<K>(
    api: &Api<K>,
    desired: &K,
    cached: Option<&K>,
    writes: &ApiWrites,
) -> Result<Applied, ApplyError>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    if let Some(cached) = cached
        && in_effect(cached, desired)
    {
        return Ok(Applied::Unchanged);
    }
    let params = PatchParams::apply(MANAGER).force();
    let name = desired.name_any();
    let result = api.patch(&name, &params, &Patch::Apply(desired)).await;
    writes.record(&K::kind(&()));
    let result = result.map_err(|source| ApplyError::of::<K>(&name, source))?;
    let changed = cached.and_then(|c| c.resource_version()) != result.resource_version();
    Ok(match cached {
        None => Applied::Created,
        Some(_) if changed => Applied::Updated,
        Some(_) => Applied::Unchanged,
    })
}

/// Deletes an object this owner no longer wants; one already gone is fine.
pub async fn delete<K>(api: &Api<K>, name: &str, writes: &ApiWrites) -> Result<(), ApplyError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    remove(api, name, &DeleteParams::background(), writes).await
}

/// Deletes an object but leaves its dependents (a StatefulSet's pods) to be adopted by the
/// object that replaces it.
pub async fn orphan<K>(api: &Api<K>, name: &str, writes: &ApiWrites) -> Result<(), ApplyError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    remove(api, name, &DeleteParams::orphan(), writes).await
}

async fn remove<K>(
    api: &Api<K>,
    name: &str,
    params: &DeleteParams,
    writes: &ApiWrites,
) -> Result<(), ApplyError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let result = api.delete(name, params).await;
    writes.record(&K::kind(&()));
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ApplyError::of::<K>(name, source)),
    }
}

/// True when applying `desired` to `live` would change nothing: `live` holds every field of
/// `desired`, and this manager owns no field of `live` that `desired` leaves out (an apply would
/// remove it).
pub fn in_effect<K: Resource + Serialize>(live: &K, desired: &K) -> bool {
    let Some(owned) = owned_fields(live.meta().managed_fields.as_deref()) else {
        // We own nothing there yet: only an apply makes the fields ours.
        return false;
    };
    match (serde_json::to_value(live), serde_json::to_value(desired)) {
        (Ok(live), Ok(desired)) => {
            is_subset(&desired, &live)
                && only_wanted(owned, &desired)
                && atomic_lists_match(owned, &desired, &live)
        }
        _ => false,
    }
}

/// The field set this manager's applies own (`fieldsV1`).
fn owned_fields(entries: Option<&[ManagedFieldsEntry]>) -> Option<&Value> {
    entries?
        .iter()
        .find(|entry| {
            entry.manager.as_deref() == Some(MANAGER)
                && entry.operation.as_deref() == Some("Apply")
                && entry.subresource.as_deref().unwrap_or_default().is_empty()
        })?
        .fields_v1
        .as_ref()
        .map(|fields| &fields.0)
}

/// True when every field set in `desired` has the same value in `live`. The apiserver adds
/// defaults and other managers add fields, so equality would never hold; a subset check does.
fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        // Unset, empty map and empty list are all "nothing" to the apiserver.
        (Value::Null, _) => true,
        (Value::Object(d), _) if d.is_empty() => {
            matches!(live, Value::Null) || live.as_object().is_some()
        }
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(key, value)| is_subset(value, l.get(key).unwrap_or(&Value::Null))),
        (Value::Object(_), Value::Null) => false,
        // Lists of maps (containers, ports, volumes, env) merge by key: other managers' entries
        // may sit among ours, so each of ours must be found, each in a live entry of its own.
        (Value::Array(d), Value::Array(l)) if d.iter().all(Value::is_object) => {
            let mut used = vec![false; l.len()];
            d.iter().all(|wanted| {
                let found = l
                    .iter()
                    .enumerate()
                    .find(|(i, entry)| !used[*i] && is_subset(wanted, entry));
                found.map(|(i, _)| used[i] = true).is_some()
            })
        }
        // Lists of scalars (args, source ranges) are atomic: equal or not.
        (d, l) => d == l,
    }
}

/// True when every list this manager owns whole (an atomic list, such as an EndpointSlice's
/// `endpoints`: `f:<name>: {}` in the field set, nothing below) has as many entries live as
/// desired. An apply replaces such a list, so a live entry we no longer want (a deleted pod's
/// endpoint) is a change that the subset check alone would miss.
fn atomic_lists_match(owned: &Value, desired: &Value, live: &Value) -> bool {
    let Some(fields) = owned.as_object() else {
        return true;
    };
    fields.iter().all(|(path, below)| {
        let Some(name) = path.strip_prefix("f:") else {
            return true;
        };
        let Some(wanted) = desired.get(name) else {
            return true;
        };
        let live = live.get(name).unwrap_or(&Value::Null);
        match (wanted, below.as_object()) {
            (Value::Array(wanted), Some(children)) if children.is_empty() => live
                .as_array()
                .map_or(wanted.is_empty(), |l| l.len() == wanted.len()),
            _ => atomic_lists_match(below, wanted, live),
        }
    })
}

/// True when every field in the manager's field set (`fieldsV1`: `f:<name>` for a field,
/// `k:<json>` for a list entry by key, `v:<json>` for a set entry, `i:<n>` by position) is still
/// set in `desired`.
fn only_wanted(owned: &Value, desired: &Value) -> bool {
    let Some(fields) = owned.as_object() else {
        return true;
    };
    fields.iter().all(|(path, below)| {
        if path == "." {
            return true;
        }
        let child = if let Some(name) = path.strip_prefix("f:") {
            desired.get(name)
        } else if let Some(key) = path.strip_prefix("k:") {
            serde_json::from_str::<serde_json::Map<String, Value>>(key)
                .ok()
                .and_then(|key| {
                    desired.as_array()?.iter().find(|entry| {
                        key.iter()
                            .all(|(field, value)| entry.get(field) == Some(value))
                    })
                })
        } else if let Some(value) = path.strip_prefix("v:") {
            serde_json::from_str::<Value>(value)
                .ok()
                .and_then(|value| desired.as_array()?.iter().find(|entry| **entry == value))
        } else if let Some(index) = path.strip_prefix("i:") {
            index
                .parse::<usize>()
                .ok()
                .and_then(|i| desired.as_array()?.get(i))
        } else {
            None
        };
        match child {
            None | Some(Value::Null) => false,
            Some(child) => only_wanted(below, child),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_apiserver_still_hold() {
        let desired = json!({"spec": {"ports": [{"port": 21, "protocol": "TCP"}], "selector": {}}});
        let live = json!({"spec": {"ports": [{"port": 21, "protocol": "TCP", "nodePort": 31000}],
                                  "clusterIP": "10.0.0.1"}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_changed_value_or_a_missing_field_does_not_hold() {
        let desired = json!({"spec": {"ports": [{"port": 21}]}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 2121}]}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {}})));
        assert!(!is_subset(
            &json!({"metadata": {"annotations": {"a": "1"}}}),
            &json!({"metadata": {}})
        ));
        assert!(!is_subset(
            &json!({"args": ["--a", "--b"]}),
            &json!({"args": ["--b", "--a"]})
        ));
    }

    #[test]
    fn entries_other_managers_added_to_a_list_still_hold() {
        let desired = json!({"volumes": [{"name": "config"}, {"name": "data"}]});
        let live = json!({"volumes": [{"name": "config"}, {"name": "policy"}, {"name": "data"}]});
        assert!(is_subset(&desired, &live));
        // But one live entry cannot stand for two of ours.
        let twice = json!({"volumes": [{"name": "config"}, {"name": "config"}]});
        assert!(!is_subset(
            &twice,
            &json!({"volumes": [{"name": "config"}]})
        ));
    }

    fn service(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    const LIVE: &str = r#"
metadata:
  name: s
  annotations: {ours: "1", restartedAt: "now"}
  managedFields:
  - manager: ftp-operator
    operation: Apply
    apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata: {f:annotations: {f:ours: {}}}
      f:spec:
        f:ports:
          k:{"port":21,"protocol":"TCP"}: {.: {}, f:name: {}, f:port: {}}
  - manager: kubectl-rollout
    operation: Update
    apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata: {f:annotations: {f:restartedAt: {}}}
spec:
  ports: [{name: ftp, port: 21, protocol: TCP}, {name: extra, port: 22, protocol: TCP}]
"#;

    #[test]
    fn other_managers_fields_leave_an_applied_object_in_effect() {
        let desired = service(
            "metadata: {name: s, annotations: {ours: '1'}}\nspec: {ports: [{name: ftp, port: 21, protocol: TCP}]}",
        );
        assert!(in_effect(&service(LIVE), &desired));
    }

    #[test]
    fn a_field_we_own_but_no_longer_want_needs_an_apply() {
        // The annotation was ours; the desired object dropped it, so an apply must remove it.
        let desired =
            service("metadata: {name: s}\nspec: {ports: [{name: ftp, port: 21, protocol: TCP}]}");
        assert!(!in_effect(&service(LIVE), &desired));
        // Likewise a port we own that the desired object no longer lists.
        let desired = service(
            "metadata: {name: s, annotations: {ours: '1'}}\nspec: {ports: [{name: ftp, port: 2100, protocol: TCP}]}",
        );
        assert!(!in_effect(&service(LIVE), &desired));
    }

    #[test]
    fn an_object_we_never_applied_needs_an_apply() {
        let mut live = service(LIVE);
        live.metadata.managed_fields = None;
        let desired = service("metadata: {name: s, annotations: {ours: '1'}}");
        assert!(!in_effect(&live, &desired));
    }

    #[test]
    fn an_atomic_list_with_an_entry_we_no_longer_want_needs_an_apply() {
        let slice = |endpoints: &str| -> k8s_openapi::api::discovery::v1::EndpointSlice {
            serde_yaml::from_str(&format!(
                "metadata:\n  name: s\n  managedFields:\n  - manager: ftp-operator\n    operation: Apply\n    apiVersion: discovery.k8s.io/v1\n    fieldsType: FieldsV1\n    fieldsV1: {{f:addressType: {{}}, f:endpoints: {{}}}}\naddressType: IPv4\nendpoints: {endpoints}"
            ))
            .unwrap()
        };
        let live = slice("[{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]");
        assert!(!in_effect(&live, &slice("[{addresses: [10.0.0.1]}]")));
        assert!(in_effect(
            &live,
            &slice("[{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]")
        ));
    }
}
