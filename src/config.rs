//! Configuration: one TOML file, environment overrides, embedded defaults.
//!
//! Lookup: `--config FILE`, else `$INKAN_CONFIG`, else `./inkan.toml` if present,
//! else the embedded defaults (everything under `./var`, the fixture PKI, SoftHSM).
//! Relative paths in a file are taken relative to the file's directory; the
//! embedded defaults are relative to the working directory (the project root).
//!
//! Every setting (see `inkan.example.toml` in the README) can be overridden by an
//! environment variable: `INKAN_DATA_DIR`, `INKAN_STORE_PATH`, `INKAN_TOKEN_MODULE`,
//! `INKAN_TOKEN_LABEL`, `INKAN_TOKEN_USER_PIN`, `INKAN_TOKEN_SO_PIN`,
//! `INKAN_TOKEN_SOFTHSM_CONF`, `INKAN_TOKEN_POOL_SIZE`, `INKAN_PKI_SIGNING_CA`,
//! `INKAN_PKI_CHAIN` (paths separated by `:`), `INKAN_SIGNING_RSA_SCHEME`.
//!
//! Token PINs not given in the file or the environment are read from
//! `<data_dir>/token-pins.toml`, which `inkan init` creates with random PINs
//! (mode 0600) the first time.

use std::fmt;
use std::path::{Path, PathBuf};

use inkan_keystore::{KeystoreConfig, Pin};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the database, SoftHSM's token files and generated secrets (`var`).
    pub data_dir: PathBuf,
    /// The PKCS#11 token holding the signing keys.
    pub token: TokenConfig,
    /// The SQLite store.
    pub store: StoreConfig,
    /// Certificates inkan trusts and includes.
    pub pki: PkiConfig,
    /// Signature formats.
    pub signing: SigningConfig,
    /// The HTTPS service.
    pub server: ServerConfig,
    /// HPKI card login trust store.
    pub hpki: CardTrustConfig,
    /// JPKI (My Number card) login trust store.
    pub jpki: CardTrustConfig,
    /// Cloud Signature Consortium API.
    pub csc: CscConfig,
    /// FIDO2 phones (WebAuthn), QR tickets, registration codes.
    pub fido: FidoConfig,
}

/// `[fido]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FidoConfig {
    /// WebAuthn relying-party ID: the host name of `[server] public_url` unless set.
    pub rp_id: Option<String>,
    /// Relying-party name shown by the phone.
    pub rp_name: String,
    /// Lifetime of a QR ticket in seconds (300).
    pub ticket_secs: u64,
    /// Wrong passwords that lock a registration code (5).
    pub regcode_max_tries: u32,
    /// Default lifetime of a registration code in days (30).
    pub regcode_days: u64,
}

impl Default for FidoConfig {
    fn default() -> Self {
        FidoConfig { rp_id: None, rp_name: "inkan".into(), ticket_secs: 300, regcode_max_tries: 5, regcode_days: 30 }
    }
}

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Main HTTPS listener (no client certificate).
    pub listen: String,
    /// Card listener (asks for a TLS client certificate).
    pub card_listen: String,
    /// External URL of the main listener: the OIDC issuer.
    pub public_url: String,
    /// External URL of the card listener.
    pub card_url: String,
    /// TLS certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// TLS private key (PEM, PKCS#8).
    pub tls_key: PathBuf,
    /// Auth session lifetime in hours.
    pub session_hours: u64,
    /// Largest JSON request body.
    pub max_json_bytes: usize,
    /// Largest document for `/api/v1/sign`.
    pub max_document_bytes: usize,
    /// Seconds a client has to send its request headers.
    pub header_timeout_secs: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Longest a signature's audit row waits for the rows of signatures still
    /// under way, to share their commit, while the cores are busy
    /// (microseconds; 0 = never wait).
    pub audit_window_us: u64,
    /// The same with cores to spare (microseconds).
    pub audit_idle_window_us: u64,
}

