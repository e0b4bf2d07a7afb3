//! One test's stack: the API double (with the stand-in kubelet) in this process, the real
//! `bulk-import-api` (EXECUTOR=kubernetes) and `bulk-import-operator` binaries as child
//! processes with a kubeconfig pointing at the double, the real importer run by the kubelet
//! for each Job, and the real Postgres (a fresh database), Redis and Garage (a fresh key
//! prefix) of `scripts/services.sh`.
//!
//! The namespace gets what the chart would install: the Secret `bulk-import` (DATABASE_URL,
//! REDIS_URL, S3 keys, JWT_SECRET) and the ConfigMap `bulk-import-config` (everything else),
//! which the operator's Jobs reference.
//!
//! RBAC is enforced as the chart grants it: each process authenticates as its service
//! account (a bearer token in its kubeconfig) and the double answers 403 to any request the
//! account's Role (`charts/tests/rbac_expected.json`, which the chart tests hold the rendered
//! Roles to, rule for rule) does not allow. The importer pods' account has no Role and their
//! pods mount no token: they get no kubeconfig at all.

#![allow(dead_code)]

use crate::{
    kube_double::{Double, DoubleConfig, Grant, Kind, Rbac, Selector, JOBS, LEASES, PODS},
    kube_http::KubeServer,
    kubelet::Kubelet,
};
use bulk_import_core::{
    crd::{resource_name, ImportJob, JOB_ID_LABEL},
    db, repo,
    testing::{settings_from, test_vars, Backend, TestVars},
    JobRow, Storage,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use reqwest::{multipart, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};
use uuid::Uuid;

pub const NS: &str = "bulk-import";
pub const IMAGE: &str = "bulk-import:dev";
pub const JWT_SECRET: &str = "e2e-test-secret-that-is-long-enough-0123456789";

/// The three binaries, from this build (`target/<profile>/`).
pub struct Bins {
    pub operator: PathBuf,
    pub api: PathBuf,
    pub importer: PathBuf,
}

pub fn bins() -> Bins {
    let operator = PathBuf::from(env!("CARGO_BIN_EXE_bulk-import-operator"));
    let sibling = |name: &str| {
        let p = operator.with_file_name(name);
        assert!(
            p.exists(),
            "{} is missing: build it first (`cargo build -p bulk-import-api -p bulk-import-importer`; \
             `cargo test --workspace --all-targets` and scripts/test.sh build it)",
            p.display()
        );
        p
    };
    Bins {
        api: sibling("bulk-import-api"),
        importer: sibling("bulk-import-importer"),
        operator,
    }
}

/// A loopback address of this stack's own (127.x.y.z): the API limits failed logins per
/// client address in the shared Redis, and other test suites fail logins from 127.0.0.1.
fn client_address() -> std::net::IpAddr {
    let b = *Uuid::new_v4().as_bytes();
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        b[0].max(1),
        b[1],
        b[2].clamp(1, 254),
    ))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process with its environment and log file; restartable.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    env: Vec<(String, String)>,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    fn new(name: &str, program: &Path, env: Vec<(String, String)>, dir: &Path) -> Proc {
        Proc {
            name: name.into(),
            program: program.into(),
            env,
            child: None,
            log: dir.join(format!("{name}.log")),
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.program)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn env(&self, var: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s); the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop on SIGTERM:\n{}", self.name, self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub operators: usize,
    pub slow_ms: u64,
    pub batch_size: u32,
    pub backoff_limit: i32,
    pub retention: &'static str,
    pub active_deadline_seconds: i64,
    /// IMPORTER_IMAGE and IMPORTER_IMAGE_PULL_POLICY.
    pub image: &'static str,
    pub pull_policy: &'static str,
    /// INSTANCE (the release) of the API and the operators; LEASE_NAME follows it.
    pub instance: Option<&'static str>,
    /// A rule the chart grants that this stack's double does not: (component, grant).
    pub without_grant: Option<(&'static str, Grant)>,
    /// The Lease is already held, before any operator starts, by this identity on a node
    /// whose clock is this many seconds behind (its `renewTime` looks that old here); the
    /// test renews it as that holder would (`renew_skewed_lease`).
    pub lease_held_by: Option<(&'static str, i64)>,
    /// IMPORTJOB_TTL_SECONDS_AFTER_FINISHED (unset: the default, 7 days).
    pub importjob_ttl: Option<u64>,
    /// More variables for the API and the operators (`MAX_ACTIVE_IMPORTS`, limits).
    pub env: Vec<(&'static str, String)>,
    /// IMPORTER_START_GRACE_SECONDS (unset: the default, 5 minutes).
    pub start_grace: Option<u64>,
    /// IMPORTER_MEMORY_LIMIT_MAX (unset: the default, 1Gi).
    pub memory_limit_max: Option<&'static str>,
    /// The installed CRD lacks this property of `status` (an older CRD left by Helm).
    pub crd_without_status_field: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            operators: 1,
            slow_ms: 0,
            batch_size: 100,
            backoff_limit: 3,
            retention: "keep",
            active_deadline_seconds: 3600,
            image: IMAGE,
            pull_policy: "IfNotPresent",
            instance: None,
            without_grant: None,
            lease_held_by: None,
            importjob_ttl: None,
            env: Vec::new(),
            start_grace: None,
            memory_limit_max: None,
            crd_without_status_field: None,
        }
    }
}

/// The service accounts the chart creates, and the tokens their kubeconfigs carry here.
pub const ACCOUNTS: [(&str, &str); 3] = [
    ("api", "bulk-import-api"),
    ("operator", "bulk-import-operator"),
    ("importer", "bulk-import-importer"),
];

/// The chart's rules per component (`charts/tests/rbac_expected.json`, what the chart tests
/// hold the rendered Roles to), flattened.
pub fn chart_grants() -> BTreeMap<String, BTreeSet<Grant>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/tests/rbac_expected.json"
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    ACCOUNTS
        .iter()
        .map(|(component, _)| {
            // The operator's ClusterRole (the CRD, by name) is its grant too.
            let cluster = match *component {
                "operator" => json["operatorCluster"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let grants = json[component]
                .as_array()
                .unwrap_or_else(|| panic!("no {component} in {path}"))
                .iter()
                .chain(cluster.iter())
                .flat_map(|rule| {
                    let (g, r) = (
                        rule["apiGroup"].as_str().unwrap().to_string(),
                        rule["resource"].as_str().unwrap().to_string(),
                    );
                    rule["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(move |v| (g.clone(), r.clone(), v.as_str().unwrap().to_string()))
                        .collect::<Vec<_>>()
                })
                .collect();
            (component.to_string(), grants)
        })
        .collect()
}

fn token_of(account: &str) -> String {
    format!("token-of-{account}")
}

/// The user a component's requests are authorized as.
pub fn user_of(component: &str) -> String {
    let account = ACCOUNTS.iter().find(|(c, _)| *c == component).unwrap().1;
    format!("system:serviceaccount:{NS}:{account}")
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub server: KubeServer,
    pub double: Arc<Double>,
    pub kubelet: Kubelet,
    pub vars: TestVars,
    pub pool: PgPool,
    pub storage: Storage,
    pub http: reqwest::Client,
    pub kube: kube::Client,
    pub api: Proc,
    pub api_base: String,
    pub operators: Vec<Proc>,
    pub kubeconfig: PathBuf,
    pub lease_name: String,
}

impl Stack {
    pub async fn start(opts: Options) -> Stack {
        let bins = bins();
        let dir = tempfile::tempdir().unwrap();
        let vars = test_vars(Backend::S3, dir.path()).await;
        let settings = settings_from(&vars);
        let pool = db::connect(settings.database_url(), 4).await.unwrap();
        let storage = Storage::from_settings(&settings).unwrap();

        let double = Double::new(DoubleConfig::default());
        if let Some(field) = opts.crd_without_status_field {
            let mut crd = double.installed_crd("importjobs.bulkimport.dev").unwrap();
            let props = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
                ["status"]["properties"];
            props.as_object_mut().unwrap().remove(field);
            double.install_crd(crd);
        }
        let server = KubeServer::start(double.clone()).await;
        // The tests' own client: no token, not subject to RBAC (like a cluster admin).
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, NS, None);
        let kube = server.client(NS);
        let mut grants = chart_grants();
        if let Some((component, grant)) = &opts.without_grant {
            let had = grants.get_mut(*component).unwrap().remove(grant);
            assert!(had, "the chart does not grant {component} {grant:?}");
        }
        let mut rbac = Rbac::default();
        let mut kubeconfigs = HashMap::new();
        for (component, account) in ACCOUNTS {
            rbac.accounts.insert(
                token_of(account),
                (NS.into(), account.into(), grants[component].clone()),
            );
            let path = dir.path().join(format!("kubeconfig-{account}"));
            server.write_kubeconfig(&path, NS, Some(&token_of(account)));
            kubeconfigs.insert(account.to_string(), path);
        }
        double.set_rbac(rbac);

        // What the chart installs: the importer's Secret and ConfigMap.
        let secret_keys = [
            "DATABASE_URL",
            "REDIS_URL",
            "S3_ACCESS_KEY",
            "S3_SECRET_KEY",
        ];
        let mut secret: BTreeMap<String, String> = secret_keys
            .iter()
            .map(|k| (k.to_string(), vars[*k].clone()))
            .collect();
        secret.insert("JWT_SECRET".into(), JWT_SECRET.into());
        let mut config: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &vars {
            if !secret_keys.contains(&k.as_str()) {
                config.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in [
            ("EXECUTOR", "kubernetes".to_string()),
            ("KUBE_NAMESPACE", NS.to_string()),
            ("BATCH_SIZE", opts.batch_size.to_string()),
            ("PROGRESS_EVERY", "50".to_string()),
            ("IMPORT_SLOW_MS", opts.slow_ms.to_string()),
            ("RUST_LOG", "info,sqlx=warn".to_string()),
            ("NO_COLOR", "1".to_string()),
        ] {
            config.insert(k.into(), v);
        }
        let secrets: Api<Secret> = Api::namespaced(kube.clone(), NS);
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "bulk-import"},
                    "stringData": secret,
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let configmaps: Api<ConfigMap> = Api::namespaced(kube.clone(), NS);
        configmaps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "bulk-import-config"},
                    "data": config,
                }))
                .unwrap(),
            )
            .await
            .unwrap();

        let bin_dir = bins.importer.parent().unwrap().to_path_buf();
        let kubelet = Kubelet::start(
            double.clone(),
            HashMap::from([(IMAGE.to_string(), bin_dir)]),
            vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            kubeconfigs.clone(),
            &dir.path().join("pods"),
            Duration::from_millis(500),
        );

        let mut common: Vec<(String, String)> = vars.clone().into_iter().collect();
        common.extend([
            ("KUBE_NAMESPACE".into(), NS.into()),
            ("NO_COLOR".into(), "1".into()),
        ]);
        if let Some(instance) = opts.instance {
            common.push(("INSTANCE".into(), instance.into()));
        }
        common.extend(opts.env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let lease_name = match opts.instance {
            Some(i) => format!("{i}-bulk-import-operator"),
            None => "bulk-import-operator".into(),
        };
        if let Some((holder, behind)) = opts.lease_held_by {
            double
                .create(
                    &LEASES,
                    NS,
                    skewed_lease(&lease_name, holder, behind, 1),
                    &crate::kube_double::WriteOpts::manager("skewed-holder"),
                )
                .unwrap();
        }
        let operators = (0..opts.operators)
            .map(|i| {
                let mut env = common.clone();
                env.extend(
                    [
                        // No JWT_SECRET: the operator never signs a token.
                        (
                            "KUBECONFIG",
                            kubeconfigs["bulk-import-operator"].display().to_string(),
                        ),
                        ("LEASE_NAME", lease_name.clone()),
                        (
                            "IMPORTJOB_TTL_SECONDS_AFTER_FINISHED",
                            opts.importjob_ttl.unwrap_or(604800).to_string(),
                        ),
                        ("IMPORTER_IMAGE_PULL_POLICY", opts.pull_policy.into()),
                        ("POD_NAME", format!("operator-{i}")),
                        ("OPERATOR_BIND_ADDR", format!("127.0.0.1:{}", free_port())),
                        ("IMPORTER_IMAGE", opts.image.into()),
                        ("IMPORTER_SECRET_NAME", "bulk-import".into()),
                        ("IMPORTER_CONFIGMAP_NAME", "bulk-import-config".into()),
                        ("JOB_BACKOFF_LIMIT", opts.backoff_limit.to_string()),
                        (
                            "JOB_ACTIVE_DEADLINE_SECONDS",
                            opts.active_deadline_seconds.to_string(),
                        ),
                        ("OBJECT_RETENTION", opts.retention.into()),
                        ("RUST_LOG", "info,kube=warn,sqlx=warn".into()),
                        (
                            "IMPORTER_START_GRACE_SECONDS",
                            opts.start_grace.unwrap_or(300).to_string(),
                        ),
                        (
                            "IMPORTER_MEMORY_LIMIT_MAX",
                            opts.memory_limit_max.unwrap_or("1Gi").into(),
                        ),
                    ]
                    .map(|(k, v)| (k.to_string(), v)),
                );
                let mut p = Proc::new(&format!("operator-{i}"), &bins.operator, env, dir.path());
                p.start();
                p
            })
            .collect();

        let port = free_port();
        let mut env = common.clone();
        env.extend(
            [
                ("EXECUTOR", "kubernetes".to_string()),
                ("JWT_SECRET", JWT_SECRET.into()),
                (
                    "KUBECONFIG",
                    kubeconfigs["bulk-import-api"].display().to_string(),
                ),
                ("BIND_ADDR", format!("127.0.0.1:{port}")),
                ("RUST_LOG", "info,sqlx=warn".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        let mut api = Proc::new("api", &bins.api, env, dir.path());
        api.start();

        let stack = Stack {
            dir,
            server,
            double,
            kubelet,
            vars,
            pool,
            storage,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .local_address(client_address())
                .build()
                .unwrap(),
            kube,
            api,
            api_base: format!("http://127.0.0.1:{port}"),
            operators,
            kubeconfig,
            lease_name,
        };
        stack
            .eventually(
                "the API answers /health",
                Duration::from_secs(60),
                || async {
                    let r = stack.http.get(stack.url("/health")).send().await.ok()?;
                    (r.status() == StatusCode::OK).then_some(())
                },
            )
            .await;
        stack
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_base)
    }

    /// Registers a fresh user; its bearer token.
    pub async fn user(&self) -> String {
        let email = format!("u{}@example.com", Uuid::new_v4().simple());
        let creds = json!({"email": email, "password": "pass12345"});
        let r = self
            .http
            .post(self.url("/auth/register"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = self
            .http
            .post(self.url("/auth/token"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "bearer");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// POST /imports; the status and the job JSON.
    pub async fn upload(
        &self,
        token: &str,
        key: &str,
        mode: &str,
        file_name: &str,
        file: &[u8],
    ) -> (StatusCode, Value) {
        let form = multipart::Form::new().part(
            "file",
            multipart::Part::bytes(file.to_vec())
                .file_name(file_name.to_string())
                .mime_str("text/csv")
                .unwrap(),
        );
        let r = self
            .http
            .post(self.url(&format!("/imports?mode={mode}")))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}\n{}", self.diagnostics()));
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST with no body (the job control routes); the status and the JSON.
    pub async fn post(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:?}\n{}", self.diagnostics()));
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The ImportJob, read through the API double with the typed kube client.
    pub async fn import_job(&self, id: Uuid) -> Option<ImportJob> {
        Api::<ImportJob>::namespaced(self.kube.clone(), NS)
            .get_opt(&resource_name(id))
            .await
            .unwrap()
    }

    pub async fn row(&self, id: Uuid) -> JobRow {
        repo::get(&self.pool, id).await.unwrap().expect("job row")
    }

    /// The batch/v1 Job of an import, straight from the double's store.
    pub fn job(&self, id: Uuid) -> Option<Value> {
        self.double.get_opt(&JOBS, NS, &resource_name(id))
    }

    pub fn pods(&self, id: Uuid) -> Vec<Value> {
        let (pods, _) = self.double.list(
            &PODS,
            Some(NS),
            &Selector::labels(&format!("{JOB_ID_LABEL}={id}")),
        );
        pods
    }

    pub fn creates(&self, k: &'static Kind, name: &str) -> u32 {
        self.double.creates(k, NS, name)
    }

    /// Who holds the operator's Lease, and the Lease itself.
    pub fn lease(&self) -> Option<Value> {
        self.double.get_opt(&LEASES, NS, &self.lease_name)
    }

    /// Renews the Lease as its holder on a node with a skewed clock would: `renewTime` is
    /// that node's now, `behind` seconds behind this one's.
    pub fn renew_skewed_lease(&self, holder: &str, behind: i64) {
        let lease = self.lease().expect("the Lease");
        let transitions = lease["spec"]["leaseTransitions"].as_i64().unwrap_or(1);
        let mut renewed = skewed_lease(&self.lease_name, holder, behind, transitions);
        renewed["metadata"] = lease["metadata"].clone();
        self.double
            .replace(
                &LEASES,
                NS,
                &self.lease_name,
                crate::kube_double::Sub::Main,
                renewed,
                &crate::kube_double::WriteOpts::manager("skewed-holder"),
            )
            .unwrap();
    }

    pub fn leader(&self) -> Option<String> {
        self.lease()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
            .filter(|h| !h.is_empty())
    }

    /// Starts another operator like the first, with these settings changed (another
    /// release in the same namespace: `INSTANCE`, `LEASE_NAME`, `POD_NAME`).
    pub fn add_operator(&mut self, changes: &[(&str, &str)]) {
        let first = &self.operators[0];
        let mut env: Vec<(String, String)> = first
            .env
            .iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .cloned()
            .collect();
        env.extend(changes.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env.retain(|(k, _)| k != "OPERATOR_BIND_ADDR");
        env.push((
            "OPERATOR_BIND_ADDR".into(),
            format!("127.0.0.1:{}", free_port()),
        ));
        let name = env
            .iter()
            .find(|(k, _)| k == "POD_NAME")
            .map(|(_, v)| v.clone())
            .unwrap();
        let mut p = Proc::new(&name, &bins().operator, env, self.dir.path());
        p.start();
        self.operators.push(p);
    }

    pub fn operator(&mut self, identity: &str) -> &mut Proc {
        self.operators
            .iter_mut()
            .find(|p| p.env("POD_NAME") == Some(identity))
            .unwrap_or_else(|| panic!("no operator {identity}"))
    }

    /// Logs of every process and pod, for failure messages (the last lines of each).
    pub fn diagnostics(&self) -> String {
        fn tail(s: &str, n: usize) -> String {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        let mut out = format!("--- api ---\n{}\n", tail(&self.api.logs(), 60));
        for o in &self.operators {
            out.push_str(&format!("--- {} ---\n{}\n", o.name, tail(&o.logs(), 60)));
        }
        out.push_str(&tail(&self.kubelet.all_logs(), 120));
        out
    }

    /// Polls `f` until it returns `Some`, failing with the stack's logs after `timeout`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for: {what}\n{}", self.diagnostics());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
            // E2E_KEEP_LOGS=1 keeps the directory with every process's and pod's log.
            if std::env::var_os("E2E_KEEP_LOGS").is_some() {
                let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
                eprintln!("logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// A CSV of `n` rows: every tenth has an invalid email, every 25th repeats an earlier one.
pub fn csv(n: usize) -> Vec<u8> {
    let mut out = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..n {
        if i % 10 == 9 {
            out.push_str(&format!("bad-{i},Bad,,,\n"));
        } else if i % 25 == 24 {
            out.push_str(&format!("user{}@example.com,Again{i},,,\n", i - 22));
        } else {
            out.push_str(&format!(
                "user{i}@example.com,First{i},Last{i},+47 555 {i:04},City\n"
            ));
        }
    }
    out.into_bytes()
}

pub type Customer = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// What an import leaves behind: its counters, the customers table and errors.csv.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub status: String,
    pub processed: i64,
    pub inserted: i64,
    pub updated: i64,
    pub errors: i64,
    pub customers: Vec<Customer>,
    pub report: Option<Vec<u8>>,
}

/// `got` is what an uninterrupted run of the same file gave (`reference_run`): the same
/// counters, the same customers row for row, the same errors.csv byte for byte.
pub fn assert_same_outcome(got: &Outcome, want: &Outcome) {
    assert_eq!(
        (
            &got.status,
            got.processed,
            got.inserted,
            got.updated,
            got.errors
        ),
        (
            &want.status,
            want.processed,
            want.inserted,
            want.updated,
            want.errors
        )
    );
    assert!(
        got.customers == want.customers,
        "customers differ from the uninterrupted run"
    );
    assert!(
        got.report == want.report,
        "errors.csv differs from the uninterrupted run"
    );
}

pub async fn outcome(pool: &PgPool, storage: &Storage, id: Uuid) -> Outcome {
    let job = repo::get(pool, id).await.unwrap().expect("job row");
    let customers = sqlx::query_as::<_, Customer>(
        "SELECT email, first_name, last_name, phone, city, last_import_line FROM customers ORDER BY email",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let report = match &job.report_object {
        Some(key) => Some(storage.read_to_vec(key).await.unwrap()),
        None => None,
    };
    Outcome {
        status: job.status().as_str().to_string(),
        processed: job.processed_rows,
        inserted: job.inserted_rows,
        updated: job.updated_rows,
        errors: job.error_rows,
        customers,
        report,
    }
}

/// The same file imported without any interruption: the importer binary run once, by
/// hand, in a database of its own.
pub async fn reference_run(file: &[u8], mode: &str, batch_size: u32) -> Outcome {
    let importer = bins().importer;
    let dir = tempfile::tempdir().unwrap();
    let mut vars = test_vars(Backend::S3, dir.path()).await;
    vars.insert("BATCH_SIZE".into(), batch_size.to_string());
    let path = dir.path().join("reference.csv");
    std::fs::write(&path, file).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&importer)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&vars)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "importer {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let id: Uuid = run(&["submit", "--file", path.to_str().unwrap(), "--mode", mode])
        .trim()
        .parse()
        .unwrap();
    run(&["--job-id", &id.to_string()]);
    let settings = settings_from(&vars);
    let pool = db::connect(settings.database_url(), 2).await.unwrap();
    let storage = Storage::from_settings(&settings).unwrap();
    outcome(&pool, &storage, id).await
}

/// A Lease held by `holder`, renewed now by a clock `behind` seconds behind this one.
fn skewed_lease(name: &str, holder: &str, behind: i64, transitions: i64) -> Value {
    let then = (chrono::Utc::now() - chrono::Duration::seconds(behind))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15,
            "acquireTime": then, "renewTime": then, "leaseTransitions": transitions,
        },
    })
}
