//! What one reconcile decides, as pure functions: the children to apply and the ones to delete
//! ([`plan`]), and when to look again ([`next`]). The async shell in [`super::children`] and
//! [`super::reconcile`] only carries these decisions out; which Events to emit is decided, as
//! purely, in [`super::events`].

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::FtpServer;
use crate::ftp::config::ProbeUser;

use super::budgets::{AZURE_RULES_EXHAUSTED, NODE_PORTS_EXHAUSTED};
use super::build;
use super::observe::Observed;
use super::ownership::NAME_TAKEN;
use super::status::Outcome;
use super::users::Gathered;
use super::validate::Validated;

/// The objects a server should have, as built from its spec and what was observed.
#[derive(Debug, Clone)]
pub struct Children {
    /// The users file: FtpUsers and `spec.users` together.
    pub users_secret: Secret,
    pub config_map: ConfigMap,
    pub stateful_set: StatefulSet,
    /// The control Service, then one per replica where the routing needs them.
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Only with more than one replica.
    pub disruption_budget: Option<PodDisruptionBudget>,
}

/// A child this server controls and no longer wants, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// A per-replica Service of a replica scaled away (or of another routing).
    Service(String),
    /// An EndpointSlice of a replica scaled away (or of another routing).
    EndpointSlice(String),
    /// The PodDisruptionBudget, once down to one replica.
    DisruptionBudget(String),
    /// The Deployment of earlier versions, once the StatefulSet serves in its place.
    Deployment(String),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub children: Children,
    /// The live StatefulSet cannot take the desired one in place (its selector or claim
    /// templates differ): it is deleted with its pods left running, and the next pass creates
    /// the new one, which adopts and then replaces them one at a time.
    pub replace_stateful_set: bool,
    /// Deleted after the children are applied.
    pub deletions: Vec<Deletion>,
}

/// The children of `server` running `image`, and what of the observed it no longer wants.
pub fn plan(
    server: &FtpServer,
    valid: &Validated,
    observed: &Observed,
    image: &str,
    probe_user: Option<&ProbeUser>,
    users: &Gathered,
) -> Plan {
    let public_address = observed.public_address(server);
    let pods: Vec<&Pod> = observed.pods.iter().map(|p| &**p).collect();
    let slices = build::slices_in_use(server, &pods);
    let children = Children {
        users_secret: build::desired_users_secret(server, users),
        config_map: build::desired_config_map(server, valid, public_address.as_deref(), probe_user),
        stateful_set: build::desired_stateful_set(server, valid, image),
        services: build::desired_services(
            server,
            valid,
            observed.load_balancer_address().as_deref(),
            slices,
        ),
        endpoint_slices: build::desired_endpoint_slices(server, valid, &pods, slices),
        disruption_budget: build::desired_disruption_budget(server),
    };
    let replace_stateful_set = observed
        .stateful_set
        .as_deref()
        .is_some_and(|live| !build::updatable_in_place(live, &children.stateful_set));
    let deletions = deletions(server, observed, &children);
    Plan {
        children,
        replace_stateful_set,
        deletions,
    }
}

/// What this server no longer wants, and only what it controls: a name held by anyone else
/// is never deleted.
fn deletions(server: &FtpServer, observed: &Observed, children: &Children) -> Vec<Deletion> {
    let controlled = |meta: &ObjectMeta| {
        meta.owner_references.iter().flatten().any(|owner| {
            owner.controller == Some(true) && Some(&owner.uid) == server.metadata.uid.as_ref()
        })
    };
    let mut deletions = Vec::new();
    deletions.extend(
        observed
            .services
            .iter()
            .filter(|s| controlled(&s.metadata))
            .filter(|s| {
                !children
                    .services
                    .iter()
                    .any(|d| d.name_any() == s.name_any())
            })
            .map(|s| Deletion::Service(s.name_any())),
    );
    deletions.extend(
        observed
            .endpoint_slices
            .iter()
            .filter(|s| controlled(&s.metadata))
            .filter(|s| {
                !children
                    .endpoint_slices
                    .iter()
                    .any(|d| d.name_any() == s.name_any())
            })
            .map(|s| Deletion::EndpointSlice(s.name_any())),
    );
    if children.disruption_budget.is_none()
        && let Some(unwanted) = observed
            .disruption_budget
            .as_ref()
            .filter(|b| controlled(&b.metadata))
    {
        deletions.push(Deletion::DisruptionBudget(unwanted.name_any()));
    }
    if let Some(legacy) = observed
        .legacy_deployment
        .as_ref()
        .filter(|d| controlled(&d.metadata))
    {
        let serving = observed
            .workload()
            .is_some_and(|w| w.ready >= server.spec.replicas.min(1));
        if serving {
            deletions.push(Deletion::Deployment(legacy.name_any()));
        }
    }
    deletions
}

