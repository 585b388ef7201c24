//! Whether the server's workload can become ready, from its pods and the workload's own
//! report, in one place. Written against a summary any workload kind fills (the StatefulSet,
//! which has no progress deadline, and a Deployment of earlier versions), so status never reads
//! kind-specific fields.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

use super::served::{OBJECT_STORAGE_ADVICE, OBJECT_STORAGE_UNAVAILABLE};
use crate::ftp::config::OBJECT_STORAGE_ERROR;

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
    /// The last rollout has reached every pod, and there are as many as wanted.
    pub rolled_out: bool,
    /// The image of the server container in the workload's template.
    pub image: Option<String>,
}

fn server_image(template: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Option<String> {
    template?.containers.first()?.image.clone()
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
        let observed = status.observed_generation >= deployment.metadata.generation;
        let spec = deployment.spec.as_ref();
        let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
        let replicas = status.replicas.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        WorkloadSummary {
            observed,
            replicas,
            updated,
            ready: status.ready_replicas.unwrap_or(0),
            stuck,
            rolled_out: observed && replicas == desired && updated >= desired,
            image: server_image(spec.and_then(|s| s.template.spec.as_ref())),
        }
    }
}

impl From<&StatefulSet> for WorkloadSummary {
    fn from(set: &StatefulSet) -> Self {
        let status = set.status.clone().unwrap_or_default();
        let observed = status.observed_generation >= set.metadata.generation;
        let spec = set.spec.as_ref();
        let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
        let updated = status.updated_replicas.unwrap_or(0);
        // With OnDelete or a finished RollingUpdate the controller sets currentRevision to the
        // update revision; counting updated pods covers the moment before it does.
        let current_is_update =
            status.current_revision.is_some() && status.current_revision == status.update_revision;
        WorkloadSummary {
            observed,
            replicas: status.replicas,
            updated,
            ready: status.ready_replicas.unwrap_or(0),
            // No progress deadline: the pods say what is wrong.
            stuck: None,
            rolled_out: observed
                && status.replicas == desired
                && (current_is_update || updated >= desired),
            image: server_image(spec.and_then(|s| s.template.spec.as_ref())),
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
/// Image pulls and exits get theirs from [`image_advice`] and [`exit_problem`].
const WAITING: &[(&str, &str)] = &[
    (
        "CrashLoopBackOff",
        "the server keeps exiting: read its log (kubectl logs --previous) for why",
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

/// Waiting reasons of an image that cannot be had.
const IMAGE_WAITING: &[&str] = &["ImagePullBackOff", "ErrImagePull", "InvalidImageName"];

/// Where the operator's default server image is set, for messages.
const DEFAULT_IMAGE_SETTING: &str = "the operator's --default-ftp-image flag (chart value \
     ftpServerImage; empty there: the operator's own image, image.repository and image.tag)";

/// What to do about an image the kubelet cannot pull: which setting chose it, and where a pull
/// Secret goes. `spec_image` is the FtpServer's `spec.image`.
fn image_advice(reason: &str, image: &str, spec_image: Option<&str>) -> String {
    let chosen_by = if spec_image == Some(image) {
        format!(
            "the image comes from the FtpServer's spec.image: correct it, or remove spec.image \
             to use the operator's default ({DEFAULT_IMAGE_SETTING})"
        )
    } else {
        format!(
            "the image is the operator's default, set by {DEFAULT_IMAGE_SETTING}: correct that, \
             or set the FtpServer's spec.image"
        )
    };
    if reason == "InvalidImageName" {
        return format!("image \"{image}\" is not a valid image name; {chosen_by}");
    }
    format!(
        "cannot pull image \"{image}\"; {chosen_by}; if the registry needs credentials, name a \
         kubernetes.io/dockerconfigjson Secret of the FtpServer's namespace in \
         spec.imagePullSecrets; and check that the nodes reach the registry"
    )
}

/// A container that keeps exiting, told by how it last ended: an OOM kill names the memory
/// limit to raise instead of sending the user to a log that ends without a word.
fn exit_problem(pod: &Pod, container: &ContainerStatus) -> Option<Problem> {
    let terminated = container.last_state.as_ref()?.terminated.as_ref()?;
    if terminated.reason.as_deref() != Some("OOMKilled") {
        return None;
    }
    let limit = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.iter().find(|c| c.name == container.name))
        .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
        .map(|quantity| quantity.0.clone());
    let message = match limit {
        Some(limit) => format!(
            "pod {}: container {} was OOMKilled: it used all of its memory limit ({limit}) and \
             keeps restarting ({} restarts); raise spec.resources.limits.memory (and \
             spec.resources.requests.memory) of the FtpServer",
            pod.name_any(),
            container.name,
            container.restart_count
        ),
        None => format!(
            "pod {}: container {} was OOMKilled with no memory limit of its own (the node ran \
             out of memory) and keeps restarting ({} restarts); set \
             spec.resources.requests.memory and spec.resources.limits.memory of the FtpServer \
             so it is placed where that much memory is free",
            pod.name_any(),
            container.name,
            container.restart_count
        ),
    };
    Some(Problem {
        reason: "OOMKilled",
        message,
        stalled: true,
    })
}

/// A server that exits at startup because it cannot use its bucket: its last words (the
/// container's termination message, taken from the log) name the bucket and S3's error.
fn storage_problem(pod: &Pod, container: &ContainerStatus) -> Option<Problem> {
    let terminated = container.last_state.as_ref()?.terminated.as_ref()?;
    let words = terminated.message.as_deref()?;
    let line = words
        .lines()
        .rev()
        .find_map(|line| Some(&line[line.find(OBJECT_STORAGE_ERROR)?..]))?;
    Some(Problem {
        reason: OBJECT_STORAGE_UNAVAILABLE,
        message: format!(
            "pod {}: the server {} and keeps restarting ({} restarts). {OBJECT_STORAGE_ADVICE}",
            pod.name_any(),
            line.trim_end(),
            container.restart_count
        ),
        stalled: true,
    })
}

/// The first problem the workload or its pods report, or None while all looks like progress.
/// `spec_image` is the FtpServer's `spec.image`, to tell which setting chose an image.
pub fn workload_problem(
    workload: Option<&WorkloadSummary>,
    pods: &[&Pod],
    spec_image: Option<&str>,
) -> Option<Problem> {
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
            let kubelet_says = waiting.message.as_deref().unwrap_or("no message");
            if let Some(reason) = IMAGE_WAITING.iter().find(|known| **known == reason) {
                // The pod's spec names the image asked for; the status may hold a resolved one.
                let image = pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.containers.iter().find(|c| c.name == container.name))
                    .and_then(|c| c.image.clone())
                    .unwrap_or_else(|| container.image.clone());
                return Some(Problem {
                    reason,
                    message: format!(
                        "pod {}: container {} is waiting ({reason}: {kubelet_says}): {}",
                        pod.name_any(),
                        container.name,
                        image_advice(reason, &image, spec_image)
                    ),
                    stalled: true,
                });
            }
            if reason == "CrashLoopBackOff"
                && let Some(problem) = exit_problem(pod, container)
            {
                return Some(problem);
            }
            if reason == "CrashLoopBackOff"
                && let Some(problem) = storage_problem(pod, container)
            {
                return Some(problem);
            }
            if let Some((reason, advice)) = WAITING.iter().find(|(known, _)| *known == reason) {
                return Some(Problem {
                    reason,
                    message: format!(
                        "pod {}: container {} is waiting ({reason}: {kubelet_says}): {advice}",
                        pod.name_any(),
                        container.name,
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

    /// A pod of the server's StatefulSet whose container runs `image` with a 128Mi limit.
    fn pod_with_spec(image: &str, status: &str) -> Pod {
        serde_yaml::from_str(&format!(
            "metadata: {{name: contoso-0}}\n\
             spec: {{containers: [{{name: ftp-server, image: '{image}', \
             resources: {{limits: {{memory: 128Mi}}, requests: {{memory: 64Mi}}}}}}]}}\n\
             status: {status}"
        ))
        .unwrap()
    }

    fn pull_failure(reason: &str, image: &str) -> Pod {
        pod_with_spec(
            image,
            &format!(
                "{{containerStatuses: [{{name: ftp-server, image: '{image}', imageID: '', ready: false, \
                 restartCount: 0, state: {{waiting: {{reason: {reason}, \
                 message: 'Back-off pulling image \"{image}\"'}}}}}}]}}"
            ),
        )
    }

    #[test]
    fn an_image_from_spec_image_that_cannot_be_pulled_names_it_and_the_pull_secret_field() {
        for reason in ["ImagePullBackOff", "ErrImagePull"] {
            let pod = pull_failure(reason, "registry.example/ftp:9");
            let problem = workload_problem(None, &[&pod], Some("registry.example/ftp:9")).unwrap();
            assert_eq!(problem.reason, reason);
            assert!(problem.stalled);
            for part in [
                "Back-off pulling image \"registry.example/ftp:9\"",
                "cannot pull image \"registry.example/ftp:9\"",
                "comes from the FtpServer's spec.image",
                "--default-ftp-image",
                "spec.imagePullSecrets",
            ] {
                assert!(
                    problem.message.contains(part),
                    "{part}: {}",
                    problem.message
                );
            }
        }
    }

    #[test]
    fn the_operators_default_image_that_cannot_be_pulled_names_the_flag_and_chart_value() {
        let pod = pull_failure(
            "ImagePullBackOff",
            "ghcr.io/ftp-operator/ftp-operator:0.1.0",
        );
        // spec.image names another image (the rollout has not reached this pod) or none.
        for spec_image in [None, Some("registry.example/ftp:9")] {
            let problem = workload_problem(None, &[&pod], spec_image).unwrap();
            assert!(
                problem
                    .message
                    .contains("the image is the operator's default, set by the operator's --default-ftp-image flag (chart value ftpServerImage")
                    && problem.message.contains("ghcr.io/ftp-operator/ftp-operator:0.1.0")
                    && problem.message.contains("spec.imagePullSecrets")
                    && !problem.message.contains("comes from the FtpServer's spec.image"),
                "{}",
                problem.message
            );
        }
    }

    #[test]
    fn an_invalid_image_name_says_so_and_where_it_was_set() {
        let pod = pull_failure("InvalidImageName", "Bad Name");
        let problem = workload_problem(None, &[&pod], Some("Bad Name")).unwrap();
        assert_eq!(problem.reason, "InvalidImageName");
        assert!(
            problem
                .message
                .contains("\"Bad Name\" is not a valid image name")
                && problem.message.contains("spec.image"),
            "{}",
            problem.message
        );
    }

    fn crash_looping(last_reason: &str, image: &str) -> Pod {
        pod_with_spec(
            image,
            &format!(
                "{{containerStatuses: [{{name: ftp-server, image: i, imageID: '', ready: false, restartCount: 4, \
                 state: {{waiting: {{reason: CrashLoopBackOff, message: 'back-off 1m20s restarting failed container'}}}}, \
                 lastState: {{terminated: {{reason: {last_reason}, exitCode: 137, \
                 startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:01:00Z'}}}}}}]}}"
            ),
        )
    }

    #[test]
    fn a_server_that_cannot_use_its_bucket_names_it_and_what_to_check() {
        let pod = pod_with_spec(
            "i",
            "{containerStatuses: [{name: ftp-server, image: i, imageID: '', ready: false, restartCount: 3, \
             state: {waiting: {reason: CrashLoopBackOff, message: 'back-off 40s restarting failed container'}}, \
             lastState: {terminated: {reason: Error, exitCode: 1, \
             message: \"Error: cannot use object storage: S3 bucket \\\"contoso-ftp\\\": NotFound (permanent) at list => NoSuchBucket\\n\", \
             startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:01:00Z'}}}]}",
        );
        let problem = workload_problem(None, &[&pod], None).unwrap();
        assert_eq!(problem.reason, OBJECT_STORAGE_UNAVAILABLE);
        assert!(problem.stalled);
        for part in [
            "pod contoso-0: the server cannot use object storage: S3 bucket \"contoso-ftp\": NotFound",
            "NoSuchBucket",
            "3 restarts",
            "spec.storage.s3",
            "credentialsSecretRef",
        ] {
            assert!(
                problem.message.contains(part),
                "{part}: {}",
                problem.message
            );
        }
        // Any other exit keeps the generic advice.
        let other = crash_looping("Error", "i");
        let problem = workload_problem(None, &[&other], None).unwrap();
        assert_eq!(problem.reason, "CrashLoopBackOff");
    }

    #[test]
    fn an_oom_killed_server_names_the_limit_and_the_field_to_raise() {
        let pod = crash_looping("OOMKilled", "i");
        let problem = workload_problem(None, &[&pod], None).unwrap();
        assert_eq!(problem.reason, "OOMKilled");
        assert!(problem.stalled);
        for part in [
            "pod contoso-0: container ftp-server was OOMKilled",
            "memory limit (128Mi)",
            "4 restarts",
            "raise spec.resources.limits.memory",
        ] {
            assert!(
                problem.message.contains(part),
                "{part}: {}",
                problem.message
            );
        }
        assert!(!problem.message.contains("read its log"));
    }

    #[test]
    fn an_oom_kill_without_a_limit_says_the_node_ran_out() {
        let mut pod = crash_looping("OOMKilled", "i");
        pod.spec.as_mut().unwrap().containers[0].resources = None;
        let problem = workload_problem(None, &[&pod], None).unwrap();
        assert_eq!(problem.reason, "OOMKilled");
        assert!(
            problem.message.contains("no memory limit of its own")
                && problem.message.contains("spec.resources.limits.memory"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn a_server_that_exits_on_its_own_is_sent_to_its_log() {
        let pod = crash_looping("Error", "i");
        let problem = workload_problem(None, &[&pod], None).unwrap();
        assert_eq!(problem.reason, "CrashLoopBackOff");
        assert!(
            problem.message.contains("read its log"),
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
        let problem = workload_problem(None, &[&pod], None).unwrap();
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
        let problem = workload_problem(Some(&summary), &[], None).unwrap();
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
        assert_eq!(workload_problem(Some(&summary), &[&creating], None), None);
    }

    #[test]
    fn a_stateful_set_is_rolled_out_when_every_pod_runs_the_current_revision() {
        let set = |status: &str| -> StatefulSet {
            serde_yaml::from_str(&format!(
                "metadata: {{name: s, generation: 3}}\n\
                 spec: {{replicas: 2, selector: {{}}, template: {{spec: {{containers: [{{name: ftp-server, image: img:2}}]}}}}}}\n\
                 status: {status}"
            ))
            .unwrap()
        };
        let done = WorkloadSummary::from(&set(
            "{observedGeneration: 3, replicas: 2, readyReplicas: 2, updatedReplicas: 2, currentRevision: b, updateRevision: b}",
        ));
        assert!(done.rolled_out);
        assert_eq!(
            (done.replicas, done.ready, done.image.as_deref()),
            (2, 2, Some("img:2"))
        );
        for status in [
            // Halfway: one pod on the new revision.
            "{observedGeneration: 3, replicas: 2, readyReplicas: 2, updatedReplicas: 1, currentRevision: a, updateRevision: b}",
            // The StatefulSet controller has not seen the latest spec.
            "{observedGeneration: 2, replicas: 2, readyReplicas: 2, updatedReplicas: 2, currentRevision: b, updateRevision: b}",
            // Scaling.
            "{observedGeneration: 3, replicas: 1, readyReplicas: 1, updatedReplicas: 1, currentRevision: b, updateRevision: b}",
        ] {
            assert!(!WorkloadSummary::from(&set(status)).rolled_out, "{status}");
        }
    }
}
