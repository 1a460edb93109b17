//! The configuration's schema: every setting, its type and its default (the
//! embedded defaults: everything under `./var`, the fixture PKI, SoftHSM).
//! Where the values come from is `config.rs`'s; the environment's names for
//! them are `env.rs`'s.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A configuration problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the database, SoftHSM's token files and generated secrets (`var`).
    pub data_dir: PathBuf,
    /// The PKCS#11 token holding the signing keys.
    pub token: TokenConfig,
    /// The database: SQLite (one node, the default) or PostgreSQL (several nodes).
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
    /// What one client may make the server do or hold.
    pub limits: LimitsConfig,
    /// The time-stamp authority (RFC 3161) for signatures of level B-T and above.
    pub tsa: TsaConfig,
    /// Validation of signatures (`inkan verify`, `POST /api/v1/verify`).
    pub verify: VerifyConfig,
    /// Logs (written to standard error; what is logged: `INKAN_LOG`).
    pub log: LogConfig,
    /// The audit log's retention in the live store.
    pub audit: AuditConfig,
}

/// `[audit]`: how long rows stay in the live store.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days a row stays in the live store: `inkan audit archive` (without
    /// `--before`) moves older sealed rows to segment files.
    pub live_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { live_days: 400 }
    }
}

/// `[log]`: how log lines are written. Which are written is the `INKAN_LOG`
/// filter's (`warn` unless set; `info` adds one line per request).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for people; coloured on a terminal only) or `json` (one
    /// object a line: time, level, target, message, fields, request id).
    pub format: LogFormat,
}

/// `[log] format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// `[verify]`: what validation trusts, and how large a file it takes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// The anchors signers' certificates must chain to (PEM files; in
    /// production the MHLW HPKI root). A root inside a file is never one.
    pub anchors: Vec<PathBuf>,
    /// The anchors of TSAs' certificates (PEM files); empty: `[tsa] ca`.
    pub tsa_anchors: Vec<PathBuf>,
    /// Largest file `POST /api/v1/verify` takes (the signature and its
    /// content together).
    pub max_bytes: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            anchors: vec![PathBuf::from("fixtures/pki/hpki-root.pem")],
            tsa_anchors: Vec::new(),
            max_bytes: 8 << 20,
        }
    }
}

/// `[tsa]`: the time-stamp authority (RFC 3161) that stamps signatures of
/// level B-T and above. Without a `url`, only B-B is made.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TsaConfig {
    /// The TSA's URL (`http://` or `https://`), posted `application/timestamp-query`.
    pub url: String,
    /// A second TSA to ask when the first does not answer, or answers badly.
    pub fallback_url: String,
    /// The anchors the TSA's certificate must chain to (PEM files); required with `url`.
    pub ca: Vec<PathBuf>,
    /// Intermediate CA certificates of the TSA, if its tokens do not carry them.
    pub chain: Vec<PathBuf>,
    /// HTTP basic authentication: the user name, if the TSA asks for one.
    pub username: String,
    /// HTTP basic authentication: the password (a secret: prefer `INKAN_TSA_PASSWORD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretText>,
    /// The policy OID to ask for (`reqPolicy`), if the contract names one.
    pub policy: String,
    /// Seconds a TSA has to answer, connection included.
    pub timeout_secs: u64,
    /// Requests to the TSAs in flight at once, per node; more wait their turn.
    pub max_in_flight: usize,
    /// How often each server time-stamps the audit log at its newest seal
    /// (seconds; 0: never, `inkan audit seal` still does).
    pub audit_every_secs: u64,
}

impl Default for TsaConfig {
    fn default() -> Self {
        TsaConfig {
            url: String::new(),
            fallback_url: String::new(),
            ca: Vec::new(),
            chain: Vec::new(),
            username: String::new(),
            password: None,
            policy: String::new(),
            timeout_secs: 10,
            max_in_flight: 64,
            audit_every_secs: 600,
        }
    }
}

impl fmt::Debug for TsaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsaConfig")
            .field("url", &self.url)
            .field("fallback_url", &self.fallback_url)
            .field("ca", &self.ca)
            .field("chain", &self.chain)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("policy", &self.policy)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_in_flight", &self.max_in_flight)
            .field("audit_every_secs", &self.audit_every_secs)
            .finish()
    }
}

