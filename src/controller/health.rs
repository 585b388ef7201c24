//! Whether the server's workload can become ready, from its pods and the workload's own
//! report, in one place. Written against a summary any workload kind fills (a Deployment today,
//! a StatefulSet too, which has no progress deadline), so status never reads kind-specific
//! fields.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// What a workload says about its rollout, whatever its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadSummary {
    /// The workload's controller has seen its latest spec.
    pub observed: bool,
    pub replicas: i32,
    pub updated: i32,
    pub ready: i32,
    /// The workload's own verdict that the rollout cannot finish: (reason, message).
    pub stuck: Option<(String, String)>,
}

impl From<&Deployment> for WorkloadSummary {
    fn from(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        // Progressing=False is only ever ProgressDeadlineExceeded (kubectl rollout status
        // reads it the same way).
        let stuck = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing" && c.status == "False")
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            });
        WorkloadSummary {
            observed: status.observed_generation >= deployment.metadata.generation,
            replicas: status.replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            stuck,
        }
    }
}

impl From<&StatefulSet> for WorkloadSummary {
    fn from(set: &StatefulSet) -> Self {
        let status = set.status.clone().unwrap_or_default();
        WorkloadSummary {
            observed: status.observed_generation >= set.metadata.generation,
            replicas: status.replicas,
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            // No progress deadline: the pods say what is wrong.
            stuck: None,
        }
    }
}

/// Why the workload cannot become ready, with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
    /// Only a person can fix it (Stalled); otherwise it may pass (Ready=False, Reconciling).
    pub stalled: bool,
}

/// Container waiting reasons the kubelet keeps retrying without success, with the advice.
const WAITING: &[(&str, &str)] = &[
    (
        "ImagePullBackOff",
        "check spec.image, that the registry is reachable and the pull secret",
    ),
    (
        "ErrImagePull",
        "check spec.image, that the registry is reachable and the pull secret",
    ),
    (
        "InvalidImageName",
        "fix spec.image (or the operator's default image)",
    ),
    (
        "CrashLoopBackOff",
        "the server keeps exiting: read its log (kubectl logs) for why",
    ),
    (
        "CreateContainerConfigError",
        "a Secret or ConfigMap the pod mounts is missing or lacks a key",
    ),
    (
        "CreateContainerError",
        "the container runtime cannot create the container: see the pod's events",
    ),
    (
        "RunContainerError",
        "the container runtime cannot start the container: see the pod's events",
    ),
];

/// The first problem the workload or its pods report, or None while all looks like progress.
pub fn workload_problem(workload: Option<&WorkloadSummary>, pods: &[&Pod]) -> Option<Problem> {
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = pod.status.clone().unwrap_or_default();
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in containers {
            let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = waiting.reason.as_deref().unwrap_or_default();
            if let Some((reason, advice)) = WAITING.iter().find(|(known, _)| *known == reason) {
                return Some(Problem {
                    reason,
                    message: format!(
                        "pod {}: container {} is waiting ({reason}: {}): {advice}",
                        pod.name_any(),
                        container.name,
                        waiting.message.as_deref().unwrap_or("no message")
                    ),
                    stalled: true,
                });
            }
        }
        let unschedulable = status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        if let Some(condition) = unschedulable {
            return Some(Problem {
                reason: "Unschedulable",
                message: format!(
                    "pod {} cannot be scheduled: {}: adjust spec.nodeSelector, spec.tolerations, \
                     spec.affinity or spec.resources, or add nodes that fit",
                    pod.name_any(),
                    condition.message.as_deref().unwrap_or("no message")
                ),
                // A cluster autoscaler or a node coming back may still place it.
                stalled: false,
            });
        }
    }
    let (reason, message) = workload.and_then(|w| w.stuck.clone())?;
    Some(Problem {
        reason: "ProgressDeadlineExceeded",
        message: format!(
            "the rollout made no progress ({reason}: {message}): see the pods' events \
             (kubectl describe pods -l app.kubernetes.io/instance=...)"
        ),
        stalled: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: &str) -> Pod {
        serde_yaml::from_str(&format!("metadata: {{name: p-1}}\nstatus: {status}")).unwrap()
    }

    #[test]
    fn a_container_that_cannot_pull_its_image_stalls_with_the_kubelets_words() {
        let pod = pod(
            "{containerStatuses: [{name: ftp-server, image: nope:1, imageID: '', ready: false, restartCount: 0, \
             state: {waiting: {reason: ImagePullBackOff, message: 'Back-off pulling image \"nope:1\"'}}}]}",
        );
        let problem = workload_problem(None, &[&pod]).unwrap();
        assert_eq!(problem.reason, "ImagePullBackOff");
        assert!(problem.stalled);
        assert!(
            problem
                .message
                .contains("Back-off pulling image \"nope:1\"")
                && problem.message.contains("check spec.image"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn an_unschedulable_pod_is_not_ready_with_the_schedulers_words() {
        let pod = pod(
            "{conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable, \
             message: '0/2 nodes are available: 2 node(s) didn''t match Pod''s node affinity/selector.'}]}",
        );
        let problem = workload_problem(None, &[&pod]).unwrap();
        assert_eq!(problem.reason, "Unschedulable");
        assert!(!problem.stalled);
        assert!(problem.message.contains("0/2 nodes are available"));
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_stalls() {
        let deployment: Deployment = serde_yaml::from_str(
            "metadata: {name: d, generation: 2}\nstatus: {observedGeneration: 2, conditions: \
             [{type: Progressing, status: 'False', reason: ProgressDeadlineExceeded, \
             message: 'ReplicaSet \"d-1\" has timed out progressing.'}]}",
        )
        .unwrap();
        let summary = WorkloadSummary::from(&deployment);
        let problem = workload_problem(Some(&summary), &[]).unwrap();
        assert_eq!(problem.reason, "ProgressDeadlineExceeded");
        assert!(problem.stalled && problem.message.contains("timed out progressing"));
    }

    #[test]
    fn pods_starting_normally_are_no_problem() {
        let creating = pod(
            "{containerStatuses: [{name: ftp-server, image: i, imageID: '', ready: false, restartCount: 0, \
             state: {waiting: {reason: ContainerCreating}}}]}",
        );
        let deployment: Deployment = serde_yaml::from_str(
            "metadata: {name: d, generation: 1}\nstatus: {observedGeneration: 1, conditions: \
             [{type: Progressing, status: 'True', reason: ReplicaSetUpdated}]}",
        )
        .unwrap();
        let summary = WorkloadSummary::from(&deployment);
        assert_eq!(workload_problem(Some(&summary), &[&creating]), None);
    }
}
