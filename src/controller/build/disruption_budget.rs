//! The PodDisruptionBudget: a node drain evicts one server pod at a time, and each evicted pod
//! drains its transfers like a rolled one (same SIGTERM path, same grace).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::FtpServer;

use super::{owned_metadata, selector_labels};

/// With more than one replica only; a budget for one pod would either allow everything or block
/// node drains for good.
pub fn desired_disruption_budget(server: &FtpServer) -> Option<PodDisruptionBudget> {
    (server.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: owned_metadata(server, server.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(server)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};

    #[test]
    fn one_pod_at_a_time_with_several_replicas_and_none_with_one() {
        assert_eq!(desired_disruption_budget(&server(fixtures::MINIMAL)), None);
        let budget = desired_disruption_budget(&server(fixtures::FULL)).unwrap();
        let spec = budget.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap()["app.kubernetes.io/instance"],
            "contoso"
        );
        assert_eq!(budget.metadata.name.as_deref(), Some("contoso"));
    }
}