/// `[limits]`: what one client, or all clients together, may make the server
/// do or hold (each limit is per node).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests a minute one client address may make to each group of routes
    /// anyone can call (authorize, token, card login, QR starts, phone,
    /// registration codes), sustained; beyond it 429 with `Retry-After`
    /// (0 = no limit).
    pub per_address_per_minute: u32,
    /// How many of those may come at once.
    pub per_address_burst: u32,
    /// The same for all addresses of one network (IPv4 /24, IPv6 /48)
    /// together, sustained (0 = no limit).
    pub per_network_per_minute: u32,
    /// How many of those may come at once.
    pub per_network_burst: u32,
    /// QR codes (phone login, phone change) a minute for one user ID, sustained.
    pub per_user_per_minute: u32,
    /// How many of those may come at once.
    pub per_user_burst: u32,
    /// Requests a second all clients together may make to each group of
    /// open routes that write (authorize, QR starts, the phone's pages,
    /// registration codes), as many at once; beyond it 503 with
    /// `Retry-After`, so that a flood from many addresses cannot take the
    /// database from signing (0 = no limit).
    pub open_per_second: u32,
    /// Open connections per listener. When full, a newcomer takes the slot
    /// of the oldest connection that is idle or in its TLS handshake and has
    /// not authenticated a request; a quarter is kept for those that have.
    pub connections: usize,
    /// Open connections per client address (IPv6: per /64) and listener;
    /// beyond it new ones are closed at once.
    pub connections_per_address: usize,
    /// Open connections per client network (IPv4 /24, IPv6 /48) and
    /// listener; beyond it new ones are closed at once.
    pub connections_per_network: usize,
    /// Seconds a request body may take before it must keep `min_body_rate`.
    pub body_grace_secs: u64,
    /// Bytes a second a request body must arrive at, on average, after the grace.
    pub min_body_rate: u64,
    /// Bytes of enveloped documents (`/api/v1/sign` with `detached=false`)
    /// held at once; beyond it 503 with `Retry-After`.
    pub enveloped_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_address_per_minute: 600,
            per_address_burst: 120,
            per_network_per_minute: 2400,
            per_network_burst: 480,
            per_user_per_minute: 10,
            per_user_burst: 5,
            open_per_second: 100,
            connections: 4096,
            connections_per_address: 256,
            connections_per_network: 1024,
            body_grace_secs: 10,
            min_body_rate: 8192,
            enveloped_bytes: 256 << 20,
        }
    }
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
    /// The algorithm of the ID tokens (and of the platform key in the token
    /// that signs them): `ES256` (default; the token must do EC P-256) or
    /// `RS256` (RSA-2048).
    pub id_token_alg: IdTokenAlg,
    /// A bearer token `/metrics` asks for (a secret: prefer
    /// `INKAN_SERVER_METRICS_TOKEN`); without one, `/metrics` answers loopback
    /// clients only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<SecretText>,
    /// Balancers that open each connection with a PROXY protocol v2 header
    /// naming the client (addresses or networks: `10.0.0.5`, `10.0.0.0/24`,
    /// `fd00::/8`). With any set, both listeners take connections from these
    /// only, each with its header, and count the client it names; empty
    /// (the default): clients connect directly.
    pub proxy_from: Vec<IpNet>,
    /// Clients whose `X-Request-Id` names their requests (addresses or
    /// networks, as `proxy_from`; behind a balancer, the client its PROXY
    /// header names): a balancer that ends TLS, signing systems. Others'
    /// requests get an id made here. Empty (default): always made.
    pub request_id_from: Vec<IpNet>,
}

