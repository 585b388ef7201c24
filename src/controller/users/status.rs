//! An FtpUser's status: the `Accepted` condition its server's reconcile decided, written only
//! when it changed, so a quiet reconcile writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::user::{FtpUser, FtpUserStatus};
use crate::process::MANAGER;
use crate::process::api_writes::ApiWrites;

use super::gather::Verdict;
use crate::controller::status::condition;

/// The condition type every FtpUser's status carries.
pub const ACCEPTED: &str = "Accepted";

/// The status `verdict` gives `user`, keeping the transition time while the condition holds.
pub fn desired_status(user: &FtpUser, verdict: &Verdict, now: &Time) -> FtpUserStatus {
    let previous = user.status.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    FtpUserStatus {
        observed_generation: generation,
        conditions: vec![condition(
            &previous.conditions,
            ACCEPTED,
            verdict.accepted,
            verdict.reason,
            verdict.message.clone(),
            generation,
            now,
        )],
    }
}

/// Writes `status` unless the user already has it.
pub async fn write_if_changed(
    api: &Api<FtpUser>,
    user: &FtpUser,
    status: &FtpUserStatus,
    writes: &ApiWrites,
) -> Result<(), kube::Error> {
    if user.status.as_ref() == Some(status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": FtpUser::api_version(&()),
        "kind": FtpUser::kind(&()),
        "status": status,
    });
    let result = api
        .patch_status(
            &user.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    writes.record("FtpUser/status");
    match result {
        // Deleted since it was read: nothing to report to.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Now, to the second (conditions carry seconds).
pub fn now() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_becomes_the_accepted_condition_and_keeps_its_transition_time() {
        let mut user: FtpUser = serde_yaml::from_str(
            "metadata: {name: acme, generation: 3}\nspec: {serverRef: {name: contoso}, passwordSecretRef: {name: p}}",
        )
        .unwrap();
        let t0 = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let t1 = Time("2026-01-01T00:05:00Z".parse().unwrap());
        let missing = Verdict {
            accepted: false,
            reason: "SecretMissing",
            message: "Secret p named by spec.passwordSecretRef does not exist".into(),
        };
        let status = desired_status(&user, &missing, &t0);
        assert_eq!(status.observed_generation, Some(3));
        let c = &status.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Accepted", "False", "SecretMissing")
        );
        user.status = Some(status.clone());
        // The same verdict later: the same status, so nothing is written.
        assert_eq!(desired_status(&user, &missing, &t1), status);
        let accepted = Verdict {
            accepted: true,
            reason: "Accepted",
            message: "login acme is in the users file of FtpServer contoso".into(),
        };
        let status = desired_status(&user, &accepted, &t1);
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].last_transition_time, t1);
    }
}
