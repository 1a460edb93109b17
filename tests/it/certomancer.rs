//! certomancer's `animate` started on a free port of 127.0.0.1: the real
//! RFC 3161 TSA (and its root's CRL) of the tests and of the load
//! benchmark (`INKAN_LOAD_MODE=tsa`), which includes this file. It depends
//! on nothing of the tests' own.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// certomancer's `animate`: an RFC 3161 TSA (`/testpki/tsa/tsa`), one whose
/// certificate lacks the timeStamping EKU (`/testpki/tsa/tsa-noeku`), and
/// its root's CRL, on 127.0.0.1.
pub struct Certomancer {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The TSA's root certificate (PEM).
    pub root: PathBuf,
    /// The root's CRL (DER).
    pub root_crl: PathBuf,
}

impl Drop for Certomancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

impl Certomancer {
    /// Starts one (keys made with openssl; about three seconds).
    pub fn start() -> Certomancer {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("certomancer.yml");
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tsa/certomancer.yml"), &config)
            .expect("config");
        std::fs::create_dir_all(dir.path().join("keys")).expect("keys");
        for k in ["root", "tsa", "tsa2"] {
            let out = Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                .arg(dir.path().join(format!("keys/{k}.key.pem")))
                .output()
                .expect("openssl");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let certomancer = |args: &[&str]| {
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "certomancer", "--config"]).arg(&config).args(["--service-url-prefix", &base]).args(args);
            cmd
        };
        let child = certomancer(&["animate", "--port", &port.to_string(), "--no-web-ui"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("certomancer (softhsm/setup.sh --deps-only installs it)");
        let root = dir.path().join("root.pem");
        let out = certomancer(&["summon", "testpki", "root"]).arg(&root).output().expect("summon");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut c = Certomancer { child, _dir: dir, base, root, root_crl: PathBuf::new() };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "certomancer did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        c.root_crl = c.root.with_file_name("root.crl");
        let crl = http_get(&format!("{}/testpki/crls/root/latest.crl", c.base));
        std::fs::write(&c.root_crl, crl).expect("crl");
        c
    }

    /// The good TSA's URL.
    pub fn tsa(&self) -> String {
        format!("{}/testpki/tsa/tsa", self.base)
    }
}

fn http_get(url: &str) -> Vec<u8> {
    let out = Command::new("curl").args(["-sSf", url]).output().expect("curl");
    assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
