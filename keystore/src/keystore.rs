//! The keystore: one token, a session pool and a cache of key handles.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::lockfile::TokenLock;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use crate::algorithm::{DigestAlgorithm, KeyAlgorithm, SignatureScheme};
use crate::error::{from_cryptoki, Error, Result};
use crate::pin::Pin;
use crate::pool::{Lease, Pool};
use crate::public_key;

/// Where the token is and how to use it.
#[derive(Clone, Debug)]
pub struct KeystoreConfig {
    /// Path of the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so` for SoftHSM).
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, set at initialisation).
    pub token_label: String,
    /// The user PIN.
    pub user_pin: Pin,
    /// Number of sessions in the pool (one per worker thread).
    pub pool_size: usize,
    /// How long a caller waits for a free session before [`Error::PoolExhausted`].
    pub pool_wait: Duration,
    /// A lock file that orders the processes sharing a SoftHSM token directory
    /// (see the module `lockfile`): `None` for a token that needs none.
    pub lock_file: Option<PathBuf>,
}

impl KeystoreConfig {
    /// A configuration with a pool of one session per CPU and a 5 s wait.
    pub fn new(module: impl Into<PathBuf>, token_label: impl Into<String>, user_pin: Pin) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        KeystoreConfig {
            module: module.into(),
            token_label: token_label.into(),
            user_pin,
            pool_size: cpus,
            pool_wait: Duration::from_secs(5),
            lock_file: None,
        }
    }
}

/// An opaque reference to a key pair in the token: its `CKA_ID`.
///
/// Callers store the id (e.g. in a database) and never see object handles.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyRef(Arc<[u8]>);

impl KeyRef {
    /// A reference from a stored `CKA_ID`.
    pub fn from_id(id: impl Into<Vec<u8>>) -> Self {
        KeyRef(Arc::from(id.into()))
    }

    /// The `CKA_ID` bytes.
    pub fn id(&self) -> &[u8] {
        &self.0
    }

    /// The `CKA_ID` in lower-case hex.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({})", self.hex())
    }
}

/// A key pair just generated in the token.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    /// The reference to store.
    pub key: KeyRef,
    /// The public key as DER `SubjectPublicKeyInfo`.
    pub public_key_der: Vec<u8>,
}

