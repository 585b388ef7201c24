//! The controller's metrics as a dashboard reads them, against a real control plane.

use std::time::Duration;

use ftp_operator::api::FtpServer;
use kube::api::DeleteParams;

use crate::harness::wait_for;
use crate::{TIMEOUT, setup, wait_condition};

/// `ftp_operator_server_condition{namespace,name,type,status}`, or None when the series is absent.
fn condition_value(
    body: &str,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> Option<i64> {
    let series = format!(
        "ftp_operator_server_condition{{namespace=\"{namespace}\",name=\"{name}\",type=\"{type_}\",status=\"{status}\"}} "
    );
    let line = body.lines().find(|l| l.starts_with(&series))?;
    line.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn conditions_per_server_follow_status_and_leave_with_the_server() {
    let (_client, ns, controller) = setup("conditions").await;
    ns.create_server(
        "metadata: {name: s}\nspec: {passivePorts: {min: 30000, max: 30001}, users: {secretRef: {name: ftp-users}}}",
    )
    .await;
    wait_condition(&ns, "s", "Stalled", &["True"], TIMEOUT).await;
    let body = wait_for("the Stalled series", TIMEOUT, || async {
        let body = controller.scrape().await;
        (condition_value(&body, &ns.name, "s", "Stalled", "True") == Some(1)).then_some(body)
    })
    .await;
    // One series per status; only the current one is 1.
    assert_eq!(
        condition_value(&body, &ns.name, "s", "Stalled", "False"),
        Some(0)
    );
    assert_eq!(
        condition_value(&body, &ns.name, "s", "Stalled", "Unknown"),
        Some(0)
    );
    assert_eq!(
        condition_value(&body, &ns.name, "s", "Ready", "False"),
        Some(1)
    );

    // The fix shows in the metric as in status.
    ns.create_users_secret("ftp-users").await;
    wait_for("Stalled=False in the metric", TIMEOUT, || async {
        let body = controller.scrape().await;
        (condition_value(&body, &ns.name, "s", "Stalled", "False") == Some(1)
            && condition_value(&body, &ns.name, "s", "Stalled", "True") == Some(0))
        .then_some(())
    })
    .await;

    // A deleted server's series go with it: the number of series stays bounded.
    ns.api::<FtpServer>()
        .delete("s", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the server's series to go", TIMEOUT, || async {
        let body = controller.scrape().await;
        let ours = format!("namespace=\"{}\",name=\"s\"", ns.name);
        (!body.contains(&ours)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        controller
            .scrape()
            .await
            .contains("# TYPE ftp_operator_server_condition gauge")
    );
}
