//! FtpUsers whose server does not exist: no server reconcile reaches them, so a small loop over
//! the FtpUser cache gives each `Accepted=False` with reason ServerMissing. Users of an existing
//! server are left to that server's reconcile.

use std::time::Duration;

use futures::FutureExt;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::warn;

use crate::api::FtpServer;
use crate::api::user::FtpUser;
use crate::process::api_writes::ApiWrites;

use super::gather::{SERVER_MISSING, Verdict};
use super::status::{desired_status, now, write_if_changed};

/// How often the cache is looked through: a user of a missing (or deleted) server says so within
/// this long.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// The verdict for a user whose server is missing, or None when its server exists (or cannot be
/// told yet: the server cache is not complete).
pub fn orphan_verdict(user: &FtpUser, server_exists: bool) -> Option<Verdict> {
    (!server_exists).then(|| Verdict {
        accepted: false,
        reason: SERVER_MISSING,
        message: format!(
            "FtpServer {} named by spec.serverRef does not exist in namespace {}: create it, or \
             fix spec.serverRef.name",
            user.spec.server_ref.name,
            user.namespace().unwrap_or_default()
        ),
    })
}

/// Runs until dropped.
pub async fn run(
    users: Store<FtpUser>,
    servers: Store<DeserializeGuard<FtpServer>>,
    client: Client,
    writes: ApiWrites,
) {
    let mut ticker = tokio::time::interval(SCAN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ready = |ready: Option<Result<(), _>>| matches!(ready, Some(Ok(())));
        if !ready(users.wait_until_ready().now_or_never())
            || !ready(servers.wait_until_ready().now_or_never())
        {
            continue;
        }
        for user in users.state() {
            let namespace = user.namespace().unwrap_or_default();
            let server = ObjectRef::new(&user.spec.server_ref.name).within(&namespace);
            let Some(verdict) = orphan_verdict(&user, servers.get(&server).is_some()) else {
                continue;
            };
            let status = desired_status(&user, &verdict, &now());
            let api: Api<FtpUser> = Api::namespaced(client.clone(), &namespace);
            if let Err(error) = write_if_changed(&api, &user, &status, &writes).await {
                warn!(%error, user = %user.name_any(), %namespace, "cannot write the FtpUser's status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_of_a_missing_server_says_which_and_how_to_fix_it() {
        let user: FtpUser = serde_yaml::from_str(
            "metadata: {name: acme, namespace: ftp}\nspec: {serverRef: {name: contoso}, passwordSecretRef: {name: p}}",
        )
        .unwrap();
        assert_eq!(orphan_verdict(&user, true), None);
        let verdict = orphan_verdict(&user, false).unwrap();
        assert_eq!(verdict.reason, "ServerMissing");
        assert!(
            verdict.message.starts_with(
                "FtpServer contoso named by spec.serverRef does not exist in namespace ftp"
            ),
            "{}",
            verdict.message
        );
    }
}
