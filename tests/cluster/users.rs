//! FtpUsers against a real apiserver: applying one object puts a login into its server's
//! generated users Secret with `Accepted=True`; a missing Secret, a missing key or a bad hash
//! shows in that user's status only; disabling, expiring, changing the password and deleting
//! each change the rendered file; a user of a server that does not exist says so.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use ftp_operator::api::{FtpServer, FtpUser};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::DeleteParams;

use super::harness::{TestNamespace, kubectl, kubectl_apply_input, wait_for};
use super::{TIMEOUT, condition, setup};

const SERVER: &str = r#"
metadata: {name: files}
spec:
  passivePorts: {min: 30000, max: 30002}
  users: {secretRef: {name: ftp-users}}
"#;

/// The `users` key of the server's generated Secret, once it has one.
async fn users_file(ns: &TestNamespace) -> Option<String> {
    let secret = ns
        .api::<Secret>()
        .get_opt("files-generated-users")
        .await
        .ok()??;
    let value = secret.data?.get("users")?.0.clone();
    String::from_utf8(value).ok()
}

/// Waits until the generated users file satisfies `test`, and returns it.
async fn wait_file(ns: &TestNamespace, what: &str, test: impl Fn(&str) -> bool) -> String {
    wait_for(what, TIMEOUT, || async {
        users_file(ns).await.filter(|text| test(text))
    })
    .await
}

/// Waits until FtpUser `name`'s `Accepted` condition has status `status` and reason `reason`;
/// returns its message.
async fn wait_accepted(ns: &TestNamespace, name: &str, status: &str, reason: &str) -> String {
    let users = ns.api::<FtpUser>();
    wait_for(
        &format!("FtpUser {name} Accepted={status} {reason}"),
        TIMEOUT,
        || async {
            let user = users.get(name).await.ok()?;
            let user_status = user.status.as_ref()?;
            let c = user_status
                .conditions
                .iter()
                .find(|c| c.type_ == "Accepted")?;
            (c.status == status
                && c.reason == reason
                && user_status.observed_generation == user.metadata.generation)
                .then(|| c.message.clone())
        },
    )
    .await
}

fn apply(ns: &TestNamespace, yaml: &str) {
    kubectl_apply_input(&["-n", &ns.name], yaml);
}

fn password_secret(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/basic-auth\nstringData: {data}\n"
    )
}

fn ftp_user(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ftpoperator.dev/v1alpha1\nkind: FtpUser\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

/// The line of `login` in the line form, or its `[[user]]` table in the TOML form.
fn entry<'a>(file: &'a str, login: &str) -> Option<&'a str> {
    let line = format!("{login}:");
    if let Some(found) = file.lines().find(|l| l.starts_with(&line)) {
        return Some(found);
    }
    let table = format!("[[user]]\nname = \"{login}\"\n");
    let start = file.find(&table)?;
    let rest = &file[start + table.len()..];
    Some(&file[start..start + table.len() + rest.find("[[user]]").unwrap_or(rest.len())])
}

fn hash_in(entry: &str) -> String {
    match entry.strip_prefix("[[user]]") {
        Some(table) => table
            .lines()
            .find_map(|l| l.strip_prefix("password_hash = \""))
            .and_then(|h| h.strip_suffix('"'))
            .unwrap_or_default()
            .to_owned(),
        None => entry.split(':').nth(1).unwrap_or_default().to_owned(),
    }
}

