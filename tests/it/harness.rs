//! Test environments: a temp directory with a config file, a SoftHSM token and
//! a database, and helpers to run the real `inkan` binary against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::postgres;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture file.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures/pki").join(rel)
}

pub const USER_PIN: &str = "it-user-1234";
pub const SO_PIN: &str = "it-so-5678";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One isolated inkan installation: its own directory, token and database
/// (a SQLite file, or with `INKAN_TEST_STORE=postgres` a database of its own
/// on the shared throwaway cluster).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The PostgreSQL database, if the store is PostgreSQL.
    pub db: Option<postgres::Database>,
}

/// The result of running the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl Env {
    /// A new environment with `inkan init` done.
    pub fn new() -> Env {
        let env = Env::bare();
        env.ok(&["init"]);
        env
    }

    /// A new environment, nothing initialised, on the selected store.
    pub fn bare() -> Env {
        Env::bare_on(postgres::selected())
    }

    /// A new environment, nothing initialised, on PostgreSQL (the shared
    /// cluster) or SQLite.
    pub fn bare_on(pg: bool) -> Env {
        Env::bare_with(pg.then(|| postgres::shared().create_database()))
    }

    /// A new environment, nothing initialised, on this PostgreSQL database
    /// (else SQLite).
    pub fn bare_with(db: Option<postgres::Database>) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let label = format!("it-{}-{n}", std::process::id());
        let config = dir.path().join("inkan.toml");
        let text = format!(
            r#"data_dir = "var"
[token]
label = "{label}"
user_pin = "{USER_PIN}"
so_pin = "{SO_PIN}"
[pki]
signing_ca = "{ca}"
chain = ["{root}"]
"#,
            ca = fixture("hpki-signing-ca.pem").display(),
            root = fixture("hpki-root.pem").display(),
        );
        let text = match &db {
            Some(db) => format!("{text}[store]\nurl = \"{}\"\n", db.url()),
            None => text,
        };
        std::fs::write(&config, text).expect("config");
        Env { dir, config, db }
    }

    /// Runs SQL statements on the environment's database directly (as an
    /// attacker with file or database access would); returns the rows of the
    /// last one, columns separated by `|` (NULL as empty), or the database's
    /// error.
    pub fn sql(&self, sql: &str) -> Result<Vec<String>, String> {
        match &self.db {
            Some(db) => db.psql(sql),
            None => {
                let conn = rusqlite::Connection::open(self.data().join("inkan.db")).map_err(|e| e.to_string())?;
                let (init, last) = match sql.trim().trim_end_matches(';').rsplit_once(';') {
                    Some((init, last)) => (init, last),
                    None => ("", sql),
                };
                conn.execute_batch(init).map_err(|e| e.to_string())?;
                let mut stmt = conn.prepare(last).map_err(|e| e.to_string())?;
                let n = stmt.column_count();
                let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                while let Some(r) = rows.next().map_err(|e| e.to_string())? {
                    let mut line = Vec::new();
                    for i in 0..n {
                        line.push(match r.get_ref(i).map_err(|e| e.to_string())? {
                            rusqlite::types::ValueRef::Null => String::new(),
                            rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                            rusqlite::types::ValueRef::Real(v) => v.to_string(),
                            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                            rusqlite::types::ValueRef::Blob(b) => {
                                format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
                            }
                        });
                    }
                    out.push(line.join("|"));
                }
                Ok(out)
            }
        }
    }

    /// [`Env::sql`], expecting success.
    pub fn sql_ok(&self, sql: &str) -> Vec<String> {
        self.sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Whether the store is PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.db.is_some()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn data(&self) -> PathBuf {
        self.path("var")
    }

    /// Runs `inkan --config <env> args...` with extra environment variables.
    pub fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inkan"));
        cmd.arg("--config").arg(&self.config).args(args).current_dir(root());
        cmd.env_remove("INKAN_CONFIG").env_remove("INKAN_TOKEN_USER_PIN").env_remove("INKAN_DANGER_CRASH_AT");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let Output { status, stdout, stderr } = cmd.output().expect("run inkan");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "inkan {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
        r.stdout
    }

    /// Runs with `--json` and expects success.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let r = self.run(&a);
        assert_eq!(r.code, 0, "inkan {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
        r.json()
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_ne!(r.code, 0, "inkan {args:?} should have failed:\n{}", r.stdout);
        assert!(r.stderr.starts_with("error: "), "error output should say what failed: {}", r.stderr);
        r.stderr
    }

    /// Adds a user.
    pub fn add_user(&self, id: &str, qualification: &str) {
        self.ok(&["user", "add", id, "--name", "試験 太郎", "--qualification", qualification]);
    }

    /// Issues a certificate for a CSR file with the fixture signing CA.
    pub fn issue(&self, csr: &Path, out: &Path, extra: &[&str]) {
        let mut args =
            vec!["dev", "issue-cert", "--csr", csr.to_str().expect("utf-8"), "--out", out.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// A user (a doctor) with an active key of `alg`: returns the certificate path.
    pub fn user_with_key(&self, id: &str, alg: &str) -> PathBuf {
        self.user_with_key_as(id, alg, "doctor")
    }

    /// A user of `qualification` with an active key of `alg`, its
    /// certificate issued for that qualification (hcRole): returns its path.
    pub fn user_with_key_as(&self, id: &str, alg: &str, qualification: &str) -> PathBuf {
        self.add_user(id, qualification);
        let csr = self.path(&format!("{id}.csr"));
        let cert = self.path(&format!("{id}.pem"));
        self.ok(&["key", "generate", id, "--alg", alg, "--csr-out", csr.to_str().expect("utf-8")]);
        self.issue(&csr, &cert, &["--qualification", qualification]);
        self.ok(&["key", "import-cert", id, cert.to_str().expect("utf-8")]);
        cert
    }

    /// Number of audit rows.
    /// Rows of an intact audit log; rows left unsealed (a command killed
    /// before it sealed, exit status 5) count too.
    pub fn audit_rows(&self) -> i64 {
        let r = self.run(&["--json", "audit", "verify"]);
        let text = match r.code {
            0 => &r.stdout,
            5 => &r.stderr,
            code => panic!("inkan audit verify exited {code}: {}{}", r.stdout, r.stderr),
        };
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        v["rows"].as_i64().expect("rows")
    }

    /// A snapshot of the database tables that a failed command must not change.
    pub fn snapshot(&self) -> String {
        let mut out = String::new();
        for (table, order) in [("users", "id"), ("keys", "user_id, generation"), ("audit", "seq")] {
            for row in self.sql_ok(&format!("SELECT * FROM {table} ORDER BY {order}")) {
                out.push_str(&row);
                out.push('\n');
            }
        }
        out
    }
}

/// The CA bundle that `openssl cms -verify` trusts.
pub fn ca_bundle() -> PathBuf {
    static BUNDLE: OnceLock<PathBuf> = OnceLock::new();
    BUNDLE
        .get_or_init(|| {
            let path = std::env::temp_dir().join(format!("inkan-it-bundle-{}.pem", std::process::id()));
            let text = [fixture("hpki-root.pem"), fixture("hpki-signing-ca.pem")]
                .iter()
                .map(|p| std::fs::read_to_string(p).expect("fixture"))
                .collect::<String>();
            std::fs::write(&path, text).expect("bundle");
            path
        })
        .clone()
}

/// Runs `openssl cms -verify` on a DER signature; returns (success, stderr).
pub fn openssl_verify(sig: &Path, content: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["cms", "-verify", "-binary", "-inform", "DER", "-in"]).arg(sig);
    if let Some(c) = content {
        cmd.arg("-content").arg(c);
    }
    cmd.arg("-CAfile").arg(ca_bundle()).args(["-purpose", "any", "-out", "/dev/null"]);
    let out = cmd.output().expect("openssl");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `openssl cms -cmsout -print` of a DER signature.
pub fn openssl_print(sig: &Path) -> String {
    let out = Command::new("openssl")
        .args(["cms", "-cmsout", "-print", "-inform", "DER", "-in"])
        .arg(sig)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The PKCS#11 module of the in-process keystore tests: `INKAN_TEST_PKCS11_MODULE`
/// (another implementation, set up by `softhsm/second-module.sh`), else SoftHSM.
pub fn module() -> String {
    std::env::var("INKAN_TEST_PKCS11_MODULE").unwrap_or_else(|_| inkan::config::SOFTHSM_MODULE.to_owned())
}

/// In-process keystore tests share one SoftHSM configuration (SoftHSM reads it
/// once per process). Their tokens are all made before this process loads
/// SoftHSM, by `softhsm2-util` in child processes: `C_InitToken` inside a process
/// adds a slot, and SoftHSM 2.6 does not guard its slot list against threads
/// using other slots at the same time (seen as crashes and CKR_MECHANISM_INVALID).
/// Another module's tokens are made in this process, one after the other,
/// before any test uses one.
struct SharedSoftHsm {
    _dir: Option<tempfile::TempDir>,
    labels: Mutex<Vec<String>>,
}

/// Tokens made up front; raise when adding in-process keystore tests.
const PREMADE_TOKENS: usize = 32;

static SOFTHSM: OnceLock<SharedSoftHsm> = OnceLock::new();

/// A fresh token in the process-wide SoftHSM; returns its keystore and label.
pub fn token(pool_size: usize) -> (inkan::keystore::Keystore, String) {
    token_with(pool_size, |_| {})
}

/// [`token`] with the keystore's settings adjusted by `adjust`.
pub fn token_with(
    pool_size: usize,
    adjust: impl FnOnce(&mut inkan::keystore::KeystoreConfig),
) -> (inkan::keystore::Keystore, String) {
    let module = module();
    let shared = SOFTHSM.get_or_init(|| {
        let labels: Vec<String> = (0..PREMADE_TOKENS).map(|i| format!("ks-{i}")).collect();
        if module != inkan::config::SOFTHSM_MODULE {
            for label in &labels {
                inkan::keystore::init_token(
                    Path::new(&module),
                    label,
                    &inkan::keystore::Pin::new(SO_PIN),
                    &inkan::keystore::Pin::new(USER_PIN),
                    None,
                )
                .unwrap_or_else(|e| {
                    panic!("{module}: a token for {label}: {e} (the module needs {PREMADE_TOKENS} free slots)")
                });
            }
            return SharedSoftHsm { _dir: None, labels: Mutex::new(labels) };
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("softhsm2.conf");
        inkan::setup::write_softhsm_conf(&conf).expect("softhsm conf");
        for label in &labels {
            let out = Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", USER_PIN])
                .output()
                .expect("softhsm2-util");
            assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Set before any thread of this process loads SoftHSM.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        SharedSoftHsm { _dir: Some(dir), labels: Mutex::new(labels) }
    });
    let label = shared
        .labels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .expect("all premade tokens are used: raise PREMADE_TOKENS in tests/it/harness.rs");
    let mut cfg =
        inkan::keystore::KeystoreConfig::new(module.as_str(), label.clone(), inkan::keystore::Pin::new(USER_PIN));
    cfg.pool_size = pool_size;
    adjust(&mut cfg);
    (inkan::keystore::Keystore::open(cfg).expect("open keystore"), label)
}
