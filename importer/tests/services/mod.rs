//! Private Postgres, Redis and Garage instances on free loopback ports, for fault tests that
//! stop and restart a service: the shared ones (`scripts/services.sh`) serve every other test
//! running beside them and must never be disturbed. Each instance lives in a temporary
//! directory and is stopped when dropped. Waits poll with deadlines.
//!
//! Used by `importer/tests/it/faults.rs` and, through `#[path]`, by the API's fault and
//! security tests.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A loopback port nothing listens on now, and never handed out before in this process. The
/// port is released before the server binds it, so tests running beside each other (threads of
/// one test binary) could otherwise be handed the same one: a Garage that cannot bind its S3
/// port keeps running, and another test's Postgres on that port then answers its readiness
/// check, until that test stops its Postgres (a flaky `connection refused`).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

/// Polls `ok` until it holds, panicking with `what` after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions. Avoids a libc dependency for one call.
    extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}

/// A Postgres cluster of its own (initdb in a temporary directory), stopped and started at
/// will. initdb refuses to run as root, so as root the cluster belongs to `postgres`.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    pub password: Option<String>,
}

fn postgres_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("Postgres is installed (scripts/services.sh)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bin/initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .expect("a Postgres server version")
        .join("bin")
}

impl PrivatePostgres {
    /// Trust authentication on loopback.
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::init(None)
    }

    /// Password (scram) authentication, so that the password in the URL is really used.
    pub fn with_password(password: &str) -> PrivatePostgres {
        PrivatePostgres::init(Some(password.to_string()))
    }

    fn init(password: Option<String>) -> PrivatePostgres {
        let dir = tempfile::Builder::new().prefix("bi-pg-").tempdir().unwrap();
        if is_root() {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let pg = PrivatePostgres {
            bin: postgres_bin(),
            port: free_port(),
            password,
            dir,
        };
        let mut initdb = pg.as_owner(&pg.bin.join("initdb"));
        initdb.arg("-D").arg(pg.data()).args([
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        match &pg.password {
            Some(p) => {
                let pwfile = pg.dir.path().join("pwfile");
                std::fs::write(&pwfile, p).unwrap();
                if is_root() {
                    run(Command::new("chown").arg("postgres:postgres").arg(&pwfile));
                }
                initdb
                    .arg("--auth=scram-sha-256")
                    .arg("--pwfile")
                    .arg(&pwfile);
            }
            None => {
                initdb.arg("--auth=trust");
            }
        }
        run(&mut initdb);
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_owner(&self, program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c.current_dir("/");
            c
        } else {
            Command::new(program)
        }
    }

    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        run(self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-o", &opts, "-w", "-t", "60", "start"])
            .stdout(Stdio::null()));
        wait_until(30, "the private Postgres", || port_open(self.port));
    }

    /// Stops at once, like a crash (`-m immediate`: no checkpoint, sessions cut).
    pub fn crash(&self) {
        run(self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null()));
    }

    /// `postgres://…/{db}` (the `postgres` database at first; see [`create_database`]).
    pub fn url(&self, db: &str) -> String {
        match &self.password {
            Some(p) => format!("postgres://postgres:{p}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Creates `bulk_import` and applies the migrations; returns its URL.
    pub async fn create_database(&self) -> String {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the private Postgres");
        sqlx::query("CREATE DATABASE bulk_import")
            .execute(&mut admin)
            .await
            .unwrap();
        let url = self.url("bulk_import");
        let pool = bulk_import_core::db::connect(&url, 1).await.unwrap();
        bulk_import_core::db::MIGRATOR.run(&pool).await.unwrap();
        pool.close().await;
        url
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A `redis-server` of its own, optionally with a password.
pub struct PrivateRedis {
    pub port: u16,
    password: Option<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start(password: Option<&str>) -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            password: password.map(str::to_string),
            child: None,
        };
        r.start_server();
        r
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn start_server(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        self.child = Some(cmd.spawn().expect("redis-server is installed"));
        wait_until(20, "the private Redis", || port_open(self.port));
    }

    /// Kills the server (SIGKILL) and waits until its port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_until(20, "the private Redis to stop", || !port_open(self.port));
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A single-node Garage of its own (the setup of `scripts/services.sh`, on free ports), with
/// the bucket `imports` and a key; its data survives [`PrivateGarage::stop`] and restarts.
pub struct PrivateGarage {
    dir: tempfile::TempDir,
    pub s3_port: u16,
    rpc_port: u16,
    child: Option<Child>,
    pub access_key: String,
    pub secret_key: String,
}

fn garage_bin() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = Path::new(&home).join(".cargo/bin/garage");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        PathBuf::from("garage")
    }
}

impl PrivateGarage {
    pub fn start() -> PrivateGarage {
        let dir = tempfile::Builder::new()
            .prefix("bi-garage-")
            .tempdir()
            .unwrap();
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let conf = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("garage.toml"), conf).unwrap();
        let mut g = PrivateGarage {
            dir,
            s3_port,
            rpc_port,
            child: None,
            access_key: "GK00000000000000000000000f".into(),
            secret_key: "f".repeat(64),
        };
        g.start_server();
        wait_until(30, "garage status", || {
            g.cli()
                .arg("status")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        let node = run(g.cli().args(["node", "id", "-q"]));
        let node = node.trim().split('@').next().unwrap().to_string();
        run(g
            .cli()
            .args(["layout", "assign", "-z", "dc1", "-c", "1G", &node]));
        run(g.cli().args(["layout", "apply", "--version", "1"]));
        run(g
            .cli()
            .args(["key", "import", "--yes", "-n", "test"])
            .arg(&g.access_key)
            .arg(&g.secret_key));
        // The layout takes a moment to apply; bucket creation fails until it has.
        wait_until(30, "garage bucket create", || {
            g.cli()
                .args(["bucket", "create", "imports"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        run(g
            .cli()
            .args([
                "bucket", "allow", "--read", "--write", "--owner", "imports", "--key",
            ])
            .arg(&g.access_key));
        g
    }

    fn cli(&self) -> Command {
        let mut c = Command::new(garage_bin());
        c.arg("-c").arg(self.dir.path().join("garage.toml"));
        c.stdin(Stdio::null());
        c
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The S3 variables of this instance (with `STORAGE=s3`).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE", "s3".into()),
            ("S3_ENDPOINT_URL", self.endpoint()),
            ("S3_PUBLIC_ENDPOINT_URL", self.endpoint()),
            ("S3_ACCESS_KEY", self.access_key.clone()),
            ("S3_SECRET_KEY", self.secret_key.clone()),
            ("S3_BUCKET", "imports".into()),
            ("S3_REGION", "us-east-1".into()),
        ]
    }

    pub fn start_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .unwrap();
        self.child = Some(
            self.cli()
                .arg("server")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("garage is installed (scripts/services.sh)"),
        );
        wait_until(30, "the private Garage", || {
            port_open(self.s3_port) && port_open(self.rpc_port)
        });
    }

    /// Kills the server (SIGKILL) and waits until its S3 port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_until(20, "the private Garage to stop", || {
            !port_open(self.s3_port)
        });
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: requests to it hang meanwhile.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        run(Command::new("kill").arg(signal).arg(pid.to_string()));
    }
}

impl Drop for PrivateGarage {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