/// An address or a network (`10.0.0.5`, `10.0.0.0/24`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    /// The network's address (bits past the prefix are zero).
    pub addr: std::net::IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (std::net::IpAddr::V4(net), std::net::IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (std::net::IpAddr::V6(net), std::net::IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(v: u32, prefix: u8) -> u32 {
    v.checked_shr(32 - u32::from(prefix)).map_or(0, |h| h.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

fn mask128(v: u128, prefix: u8) -> u128 {
    v.checked_shr(128 - u32::from(prefix)).map_or(0, |h| h.checked_shl(128 - u32::from(prefix)).unwrap_or(0))
}

impl TryFrom<String> for IpNet {
    type Error = String;

    fn try_from(text: String) -> Result<IpNet, String> {
        let bad = || format!("{text:?} is not an address or a network such as 10.0.0.0/24");
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text.as_str(), None),
        };
        let addr: std::net::IpAddr = ip.trim().parse().map_err(|_| bad())?;
        // An IPv4-mapped IPv6 network is the IPv4 one (peers are compared so).
        let (addr, prefix) = match (addr, addr.to_canonical()) {
            (std::net::IpAddr::V6(_), v4 @ std::net::IpAddr::V4(_)) => match prefix {
                Some(p) if p < 96 => return Err(bad()),
                p => (v4, p.map(|p| p - 96)),
            },
            _ => (addr, prefix),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        let addr = match addr {
            std::net::IpAddr::V4(v4) => std::net::IpAddr::V4(mask32(u32::from(v4), prefix).into()),
            std::net::IpAddr::V6(v6) => std::net::IpAddr::V6(mask128(u128::from(v6), prefix).into()),
        };
        Ok(IpNet { addr, prefix })
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> String {
        format!("{}/{}", net.addr, net.prefix)
    }
}

/// A secret setting: its `Debug` shows `***`, never the value.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `[server] id_token_alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum IdTokenAlg {
    /// ECDSA P-256 with SHA-256.
    #[default]
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA-2048.
    RS256,
}

impl IdTokenAlg {
    /// `ES256` or `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdTokenAlg::ES256 => "ES256",
            IdTokenAlg::RS256 => "RS256",
        }
    }
}

/// The longest commit window accepted (µs).
pub const MAX_AUDIT_WINDOW_US: u64 = 1_000_000;

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
            id_token_alg: IdTokenAlg::ES256,
            metrics_token: None,
            proxy_from: Vec::new(),
            request_id_from: Vec::new(),
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
    /// Security officer PIN: `inkan init` creates the token with it, and
    /// `inkan kek rotate` makes trusted KEKs with it.
    #[serde(skip_serializing)]
    pub so_pin: Option<String>,
    /// SoftHSM configuration file; inkan sets `SOFTHSM2_CONF` to it before loading
    /// the module. Default: `<data_dir>/softhsm/softhsm2.conf` when the module is SoftHSM.
    pub softhsm_conf: Option<PathBuf>,
    /// Sessions in the pool (0 = one per CPU).
    pub pool_size: usize,
    /// How new keys are kept: `wrapped` (default: outside the token, wrapped
    /// by its key-encryption key) or `object` (a key pair in the token).
    /// Keys of either kind keep working whatever this says.
    pub key_storage: KeyStorage,
    /// Wrapped keys kept unwrapped in the token at most (least recently used
    /// evicted); each holds a session object in the token.
    pub cache_size: usize,
    /// What kind of key-encryption key `inkan init` and `inkan kek rotate`
    /// make: `strict` (default: keys it unwraps can never leave the token
    /// again, so a KEK is never rotated) or `trusted` (made by the security
    /// officer, `CKA_TRUSTED`; keys can be wrapped again under a newer trusted
    /// KEK, which `inkan kek rotate` does). On SoftHSM a trusted KEK lies
    /// unencrypted in the token directory: use it with an HSM.
    pub kek: KekKind,
}

/// `[token] kek`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KekKind {
    /// Never rotated (the default).
    #[default]
    Strict,
    /// Made by the security officer; rotatable.
    Trusted,
}

/// `[token] key_storage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStorage {
    /// Outside the token, wrapped (the default).
    #[default]
    Wrapped,
    /// Two token objects per key.
    Object,
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
            .field("key_storage", &self.key_storage)
            .field("cache_size", &self.cache_size)
            .field("kek", &self.kek)
            .finish()
    }
}

