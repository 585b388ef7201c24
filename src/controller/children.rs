//! Carrying out a [`Plan`]: the children's names are claimed, then the users Secret, the
//! ConfigMap, the Services, the StatefulSet, the EndpointSlices and the PodDisruptionBudget are
//! applied, and the children the plan no longer wants are deleted. A name held by an object
//! this server does not control stalls before any child is applied.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::api::FtpServer;
use crate::process::apply::{Applied, apply, delete, orphan};
use crate::process::errors::ApplyError;

use super::context::Context;
use super::health::WorkloadSummary;
use super::node_keepalive;
use super::observe::Observed;
use super::plan::{Deletion, Plan, plan};
use super::probe::AccountState;
use super::sftp_host_keys::{self, HostKeysState};
use super::status::Outcome;
use super::users::Gathered;
use super::validate::Validated;
use super::{budgets, ownership};

/// What applying the children did so far: kept when an API call fails half-way, so the
/// children written before it still get their Events.
#[derive(Debug, Default)]
pub struct Progress {
    /// Every child written or found unchanged.
    pub changes: Vec<(ObjectReference, Applied)>,
    /// Kept on its image while another server rolls to the new default.
    pub image_waiting: bool,
    /// The image without a probe account, when it is not the operator's own.
    pub probe_image: Option<String>,
}

/// Plans the children of a valid server and applies the plan.
pub async fn apply_children(
    server: &FtpServer,
    valid: &Validated,
    observed: &Observed,
    users: &Users<'_>,
    ctx: &Context,
) -> (Result<Outcome, ApplyError>, Progress) {
    let mut progress = Progress::default();
    let result = apply_plan(server, valid, observed, users, ctx, &mut progress).await;
    (result, progress)
}

/// The users file to apply, and the generated Secret as the API has it.
pub struct Users<'a> {
    pub gathered: &'a Gathered,
    pub live: Option<&'a Secret>,
}

