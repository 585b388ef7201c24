//! Server-side apply of the desired objects, skipped when the cached object already holds every
//! field we want: a quiet reconcile makes no API call at all.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::build::MANAGER;
use super::metrics::Metrics;

/// Whether an apply changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Created,
    Updated,
}

/// Applies `desired` unless `cached` already matches it; returns what happened.
pub async fn apply<K>(
    api: &Api<K>,
    desired: &K,
    cached: Option<&K>,
    metrics: &Metrics,
) -> Result<Applied, kube::Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    if let Some(cached) = cached
        && holds(cached, desired)
    {
        return Ok(Applied::Unchanged);
    }
    let mut result = match server_side_apply(api, desired, metrics).await {
        // A hand edit that keyed list entries differently (say a second port named `ftp`)
        // makes the merged object invalid: replace our lists wholesale, then apply again.
        Err(kube::Error::Api(status)) if status.code == 422 && cached.is_some() => {
            merge_patch(api, desired, metrics).await?;
            server_side_apply(api, desired, metrics).await?
        }
        other => other?,
    };
    if !holds(&result, desired) {
        // Another manager owns list entries we do not want, e.g. an extra Service port;
        // apply cannot remove what it does not own, a merge patch replacing the list can.
        result = merge_patch(api, desired, metrics).await?;
    }
    let changed = cached.and_then(|c| c.resource_version()) != result.resource_version();
    Ok(match cached {
        None => Applied::Created,
        Some(_) if changed => Applied::Updated,
        Some(_) => Applied::Unchanged,
    })
}

/// Deletes an object this owner no longer wants; one already gone is fine.
pub async fn delete<K>(api: &Api<K>, name: &str, metrics: &Metrics) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let result = api.delete(name, &DeleteParams::background()).await;
    metrics.api_write(&K::kind(&()));
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Deletes an object but leaves its dependents (a StatefulSet's pods) to be adopted by the
/// object that replaces it.
pub async fn orphan<K>(api: &Api<K>, name: &str, metrics: &Metrics) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let result = api.delete(name, &DeleteParams::orphan()).await;
    metrics.api_write(&K::kind(&()));
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

async fn server_side_apply<K>(
    api: &Api<K>,
    desired: &K,
    metrics: &Metrics,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let params = PatchParams::apply(MANAGER).force();
    let result = api
        .patch(&desired.name_any(), &params, &Patch::Apply(desired))
        .await;
    metrics.api_write(&K::kind(&()));
    result
}

async fn merge_patch<K>(api: &Api<K>, desired: &K, metrics: &Metrics) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let result = api
        .patch(&desired.name_any(), &params, &Patch::Merge(desired))
        .await;
    metrics.api_write(&K::kind(&()));
    result
}

/// True when every field set in `desired` has the same value in `live`. The apiserver adds
/// defaults and other managers' fields, so equality would never hold; a subset check does.
pub fn holds<K: Serialize>(live: &K, desired: &K) -> bool {
    match (serde_json::to_value(live), serde_json::to_value(desired)) {
        (Ok(live), Ok(desired)) => is_subset(&desired, &live),
        _ => false,
    }
}

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
        // Lists are owned whole: same length, element by element.
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(d, l)| is_subset(d, l))
        }
        (d, l) => d == l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_apiserver_still_hold() {
        let desired = json!({"spec": {"ports": [{"port": 21, "protocol": "TCP"}], "selector": {}}});
        let live = json!({"spec": {"ports": [{"port": 21, "protocol": "TCP", "nodePort": 31000}],
                                  "clusterIP": "10.0.0.1"}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_changed_value_an_extra_port_or_a_missing_field_does_not_hold() {
        let desired = json!({"spec": {"ports": [{"port": 21}]}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 2121}]}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 21}, {"port": 22}]}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {}})));
        assert!(!is_subset(
            &json!({"metadata": {"annotations": {"a": "1"}}}),
            &json!({"metadata": {}})
        ));
    }
}