/// The longest commit window accepted (µs).
const MAX_AUDIT_WINDOW_US: u64 = 1_000_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8443".into(),
            card_listen: "127.0.0.1:8444".into(),
            public_url: "https://localhost:8443".into(),
            card_url: "https://localhost:8444".into(),
            tls_cert: PathBuf::from("fixtures/pki/server.pem"),
            tls_key: PathBuf::from("fixtures/pki/server.key"),
            session_hours: 18,
            max_json_bytes: 1 << 20,
            max_document_bytes: 64 << 20,
            header_timeout_secs: 10,
            shutdown_grace_secs: 20,
            audit_window_us: 6000,
            audit_idle_window_us: 500,
        }
    }
}

/// `[hpki]` / `[jpki]`: anchors, intermediates and CRLs for card login.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardTrustConfig {
    /// Trust anchors (root CAs), PEM files.
    pub anchors: Vec<PathBuf>,
    /// Intermediate CAs, PEM files.
    pub intermediates: Vec<PathBuf>,
    /// CRLs (PEM or DER files), one per issuing CA at least.
    pub crls: Vec<PathBuf>,
    /// Accept CRLs past their nextUpdate (risky).
    #[serde(default)]
    pub danger_allow_stale_crl: bool,
}

impl CardTrustConfig {
    fn hpki() -> Self {
        CardTrustConfig {
            anchors: vec![PathBuf::from("fixtures/pki/hpki-root.pem")],
            intermediates: vec![PathBuf::from("fixtures/pki/hpki-auth-ca.pem")],
            crls: vec![PathBuf::from("fixtures/pki/crl/hpki-auth-ca.crl.pem")],
            danger_allow_stale_crl: false,
        }
    }

    fn jpki() -> Self {
        CardTrustConfig {
            anchors: vec![PathBuf::from("fixtures/pki/jpki-root.pem")],
            intermediates: vec![PathBuf::from("fixtures/pki/jpki-ca.pem")],
            crls: vec![PathBuf::from("fixtures/pki/crl/jpki-ca.crl.pem")],
            danger_allow_stale_crl: false,
        }
    }
}

/// `[csc]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CscConfig {
    /// Sole Control Assurance Level: "1" (the auth session suffices) or "2"
    /// (every signHash needs a SAD bound to exactly its hashes).
    pub scal: String,
    /// Lifetime of a SAD in seconds.
    pub sad_lifetime_secs: u64,
}

impl Default for CscConfig {
    fn default() -> Self {
        CscConfig { scal: "1".into(), sad_lifetime_secs: 300 }
    }
}

/// `[token]`
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Token label (`inkan`).
    pub label: String,
    /// User PIN (better: `INKAN_TOKEN_USER_PIN` or the pins file).
    #[serde(skip_serializing)]
    pub user_pin: Option<String>,
    /// Security officer PIN, only used by `inkan init` to create the token.
    #[serde(skip_serializing)]
    pub so_pin: Option<String>,
    /// SoftHSM configuration file; inkan sets `SOFTHSM2_CONF` to it before loading
    /// the module. Default: `<data_dir>/softhsm/softhsm2.conf` when the module is SoftHSM.
    pub softhsm_conf: Option<PathBuf>,
    /// Sessions in the pool (0 = one per CPU).
    pub pool_size: usize,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("label", &self.label)
            .field("user_pin", &self.user_pin.as_ref().map(|_| "***"))
            .field("so_pin", &self.so_pin.as_ref().map(|_| "***"))
            .field("softhsm_conf", &self.softhsm_conf)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// `[store]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite file (default `<data_dir>/inkan.db`).
    pub path: Option<PathBuf>,
    /// SQLite `synchronous` in WAL mode: `full` (default: every commit is on disk
    /// before it returns, also across a power cut) or `normal` (survives a killed
    /// process; a power cut may lose the last commits).
    pub synchronous: Synchronous,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: None, synchronous: Synchronous::Full }
    }
}

/// SQLite durability level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit.
    Full,
    /// fsync at checkpoints.
    Normal,
}

/// `[pki]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiConfig {
    /// The HPKI CA that issues second certificates; `key import-cert` accepts
    /// only certificates it signed.
    pub signing_ca: PathBuf,
    /// Further certificates of the chain up to the root, included in signatures
    /// after the signing CA.
    pub chain: Vec<PathBuf>,
}

/// RSA signature scheme for CAdES signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RsaScheme {
    /// RSASSA-PKCS1-v1_5 (the default; what HPKI validators expect).
    Pkcs1v15,
    /// RSASSA-PSS.
    Pss,
}

