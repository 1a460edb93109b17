//! Throwaway PostgreSQL clusters for the tests: `initdb` and `pg_ctl` from
//! Debian's packages (installed by `softhsm/setup.sh --deps-only`), in a temp
//! directory, on a free port, as the unprivileged `postgres` user when the
//! tests run as root (PostgreSQL refuses to run as root). One cluster serves
//! the whole test binary, one database per test environment; a test that stops
//! PostgreSQL starts a cluster of its own. A watchdog process stops every
//! cluster and removes its directory when the test binary exits, also when it
//! is killed.
//!
//! The tests' clusters run with `fsync = off`: they hold test data only, and
//! no test crashes PostgreSQL itself (killing inkan loses nothing PostgreSQL
//! has acknowledged, whatever its fsync); the load bench's is durable
//! ([`Cluster::durable`]). TLS is on with the fixture server certificate; the
//! database `it_tls` accepts TLS connections only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A file of the fixture PKI (this module is also the load bench's).
fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki").join(rel)
}

/// A running cluster.
pub struct Cluster {
    /// The cluster's directory (data, socket, log).
    dir: PathBuf,
    bin: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Whether it is stopped on drop (own clusters; the shared one lives as
    /// long as the test binary and is stopped by its watchdog).
    owned: bool,
}

/// How a cluster keeps its data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// `fsync = off`: for tests.
    Off,
    /// Every commit flushed (`fsync = on`, `synchronous_commit = on`), as
    /// SQLite's `synchronous = full`: for the load bench.
    #[allow(dead_code)] // used by benches/load.rs
    Full,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The cluster the tests share.
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(|| Cluster::start(false, Durability::Off))
}

/// Whether the integration tests run against PostgreSQL (`INKAN_TEST_STORE=postgres`).
pub fn selected() -> bool {
    match std::env::var("INKAN_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("INKAN_TEST_STORE must be sqlite or postgres, not {other:?}"),
    }
}

/// PostgreSQL's programs: the newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server in /usr/lib/postgresql: run softhsm/setup.sh --deps-only (installs postgresql)")
    })
}

/// The user that runs PostgreSQL when the tests run as root.
fn server_user() -> Option<(String, u32, u32)> {
    let uid = Command::new("id").arg("-u").output().expect("id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("id");
        assert!(out.status.success(), "running as root needs the user postgres (made by Debian's postgresql package)");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id")
    };
    Some(("postgres".into(), id("-u"), id("-g")))
}

