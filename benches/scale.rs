//! Scale: what N users cost, with keys wrapped outside the token against keys
//! kept as token objects. For each run it makes a fresh installation with the
//! release binary, creates N users and their keys through the bulk commands
//! (`user import`, `key generate --all-without-key`), and measures:
//!
//! - keys generated per second (the bulk command's own figure), database size;
//! - a CLI command that reads the store (`user show`) and one that opens the
//!   token (`key inspect`), median of 5;
//! - `inkan serve` from start until `/readyz` answers 200, and its resident
//!   memory then;
//! - sign latency p50/p99 (raw `C_Sign` through the keystore, in a process of
//!   its own on the same token, keys rebuilt from the database's rows): for a
//!   hot set of 100 users, and for users drawn at random from all N (cache
//!   misses included), with the keystore's cache figures and the process's
//!   resident memory before and after.
//!
//! Runs: `INKAN_SCALE="1000:rsa2048:wrapped,1000:rsa2048:object,..."` (N,
//! algorithm, storage); the default is the quick set below. Run:
//! `cargo bench --bench scale`; the table goes to stdout and
//! `target/criterion/scale-summary.txt`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_RUNS: &str = "1000:rsa2048:wrapped,1000:rsa2048:object,10000:p256:wrapped,10000:p256:object";
const SIGNATURES: usize = 2_000;
const HOT: usize = 100;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_inkan"))
}