/// `[store]`
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite file (default `<data_dir>/inkan.db`); unused with `url`.
    pub path: Option<PathBuf>,
    /// SQLite `synchronous` in WAL mode: `full` (default: every commit is on disk
    /// before it returns, also across a power cut) or `normal` (survives a killed
    /// process; a power cut may lose the last commits).
    pub synchronous: Synchronous,
    /// PostgreSQL instead of SQLite, shared by every node:
    /// `postgres://user@host:5432/inkan` (a secret if it holds a password).
    pub url: Option<String>,
    /// The PostgreSQL password, if not in `url` (a secret: prefer
    /// `INKAN_STORE_PASSWORD` to the file).
    pub password: Option<String>,
    /// Connections each node keeps to PostgreSQL for requests (16); the audit
    /// writer and the session-cache listener have one each besides.
    pub max_connections: u32,
    /// PEM file of the CA that issued PostgreSQL's server certificate: with it,
    /// connections use TLS and verify the server's name; without it, TLS is off
    /// (a `sslmode=require` in `url` is then refused).
    pub ca: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: None,
            synchronous: Synchronous::Full,
            url: None,
            password: None,
            max_connections: 16,
            ca: None,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("path", &self.path)
            .field("synchronous", &self.synchronous)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .field("ca", &self.ca)
            .finish()
    }
}

/// A database URL without its password (`postgres://user:***@host/db`), for
/// messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Key-value form (`host=... password=...`): keep the keys only.
        return url
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    // The user information ends at the first `@`, as the driver reads it
    // (a password may hold `/`, `?` or `:`; an `@` in it must be %-encoded).
    let (authority, tail) = match rest.find('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            let after = &rest[at..];
            match after.find(['/', '?']) {
                Some(i) => (format!("{shown}{}", &after[..i]), &after[i..]),
                None => (format!("{shown}{after}"), ""),
            }
        }
        None => match rest.find(['/', '?']) {
            Some(i) => (rest[..i].to_owned(), &rest[i..]),
            None => (rest.to_owned(), ""),
        },
    };
    // A password may also come as a query parameter.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{path}?{query}")
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
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
    /// CRLs (DER or PEM files) for the validation data of B-LT signatures:
    /// the signing chain's and the TSA's. A certificate without one here is
    /// looked up at its CRL distribution point (`fetch_crls`).
    pub crls: Vec<PathBuf>,
    /// Whether CRLs may be fetched from distribution points (HTTP), each kept
    /// until its nextUpdate.
    pub fetch_crls: bool,
    /// Largest CRL fetched (10 MiB); a larger one is never embedded.
    pub crl_max_bytes: usize,
    /// Seconds a distribution point has to answer.
    pub crl_timeout_secs: u64,
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
    /// `pkcs1v15` (default) or `pss`, for CAdES and raw signatures (XAdES in
    /// the e-prescription profile is always RSASSA-PKCS1-v1_5).
    pub rsa_scheme: RsaScheme,
    /// Largest e-prescription document (XML or CSV) to sign: it is held and
    /// parsed in memory (1 MiB; a dispensing record with its prescription
    /// and long-term data is about 50 KiB).
    pub max_xml_bytes: usize,
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
            limits: LimitsConfig::default(),
            tsa: TsaConfig::default(),
            verify: VerifyConfig::default(),
            log: LogConfig::default(),
            audit: AuditConfig::default(),
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
            key_storage: KeyStorage::Wrapped,
            kek: KekKind::Strict,
            cache_size: inkan_keystore::DEFAULT_CACHE_SIZE,
        }
    }
}

impl Default for PkiConfig {
    fn default() -> Self {
        PkiConfig {
            signing_ca: PathBuf::from("fixtures/pki/hpki-signing-ca.pem"),
            chain: vec![PathBuf::from("fixtures/pki/hpki-root.pem")],
            crls: Vec::new(),
            fetch_crls: true,
            crl_max_bytes: 10 << 20,
            crl_timeout_secs: 10,
        }
    }
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig { rsa_scheme: RsaScheme::Pkcs1v15, max_xml_bytes: 1 << 20 }
    }
}

/// Debian's SoftHSM module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[cfg(test)]
mod tests;
