//! A namespace per test, the controller binary as a subprocess, and polling helpers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ftp_operator::api::{FtpServer, FtpUser};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt};

pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/local-cluster/kubeconfig"),
        PathBuf::from,
    )
}

/// One test restarts the kube-apiserver that every test shares: it takes this lock for writing,
/// every other test holds it for reading from its first `client()` to its end.
static APISERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

type SharedUse = Option<tokio::sync::RwLockReadGuard<'static, ()>>;

// Per test thread (libtest runs each test on a thread of its own, which ends with the test, so
// the guard goes with it); a test run on the main thread (--test-threads=1) runs alone anyway.
// `Some(None)`: this thread holds the lock for writing.
thread_local! {
    static APISERVER_USE: std::cell::RefCell<Option<SharedUse>> =
        const { std::cell::RefCell::new(None) };
}

async fn share_apiserver() {
    if APISERVER_USE.with_borrow(Option::is_none) {
        let guard = APISERVER.read().await;
        APISERVER_USE.set(Some(Some(guard)));
    }
}

/// Waits until no other test uses the apiserver, and keeps the others out until this test ends.
pub async fn exclusive_apiserver() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    APISERVER_USE.set(None);
    let guard = APISERVER.write().await;
    APISERVER_USE.set(Some(None));
    guard
}

/// A client for the local control plane; fails loudly when there is none.
pub async fn client() -> Client {
    share_apiserver().await;
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|err| {
        panic!(
            "no kubeconfig at {}: {err}. Run scripts/local-cluster.sh up (and eval \"$(scripts/local-cluster.sh env)\")",
            path.display()
        )
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    let client = Client::try_from(config).expect("client");
    client.apiserver_version().await.unwrap_or_else(|err| {
        panic!(
            "the control plane in {} is unreachable: {err}. Run scripts/local-cluster.sh up",
            path.display()
        )
    });
    client
}

/// Installs (server-side applies) the CRDs, FtpServer's and FtpUser's, and waits until they are
/// Established.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (name, crd) in [
        ("ftpservers.ftpoperator.dev", FtpServer::crd()),
        ("ftpusers.ftpoperator.dev", FtpUser::crd()),
    ] {
        crds.patch(
            name,
            &PatchParams::apply("ftp-operator-tests").force(),
            &Patch::Apply(crd),
        )
        .await
        .expect("CRD applies");
        wait_for(
            "the CRD to be Established",
            Duration::from_secs(30),
            || async {
                let crd = crds.get(name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            },
        )
        .await;
    }
}

