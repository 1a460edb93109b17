//! Signing-core benchmarks, all in one run against one SoftHSM RSA-2048 key:
//!
//! - `raw`: one `C_SignInit` + `C_Sign` (CKM_RSA_PKCS over a prepared DigestInfo)
//!   through the keystore's session pool, with a cached handle: the baseline;
//! - `cades`: a CAdES-BES detached signature of a 1 KiB document through the
//!   whole core, as the signing pipeline makes it: hash the document, then the
//!   CAdES format behind the format seam (signed attributes, hash them, one
//!   token call, assemble);
//! - `xades`: an e-prescription as `/api/v1/sign?format=xades` signs it:
//!   from its CSV (the minimal document made, Reference 1 by formula), and
//!   from a whole 2.5 KiB document (parsed, located, Reference 1
//!   canonicalised); the XAdES-BES templates, one token call, the signature
//!   spliced into the document.
//!
//! Each at 1 and 2 threads, first as criterion benchmarks, then in alternating
//! rounds whose median CAdES/raw and XAdES/raw throughput ratios are printed
//! (target: >= 0.95 at 2 threads).
//!
//! Then wrapped keys against the token-object key, raw `C_Sign`, 1 thread, in
//! alternating rounds: a wrapped key found unwrapped in the cache (a hit: the
//! goal is the object key's cost), and two wrapped keys taking turns in a
//! cache of one (every signature a miss: MAC check + `C_UnwrapKey` + evicting
//! the other; the goal is at most 1 ms above a hit). Run: `cargo bench --bench signing`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use der::{Decode, Encode};
use inkan::config::RsaScheme;
use inkan::keystore::{DigestAlgorithm, KeyAlgorithm, KeyRef, Keystore, KeystoreConfig, Pin};
use inkan::pki::ca::Ca;
use inkan::pki::profile::{Kind, Qualification};
use inkan::signing::signed_data::SignerIdentity;
use inkan::signing::{Format, Signer};

const THREADS: [usize; 2] = [1, 2];

struct Setup {
    _dir: tempfile::TempDir,
    keystore: Arc<Keystore>,
    key: KeyRef,
    signer: Arc<Signer>,
    /// A wrapped key in `keystore`.
    wrapped: KeyRef,
    /// A keystore on the same token with a cache of one, and two wrapped keys.
    small: Arc<Keystore>,
    pair: [KeyRef; 2],
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki").join(rel)
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("softhsm2.conf");
    inkan::setup::write_softhsm_conf(&conf).expect("softhsm conf");
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let module = Path::new(inkan::config::SOFTHSM_MODULE);
    inkan::keystore::init_token(module, "bench", &Pin::new("so-bench"), &Pin::new("user-bench"), None).expect("token");
    let mut cfg = KeystoreConfig::new(module, "bench", Pin::new("user-bench"));
    cfg.pool_size = 2;
    let keystore = Arc::new(Keystore::open(cfg.clone()).expect("keystore"));
    keystore.prepare_wrapping().expect("KEK");
    let wrapped = keystore.generate_key(KeyAlgorithm::Rsa2048, "", b"bench-wrapped").expect("wrapped").key;
    cfg.cache_size = 1;
    let small = Arc::new(Keystore::open(cfg).expect("small keystore"));
    let pair = [b"pair-0", b"pair-1"].map(|b| small.generate_key(KeyAlgorithm::Rsa2048, "", b).expect("pair").key);
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
    let signer = Signer {
        user_id: "bench".into(),
        generation: 1,
        key: key.clone(),
        algorithm: KeyAlgorithm::Rsa2048,
        chain: Arc::new(chain),
        cades: identity,
        qualification: "doctor".into(),
        hc_role: Some("Medical Doctor".into()),
        xml_certificate: inkan::xml::EncodedCertificate::new(&cert.to_der().expect("der")),
    };
    Setup { _dir: dir, keystore, key, signer: Arc::new(signer), wrapped, small, pair }
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

/// The operations measured.
struct Ops {
    raw: Arc<dyn Fn() + Send + Sync>,
    cades: Arc<dyn Fn() + Send + Sync>,
    xades: Arc<dyn Fn() + Send + Sync>,
    xades_document: Arc<dyn Fn() + Send + Sync>,
}

/// A whole prescription document as an EMR sends it (about 2.5 KiB: the CSV
/// and additional information, no signature yet).
fn prescription_document() -> Vec<u8> {
    use base64ct::{Base64, Encoding};
    let info = "<ConversionPharmaceuticalCode><ConversionREcode>201,1,1,1,2,620000000,ベンチ錠５ｍｇ,1,1,錠</ConversionREcode>\
<ConversionYJcode>201,1,1,1,4,2419001F4022,ベンチ錠５ｍｇ,1,1,錠</ConversionYJcode></ConversionPharmaceuticalCode>"
        .repeat(6);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Document xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         id=\"Document\" xsi:noNamespaceSchemaLocation=\"EP.xsd\"><Prescription><PrescriptionManagement \
         id=\"PrescriptionManagement\"><Version Value=\"EPS1.0\"/><PrescriptionId Value=\"bench-2\" />\
         </PrescriptionManagement><PrescriptionDocument id=\"PrescriptionDocument\">{}</PrescriptionDocument>\
         <AdditionalPrescriptionInformation id=\"AdditionalPrescriptionInformation\">{info}\
         </AdditionalPrescriptionInformation><PrescriptionSign></PrescriptionSign></Prescription></Document>",
        Base64::encode_string(CSV.as_bytes())
    )
    .into_bytes()
}

