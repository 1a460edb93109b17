//! Signing-core benchmarks, all in one run against one SoftHSM RSA-2048 key:
//!
//! - `raw`: one `C_SignInit` + `C_Sign` (CKM_RSA_PKCS over a prepared DigestInfo)
//!   through the keystore's session pool, with a cached handle: the baseline;
//! - `cades`: a CAdES-BES detached signature of a 1 KiB document through the
//!   whole core (hash the document, signed attributes, hash them, sign, assemble).
//!
//! Each at 1 and 2 threads. At the end the CAdES throughput is printed as a
//! ratio to the raw throughput measured in the same command (target: >= 0.95
//! at 2 threads). Run: `cargo bench --bench signing`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use der::{Decode, Encode};
use inkan::cades::{self, SignerIdentity};
use inkan::config::RsaScheme;
use inkan::keystore::{DigestAlgorithm, KeyAlgorithm, KeyRef, Keystore, KeystoreConfig, Pin};
use inkan::pki::ca::Ca;
use inkan::pki::profile::{Kind, Qualification};

const THREADS: [usize; 2] = [1, 2];

struct Setup {
    _dir: tempfile::TempDir,
    keystore: Arc<Keystore>,
    key: KeyRef,
    identity: Arc<SignerIdentity>,
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki").join(rel)
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("softhsm2.conf");
    inkan::fixtures::write_softhsm_conf(&conf).expect("softhsm conf");
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let module = Path::new(inkan::config::SOFTHSM_MODULE);
    inkan::keystore::init_token(module, "bench", &Pin::new("so-bench"), &Pin::new("user-bench")).expect("token");
    let mut cfg = KeystoreConfig::new(module, "bench", Pin::new("user-bench"));
    cfg.pool_size = 2;
    let keystore = Arc::new(Keystore::open(cfg).expect("keystore"));
    let key = KeyRef::from_id(b"bench".to_vec());
    let generated = keystore.generate_key_pair(KeyAlgorithm::Rsa2048, &key, "bench").expect("key");
    let ca = Ca::load(&fixture("hpki-signing-ca.pem"), &fixture("hpki-signing-ca.key")).expect("fixture CA");
    let now = SystemTime::now();
    let subject =
        inkan::pki::name(&[(der::oid::db::rfc4519::CN, inkan::pki::StringKind::Utf8, "ベンチ 太郎")]).expect("name");
    let cert = ca
        .issue(
            Kind::HpkiSigning { role: Qualification::Doctor, crl_url: "http://localhost/crl".into() },
            subject,
            spki::SubjectPublicKeyInfoOwned::from_der(&generated.public_key_der).expect("spki"),
            now - Duration::from_secs(60),
            now + Duration::from_secs(86_400),
        )
        .expect("certificate");
    let chain = vec![
        ca.certificate.to_der().expect("der"),
        inkan::pki::read_certificates(&fixture("hpki-root.pem")).expect("root").remove(0),
    ];
    let identity = SignerIdentity::new(
        key.clone(),
        KeyAlgorithm::Rsa2048,
        RsaScheme::Pkcs1v15,
        &cert.to_der().expect("der"),
        &chain,
    )
    .expect("identity");
    Setup { _dir: dir, keystore, key, identity: Arc::new(identity) }
}

/// Runs `op` `iters` times on each of `threads` threads; returns the wall time.
fn parallel(threads: usize, iters: u64, op: Arc<dyn Fn() + Send + Sync>) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = Arc::clone(&op);
            std::thread::spawn(move || {
                for _ in 0..iters {
                    op();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("bench thread");
    }
    start.elapsed()
}

fn benches(c: &mut Criterion, s: &Setup) {
    // The DigestInfo of SHA-256 over some bytes, as CKM_RSA_PKCS wants it.
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
        0x20,
    ];
    digest_info.extend_from_slice(&DigestAlgorithm::Sha256.digest(b"raw"));
    let document: Arc<Vec<u8>> = Arc::new((0..1024u32).map(|i| (i % 251) as u8).collect());

    let mut group = c.benchmark_group("signing");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(6));
    for threads in THREADS {
        group.throughput(Throughput::Elements(threads as u64));
        let (ks, key, di) = (Arc::clone(&s.keystore), s.key.clone(), digest_info.clone());
        let raw: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            std::hint::black_box(ks.sign_raw_pkcs1(&key, &di).expect("raw sign"));
        });
        group.bench_function(BenchmarkId::new("raw", threads), |b| {
            b.iter_custom(|iters| parallel(threads, iters, Arc::clone(&raw)))
        });

        let (ks, id, doc) = (Arc::clone(&s.keystore), Arc::clone(&s.identity), Arc::clone(&document));
        let full: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let (digest, _) = cades::hash_stream(DigestAlgorithm::Sha256, &doc[..]).expect("hash");
            let der = cades::sign_digest(
                &ks,
                &id,
                DigestAlgorithm::Sha256,
                &digest,
                inkan::clock::Clock::now(&inkan::clock::SystemClock),
            )
            .expect("cades");
            std::hint::black_box(der);
        });
        group.bench_function(BenchmarkId::new("cades-1KiB", threads), |b| {
            b.iter_custom(|iters| parallel(threads, iters, Arc::clone(&full)))
        });
    }
    group.finish();
}

/// Mean nanoseconds per iteration from criterion's estimates file.
fn mean_ns(dir: &Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("signing").join(id).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    let s = setup();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &s);
    c.final_summary();

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("criterion");
    println!("\nsummary (throughput = threads / mean time per iteration):");
    let mut lines = Vec::new();
    for threads in THREADS {
        let (Some(raw), Some(full)) =
            (mean_ns(&dir, &format!("raw/{threads}")), mean_ns(&dir, &format!("cades-1KiB/{threads}")))
        else {
            println!("  (no estimates for {threads} thread(s) under {}; run without a filter)", dir.display());
            continue;
        };
        let raw_rate = threads as f64 * 1e9 / raw;
        let full_rate = threads as f64 * 1e9 / full;
        let line = format!(
            "  {threads} thread(s): raw C_Sign {raw_rate:8.0}/s   CAdES-BES 1 KiB {full_rate:8.0}/s   ratio {:.3}",
            full_rate / raw_rate
        );
        println!("{line}");
        lines.push(line);
    }
    let _ = std::fs::write(dir.join("signing-summary.txt"), lines.join("\n") + "\n");
}