/// What a finished reconcile is waiting for, beside its outcome.
#[derive(Debug, Clone, Default)]
pub struct Waits {
    /// How long the control Service has been without a balancer address.
    pub balancer_waited: Option<Duration>,
    /// How long it may be before the server is Stalled saying so.
    pub balancer_timeout: Duration,
    /// Ready is held until the pods serve the rendered configuration: look again after this.
    pub held_ready: Option<Duration>,
    /// Another server is rolling to the new default image.
    pub image_waiting: bool,
}

/// The periodic resync of a server nothing else wakes; a quiet one writes nothing.
pub const RESYNC: Duration = Duration::from_secs(600);

/// When to reconcile a server again after a pass that did not fail.
pub fn next(outcome: &Outcome, waits: &Waits) -> Duration {
    if let Outcome::Stalled(invalid) = outcome
        && [NAME_TAKEN, NODE_PORTS_EXHAUSTED, AZURE_RULES_EXHAUSTED].contains(&invalid.reason)
    {
        // What blocks it is outside the watches (an object without our labels, the cluster's
        // other Services): look again soon.
        return Duration::from_secs(30);
    }
    if let Some(waited) = waits
        .balancer_waited
        .filter(|waited| *waited < waits.balancer_timeout)
    {
        // Nothing else wakes the server when the address never comes: look at the deadline.
        return waits.balancer_timeout - waited + Duration::from_secs(1);
    }
    if let Some(after) = waits.held_ready {
        // As the hold says: soon for a nudged pod the kubelet syncs within a second or two,
        // later for a pod the operator cannot reach.
        return after;
    }
    if waits.image_waiting {
        // Another server is rolling to the new default image; look again shortly.
        return Duration::from_secs(30);
    }
    RESYNC
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controller::build::fixtures::{self, server, validated};
    use crate::process::errors::Invalid;

    /// An object of `kind`'s YAML, controlled by `owner` (None: by someone else).
    fn child<K: serde::de::DeserializeOwned>(yaml: &str, owner: Option<&FtpServer>) -> Arc<K> {
        let uid = owner.map_or("someone-else", |s| s.metadata.uid.as_deref().unwrap());
        let yaml = format!(
            "metadata: {{{yaml}, ownerReferences: [{{apiVersion: ftpoperator.dev/v1alpha1, kind: FtpServer, name: x, uid: {uid}, controller: true}}]}}"
        );
        Arc::new(serde_yaml::from_str(&yaml).unwrap())
    }

    fn planned(server: &FtpServer, observed: &Observed) -> Plan {
        let users = crate::controller::users::gather(server, &[], None).unwrap();
        plan(
            server,
            &validated(server),
            observed,
            "ftp-server:1",
            None,
            &users,
        )
    }

    #[test]
    fn a_new_server_gets_its_children_and_deletes_nothing() {
        let server = server(fixtures::MINIMAL);
        let plan = planned(&server, &Observed::default());
        assert_eq!(plan.children.config_map.name_any(), "minimal-config");
        assert_eq!(
            plan.children.users_secret.name_any(),
            "minimal-generated-users"
        );
        assert_eq!(plan.children.stateful_set.name_any(), "minimal");
        let services: Vec<_> = plan
            .children
            .services
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(services, ["minimal"]);
        assert!(plan.children.disruption_budget.is_none());
        assert!(!plan.replace_stateful_set);
        assert_eq!(plan.deletions, []);
    }

    #[test]
    fn only_unwanted_children_this_server_controls_are_deleted() {
        let server = server(fixtures::MINIMAL);
        let observed = Observed {
            services: vec![
                child("name: minimal", Some(&server)),
                child("name: minimal-pasv-1", Some(&server)),
                child("name: minimal-users-own", None),
            ],
            endpoint_slices: vec![
                child("name: minimal-1", Some(&server)),
                child("name: minimal-2", None),
            ],
            disruption_budget: Some(child("name: minimal", Some(&server))),
            ..Observed::default()
        };
        let plan = planned(&server, &observed);
        assert_eq!(
            plan.deletions,
            [
                Deletion::Service("minimal-pasv-1".into()),
                Deletion::EndpointSlice("minimal-1".into()),
                Deletion::DisruptionBudget("minimal".into()),
            ]
        );
        // A budget someone else controls stays, even below two replicas.
        let observed = Observed {
            disruption_budget: Some(child("name: minimal", None)),
            ..Observed::default()
        };
        assert_eq!(planned(&server, &observed).deletions, []);
    }

    #[test]
    fn the_earlier_deployment_goes_only_once_the_stateful_set_serves() {
        let server = server(fixtures::MINIMAL);
        let set = |ready: i32| -> Arc<StatefulSet> {
            Arc::new(
                serde_yaml::from_str(&format!(
                    "metadata: {{name: minimal, generation: 1}}\nspec: {{replicas: 1, selector: {{}}, template: {{}}}}\nstatus: {{replicas: 1, readyReplicas: {ready}, observedGeneration: 1}}"
                ))
                .unwrap(),
            )
        };
        let legacy: Arc<k8s_openapi::api::apps::v1::Deployment> =
            child("name: minimal", Some(&server));
        let starting = Observed {
            legacy_deployment: Some(legacy.clone()),
            stateful_set: Some(set(0)),
            ..Observed::default()
        };
        assert_eq!(planned(&server, &starting).deletions, []);
        let serving = Observed {
            stateful_set: Some(set(1)),
            ..starting
        };
        assert_eq!(
            planned(&server, &serving).deletions,
            [Deletion::Deployment("minimal".into())]
        );
    }

    #[test]
    fn a_stateful_set_that_cannot_change_in_place_is_replaced() {
        let server = server(fixtures::MINIMAL);
        let mut live = planned(&server, &Observed::default()).children.stateful_set;
        let observed = Observed {
            stateful_set: Some(Arc::new(live.clone())),
            ..Observed::default()
        };
        assert!(!planned(&server, &observed).replace_stateful_set);
        let spec = live.spec.as_mut().unwrap();
        spec.selector.match_labels = Some([("other".to_owned(), "x".to_owned())].into());
        let observed = Observed {
            stateful_set: Some(Arc::new(live)),
            ..Observed::default()
        };
        assert!(planned(&server, &observed).replace_stateful_set);
    }

    fn stalled(reason: &'static str) -> Outcome {
        Outcome::Stalled(Invalid {
            reason,
            message: String::new(),
        })
    }

    #[test]
    fn a_server_is_looked_at_again_when_nothing_else_would_wake_it() {
        let quiet = Waits {
            balancer_timeout: Duration::from_secs(300),
            ..Waits::default()
        };
        let secs = |outcome: &Outcome, waits: &Waits| next(outcome, waits).as_secs();
        // A name held by another object, or the cluster's budgets: outside the watches.
        assert_eq!(secs(&stalled(NAME_TAKEN), &quiet), 30);
        assert_eq!(secs(&stalled(NODE_PORTS_EXHAUSTED), &quiet), 30);
        // A spec the user must change wakes the server when changed.
        assert_eq!(secs(&stalled("InvalidSpec"), &quiet), 600);
        // Waiting for the balancer's address: just after the deadline, then no more.
        let waiting = Waits {
            balancer_waited: Some(Duration::from_secs(100)),
            ..quiet.clone()
        };
        assert_eq!(secs(&stalled("InvalidSpec"), &waiting), 201);
        let overdue = Waits {
            balancer_waited: Some(Duration::from_secs(400)),
            ..quiet.clone()
        };
        assert_eq!(secs(&stalled("InvalidSpec"), &overdue), 600);
        let held = Waits {
            held_ready: Some(Duration::from_secs(1)),
            image_waiting: true,
            ..quiet.clone()
        };
        assert_eq!(secs(&stalled("InvalidSpec"), &held), 1);
        let image = Waits {
            image_waiting: true,
            ..quiet
        };
        assert_eq!(secs(&stalled("InvalidSpec"), &image), 30);
    }
}