/// A command run as the server's user.
fn as_server(program: &Path) -> Command {
    match server_user() {
        Some((user, ..)) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", &user, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Cluster {
    /// A cluster of a test's own, stopped and removed when dropped.
    pub fn own() -> Cluster {
        Cluster::start(true, Durability::Off)
    }

    /// A cluster of its own that flushes every commit (the load bench's).
    #[allow(dead_code)] // used by benches/load.rs, which includes this file
    pub fn durable() -> Cluster {
        Cluster::start(true, Durability::Full)
    }

    fn start(owned: bool, durability: Durability) -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("inkan-pg-").tempdir().expect("temp dir").keep();
        let user = server_user();
        if let Some((_, uid, gid)) = &user {
            std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).expect("chown");
        }
        let data = dir.join("data");
        let mut initdb = as_server(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "inkan", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
        run(initdb, "initdb");

        // TLS with the fixture server certificate (the key must belong to the
        // server's user and be private).
        for (name, from) in [("server.crt", "server.pem"), ("server.key", "server.key")] {
            let to = dir.join(name);
            std::fs::copy(fixture(from), &to).expect("copy TLS file");
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
            if let Some((_, uid, gid)) = &user {
                std::os::unix::fs::chown(&to, Some(*uid), Some(*gid)).expect("chown");
            }
        }
        let port = free_port();
        let flush = match durability {
            Durability::Off => "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n",
            Durability::Full => "fsync = on\nsynchronous_commit = on\n",
        };
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             max_connections = 300\nshared_buffers = 32MB\n{flush}ssl = on\nssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\nlog_min_messages = warning\n",
            dir = dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl it_tls all 127.0.0.1/32 trust\nhost it_tls all 127.0.0.1/32 reject\n\
             host all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        let cluster = Cluster { dir, bin, port, owned };
        cluster.watchdog();
        cluster.start_server();
        cluster
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&self) {
        let mut pg_ctl = as_server(&self.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "start"]);
        // pg_ctl's server must not hold the test's output pipes open.
        pg_ctl.stdout(Stdio::null()).stderr(Stdio::null());
        let status = pg_ctl.stdin(Stdio::null()).status().expect("pg_ctl");
        assert!(status.success(), "pg_ctl start failed: {}", self.log());
    }

    /// Stops the server (fast shutdown: connections are closed).
    pub fn stop_server(&self) {
        let mut pg_ctl = as_server(&self.bin.join("pg_ctl"));
        pg_ctl.arg("-D").arg(self.dir.join("data")).args(["-m", "fast", "-w", "stop"]);
        run(pg_ctl, "pg_ctl stop");
    }

    /// The postmaster's process id (its children are the cluster's processes).
    #[allow(dead_code)] // used by benches/load.rs
    pub fn postmaster(&self) -> u32 {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("postmaster.pid");
        pid.lines().next().and_then(|l| l.trim().parse().ok()).expect("pid")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Stops the cluster and removes its directory when this process ends,
    /// however it ends.
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match server_user() {
            Some((user, ..)) => {
                format!("runuser -u {user} -- {} -D {}/data -m immediate stop", pg_ctl.display(), self.dir.display())
            }
            None => format!("{} -D {}/data -m immediate stop", pg_ctl.display(), self.dir.display()),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        // `setsid -f` forks the watchdog into a session of its own (a Ctrl-C
        // of the tests does not reach it) and returns at once.
        let status = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start the cluster's watchdog");
        assert!(status.success(), "setsid failed");
    }

    /// A new, empty database.
    pub fn create_database(&self) -> Database {
        let name = format!("it_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
        let db = Database { bin: self.bin.clone(), dir: self.dir.clone(), port: self.port, name };
        db.on("postgres").psql(&format!("CREATE DATABASE {}", db.name)).expect("create database");
        db
    }

    /// The database that accepts TLS connections only (made again, empty).
    pub fn tls_database(&self) -> Database {
        let db = Database { bin: self.bin.clone(), dir: self.dir.clone(), port: self.port, name: "it_tls".into() };
        let admin = db.on("postgres");
        admin.psql("DROP DATABASE IF EXISTS it_tls").expect("drop");
        admin.psql("CREATE DATABASE it_tls").expect("create");
        db
    }

    /// Runs SQL in the maintenance database.
    pub fn psql(&self, sql: &str) -> Result<Vec<String>, String> {
        Database { bin: self.bin.clone(), dir: self.dir.clone(), port: self.port, name: "postgres".into() }.psql(sql)
    }

    /// Waits until the server accepts connections (after a start).
    pub fn wait_ready(&self) {
        let started = Instant::now();
        while self.psql("SELECT 1").is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "PostgreSQL did not come back: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            let mut pg_ctl = as_server(&self.bin.join("pg_ctl"));
            pg_ctl.arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "-w", "stop"]);
            let _ = pg_ctl.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open");
    f.write_all(text.as_bytes()).expect("append");
}

/// One database of a cluster.
#[derive(Clone, Debug)]
pub struct Database {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Its name.
    pub name: String,
}

impl Database {
    /// Its URL (TCP, trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://inkan@127.0.0.1:{}/{}", self.port, self.name)
    }

    /// Another database of the same cluster.
    fn on(&self, name: &str) -> Database {
        Database { name: name.into(), ..self.clone() }
    }

    /// Runs SQL through the server's socket; returns the rows of the last
    /// statement, columns separated by `|` (NULL as empty), or psql's error.
    pub fn psql(&self, sql: &str) -> Result<Vec<String>, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "inkan", "-d", &self.name, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
    }
}