/// A prescription's CSV (about 300 bytes, as a short real one).
const CSV: &str = "SJ1\n1,1,1310000001,01,ベンチ病院\n2,100-0001,東京都千代田区千代田1-1\n\
5,0000000000000001,ﾍﾞﾝﾁ ﾀﾛｳ,ベンチ　太郎\n51,20261206\n201,1,1,1,2,620000000,ベンチ錠５ｍｇ,1,1,錠\n211,1,1,101";

fn benches(c: &mut Criterion, s: &Setup) -> Ops {
    // The DigestInfo of SHA-256 over some bytes, as CKM_RSA_PKCS wants it.
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
        0x20,
    ];
    digest_info.extend_from_slice(&DigestAlgorithm::Sha256.digest(b"raw"));
    let document: Arc<Vec<u8>> = Arc::new((0..1024u32).map(|i| (i % 251) as u8).collect());

    let (ks, key, di) = (Arc::clone(&s.keystore), s.key.clone(), digest_info.clone());
    let raw: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        std::hint::black_box(ks.sign_raw_pkcs1(&key, &di).expect("raw sign"));
    });
    let (ks, signer, doc) = (Arc::clone(&s.keystore), Arc::clone(&s.signer), Arc::clone(&document));
    let cades: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let now = inkan::clock::Clock::now(&inkan::clock::SystemClock);
        let digest = inkan::keystore::Digest::of(DigestAlgorithm::Sha256, &doc);
        let mut token = |scheme, d: &inkan::keystore::Digest| ks.sign_digest(&signer.key, scheme, d);
        let encoder = Format::CadesDetached.encoder();
        let parts =
            inkan::signing::format::sign(encoder.as_ref(), &signer, &digest, now, None, &mut token).expect("cades");
        let parts = parts.finish(&inkan::signing::format::Unsigned::default()).expect("finish");
        std::hint::black_box(parts.into_detached());
    });

    // XAdES, as `/api/v1/sign?format=xades` makes it: a prescription from
    // its CSV (the minimal document made, Reference 1 by the formula), or a
    // whole prescription document (about 2.5 KiB: parsed, located, its
    // Reference 1 canonicalised); then the signature's templates, one token
    // call, the splice.
    let xades_op = |input: fn() -> inkan::eps::Document| -> Arc<dyn Fn() + Send + Sync> {
        let (ks, signer) = (Arc::clone(&s.keystore), Arc::clone(&s.signer));
        Arc::new(move || {
            let now = inkan::clock::Clock::now(&inkan::clock::SystemClock);
            let document = Arc::new(input());
            let digest = document.digest.clone();
            let encoder =
                inkan::signing::xades::Xades { kind: inkan::eps::Kind::Prescription, document: Some(document) };
            let mut token = |scheme, d: &inkan::keystore::Digest| ks.sign_digest(&signer.key, scheme, d);
            let parts = inkan::signing::format::sign(&encoder, &signer, &digest, now, None, &mut token).expect("xades");
            let parts = parts.finish(&inkan::signing::format::Unsigned::default()).expect("finish");
            std::hint::black_box(parts.document);
        })
    };
    let xades = xades_op(|| inkan::eps::Document::from_csv(CSV.as_bytes(), "bench-1").expect("document"));
    let xades_document = xades_op(|| inkan::eps::Document::read(prescription_document()).expect("read"));

    let mut group = c.benchmark_group("signing");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    for threads in THREADS {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(BenchmarkId::new("raw", threads), |b| {
            b.iter_custom(|iters| parallel(threads, iters, Arc::clone(&raw)))
        });

        group.bench_function(BenchmarkId::new("cades-1KiB", threads), |b| {
            b.iter_custom(|iters| parallel(threads, iters, Arc::clone(&cades)))
        });

        group.bench_function(BenchmarkId::new("xades-prescription-csv", threads), |b| {
            b.iter_custom(|iters| parallel(threads, iters, Arc::clone(&xades)))
        });

        group.bench_function(BenchmarkId::new("xades-prescription-document", threads), |b| {
            b.iter_custom(|iters| parallel(threads, iters, Arc::clone(&xades_document)))
        });
    }
    group.finish();
    Ops { raw, cades, xades, xades_document }
}