/// `[signing]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// `pkcs1v15` (default) or `pss`.
    pub rsa_scheme: RsaScheme,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("var"),
            token: TokenConfig::default(),
            store: StoreConfig::default(),
            pki: PkiConfig::default(),
            signing: SigningConfig::default(),
            server: ServerConfig::default(),
            hpki: CardTrustConfig::hpki(),
            jpki: CardTrustConfig::jpki(),
            csc: CscConfig::default(),
            fido: FidoConfig::default(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            module: PathBuf::from(SOFTHSM_MODULE),
            label: "inkan".into(),
            user_pin: None,
            so_pin: None,
            softhsm_conf: None,
            pool_size: 0,
        }
    }
}

impl Default for PkiConfig {
    fn default() -> Self {
        PkiConfig {
            signing_ca: PathBuf::from("fixtures/pki/hpki-signing-ca.pem"),
            chain: vec![PathBuf::from("fixtures/pki/hpki-root.pem")],
        }
    }
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig { rsa_scheme: RsaScheme::Pkcs1v15 }
    }
}

/// Debian's SoftHSM module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The token PINs file written by `inkan init`.
#[derive(Deserialize, Serialize)]
struct PinsFile {
    user_pin: String,
    so_pin: String,
}

/// A configuration problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads the configuration as described in the module documentation.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os("INKAN_CONFIG").map(PathBuf::from);
        let file = match explicit.map(Path::to_path_buf).or(from_env) {
            Some(p) => Some(p),
            None => Some(PathBuf::from("inkan.toml")).filter(|p| p.exists()),
        };
        let mut config = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read the configuration file {}: {e}", path.display())))?;
                let mut config: Config = toml::from_str(&text)
                    .map_err(|e| ConfigError(format!("configuration file {}: {e}", path.display())))?;
                let table: toml::Table = toml::from_str(&text).unwrap_or_default();
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                config.make_relative_to(&base, &table);
                config
            }
            None => Config::default(),
        };
        config.apply_env()?;
        config.validate()?;
        Ok(config)
    }

    /// Makes the relative paths written in the file relative to the file's
    /// directory; defaults the file does not set stay relative to the working directory.
    fn make_relative_to(&mut self, base: &Path, file: &toml::Table) {
        let set = |section: Option<&str>, key: &str| match section {
            None => file.contains_key(key),
            Some(s) => file.get(s).and_then(|v| v.as_table()).is_some_and(|t| t.contains_key(key)),
        };
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        if set(None, "data_dir") {
            fix(&mut self.data_dir);
        }
        if set(Some("store"), "path") {
            self.store.path.iter_mut().for_each(fix);
        }
        if set(Some("token"), "softhsm_conf") {
            self.token.softhsm_conf.iter_mut().for_each(fix);
        }
        if set(Some("pki"), "signing_ca") {
            fix(&mut self.pki.signing_ca);
        }
        if set(Some("pki"), "chain") {
            self.pki.chain.iter_mut().for_each(fix);
        }
        if set(Some("server"), "tls_cert") {
            fix(&mut self.server.tls_cert);
        }
        if set(Some("server"), "tls_key") {
            fix(&mut self.server.tls_key);
        }
        for (name, trust) in [("hpki", &mut self.hpki), ("jpki", &mut self.jpki)] {
            if set(None, name) {
                trust.anchors.iter_mut().for_each(fix);
                trust.intermediates.iter_mut().for_each(fix);
                trust.crls.iter_mut().for_each(fix);
            }
        }
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("INKAN_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("INKAN_STORE_PATH") {
            self.store.path = Some(v.into());
        }
        if let Some(v) = var("INKAN_STORE_SYNCHRONOUS") {
            self.store.synchronous = match v.as_str() {
                "full" => Synchronous::Full,
                "normal" => Synchronous::Normal,
                _ => return Err(ConfigError(format!("INKAN_STORE_SYNCHRONOUS must be full or normal, not {v:?}"))),
            };
        }
        if let Some(v) = var("INKAN_TOKEN_MODULE") {
            self.token.module = v.into();
        }
        if let Some(v) = var("INKAN_TOKEN_LABEL") {
            self.token.label = v;
        }
        if let Some(v) = var("INKAN_TOKEN_USER_PIN") {
            self.token.user_pin = Some(v);
        }
        if let Some(v) = var("INKAN_TOKEN_SO_PIN") {
            self.token.so_pin = Some(v);
        }
        if let Some(v) = var("INKAN_TOKEN_SOFTHSM_CONF") {
            self.token.softhsm_conf = Some(v.into());
        }
        if let Some(v) = var("INKAN_TOKEN_POOL_SIZE") {
            self.token.pool_size =
                v.parse().map_err(|_| ConfigError(format!("INKAN_TOKEN_POOL_SIZE must be a number, not {v:?}")))?;
        }
        if let Some(v) = var("INKAN_PKI_SIGNING_CA") {
            self.pki.signing_ca = v.into();
        }
        if let Some(v) = var("INKAN_PKI_CHAIN") {
            self.pki.chain = v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
        }
        if let Some(v) = var("INKAN_SERVER_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = var("INKAN_SERVER_CARD_LISTEN") {
            self.server.card_listen = v;
        }
        if let Some(v) = var("INKAN_SERVER_PUBLIC_URL") {
            self.server.public_url = v;
        }
        if let Some(v) = var("INKAN_SERVER_CARD_URL") {
            self.server.card_url = v;
        }
        if let Some(v) = var("INKAN_SERVER_AUDIT_WINDOW_US") {
            self.server.audit_window_us = v
                .parse()
                .map_err(|_| ConfigError(format!("INKAN_SERVER_AUDIT_WINDOW_US must be a number, not {v:?}")))?;
        }
        if let Some(v) = var("INKAN_SERVER_AUDIT_IDLE_WINDOW_US") {
            self.server.audit_idle_window_us = v
                .parse()
                .map_err(|_| ConfigError(format!("INKAN_SERVER_AUDIT_IDLE_WINDOW_US must be a number, not {v:?}")))?;
        }
        if let Some(v) = var("INKAN_SERVER_SESSION_HOURS") {
            self.server.session_hours = v
                .parse()
                .map_err(|_| ConfigError(format!("INKAN_SERVER_SESSION_HOURS must be a number, not {v:?}")))?;
        }
        if let Some(v) = var("INKAN_FIDO_RP_ID") {
            self.fido.rp_id = Some(v);
        }
        if let Some(v) = var("INKAN_FIDO_TICKET_SECS") {
            self.fido.ticket_secs =
                v.parse().map_err(|_| ConfigError(format!("INKAN_FIDO_TICKET_SECS must be a number, not {v:?}")))?;
        }
        if let Some(v) = var("INKAN_CSC_SCAL") {
            self.csc.scal = v;
        }
        if let Some(v) = var("INKAN_SIGNING_RSA_SCHEME") {
            self.signing.rsa_scheme = match v.as_str() {
                "pkcs1v15" => RsaScheme::Pkcs1v15,
                "pss" => RsaScheme::Pss,
                _ => return Err(ConfigError(format!("INKAN_SIGNING_RSA_SCHEME must be pkcs1v15 or pss, not {v:?}"))),
            };
        }
        Ok(())
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !["1", "2"].contains(&self.csc.scal.as_str()) {
            return Err(ConfigError(format!("[csc] scal must be \"1\" or \"2\", not {:?}", self.csc.scal)));
        }
        if self.fido.ticket_secs < 30 || self.fido.regcode_max_tries == 0 {
            return Err(ConfigError("[fido] ticket_secs must be at least 30 and regcode_max_tries at least 1".into()));
        }
        if self.server.session_hours == 0 {
            return Err(ConfigError("[server] session_hours must be at least 1".into()));
        }
        if self.server.audit_window_us > MAX_AUDIT_WINDOW_US || self.server.audit_idle_window_us > MAX_AUDIT_WINDOW_US {
            return Err(ConfigError(format!(
                "[server] audit_window_us and audit_idle_window_us must be at most {MAX_AUDIT_WINDOW_US} (1 s): every signature may wait that long"
            )));
        }
        Ok(())
    }

    /// The SQLite file.
    pub fn store_path(&self) -> PathBuf {
        self.store.path.clone().unwrap_or_else(|| self.data_dir.join("inkan.db"))
    }

    /// Whether the module is SoftHSM (then inkan manages its configuration file).
    pub fn is_softhsm(&self) -> bool {
        self.token.module.to_string_lossy().contains("softhsm")
    }

    /// The SoftHSM configuration file inkan uses, if any.
    pub fn softhsm_conf(&self) -> Option<PathBuf> {
        self.token
            .softhsm_conf
            .clone()
            .or_else(|| self.is_softhsm().then(|| self.data_dir.join("softhsm/softhsm2.conf")))
    }

    /// The PINs file written by `inkan init`.
    pub fn pins_path(&self) -> PathBuf {
        self.data_dir.join("token-pins.toml")
    }

    fn pins_file(&self) -> Option<PinsFile> {
        let text = std::fs::read_to_string(self.pins_path()).ok()?;
        toml::from_str(&text).ok()
    }

    /// The user PIN: from the file/environment, else from the pins file.
    pub fn user_pin(&self) -> Result<Pin, ConfigError> {
        if let Some(p) = &self.token.user_pin {
            return Ok(Pin::new(p.clone()));
        }
        self.pins_file().map(|f| Pin::new(f.user_pin)).ok_or_else(|| {
            ConfigError(format!(
                "no token user PIN: set INKAN_TOKEN_USER_PIN, or run `inkan init` to create {}",
                self.pins_path().display()
            ))
        })
    }

    /// The SO and user PINs for `inkan init`: configured ones, the pins file's, or
    /// new random ones (then written to the pins file, mode 0600).
    pub fn init_pins(&self) -> Result<(Pin, Pin), ConfigError> {
        let existing = self.pins_file();
        let so = self.token.so_pin.clone().or_else(|| existing.as_ref().map(|f| f.so_pin.clone()));
        let user = self.token.user_pin.clone().or_else(|| existing.as_ref().map(|f| f.user_pin.clone()));
        if let (Some(so), Some(user)) = (&so, &user) {
            return Ok((Pin::new(so.clone()), Pin::new(user.clone())));
        }
        let so = so.unwrap_or_else(random_pin);
        let user = user.unwrap_or_else(random_pin);
        let text = toml::to_string(&PinsFile { user_pin: user.clone(), so_pin: so.clone() })
            .map_err(|e| ConfigError(format!("pins file: {e}")))?;
        write_private(&self.pins_path(), text.as_bytes())
            .map_err(|e| ConfigError(format!("cannot write {}: {e}", self.pins_path().display())))?;
        Ok((Pin::new(so), Pin::new(user)))
    }

    /// Sets `SOFTHSM2_CONF` for the module about to be loaded (before any thread starts).
    pub fn export_softhsm_conf(&self) {
        if let Some(conf) = self.softhsm_conf() {
            if conf.exists() {
                // Called from the main thread before the runtime or any worker starts.
                std::env::set_var("SOFTHSM2_CONF", conf);
            }
        }
    }

    /// The keystore settings.
    pub fn keystore(&self) -> Result<KeystoreConfig, ConfigError> {
        let mut ks = KeystoreConfig::new(self.token.module.clone(), self.token.label.clone(), self.user_pin()?);
        if self.token.pool_size > 0 {
            ks.pool_size = self.token.pool_size;
        }
        Ok(ks)
    }
}

/// A random 16-digit PIN.
fn random_pin() -> String {
    let mut bytes = [0u8; 16];
    // getrandom only fails when the OS has no entropy source at all.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = [7; 16];
    }
    bytes.iter().map(|b| char::from(b'0' + b % 10)).collect()
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes a file atomically (temp file in the same directory + fsync + rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_commit_windows_are_bounded() {
        assert!(Config::default().validate().is_ok());
        let mut config = Config::default();
        config.server.audit_idle_window_us = 2_000_000;
        let e = config.validate().expect_err("a 2 s window");
        assert!(e.0.contains("audit_idle_window_us") && e.0.contains("at most"), "{}", e.0);
        let mut config = Config::default();
        config.server.audit_window_us = MAX_AUDIT_WINDOW_US;
        assert!(config.validate().is_ok());
    }
}