/// The protection attributes of a private key, as the token reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_SENSITIVE`
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`
    pub never_extractable: bool,
    /// `CKA_SIGN`
    pub sign: bool,
    /// `CKA_DECRYPT`
    pub decrypt: bool,
    /// `CKA_UNWRAP`
    pub unwrap: bool,
    /// `CKA_DERIVE`
    pub derive: bool,
}

/// A PKCS#11 token holding users' signing keys.
///
/// `Keystore` is `Send + Sync`; share it with an `Arc`. Each operation borrows a
/// session from the pool for its duration.
pub struct Keystore {
    ctx: Pkcs11,
    label: String,
    pin: Pin,
    slot: Mutex<Option<Slot>>,
    pool: Pool<Session>,
    handles: RwLock<HashMap<KeyRef, CachedKey>>,
    /// Held shared by every operation while it uses a session, and exclusively
    /// by [`Keystore::reset_module`], which so knows that no session is lent out.
    gate: RwLock<()>,
    last_reset: Mutex<Option<Instant>>,
    sign_time: SignTime,
    lock: TokenLock,
}

/// Signatures made by the token and the CPU time this process spent in them
/// (`C_SignInit` + `C_Sign`, measured on the calling thread). A software token
/// such as SoftHSM signs on the caller's thread, so this splits a server's CPU
/// time into the token's share and everything else.
#[derive(Debug, Default)]
pub struct SignTime {
    calls: AtomicU64,
    cpu_ns: AtomicU64,
}

impl SignTime {
    /// Signatures so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Thread CPU time spent inside the token's sign calls so far.
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }
}

/// How often at most the module is re-initialised after token failures.
const RESET_INTERVAL: Duration = Duration::from_secs(1);

/// A resolved private key: its handle and whether it is an RSA key.
#[derive(Clone, Copy, Debug)]
struct CachedKey {
    handle: ObjectHandle,
    rsa: bool,
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystore").field("token", &self.label).field("pool", &self.pool.size()).finish()
    }
}

/// One context per module path, shared by every keystore of the process.
///
/// `C_Initialize` must happen once per process, and SoftHSM 2.6 is not safe
/// against a second thread entering the library while the first `C_Initialize`
/// is still building its state (seen as crashes, `CKR_GENERAL_ERROR` and
/// `CKR_SLOT_ID_INVALID`); slot enumeration is serialised for the same reason.
static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// Loads and initialises a PKCS#11 module (once per process and path).
pub(crate) fn load_module(path: &std::path::Path) -> Result<Pkcs11> {
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, ctx)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(ctx.clone());
    }
    if !path.exists() {
        return Err(Error::TokenUnavailable {
            reason: format!(
                "PKCS#11 module {} does not exist (is SoftHSM installed? apt-get install -y softhsm2)",
                path.display()
            ),
        });
    }
    let ctx = Pkcs11::new(path).map_err(from_cryptoki)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(from_cryptoki(e)),
    }
    modules.push((path.to_path_buf(), ctx.clone()));
    Ok(ctx)
}

/// Holds the process-wide module lock (for slot enumeration and token initialisation).
pub(crate) fn module_lock() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Pkcs11)>> {
    MODULES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Finds the slot whose token has this label.
pub(crate) fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot> {
    let _serial = module_lock();
    find_slot_locked(ctx, label)
}

/// [`find_slot`] for a caller that holds [`module_lock`].
pub(crate) fn find_slot_locked(ctx: &Pkcs11, label: &str) -> Result<Slot> {
    for slot in ctx.get_slots_with_token().map_err(from_cryptoki)? {
        let info = ctx.get_token_info(slot).map_err(from_cryptoki)?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(Error::TokenUnavailable { reason: format!("no token labelled {label:?} (run `inkan init` to create it)") })
}

impl Keystore {
    /// Loads the module, finds the token by label and logs in (checking the PIN now,
    /// so that a wrong PIN is reported at start-up and not at the first signature).
    pub fn open(config: KeystoreConfig) -> Result<Keystore> {
        let lock = TokenLock::new(config.lock_file.clone());
        let _writing = lock.exclusive()?;
        let ctx = load_module(&config.module)?;
        let slot = find_slot(&ctx, &config.token_label)?;
        let ks = Keystore {
            ctx,
            label: config.token_label,
            pin: config.user_pin,
            slot: Mutex::new(Some(slot)),
            pool: Pool::new(config.pool_size.max(1), config.pool_wait),
            handles: RwLock::new(HashMap::new()),
            gate: RwLock::new(()),
            last_reset: Mutex::new(None),
            sign_time: SignTime::default(),
            lock: lock.clone(),
        };
        // No module reset here: a keystore that never worked has nothing to recover.
        ks.with_session_inner(&|_: &Session| Ok(()))?;
        Ok(ks)
    }

    /// Signatures made and the CPU time spent in the token's sign calls.
    pub fn sign_time(&self) -> &SignTime {
        &self.sign_time
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// Number of sessions in the pool.
    pub fn pool_size(&self) -> usize {
        self.pool.size()
    }

    fn slot(&self) -> Result<Slot> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = *slot {
            return Ok(s);
        }
        let found = find_slot(&self.ctx, &self.label)?;
        *slot = Some(found);
        Ok(found)
    }

    fn open_session(&self) -> Result<Session> {
        let slot = self.slot()?;
        let session = match self.ctx.open_rw_session(slot) {
            Ok(s) => s,
            Err(e) => {
                // The slot may have been renumbered (token re-initialised): look it up again next time.
                *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Err(match from_cryptoki(e) {
                    Error::Pkcs11 { function, rv } => Error::TokenUnavailable {
                        reason: format!("{function} returned {rv} for token {:?}", self.label),
                    },
                    other => other,
                });
            }
        };
        // A login rewrites the token's file (SoftHSM).
        let _writing = self.lock.exclusive()?;
        match session.login(UserType::User, Some(&self.pin.to_auth_pin())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(from_cryptoki(e)),
        }
    }

    fn lease(&self) -> Result<Lease<'_, Session>> {
        self.pool.get(|| self.open_session())
    }

    /// Runs `op` on a pooled session; if the session or a cached handle turned
    /// out to be stale, drops it, forgets all cached handles, logs in again on a
    /// fresh session and runs `op` once more.
    ///
    /// If the token looks gone (a device error, a general error, no token), the
    /// module is finalised and initialised again, at most once a second, so a
    /// token that comes back is used again without a restart. The failing call
    /// still reports its error.
    fn with_session<T>(&self, op: impl Fn(&Session) -> Result<T>) -> Result<T> {
        let result = {
            let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
            self.with_session_inner(&op)
        };
        if let Err(e) = &result {
            if e.needs_reset() {
                self.reset_module();
            }
        }
        result
    }

    fn with_session_inner<T>(&self, op: &impl Fn(&Session) -> Result<T>) -> Result<T> {
        let lease = self.lease()?;
        match op(&lease) {
            Err(e) if e.is_stale() => {
                lease.discard();
                self.pool.drain_idle();
                self.forget_handles();
                let lease = self.lease()?;
                let result = op(&lease);
                if matches!(&result, Err(e) if e.is_stale()) {
                    lease.discard();
                }
                result
            }
            other => other,
        }
    }

    /// Finalises and re-initialises the module (all sessions are idle meanwhile).
    fn reset_module(&self) {
        {
            let mut last = self.last_reset.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < RESET_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        // Locks are taken in this order everywhere: the gate, then the file.
        let _writing = self.lock.exclusive();
        self.pool.drain_idle();
        self.forget_handles();
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _serial = module_lock();
        let _ = self.ctx.clone().finalize();
        match self.ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                // Reported by the next operation, which will try again.
                let _ = from_cryptoki(e);
            }
        }
    }

    fn forget_handles(&self) {
        self.handles.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The private key's handle and type: from the cache, or found once and cached.
    fn private_key(&self, session: &Session, key: &KeyRef) -> Result<CachedKey> {
        if let Some(k) = self.handles.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(*k);
        }
        let found = {
            let _reading = self.lock.shared()?;
            session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Id(key.id().to_vec())])
                .map_err(from_cryptoki)?
        };
        let handle = *found.first().ok_or_else(|| Error::KeyNotFound { id: key.hex() })?;
        let rsa = matches!(
            session.get_attributes(handle, &[AttributeType::KeyType]).map_err(from_cryptoki)?.first(),
            Some(Attribute::KeyType(KeyType::RSA))
        );
        let cached = CachedKey { handle, rsa };
        self.handles.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), cached);
        Ok(cached)
    }

    fn find_one(&self, session: &Session, class: ObjectClass, key: &KeyRef) -> Result<ObjectHandle> {
        let _reading = self.lock.shared()?;
        let found = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(key.id().to_vec())])
            .map_err(from_cryptoki)?;
        found.first().copied().ok_or_else(|| Error::KeyNotFound { id: key.hex() })
    }

    /// Generates a key pair inside the token.
    ///
    /// The private key is `CKA_SENSITIVE`, not extractable and may only sign (no
    /// decrypt, unwrap or derive); both halves carry `key`'s id as `CKA_ID` and
    /// `label` as `CKA_LABEL`. Fails if a key with this id exists already.
    pub fn generate_key_pair(&self, alg: KeyAlgorithm, key: &KeyRef, label: &str) -> Result<GeneratedKey> {
        self.with_session(|session| {
            let _writing = self.lock.exclusive()?;
            let taken = session.find_objects(&[Attribute::Id(key.id().to_vec())]).map_err(from_cryptoki)?;
            if !taken.is_empty() {
                return Err(Error::InvalidInput(format!("a key with CKA_ID {} exists already", key.hex())));
            }
            let common = |private: bool| {
                vec![
                    Attribute::Token(true),
                    Attribute::Private(private),
                    Attribute::Id(key.id().to_vec()),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Modifiable(false),
                    Attribute::Derive(false),
                ]
            };
            let mut public = common(false);
            public.extend([Attribute::Verify(true), Attribute::Encrypt(false), Attribute::Wrap(false)]);
            let mut private = common(true);
            private.extend([
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::SignRecover(false),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
            ]);
            let mechanism = if alg.is_rsa() {
                public.push(Attribute::ModulusBits((alg.bits() as u64).into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                public.push(Attribute::KeyType(KeyType::RSA));
                private.push(Attribute::KeyType(KeyType::RSA));
                Mechanism::RsaPkcsKeyPairGen
            } else {
                public.push(Attribute::EcParams(public_key::ec_params(alg)?));
                public.push(Attribute::KeyType(KeyType::EC));
                private.push(Attribute::KeyType(KeyType::EC));
                Mechanism::EccKeyPairGen
            };
            let (pub_handle, priv_handle) =
                session.generate_key_pair(&mechanism, &public, &private).map_err(from_cryptoki)?;
            let public_key_der = self.read_public_key(session, pub_handle, alg)?;
            let cached = CachedKey { handle: priv_handle, rsa: alg.is_rsa() };
            self.handles.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), cached);
            Ok(GeneratedKey { key: key.clone(), public_key_der })
        })
    }

    fn read_public_key(&self, session: &Session, handle: ObjectHandle, alg: KeyAlgorithm) -> Result<Vec<u8>> {
        if alg.is_rsa() {
            let attrs = session
                .get_attributes(handle, &[AttributeType::Modulus, AttributeType::PublicExponent])
                .map_err(from_cryptoki)?;
            let (mut n, mut e) = (None, None);
            for attr in attrs {
                match attr {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            match (n, e) {
                (Some(n), Some(e)) => public_key::rsa_spki(&n, &e),
                _ => Err(Error::InvalidInput("the token did not return the RSA public key".into())),
            }
        } else {
            let attrs = session.get_attributes(handle, &[AttributeType::EcPoint]).map_err(from_cryptoki)?;
            match attrs.into_iter().next() {
                Some(Attribute::EcPoint(point)) => public_key::ec_spki(&point),
                _ => Err(Error::InvalidInput("the token did not return the EC point".into())),
            }
        }
    }

    /// The public key of a key pair, as DER `SubjectPublicKeyInfo`.
    pub fn public_key(&self, key: &KeyRef, alg: KeyAlgorithm) -> Result<Vec<u8>> {
        self.with_session(|session| {
            let handle = self.find_one(session, ObjectClass::PUBLIC_KEY, key)?;
            self.read_public_key(session, handle, alg)
        })
    }

    /// Signs a digest with the private key.
    ///
    /// - RSA PKCS#1 v1.5: the keystore wraps the digest in a `DigestInfo` and
    ///   calls `CKM_RSA_PKCS`;
    /// - RSA-PSS: `CKM_RSA_PKCS_PSS` with MGF1 on the same hash, salt = hash length;
    /// - ECDSA: `CKM_ECDSA`, and the token's `r || s` is returned DER-encoded.
    ///
    /// This is the hot path: one pool checkout, a cached handle, one `C_Sign`.
    pub fn sign_digest(&self, key: &KeyRef, scheme: SignatureScheme, digest: &[u8]) -> Result<Vec<u8>> {
        let alg = scheme.digest_algorithm();
        if digest.len() != alg.output_len() {
            return Err(Error::InvalidInput(format!(
                "a {} digest has {} bytes, not {}",
                alg.name(),
                alg.output_len(),
                digest.len()
            )));
        }
        match scheme {
            SignatureScheme::RsaPkcs1v15(_) => {
                let mut info = Vec::with_capacity(19 + digest.len());
                info.extend_from_slice(alg.digest_info_prefix());
                info.extend_from_slice(digest);
                self.sign_raw(key, &Mechanism::RsaPkcs, &info)
            }
            SignatureScheme::RsaPss(_) => {
                let params = PkcsPssParams {
                    hash_alg: hash_mechanism(alg),
                    mgf: mgf(alg),
                    s_len: (alg.output_len() as u64).into(),
                };
                self.sign_raw(key, &Mechanism::RsaPkcsPss(params), digest)
            }
            SignatureScheme::Ecdsa(_) => {
                let raw = self.sign_raw(key, &Mechanism::Ecdsa, digest)?;
                public_key::ecdsa_raw_to_der(&raw)
            }
        }
    }

    /// ECDSA over a digest, returning the token's raw `r || s` (IEEE P1363), as
    /// JWS ES256 wants it (RFC 7518 3.4).
    pub fn sign_ecdsa_p1363(&self, key: &KeyRef, digest: &[u8]) -> Result<Vec<u8>> {
        if digest.is_empty() || digest.len() > 64 {
            return Err(Error::InvalidInput(format!("an ECDSA digest of {} bytes", digest.len())));
        }
        self.sign_raw(key, &Mechanism::Ecdsa, digest)
    }

    /// One `C_SignInit` + `C_Sign` with a cached handle: the raw cost of a
    /// signature, without any formatting. Benchmarks compare against this.
    pub fn sign_raw_pkcs1(&self, key: &KeyRef, digest_info: &[u8]) -> Result<Vec<u8>> {
        self.sign_raw(key, &Mechanism::RsaPkcs, digest_info)
    }

    fn sign_raw(&self, key: &KeyRef, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        let wants_rsa = !matches!(mechanism, Mechanism::Ecdsa);
        self.with_session(|session| {
            let cached = self.private_key(session, key)?;
            if cached.rsa != wants_rsa {
                return Err(Error::MechanismUnsupported {
                    mechanism: format!(
                        "{:?} with the {} key {}",
                        mechanism.mechanism_type(),
                        if cached.rsa { "RSA" } else { "EC" },
                        key.hex()
                    ),
                });
            }
            let started = cpu_time::ThreadTime::try_now().ok();
            let signed = session.sign(mechanism, cached.handle, data);
            if let Some(cpu) = started.and_then(|t| t.try_elapsed().ok()) {
                self.sign_time.calls.fetch_add(1, Ordering::Relaxed);
                self.sign_time.cpu_ns.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
            }
            signed.map_err(|e| match from_cryptoki(e) {
                Error::Pkcs11 { rv, .. }
                    if rv == "CKR_KEY_TYPE_INCONSISTENT" || rv == "CKR_KEY_FUNCTION_NOT_PERMITTED" =>
                {
                    Error::MechanismUnsupported {
                        mechanism: format!("{:?} with key {}", mechanism.mechanism_type(), key.hex()),
                    }
                }
                other => other,
            })
        })
    }

    /// Signs `message` after hashing it in software (for CSRs and other small data).
    pub fn sign_message(&self, key: &KeyRef, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>> {
        let digest = scheme.digest_algorithm().digest(message);
        self.sign_digest(key, scheme, &digest)
    }

    /// Reads the private key's protection attributes.
    pub fn protection(&self, key: &KeyRef) -> Result<KeyProtection> {
        self.with_session(|session| {
            let handle = self.private_key(session, key)?.handle;
            let attrs = session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Sign,
                        AttributeType::Decrypt,
                        AttributeType::Unwrap,
                        AttributeType::Derive,
                    ],
                )
                .map_err(from_cryptoki)?;
            let mut p = KeyProtection {
                sensitive: false,
                extractable: true,
                always_sensitive: false,
                never_extractable: false,
                sign: false,
                decrypt: true,
                unwrap: true,
                derive: true,
            };
            for attr in attrs {
                match attr {
                    Attribute::Sensitive(v) => p.sensitive = v,
                    Attribute::Extractable(v) => p.extractable = v,
                    Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                    Attribute::NeverExtractable(v) => p.never_extractable = v,
                    Attribute::Sign(v) => p.sign = v,
                    Attribute::Decrypt(v) => p.decrypt = v,
                    Attribute::Unwrap(v) => p.unwrap = v,
                    Attribute::Derive(v) => p.derive = v,
                    _ => {}
                }
            }
            Ok(p)
        })
    }

    /// Keys whose `CKA_LABEL` is `label` (private keys only). This searches the
    /// token: for maintenance, never for the sign path.
    pub fn keys_labelled(&self, label: &str) -> Result<Vec<KeyRef>> {
        self.with_session(|session| {
            let _reading = self.lock.shared()?;
            let found = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .map_err(from_cryptoki)?;
            let mut keys = Vec::new();
            for handle in found {
                if let Some(Attribute::Id(id)) =
                    session.get_attributes(handle, &[AttributeType::Id]).map_err(from_cryptoki)?.into_iter().next()
                {
                    keys.push(KeyRef::from_id(id));
                }
            }
            Ok(keys)
        })
    }

    /// Destroys both halves of a key pair. Destroying a key that is not there is
    /// not an error.
    pub fn destroy(&self, key: &KeyRef) -> Result<()> {
        self.with_session(|session| {
            let _writing = self.lock.exclusive()?;
            for handle in session.find_objects(&[Attribute::Id(key.id().to_vec())]).map_err(from_cryptoki)? {
                session.destroy_object(handle).map_err(from_cryptoki)?;
            }
            Ok(())
        })?;
        self.handles.write().unwrap_or_else(|p| p.into_inner()).remove(key);
        Ok(())
    }

    /// Logs the process out of the token: every session, as PKCS#11 defines it.
    /// The next operation logs in again (and finds its key handles again).
    pub fn logout(&self) -> Result<()> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let lease = self.lease()?;
        let result = match lease.logout() {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => Ok(()),
            Err(e) => Err(from_cryptoki(e)),
        };
        lease.discard();
        self.pool.drain_idle();
        self.forget_handles();
        result
    }

    /// Checks that a session can be had and the token answers (for readiness probes).
    pub fn ping(&self) -> Result<()> {
        self.with_session(|session| session.get_session_info().map(|_| ()).map_err(from_cryptoki))
    }
}

fn hash_mechanism(alg: DigestAlgorithm) -> MechanismType {
    match alg {
        DigestAlgorithm::Sha256 => MechanismType::SHA256,
        DigestAlgorithm::Sha384 => MechanismType::SHA384,
        DigestAlgorithm::Sha512 => MechanismType::SHA512,
    }
}

fn mgf(alg: DigestAlgorithm) -> PkcsMgfType {
    match alg {
        DigestAlgorithm::Sha256 => PkcsMgfType::MGF1_SHA256,
        DigestAlgorithm::Sha384 => PkcsMgfType::MGF1_SHA384,
        DigestAlgorithm::Sha512 => PkcsMgfType::MGF1_SHA512,
    }
}