/// Signatures per second of `op` on `threads` threads, `ops` each.
fn rate(threads: usize, ops: u64, op: &Arc<dyn Fn() + Send + Sync>) -> f64 {
    (threads as u64 * ops) as f64 / parallel(threads, ops, Arc::clone(op)).as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let s = setup();
    let mut c = Criterion::default().configure_from_args();
    let ops = benches(&mut c, &s);
    c.final_summary();

    // The ratio: raw and CAdES alternate in rounds, so that whatever else the
    // machine does hits both alike; the median of the per-round ratios is reported.
    const ROUNDS: usize = 7;
    println!(
        "\nsummary: {ROUNDS} alternating rounds of raw C_Sign, CAdES-BES 1 KiB and XAdES-BES (a prescription from its \
         CSV, and from a whole document), 600 signatures per thread each"
    );
    let mut lines = Vec::new();
    for threads in THREADS {
        let (mut raw, mut cades, mut xades, mut xdoc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut cades_ratio, mut xades_ratio, mut xdoc_ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let r = rate(threads, 600, &ops.raw);
            let c = rate(threads, 600, &ops.cades);
            let x = rate(threads, 600, &ops.xades);
            let d = rate(threads, 600, &ops.xades_document);
            raw.push(r);
            cades.push(c);
            xades.push(x);
            xdoc.push(d);
            cades_ratio.push(c / r);
            xades_ratio.push(x / r);
            xdoc_ratio.push(d / r);
        }
        let span = |v: &[f64]| {
            format!(
                "{:.3} ({:.3}..{:.3})",
                median(v.to_vec()),
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(0.0, f64::max)
            )
        };
        let line = format!(
            "  {threads} thread(s): raw C_Sign {:.0}/s; CAdES-BES 1 KiB {:.0}/s ratio {}; XAdES-BES prescription from CSV {:.0}/s ratio {}; from a 2.5 KiB document {:.0}/s ratio {}",
            median(raw),
            median(cades),
            span(&cades_ratio),
            median(xades),
            span(&xades_ratio),
            median(xdoc),
            span(&xdoc_ratio),
        );
        println!("{line}");
        lines.push(line);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    lines.extend(wrapped_summary(&s));
    let _ = std::fs::create_dir_all(target.join("criterion"));
    let _ = std::fs::write(target.join("criterion/signing-summary.txt"), lines.join("\n") + "\n");
}

/// Object key, wrapped hit and wrapped miss, raw `C_Sign`, 1 thread, in
/// alternating rounds of 400 signatures each; prints and returns the lines.
fn wrapped_summary(s: &Setup) -> Vec<String> {
    let mut di = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
        0x20,
    ];
    di.extend_from_slice(&DigestAlgorithm::Sha256.digest(b"wrapped"));
    let per_signature = |n: u32, mut op: Box<dyn FnMut(u32)>| {
        let started = Instant::now();
        for i in 0..n {
            op(i);
        }
        started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    const ROUNDS: usize = 7;
    const N: u32 = 400;
    let (mut object, mut hit, mut miss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (ks, key, d) = (Arc::clone(&s.keystore), s.key.clone(), di.clone());
        object.push(per_signature(N, Box::new(move |_| drop(ks.sign_raw_pkcs1(&key, &d).expect("object")))));
        let (ks, key, d) = (Arc::clone(&s.keystore), s.wrapped.clone(), di.clone());
        hit.push(per_signature(N, Box::new(move |_| drop(ks.sign_raw_pkcs1(&key, &d).expect("hit")))));
        let (ks, pair, d) = (Arc::clone(&s.small), s.pair.clone(), di.clone());
        miss.push(per_signature(
            N,
            Box::new(move |i| drop(ks.sign_raw_pkcs1(&pair[(i % 2) as usize], &d).expect("miss"))),
        ));
    }
    let ratios: Vec<f64> = hit.iter().zip(&object).map(|(h, o)| h / o).collect();
    let extra: Vec<f64> = miss.iter().zip(&hit).map(|(m, h)| m - h).collect();
    let stats = s.small.cache_stats();
    let lines = vec![
        format!(
            "wrapped keys, raw C_Sign RSA-2048, 1 thread, {ROUNDS} alternating rounds of {N}: object key {:.0} µs, \
             wrapped hit {:.0} µs, wrapped miss {:.0} µs",
            median(object),
            median(hit),
            median(miss)
        ),
        format!(
            "  hit/object time ratio {:.3} (rounds {:.3}..{:.3}); miss - hit {:.0} µs (rounds {:.0}..{:.0}); \
             small cache: {} misses, {} evictions, {} entries",
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
            median(extra.clone()),
            extra.iter().copied().fold(f64::INFINITY, f64::min),
            extra.iter().copied().fold(0.0, f64::max),
            stats.misses,
            stats.evictions,
            stats.entries,
        ),
    ];
    for l in &lines {
        println!("{l}");
    }
    lines
}