fn inkan(config: &Path, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new(bin()).arg("--config").arg(config).args(args).current_dir(root()).output().expect("inkan");
    let took = started.elapsed();
    assert!(out.status.success(), "inkan {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), took)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A small deterministic generator (xorshift64*), so runs draw the same users.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

struct Run {
    n: usize,
    alg: String,
    storage: String,
}

fn main() {
    // The signing half runs in a process of its own (SoftHSM reads its
    // configuration once per process).
    if let Ok(dir) = std::env::var("INKAN_SCALE_SIGN_DIR") {
        sign_measurement(Path::new(&dir));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let spec = std::env::var("INKAN_SCALE").unwrap_or_else(|_| DEFAULT_RUNS.to_owned());
    let runs: Vec<Run> = spec
        .split(',')
        .map(|r| {
            let p: Vec<&str> = r.split(':').collect();
            Run { n: p[0].parse().expect("N"), alg: p[1].to_owned(), storage: p[2].to_owned() }
        })
        .collect();
    let mut lines = vec![
        "| N | key | storage | keys/s | DB MiB | user show | key inspect | serve → ready | serve RSS | sign p50/p99 hot | sign p50/p99 random | cache misses (random) | signer RSS before → after |".to_owned(),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |".to_owned(),
    ];
    for run in &runs {
        let line = one(run);
        println!("{line}");
        lines.push(line);
    }
    println!("\n{}", lines.join("\n"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let _ = std::fs::create_dir_all(target.join("criterion"));
    let _ = std::fs::write(target.join("criterion/scale-summary.txt"), lines.join("\n") + "\n");
}

fn one(run: &Run) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("inkan.toml");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, card) = (free(), free());
    let data = dir.path().join("var");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[token]\nlabel = \"scale\"\nuser_pin = \"scale-user\"\nso_pin = \"scale-so\"\nkey_storage = \"{}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\ncard_listen = \"127.0.0.1:{card}\"\npublic_url = \"https://localhost:{port}\"\ncard_url = \"https://localhost:{card}\"\n",
            data.display(),
            run.storage
        ),
    )
    .expect("config");
    inkan(&config, &["init"]);
    eprintln!("scale: N = {} {} {}: importing users", run.n, run.alg, run.storage);
    let csv = dir.path().join("users.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
        for i in 0..run.n {
            writeln!(f, "S{i:07},規模 {i},doctor").expect("row");
        }
    }
    inkan(&config, &["user", "import", csv.to_str().unwrap()]);
    eprintln!("scale: generating {} keys", run.n);
    let csrs = dir.path().join("csrs");
    let (out, _) = inkan(
        &config,
        &["--json", "key", "generate", "--all-without-key", "--alg", &run.alg, "--csr-dir", csrs.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("report");
    let keys_per_second = report["keys_per_second"].as_f64().unwrap_or(0.0);
    // Three users with certificates, for `key inspect`.
    for i in 0..3 {
        let id = format!("S{i:07}");
        let cert = dir.path().join(format!("{id}.pem"));
        let csr = csrs.join(format!("{id}.csr"));
        inkan(&config, &["dev", "issue-cert", "--csr", csr.to_str().unwrap(), "--out", cert.to_str().unwrap()]);
        inkan(&config, &["key", "import-cert", &id, cert.to_str().unwrap()]);
    }
    let db_mib = ["inkan.db", "inkan.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / (1024.0 * 1024.0);
    let show =
        median((0..5).map(|_| inkan(&config, &["--json", "user", "show", "S0000001"]).1.as_secs_f64()).collect());
    let inspect =
        median((0..5).map(|_| inkan(&config, &["--json", "key", "inspect", "S0000001"]).1.as_secs_f64()).collect());

    // serve: start until /readyz.
    let started = Instant::now();
    let mut server = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let url = format!("https://127.0.0.1:{port}/readyz");
    loop {
        let out =
            Command::new("curl").args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url]).output().expect("curl");
        if out.stdout == b"200" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "serve never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ready = started.elapsed().as_secs_f64();
    let serve_rss = rss_kib(server.id());
    let _ = server.kill();
    let _ = server.wait();

    // Signatures, in a process of their own.
    let out = Command::new(std::env::current_exe().expect("exe"))
        .env("INKAN_SCALE_SIGN_DIR", dir.path())
        .output()
        .expect("sign measurement");
    assert!(out.status.success(), "sign measurement: {}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sign json");
    format!(
        "| {} | {} | {} | {:.0} | {:.1} | {:.3} s | {:.3} s | {:.2} s | {:.0} MiB | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {} of {} | {:.0} → {:.0} MiB |",
        run.n,
        run.alg,
        run.storage,
        keys_per_second,
        db_mib,
        show,
        inspect,
        ready,
        serve_rss as f64 / 1024.0,
        s["hot_p50"].as_f64().unwrap_or(0.0),
        s["hot_p99"].as_f64().unwrap_or(0.0),
        s["random_p50"].as_f64().unwrap_or(0.0),
        s["random_p99"].as_f64().unwrap_or(0.0),
        s["random_misses"],
        SIGNATURES,
        s["rss_before_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        s["rss_after_kib"].as_f64().unwrap_or(0.0) / 1024.0,
    )
}

/// In the child: opens the keystore on the run's token, and times signatures
/// (µs) by keys rebuilt from their database rows (read before each timing, as
/// the server reads a user's key; never all N at once, so that this process's
/// memory is the keystore's, not N rows').
fn sign_measurement(dir: &Path) {
    use inkan::keystore::{DigestAlgorithm, KeyAlgorithm, KeyRef, Keystore, KeystoreConfig, Pin};
    let data = dir.join("var");
    std::env::set_var("SOFTHSM2_CONF", data.join("softhsm/softhsm2.conf"));
    let mut cfg = KeystoreConfig::new(inkan::config::SOFTHSM_MODULE, "scale", Pin::new("scale-user"));
    cfg.pool_size = 2;
    let ks = Keystore::open(cfg).expect("keystore");
    let db = rusqlite::Connection::open(data.join("inkan.db")).expect("db");
    let n: usize = db.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0)).expect("count") as usize;
    let mut stmt = db
        .prepare("SELECT generation, algorithm, token_id, public_key FROM keys WHERE user_id = ?1 AND generation = 1")
        .expect("sql");
    // The users are S0000000 .. S<N-1> (see `one`).
    let mut key_of = |i: usize| -> (KeyRef, KeyAlgorithm) {
        let user = format!("S{i:07}");
        stmt.query_row([&user], |r| {
            let generation: i64 = r.get(0)?;
            let alg: String = r.get(1)?;
            let (stored, public_key): (Vec<u8>, Vec<u8>) = (r.get(2)?, r.get(3)?);
            let key = KeyRef::from_stored(stored, &inkan::keys::binding(&user, generation), &public_key);
            Ok((key, alg.parse::<KeyAlgorithm>().expect("algorithm")))
        })
        .expect("row")
    };
    let rss_before = rss_kib(std::process::id());
    let digest = inkan::keystore::Digest::of(DigestAlgorithm::Sha256, b"scale");
    let sign = |k: &(KeyRef, KeyAlgorithm)| -> f64 {
        let started = Instant::now();
        ks.sign_digest(&k.0, k.1.default_scheme(DigestAlgorithm::Sha256), &digest).expect("sign");
        started.elapsed().as_secs_f64() * 1e6
    };
    let hot: Vec<_> = (0..HOT.min(n)).map(&mut key_of).collect();
    for k in &hot {
        sign(k);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut hot_times: Vec<f64> = (0..SIGNATURES).map(|_| sign(&hot[rng.below(hot.len())])).collect();
    let before = ks.cache_stats();
    let mut random_times: Vec<f64> = (0..SIGNATURES)
        .map(|_| {
            let k = key_of(rng.below(n));
            sign(&k)
        })
        .collect();
    let after = ks.cache_stats();
    hot_times.sort_by(|a, b| a.total_cmp(b));
    random_times.sort_by(|a, b| a.total_cmp(b));
    let out = serde_json::json!({
        "hot_p50": percentile(&hot_times, 0.5),
        "hot_p99": percentile(&hot_times, 0.99),
        "random_p50": percentile(&random_times, 0.5),
        "random_p99": percentile(&random_times, 0.99),
        "random_misses": after.misses - before.misses,
        "cache_entries": after.entries,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_kib(std::process::id()),
    });
    println!("{out}");
}