/// A fresh namespace, deleted when the test ends.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!(
            "{prefix}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 1_000_000
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("namespace created");
        TestNamespace {
            name,
            client: client.clone(),
        }
    }

    /// Whether an object of kind `K` named `name` exists in this namespace now.
    pub async fn has<K>(&self, name: &str) -> bool
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .get_opt(name)
            .await
            .expect("the apiserver answers a GET")
            .is_some()
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn create_users_secret(&self, name: &str) {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "stringData": {"users": "alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo:rw\n"},
        }))
        .unwrap();
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("secret created");
    }

    pub async fn create_server(&self, yaml: &str) -> FtpServer {
        let server: FtpServer = serde_yaml::from_str(yaml).expect("test manifest parses");
        self.api::<FtpServer>()
            .create(&PostParams::default(), &server)
            .await
            .expect("FtpServer created")
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Through kubectl: the test's client lives on a runtime that is shutting down.
        let _ = kubectl()
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// The controller binary, started against the test cluster, watching one namespace.
pub struct ControllerProcess {
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ControllerProcess {
    pub fn start(namespace: &str, identity: &str) -> Self {
        Self::start_with(namespace, identity, &kubeconfig_path(), &[])
    }

    /// The controller with its own kubeconfig (e.g. one that impersonates a ServiceAccount)
    /// and extra flags.
    pub fn start_with(namespace: &str, identity: &str, kubeconfig: &Path, extra: &[&str]) -> Self {
        let mut scope = vec![
            "--namespace",
            namespace,
            "--leader-election-namespace",
            namespace,
        ];
        scope.extend_from_slice(extra);
        Self::start_scoped(identity, kubeconfig, &scope)
    }

    /// The controller with the flags that say what it watches and where its Lease is
    /// (`--namespace`, `--leader-election-namespace`) given by the caller.
    pub fn start_scoped(identity: &str, kubeconfig: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ftp-operator"))
            .args([
                "controller",
                "--lease-name",
                "ftp-operator",
                "--identity",
                identity,
                "--metrics-listen",
                "127.0.0.1:0",
                "--default-ftp-image",
                "ftp-operator:test",
                // kwok's pods never run a server to ask (served.rs); the real-node tier does.
                "--verify-served-config=false",
                // Nor is there a server to probe (the real-node tiers probe).
                "--probe-interval-seconds=0",
            ])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("controller starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        ControllerProcess { child, logs }
    }

    pub fn logged(&self, text: &str) -> bool {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    pub async fn wait_logged(&self, text: &str, timeout: Duration) {
        wait_for(
            &format!("the controller to log {text:?}"),
            timeout,
            || async { self.logged(text).then_some(()) },
        )
        .await;
    }

    /// The controller's own count of its API writes, from /metrics.
    pub async fn api_writes(&self) -> u64 {
        self.metric("ftp_operator_api_writes_total").await
    }

    /// The sum of a counter's series, from /metrics.
    pub async fn metric(&self, name: &str) -> u64 {
        self.scrape()
            .await
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The body of /metrics.
    pub async fn scrape(&self) -> String {
        let address = wait_for("the metrics address", Duration::from_secs(10), || async {
            let logs = self.logs.lock().unwrap();
            let line = logs.iter().find(|l| l.contains("serving /metrics"))?;
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            value["fields"]["address"].as_str().map(str::to_owned)
        })
        .await;
        let mut stream = TcpStream::connect(&address).expect("metrics reachable");
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body
    }

    /// Sends a signal by name (STOP, CONT, TERM) to this process alone, by its id.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The exit status, once the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to end (after a signal that ends it) and returns its status.
    pub fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.wait().ok()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `probe` every 250 ms until it yields a value; panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_until(what, timeout, || {
        let attempt = probe();
        async move { attempt.await.ok_or("not yet") }
    })
    .await
}

/// Polls `probe` every 250 ms until it yields `Ok`; panics after `timeout` naming `what` and
/// what the last `Err` showed. The one polling loop of the cluster tests.
pub async fn wait_until<T, E, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// kubectl from the local cluster's cache (`scripts/local-cluster.sh env`), else from PATH.
pub fn kubectl() -> Command {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/local-cluster.sh");
    let bin_dir = Command::new("bash")
        .args([script, "env"])
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8(out.stdout)
                .ok()?
                .lines()
                .find_map(|line| {
                    let path = line.strip_prefix("export PATH=\"")?;
                    Some(path.split(':').next()?.to_owned())
                })
        });
    let program = bin_dir
        .map(|dir| PathBuf::from(dir).join("kubectl"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    let mut command = Command::new(program);
    command.env("KUBECONFIG", kubeconfig_path());
    command
}

/// `kubectl apply` of one object in `namespace`.
pub fn kubectl_apply(namespace: &str, object: &serde_json::Value) {
    kubectl_apply_input(&["-n", namespace], &object.to_string());
}

/// `kubectl apply [args] -f -` of `input` (JSON or YAML, one or more objects).
pub fn kubectl_apply_input(args: &[&str], input: &str) {
    let mut apply = kubectl()
        .arg("apply")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(apply.wait().unwrap().success(), "kubectl apply of\n{input}");
}

/// A Role named after the ServiceAccount with `rules`, bound to it, and read access to Nodes
/// (cluster-scoped, so through a ClusterRole named after the namespace, removed on drop).
pub fn grant_service_account(
    ns: &TestNamespace,
    account: &str,
    rules: serde_json::Value,
) -> ClusterAccess {
    let subject =
        serde_json::json!([{"kind": "ServiceAccount", "name": account, "namespace": ns.name}]);
    let cluster_name = format!("ftp-operator-test-{}-{account}", ns.name);
    for object in [
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": account}, "rules": rules}),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": account},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": subject}),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": cluster_name},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]}),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
            "subjects": subject}),
    ] {
        kubectl_apply(&ns.name, &object);
    }
    ClusterAccess(cluster_name)
}

/// The cluster-scoped half of a grant; deleted when dropped.
pub struct ClusterAccess(String);

impl Drop for ClusterAccess {
    fn drop(&mut self) {
        let _ = kubectl()
            .args([
                "delete",
                "clusterrolebinding,clusterrole",
                &self.0,
                "--wait=false",
            ])
            .output();
    }
}

/// A kubeconfig that acts as ServiceAccount `account` of `namespace` (the admin may impersonate),
/// written by scripts/impersonating-kubeconfig.sh as the shell tiers write theirs.
pub fn impersonating_kubeconfig(namespace: &str, account: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ftp-operator-{namespace}-{account}.kubeconfig"));
    let kubectl = kubectl();
    let status = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/impersonating-kubeconfig.sh"
    ))
    .arg(format!("system:serviceaccount:{namespace}:{account}"))
    .arg(&path)
    .env("KUBECTL", kubectl.get_program())
    .env("KUBECONFIG", kubeconfig_path())
    .status()
    .expect("scripts/impersonating-kubeconfig.sh runs");
    assert!(
        status.success(),
        "scripts/impersonating-kubeconfig.sh could not write {}",
        path.display()
    );
    path
}