fn verifies(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[tokio::test]
async fn an_applied_user_is_served_and_a_bad_one_shows_in_its_own_status_only() {
    let (_client, ns, _controller) = setup("users").await;
    ns.create_users_secret("ftp-users").await;
    ns.create_server(SERVER).await;
    apply(
        &ns,
        &password_secret("acme-password", "{username: acme, password: s3cret}"),
    );
    apply(
        &ns,
        &ftp_user(
            "acme",
            "{serverRef: {name: files}, passwordSecretRef: {name: acme-password}, home: homes/acme, access: ro}",
        ),
    );
    let file = wait_file(&ns, "acme in the generated users file", |f| {
        entry(f, "acme").is_some()
    })
    .await;
    let acme = entry(&file, "acme").unwrap();
    assert!(acme.ends_with(":ro:homes/acme"), "{file}");
    assert!(verifies(&hash_in(acme), "s3cret"), "{acme}");
    assert!(
        !file.contains("s3cret"),
        "the clear password leaked: {file}"
    );
    // The users Secret's line is served beside it.
    assert!(entry(&file, "alice").is_some(), "{file}");
    let message = wait_accepted(&ns, "acme", "True", "Accepted").await;
    assert_eq!(
        message,
        "login acme is in the users file of FtpServer files"
    );
    // The generated Secret belongs to the server.
    let generated = ns
        .api::<Secret>()
        .get("files-generated-users")
        .await
        .unwrap();
    assert_eq!(generated.owner_references()[0].name, "files");

    // Three broken users: each says why, and acme and alice stay served.
    apply(
        &ns,
        &ftp_user(
            "nosecret",
            "{serverRef: {name: files}, passwordSecretRef: {name: nosecret-password}}",
        ),
    );
    apply(&ns, &password_secret("shared", "{username: x}"));
    apply(
        &ns,
        &ftp_user(
            "nokey",
            "{serverRef: {name: files}, passwordSecretRef: {name: shared, key: pw}}",
        ),
    );
    apply(
        &ns,
        &password_secret(
            "badhash-password",
            "{password: '$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E'}",
        ),
    );
    apply(
        &ns,
        &ftp_user(
            "badhash",
            "{serverRef: {name: files}, passwordSecretRef: {name: badhash-password}}",
        ),
    );
    let message = wait_accepted(&ns, "nosecret", "False", "SecretMissing").await;
    assert!(
        message.contains("Secret nosecret-password named by spec.passwordSecretRef does not exist"),
        "{message}"
    );
    let message = wait_accepted(&ns, "nokey", "False", "KeyMissing").await;
    assert!(
        message.contains("Secret shared has no key pw (its keys: username)"),
        "{message}"
    );
    let message = wait_accepted(&ns, "badhash", "False", "BadHash").await;
    assert!(message.contains("scrypt is not argon2id"), "{message}");
    let file = users_file(&ns).await.unwrap();
    for login in ["nosecret", "nokey", "badhash"] {
        assert!(entry(&file, login).is_none(), "{login} served: {file}");
    }
    assert!(entry(&file, "acme").is_some() && entry(&file, "alice").is_some());
    let server = ns.api::<FtpServer>().get("files").await.unwrap();
    assert_ne!(
        condition(&server, "Stalled").map(|c| c.0).as_deref(),
        Some("True"),
        "the server's status must not suffer for a bad user"
    );

    // The missing Secret arrives: the user is served without anything else being touched.
    apply(
        &ns,
        &password_secret("nosecret-password", "{password: 0ther}"),
    );
    wait_accepted(&ns, "nosecret", "True", "Accepted").await;
    wait_file(&ns, "nosecret served", |f| entry(f, "nosecret").is_some()).await;

    // The printer columns show who is accepted and why not.
    let out = kubectl()
        .args(["get", "ftpusers", "-n", &ns.name])
        .output()
        .expect("kubectl runs");
    let table = String::from_utf8_lossy(&out.stdout);
    for part in [
        "SERVER",
        "ACCEPTED",
        "REASON",
        "files",
        "KeyMissing",
        "BadHash",
    ] {
        assert!(table.contains(part), "{part}: {table}");
    }
}

#[tokio::test]
async fn disabling_expiring_a_new_password_and_deleting_each_change_the_file() {
    let (_client, ns, controller) = setup("user-changes").await;
    ns.create_users_secret("ftp-users").await;
    ns.create_server(SERVER).await;
    apply(&ns, &password_secret("acme-password", "{password: first}"));
    let spec = "serverRef: {name: files}, passwordSecretRef: {name: acme-password}";
    apply(&ns, &ftp_user("acme", &format!("{{{spec}}}")));
    wait_accepted(&ns, "acme", "True", "Accepted").await;
    let file = wait_file(&ns, "acme served", |f| entry(f, "acme").is_some()).await;
    let first_hash = hash_in(entry(&file, "acme").unwrap());
    assert!(verifies(&first_hash, "first"));

    // Quiet: nothing changes, so neither the Secret nor the user's status is written again
    // (the clear password is not hashed anew either: the file stays the same).
    let versions = || async {
        let secret = ns
            .api::<Secret>()
            .get("files-generated-users")
            .await
            .unwrap();
        let user = ns.api::<FtpUser>().get("acme").await.unwrap();
        (secret.resource_version(), user.resource_version())
    };
    let before = versions().await;
    let writes = controller.api_writes().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions().await, before);
    assert_eq!(controller.api_writes().await, writes);

    apply(
        &ns,
        &ftp_user("acme", &format!("{{{spec}, enabled: false}}")),
    );
    wait_file(&ns, "acme disabled", |f| {
        entry(f, "acme").is_some_and(|e| e.contains("enabled = false"))
    })
    .await;

    apply(
        &ns,
        &ftp_user(
            "acme",
            &format!("{{{spec}, expires: '2026-01-31T00:00:00Z'}}"),
        ),
    );
    let file = wait_file(&ns, "acme expiring", |f| {
        entry(f, "acme").is_some_and(|e| {
            e.contains("expires = \"2026-01-31T00:00:00Z\"") && !e.contains("enabled")
        })
    })
    .await;
    // Still the first password's hash: changing the user did not hash it again.
    assert_eq!(hash_in(entry(&file, "acme").unwrap()), first_hash);

    apply(&ns, &password_secret("acme-password", "{password: second}"));
    let file = wait_file(&ns, "acme's new password", |f| {
        entry(f, "acme").is_some_and(|e| hash_in(e) != first_hash)
    })
    .await;
    let hash = hash_in(entry(&file, "acme").unwrap());
    assert!(verifies(&hash, "second") && !verifies(&hash, "first"));

    ns.api::<FtpUser>()
        .delete("acme", &DeleteParams::default())
        .await
        .expect("FtpUser deleted");
    let file = wait_file(&ns, "acme gone", |f| entry(f, "acme").is_none()).await;
    assert!(entry(&file, "alice").is_some(), "{file}");
}

#[tokio::test]
async fn a_user_of_a_server_that_does_not_exist_says_so_until_it_does() {
    let (_client, ns, _controller) = setup("user-orphan").await;
    apply(&ns, &password_secret("acme-password", "{password: s3cret}"));
    apply(
        &ns,
        &ftp_user(
            "acme",
            "{serverRef: {name: files}, passwordSecretRef: {name: acme-password}}",
        ),
    );
    let message = wait_accepted(&ns, "acme", "False", "ServerMissing").await;
    assert!(
        message.starts_with(&format!(
            "FtpServer files named by spec.serverRef does not exist in namespace {}",
            ns.name
        )),
        "{message}"
    );
    // A server without spec.users: its file holds the FtpUser alone.
    ns.create_server("metadata: {name: files}\nspec: {passivePorts: {min: 30000, max: 30002}}")
        .await;
    wait_accepted(&ns, "acme", "True", "Accepted").await;
    let file = wait_file(&ns, "acme served", |f| entry(f, "acme").is_some()).await;
    assert!(entry(&file, "alice").is_none(), "{file}");
}