async fn apply_plan(
    server: &FtpServer,
    valid: &Validated,
    observed: &Observed,
    users: &Users<'_>,
    ctx: &Context,
    progress: &mut Progress,
) -> Result<Outcome, ApplyError> {
    let namespace = server.namespace().unwrap_or_default();
    let workload = observed.workload();
    let image = ctx.image_gate.choose(
        server,
        workload.as_ref(),
        &ctx.settings.default_image,
        |holder| image_rollout_done(ctx, holder),
    );
    progress.image_waiting = image.waiting;
    let changes = &mut progress.changes;
    // The probe account goes only into the config of servers on this operator's own image: an
    // older ftp-server refuses the unknown `probe_user` key, and would keep its old settings (and
    // fail to start again) for as long as it runs that image.
    let account = if ctx.prober.enabled() && image.image != ctx.settings.default_image {
        progress.probe_image = Some(image.image.clone());
        AccountState::Off
    } else {
        ctx.prober.account(server, &ctx.client).await?
    };
    let (probe_account, probe_secret) = match account {
        AccountState::Off => (None, None),
        AccountState::Taken(invalid) => return Ok(Outcome::Stalled(invalid)),
        AccountState::Ready(account, unwritten) => (Some(account), unwritten),
    };
    let probe_user = probe_account.as_ref().map(|account| account.probe_user());
    let Plan {
        children,
        replace_stateful_set,
        deletions,
    } = plan(
        server,
        valid,
        observed,
        &image.image,
        probe_user.as_ref(),
        users.gathered,
    );

    let client = &ctx.client;
    let writes = &ctx.metrics.api_writes;
    let config_map_api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let service_api: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let set_api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let budget_api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let cached_service = |name: &str| {
        observed
            .services
            .iter()
            .find(|s| s.name_any() == name)
            .map(|s| &**s)
    };
    let cached_slice = |name: &str| {
        observed
            .endpoint_slices
            .iter()
            .find(|s| s.name_any() == name)
            .map(|s| &**s)
    };

    let mut taken = vec![
        ownership::check_name(
            server,
            &secret_api,
            &children.users_secret.name_any(),
            users.live,
        )
        .await?,
        ownership::check_name(
            server,
            &config_map_api,
            &children.config_map.name_any(),
            observed.config_map.as_deref(),
        )
        .await?,
        ownership::check_name(
            server,
            &set_api,
            &children.stateful_set.name_any(),
            observed.stateful_set.as_deref(),
        )
        .await?,
    ];
    for service in &children.services {
        let name = service.name_any();
        taken
            .push(ownership::check_name(server, &service_api, &name, cached_service(&name)).await?);
    }
    for slice in &children.endpoint_slices {
        let name = slice.name_any();
        taken.push(ownership::check_name(server, &slice_api, &name, cached_slice(&name)).await?);
    }
    if let Some(budget) = &children.disruption_budget {
        taken.push(
            ownership::check_name(
                server,
                &budget_api,
                &budget.name_any(),
                observed.disruption_budget.as_deref(),
            )
            .await?,
        );
    }
    if let Some(invalid) = taken.into_iter().flatten().next() {
        return Ok(Outcome::Stalled(invalid));
    }
    if let Some(budgets) = &ctx.settings.cluster_budgets {
        let live: Vec<&Service> = observed.services.iter().map(|s| &**s).collect();
        if let Some(invalid) =
            budgets::check(client, budgets, &server.spec, &children.services, &live).await?
        {
            return Ok(Outcome::Stalled(invalid));
        }
    }

    // The SFTP host keys before the StatefulSet that mounts them: a pod would wait for a missing
    // Secret. Made once, never patched; a Secret of that name without both keys stalls.
    let sftp_host_keys =
        match sftp_host_keys::ensure(server, &ctx.client, &ctx.metrics.api_writes).await? {
            HostKeysState::Ready {
                written,
                public_keys,
            } => {
                changes.extend(written);
                public_keys
            }
            HostKeysState::Unusable(invalid) => return Ok(Outcome::Stalled(invalid)),
        };
    // The probe Secret before the ConfigMap that carries its hash: should the ConfigMap's write
    // fail, the next reconcile renders the same account again instead of making a new one.
    if let (Some(account), Some(unwritten)) = (&probe_account, probe_secret) {
        let applied = apply(
            &secret_api,
            &unwritten.desired,
            unwritten.live.as_ref(),
            writes,
        )
        .await?;
        changes.push((unwritten.desired.object_ref(&()), applied));
        ctx.prober.remember(server, account);
    }
    // Before the StatefulSet: a new pod cannot start without the Secret it mounts.
    let users_secret = &children.users_secret;
    let applied_users = apply(&secret_api, users_secret, users.live, writes).await?;
    changes.push((users_secret.object_ref(&()), applied_users));
    let config_map = &children.config_map;
    let applied_config_map = apply(
        &config_map_api,
        config_map,
        observed.config_map.as_deref(),
        writes,
    )
    .await?;
    changes.push((config_map.object_ref(&()), applied_config_map));
    // The Services and the StatefulSet do not wait for each other: creating a LoadBalancer
    // Service is slow (node ports, cluster IP; a cloud balancer behind it), and the rollout
    // should not queue behind it. With 200 FtpServers applied at once, in sequence the
    // workloads started ~8 s later (bench-controller.sh).
    let apply_services = async {
        let mut applied = Vec::new();
        for service in &children.services {
            let result = apply(
                &service_api,
                service,
                cached_service(&service.name_any()),
                writes,
            )
            .await?;
            applied.push((service.object_ref(&()), result));
        }
        Ok::<_, ApplyError>(applied)
    };
    let stateful_set = &children.stateful_set;
    let apply_set = async {
        match observed.stateful_set.as_deref() {
            Some(live) if replace_stateful_set => {
                orphan(&set_api, &live.name_any(), writes).await?;
                Ok(Applied::Updated)
            }
            live => apply(&set_api, stateful_set, live, writes).await,
        }
    };
    let (applied_services, applied_set) = futures::try_join!(apply_services, apply_set)?;
    changes.extend(applied_services);
    changes.push((stateful_set.object_ref(&()), applied_set));

    for slice in &children.endpoint_slices {
        let result = apply(&slice_api, slice, cached_slice(&slice.name_any()), writes).await?;
        changes.push((slice.object_ref(&()), result));
    }
    if let Some(budget) = &children.disruption_budget {
        let result = apply(
            &budget_api,
            budget,
            observed.disruption_budget.as_deref(),
            writes,
        )
        .await?;
        changes.push((budget.object_ref(&()), result));
    }

    for deletion in &deletions {
        match deletion {
            Deletion::Service(name) => delete(&service_api, name, writes).await?,
            Deletion::EndpointSlice(name) => delete(&slice_api, name, writes).await?,
            Deletion::DisruptionBudget(name) => delete(&budget_api, name, writes).await?,
            Deletion::Deployment(name) => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
                delete(&api, name, writes).await?;
            }
        }
    }
    if probe_account.is_some() {
        // Only now: until this generation's children are applied, the probe leaves it alone.
        let sftp = sftp_host_keys::sftp_enabled(server).then_some(sftp_host_keys);
        ctx.prober.decided(server, valid, sftp);
    }
    Ok(Outcome::Applied {
        public_address: observed.public_address(server),
        passive_ports: valid.passive.to_string(),
        workload_changed: applied_set != Applied::Unchanged,
        keepalive: valid.keepalive_in_force,
        node_keepalive: node_keepalive::node_keepalive(server, ctx),
    })
}

/// Whether the server holding the image-rollout slot is done: rolled out to the default image,
/// or gone.
fn image_rollout_done(ctx: &Context, holder: &ObjectRef<FtpServer>) -> bool {
    let set = holder.namespace.as_deref().and_then(|ns| {
        let (_, store) = ctx
            .stateful_sets
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|scope| scope == ns))?;
        store.get(&ObjectRef::new(&holder.name).within(ns))
    });
    set.is_none_or(|set| {
        let summary = WorkloadSummary::from(&*set);
        summary.rolled_out && summary.image.as_deref() == Some(&ctx.settings.default_image)
    })
}
