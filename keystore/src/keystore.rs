//! The keystore: one token, a session pool and a cache of key handles.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
use crate::wrapped;

mod data;
mod kek;
mod seal;
pub use data::DataObject;
pub use kek::{create_trusted_kek, KekInfo, KekKind};

/// Unwrapped keys cached by default.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;

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
    /// How [`Keystore::generate_key`] keeps new keys (existing keys of either
    /// kind are always usable).
    pub key_storage: KeyStorage,
    /// Unwrapped keys kept in the token at most (least recently used evicted).
    pub cache_size: usize,
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
            key_storage: KeyStorage::Wrapped,
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

/// How new keys are kept ([`KeystoreConfig::key_storage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyStorage {
    /// Each private key wrapped under the token's key-encryption key and kept
    /// by the caller; unwrapped into a session object when used (the default:
    /// a token holds a handful of objects whatever the number of users).
    #[default]
    Wrapped,
    /// Each key pair as two token objects (inkan's first layout).
    Object,
}

impl KeyStorage {
    /// `wrapped` or `object`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStorage::Wrapped => "wrapped",
            KeyStorage::Object => "object",
        }
    }
}

impl std::str::FromStr for KeyStorage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wrapped" => Ok(KeyStorage::Wrapped),
            "object" => Ok(KeyStorage::Object),
            other => Err(Error::InvalidInput(format!("key storage {other:?}: expected \"wrapped\" or \"object\""))),
        }
    }
}

/// An opaque reference to a key: what the caller stores (a token object's
/// `CKA_ID`, or a wrapped key), with what a wrapped key is bound to.
///
/// Callers keep [`KeyRef::stored`] (e.g. in a database) with the public key,
/// and rebuild the reference with [`KeyRef::from_stored`] and the same binding;
/// they never see object handles, nor need to know how the key is kept.
#[derive(Clone)]
pub struct KeyRef(Arc<KeyRefInner>);

struct KeyRefInner {
    stored: Vec<u8>,
    binding: Vec<u8>,
    public_key: Vec<u8>,
    /// SHA-256 over all three: equality, hashing and display use it, so the
    /// sign path never hashes a 1 KB blob.
    digest: [u8; 32],
}

impl KeyRef {
    /// A reference to a key pair in the token by its `CKA_ID`.
    pub fn from_id(id: impl Into<Vec<u8>>) -> Self {
        KeyRef::new(id.into(), Vec::new(), Vec::new())
    }

    /// A reference from what [`KeyRef::stored`] returned, with the binding and
    /// public key given when the key was generated. A wrapped key is checked
    /// against both before the token unwraps it.
    pub fn from_stored(stored: impl Into<Vec<u8>>, binding: &[u8], public_key_der: &[u8]) -> Self {
        KeyRef::new(stored.into(), binding.to_vec(), public_key_der.to_vec())
    }

    fn new(stored: Vec<u8>, binding: Vec<u8>, public_key: Vec<u8>) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [&stored, &binding, &public_key] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        KeyRef(Arc::new(KeyRefInner { stored, binding, public_key, digest: h.finalize().into() }))
    }

    /// The bytes to store.
    pub fn stored(&self) -> &[u8] {
        &self.0.stored
    }

    /// How this key is kept.
    pub fn storage(&self) -> KeyStorage {
        if wrapped::is_wrapped(&self.0.stored) {
            KeyStorage::Wrapped
        } else {
            KeyStorage::Object
        }
    }

    /// The index of the key-encryption key a wrapped key is wrapped under
    /// (`None` for a token object, or stored bytes that are not a wrapped key).
    pub fn kek_index(&self) -> Option<u32> {
        wrapped::Wrapped::parse(&self.0.stored).ok().map(|w| w.kek_index)
    }

    /// A short printable name for logs and listings: an object's `CKA_ID` in
    /// hex, or the first 16 bytes of the SHA-256 of a wrapped key.
    pub fn hex(&self) -> String {
        let shown: &[u8] = match self.storage() {
            KeyStorage::Object => &self.0.stored,
            KeyStorage::Wrapped => {
                use sha2::Digest;
                return sha2::Sha256::digest(&self.0.stored)[..16].iter().map(|b| format!("{b:02x}")).collect();
            }
        };
        shown.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl PartialEq for KeyRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.digest == other.0.digest
    }
}

impl Eq for KeyRef {}

impl std::hash::Hash for KeyRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0.digest[..8]);
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({}, {})", self.storage().as_str(), self.hex())
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
    module: PathBuf,
    label: String,
    pin: Pin,
    slot: Mutex<Option<Slot>>,
    pool: Pool<Session>,
    /// Private keys in use: token objects found once, and wrapped keys
    /// unwrapped into session objects of `holder` (at most `cache_size` of
    /// those, least recently used evicted).
    handles: RwLock<HashMap<KeyRef, Arc<CachedKey>>>,
    /// The session that owns the unwrapped keys: a session object lives as
    /// long as the session that made it, so unwrapping happens here and
    /// signing in any pooled session. Held while unwrapping or evicting.
    holder: Mutex<Option<Session>>,
    /// KEK and MAC key handles by KEK index, and the newest index.
    wrapping: RwLock<WrappingKeys>,
    key_storage: KeyStorage,
    cache_size: usize,
    /// The module's function list, for the calls `cryptoki` cannot make.
    ext: std::sync::OnceLock<inkan_pkcs11_ffi::Module>,
    wrap_mechanisms: std::sync::OnceLock<[cryptoki_sys::CK_MECHANISM_TYPE; 2]>,
    cache: CacheCounters,
    tick: AtomicU64,
    /// Wrapped keys in `handles`.
    wrapped_entries: AtomicUsize,
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
///
/// A wrapped key's entry is destroyed on eviction only when nobody else holds
/// its `Arc` (a signer clones it under the map's read lock; the evictor checks
/// under the write lock), so a handle is never destroyed under a signature.
#[derive(Debug)]
struct CachedKey {
    handle: ObjectHandle,
    rsa: bool,
    wrapped: bool,
    last_use: AtomicU64,
}

/// The token's wrapping keys, found once.
#[derive(Debug, Default)]
struct WrappingKeys {
    /// KEK index → its KEK and MAC key.
    by_index: HashMap<u32, WrapKeys>,
    /// The newest KEK's index, once looked up (`Some(None)`: there is none).
    newest: Option<Option<u32>>,
}

/// A KEK and its MAC key, and whether the token trusts the KEK (then the
/// keys it unwraps can be wrapped again, under trusted keys only).
#[derive(Clone, Copy, Debug)]
struct WrapKeys {
    kek: ObjectHandle,
    mac: ObjectHandle,
    trusted: bool,
}

#[derive(Debug, Default)]
struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    refused: AtomicU64,
}

/// The unwrapped-key cache's figures (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Unwrapped keys it may hold.
    pub capacity: usize,
    /// Unwrapped keys it holds.
    pub entries: usize,
    /// Uses of a wrapped key found unwrapped.
    pub hits: u64,
    /// Uses of a wrapped key that had to be unwrapped.
    pub misses: u64,
    /// Unwrapped keys destroyed to make room.
    pub evictions: u64,
    /// Wrapped keys refused because their MAC did not match.
    pub refused: u64,
}

/// What [`Keystore::prepare_wrapping`] found or made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrappingReady {
    /// The newest KEK's index.
    pub kek_index: u32,
    /// Whether this call created it.
    pub created: bool,
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

/// Finds the slot whose token has this label, in the module at `module`.
pub(crate) fn find_slot(ctx: &Pkcs11, module: &std::path::Path, label: &str) -> Result<Slot> {
    let _serial = module_lock();
    find_slot_locked(ctx, module, label)
}

/// [`find_slot`] for a caller that holds [`module_lock`].
///
/// A slot whose token information the module cannot give, or gives in a
/// form `cryptoki` cannot read (Debian 12's openCryptoki 3.8 writes the time
/// against the standard), is skipped: it says nothing about the others. The
/// error then names the module, those slots and the call that failed.
pub(crate) fn find_slot_locked(ctx: &Pkcs11, module: &std::path::Path, label: &str) -> Result<Slot> {
    let slots = ctx.get_slots_with_token().map_err(|e| in_module(from_cryptoki(e), module, "C_GetSlotList"))?;
    let mut skipped = Vec::new();
    for slot in slots {
        match ctx.get_token_info(slot) {
            Ok(info) if info.label().trim_end() == label => return Ok(slot),
            Ok(_) => {}
            Err(e) => skipped.push(format!("slot {}: C_GetTokenInfo failed ({e}), skipped", slot.id())),
        }
    }
    let skipped = if skipped.is_empty() { String::new() } else { format!("; {}", skipped.join("; ")) };
    Err(Error::TokenUnavailable {
        reason: format!(
            "no token labelled {label:?} in PKCS#11 module {}{skipped} (run `inkan init` to create it)",
            module.display()
        ),
    })
}

/// An error of a call to the module at `module`, naming both.
pub(crate) fn in_module(e: Error, module: &std::path::Path, call: &str) -> Error {
    match e {
        Error::TokenUnavailable { reason } => {
            Error::TokenUnavailable { reason: format!("{call} of PKCS#11 module {}: {reason}", module.display()) }
        }
        Error::Pkcs11 { function, rv } => Error::Pkcs11 { function: format!("{function} ({})", module.display()), rv },
        other => other,
    }
}

impl Keystore {
    /// Loads the module, finds the token by label and logs in (checking the PIN now,
    /// so that a wrong PIN is reported at start-up and not at the first signature).
    pub fn open(config: KeystoreConfig) -> Result<Keystore> {
        let lock = TokenLock::new(config.lock_file.clone());
        let _writing = lock.exclusive()?;
        let ctx = load_module(&config.module)?;
        let slot = find_slot(&ctx, &config.module, &config.token_label)?;
        let ks = Keystore {
            ctx,
            module: config.module,
            label: config.token_label,
            pin: config.user_pin,
            slot: Mutex::new(Some(slot)),
            pool: Pool::new(config.pool_size.max(1), config.pool_wait),
            handles: RwLock::new(HashMap::new()),
            holder: Mutex::new(None),
            wrapping: RwLock::new(WrappingKeys::default()),
            key_storage: config.key_storage,
            cache_size: config.cache_size.max(1),
            ext: std::sync::OnceLock::new(),
            wrap_mechanisms: std::sync::OnceLock::new(),
            cache: CacheCounters::default(),
            tick: AtomicU64::new(0),
            wrapped_entries: AtomicUsize::new(0),
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
        let found = find_slot(&self.ctx, &self.module, &self.label)?;
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
            Err(e) if e.may_be_stale() => {
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

    /// Forgets every cached handle and closes the session holding the
    /// unwrapped keys (which destroys them). A signature in flight with one of
    /// them fails as stale and is retried; SoftHSM never reuses a handle.
    fn forget_handles(&self) {
        // The holder first, as `unwrap` takes them: no unwrap can then insert
        // a handle of the session about to be closed after the map is cleared.
        let mut holder = self.holder.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut handles = self.handles.write().unwrap_or_else(|p| p.into_inner());
            handles.clear();
            self.wrapped_entries.store(0, Ordering::Relaxed);
        }
        *self.wrapping.write().unwrap_or_else(|p| p.into_inner()) = WrappingKeys::default();
        drop(holder.take());
    }

    /// The private key's handle and type: from the cache, or found (an
    /// object) or unwrapped (a wrapped key) once and cached.
    fn private_key(&self, session: &Session, key: &KeyRef) -> Result<Arc<CachedKey>> {
        if let Some(k) = self.handles.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            if k.wrapped {
                k.last_use.store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                self.cache.hits.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Arc::clone(k));
        }
        if key.storage() == KeyStorage::Wrapped {
            return self.unwrap(session, key);
        }
        let found = {
            let _reading = self.lock.shared()?;
            session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Id(key.stored().to_vec())])
                .map_err(from_cryptoki)?
        };
        let handle = *found.first().ok_or_else(|| Error::KeyNotFound { id: key.hex() })?;
        let rsa = matches!(
            session.get_attributes(handle, &[AttributeType::KeyType]).map_err(from_cryptoki)?.first(),
            Some(Attribute::KeyType(KeyType::RSA))
        );
        let cached = Arc::new(CachedKey { handle, rsa, wrapped: false, last_use: AtomicU64::new(0) });
        self.handles.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), Arc::clone(&cached));
        Ok(cached)
    }

    /// A cache miss of a wrapped key: checks its MAC (in `session`), then
    /// unwraps it in the holder session, making room first.
    fn unwrap(&self, session: &Session, key: &KeyRef) -> Result<Arc<CachedKey>> {
        let parsed = match wrapped::Wrapped::parse(key.stored()) {
            Ok(p) => p,
            Err(e) => {
                self.cache.refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let keys = match self.wrapping_keys(session, parsed.kek_index) {
            Ok(keys) => keys,
            Err(e) => {
                // The token answers and holds KEKs, but not this one: the
                // stored key was altered (or its KEK destroyed). A token with
                // no KEK at all is not there: unavailable.
                self.wrapping.write().unwrap_or_else(|p| p.into_inner()).newest = None;
                if matches!(self.newest_kek(session), Ok(Some(_))) {
                    self.cache.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::KeyRefused {
                        reason: format!(
                            "wrapped key {} names key-encryption key {}, which token {:?} does not hold",
                            key.hex(),
                            parsed.kek_index,
                            self.label
                        ),
                    });
                }
                return Err(e);
            }
        };
        self.check_mac(session, key, &parsed, keys.mac)?;
        let mut holder = self.holder.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have unwrapped it meanwhile.
        if let Some(k) = self.handles.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            self.cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::clone(k));
        }
        if holder.is_none() {
            *holder = Some(self.open_session()?);
        }
        let Some(owner) = holder.as_ref() else {
            return Err(Error::TokenUnavailable { reason: "no session to unwrap keys in".into() });
        };
        self.evict(owner);
        let rsa = parsed.key_type == wrapped::WrappedType::Rsa;
        let template = unwrap_template(parsed.key_type, false, keys.trusted);
        let handle = match self.with_wrap_mechanism(|m| {
            self.ext()?.unwrap_key(owner, m, keys.kek, parsed.blob, &template).map_err(from_cryptoki)
        }) {
            Ok(h) => h,
            Err(e) => {
                if e.is_stale() {
                    // The holder itself is gone: start over with a new one.
                    *holder = None;
                }
                return Err(e);
            }
        };
        self.cache.misses.fetch_add(1, Ordering::Relaxed);
        let cached = Arc::new(CachedKey {
            handle,
            rsa,
            wrapped: true,
            last_use: AtomicU64::new(self.tick.fetch_add(1, Ordering::Relaxed)),
        });
        if self.handles.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), Arc::clone(&cached)).is_none() {
            self.wrapped_entries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(cached)
    }

    /// Makes room for one more unwrapped key: when the cache is full, removes
    /// the least recently used ~1 % of the entries nobody is using and
    /// destroys their objects (in the holder session, which the caller holds).
    fn evict(&self, owner: &Session) {
        let victims: Vec<Arc<CachedKey>> = {
            if self.wrapped_entries.load(Ordering::Relaxed) < self.cache_size {
                return;
            }
            let mut handles = self.handles.write().unwrap_or_else(|p| p.into_inner());
            let mut idle: Vec<(u64, KeyRef)> = handles
                .iter()
                .filter(|(_, k)| k.wrapped && Arc::strong_count(k) == 1)
                .map(|(r, k)| (k.last_use.load(Ordering::Relaxed), r.clone()))
                .collect();
            let n = (self.cache_size / 100).max(1).min(idle.len());
            if n == 0 {
                return;
            }
            if n < idle.len() {
                idle.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
            }
            idle.truncate(n);
            let removed: Vec<_> = idle.iter().filter_map(|(_, r)| handles.remove(r)).collect();
            self.wrapped_entries.fetch_sub(removed.len(), Ordering::Relaxed);
            removed
        };
        for victim in victims {
            self.cache.evictions.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = owner.destroy_object(victim.handle) {
                // Nothing refers to it any more; it dies with the holder session.
                let _ = from_cryptoki(e);
            }
        }
    }

    /// Refuses a wrapped key whose MAC does not cover its blob, public key
    /// and binding.
    fn check_mac(
        &self,
        session: &Session,
        key: &KeyRef,
        parsed: &wrapped::Wrapped,
        mac_key: ObjectHandle,
    ) -> Result<()> {
        let input =
            wrapped::mac_input(parsed.key_type, parsed.kek_index, parsed.blob, &key.0.public_key, &key.0.binding);
        let mac = session.sign(&Mechanism::Sha256Hmac, mac_key, &input).map_err(from_cryptoki)?;
        if wrapped::macs_equal(&mac, parsed.mac) {
            return Ok(());
        }
        self.cache.refused.fetch_add(1, Ordering::Relaxed);
        Err(Error::KeyRefused {
            reason: format!(
                "the MAC of wrapped key {} does not match its blob, public key and binding \
                 (copied from another record, or altered)",
                key.hex()
            ),
        })
    }

    /// The KEK and MAC key of `index`, found once.
    fn wrapping_keys(&self, session: &Session, index: u32) -> Result<WrapKeys> {
        if let Some(k) = self.wrapping.read().unwrap_or_else(|p| p.into_inner()).by_index.get(&index) {
            return Ok(*k);
        }
        let find = |id: Vec<u8>| -> Result<Option<ObjectHandle>> {
            let _reading = self.lock.shared()?;
            let found = session
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(id)])
                .map_err(from_cryptoki)?;
            Ok(found.first().copied())
        };
        // The wrapping keys are always there: a token that has lost them is
        // not the token it was (or not there at all).
        let missing = || Error::TokenUnavailable {
            reason: format!(
                "key-encryption key {index} or its MAC key is not in token {:?} (run `inkan init` on a new token; \
                 a token that lost it cannot unwrap the keys it wrapped)",
                self.label
            ),
        };
        let kek = find(wrapped::kek_id(index))?.ok_or_else(missing)?;
        let mac = find(wrapped::mac_key_id(index))?.ok_or_else(missing)?;
        let trusted = matches!(
            session.get_attributes(kek, &[AttributeType::Trusted]).map_err(from_cryptoki)?.first(),
            Some(Attribute::Trusted(true))
        );
        let keys = WrapKeys { kek, mac, trusted };
        self.wrapping.write().unwrap_or_else(|p| p.into_inner()).by_index.insert(index, keys);
        Ok(keys)
    }

    /// The newest KEK's index in the token, if there is one.
    fn newest_kek(&self, session: &Session) -> Result<Option<u32>> {
        if let Some(newest) = self.wrapping.read().unwrap_or_else(|p| p.into_inner()).newest {
            return Ok(newest);
        }
        let newest = self.list_keks(session)?.last().map(|k| k.index);
        self.wrapping.write().unwrap_or_else(|p| p.into_inner()).newest = Some(newest);
        Ok(newest)
    }

    /// The module's function list (for what `cryptoki` cannot call), opened once.
    fn ext(&self) -> Result<&inkan_pkcs11_ffi::Module> {
        if let Some(ext) = self.ext.get() {
            return Ok(ext);
        }
        let ext = inkan_pkcs11_ffi::Module::open(&self.module)
            .map_err(|e| in_module(from_cryptoki(e), &self.module, "C_GetFunctionList"))?;
        Ok(self.ext.get_or_init(|| ext))
    }

    /// The AES key-wrap mechanisms for private keys this token offers, the
    /// preferred first: RFC 5649 is `CKM_AES_KEY_WRAP_KWP` in PKCS#11 3.0
    /// (kryoptic) and `CKM_AES_KEY_WRAP_PAD` in SoftHSM 2.6.
    fn wrap_mechanisms(&self) -> Result<[cryptoki_sys::CK_MECHANISM_TYPE; 2]> {
        if let Some(m) = self.wrap_mechanisms.get() {
            return Ok(*m);
        }
        let offered = self.ext()?.mechanisms(self.slot()?).map_err(from_cryptoki)?;
        Ok(*self.wrap_mechanisms.get_or_init(|| kek::wrap_mechanisms(&offered)))
    }

    /// Runs `op` with the preferred key-wrap mechanism, and with the other if
    /// the token refuses the first (a KEK made before the module learnt KWP).
    fn with_wrap_mechanism<T>(&self, op: impl Fn(cryptoki_sys::CK_MECHANISM_TYPE) -> Result<T>) -> Result<T> {
        let [first, second] = self.wrap_mechanisms()?;
        match op(first) {
            Err(Error::MechanismUnsupported { .. }) => op(second),
            other => other,
        }
    }

    /// The unwrapped-key cache's figures.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            capacity: self.cache_size,
            entries: self.wrapped_entries.load(Ordering::Relaxed),
            hits: self.cache.hits.load(Ordering::Relaxed),
            misses: self.cache.misses.load(Ordering::Relaxed),
            evictions: self.cache.evictions.load(Ordering::Relaxed),
            refused: self.cache.refused.load(Ordering::Relaxed),
        }
    }

    /// How [`Keystore::generate_key`] keeps new keys.
    pub fn key_storage(&self) -> KeyStorage {
        self.key_storage
    }

    fn find_one(&self, session: &Session, class: ObjectClass, key: &KeyRef) -> Result<ObjectHandle> {
        let _reading = self.lock.shared()?;
        let found = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(key.stored().to_vec())])
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
            let taken = session.find_objects(&[Attribute::Id(key.stored().to_vec())]).map_err(from_cryptoki)?;
            if !taken.is_empty() {
                return Err(Error::InvalidInput(format!("a key with CKA_ID {} exists already", key.hex())));
            }
            let common = |private: bool| {
                vec![
                    Attribute::Token(true),
                    Attribute::Private(private),
                    Attribute::Id(key.stored().to_vec()),
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
            let cached = Arc::new(CachedKey {
                handle: priv_handle,
                rsa: alg.is_rsa(),
                wrapped: false,
                last_use: AtomicU64::new(0),
            });
            self.handles.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), cached);
            Ok(GeneratedKey { key: key.clone(), public_key_der })
        })
    }

    /// Generates a user's key as configured ([`KeystoreConfig::key_storage`]),
    /// bound to `binding` (the caller's name for whose key this is, e.g. its
    /// owner and generation): a wrapped key refuses to be used under any other
    /// binding or public key. Object keys get a random `CKA_ID` and `label`.
    pub fn generate_key(&self, alg: KeyAlgorithm, label: &str, binding: &[u8]) -> Result<GeneratedKey> {
        match self.key_storage {
            KeyStorage::Object => {
                let mut id = [0u8; 16];
                loop {
                    getrandom::fill(&mut id)
                        .map_err(|e| Error::TokenUnavailable { reason: format!("no randomness for a key id: {e}") })?;
                    if !wrapped::is_wrapped(&id) {
                        break;
                    }
                }
                let generated = self.generate_key_pair(alg, &KeyRef::from_id(id.to_vec()), label)?;
                let key = KeyRef::from_stored(id.to_vec(), binding, &generated.public_key_der);
                Ok(GeneratedKey { key, public_key_der: generated.public_key_der })
            }
            KeyStorage::Wrapped => self.generate_wrapped(alg, binding),
        }
    }

    /// [`Keystore::generate_key`], and the key's PKCS#10 request for `subject`
    /// signed with `scheme`. A wrapped key signs its request before it is
    /// wrapped, so it is not unwrapped again for it.
    pub fn generate_key_with_csr(
        &self,
        alg: KeyAlgorithm,
        label: &str,
        binding: &[u8],
        subject: &x509_cert::name::Name,
        scheme: SignatureScheme,
    ) -> Result<(GeneratedKey, Vec<u8>)> {
        match self.key_storage {
            KeyStorage::Object => {
                let generated = self.generate_key(alg, label, binding)?;
                let csr =
                    crate::csr::build_csr(self, &generated.key, &generated.public_key_der, subject.clone(), scheme);
                match csr {
                    Ok(csr) => Ok((generated, csr)),
                    Err(e) => {
                        let _ = self.destroy(&generated.key);
                        Err(e)
                    }
                }
            }
            KeyStorage::Wrapped => {
                let (generated, csr) = self.generate_wrapped_with(alg, binding, Some((subject, scheme)))?;
                let csr = csr.ok_or_else(|| Error::InvalidInput("no certification request was made".into()))?;
                Ok((generated, csr))
            }
        }
    }

    /// Generates a key pair as session objects, wraps the private key under the
    /// newest KEK, MACs the blob with its public key and binding, and destroys
    /// both objects. Nothing stays in the token.
    fn generate_wrapped(&self, alg: KeyAlgorithm, binding: &[u8]) -> Result<GeneratedKey> {
        self.generate_wrapped_with(alg, binding, None).map(|(g, _)| g)
    }

    /// [`Keystore::generate_wrapped`], signing a PKCS#10 request for `csr`'s
    /// subject with the new private key before it is wrapped.
    fn generate_wrapped_with(
        &self,
        alg: KeyAlgorithm,
        binding: &[u8],
        csr: Option<(&x509_cert::name::Name, SignatureScheme)>,
    ) -> Result<(GeneratedKey, Option<Vec<u8>>)> {
        self.with_session(|session| {
            // Not a token failure (no module reset): an installation from
            // before wrapped keys that has not run `inkan init` since.
            let index = self.newest_kek(session)?.ok_or_else(|| Error::KeyNotFound {
                id: format!("key-encryption key: token {:?} has none yet, run `inkan init` to make it", self.label),
            })?;
            let keys = self.wrapping_keys(session, index)?;
            let mut public = vec![
                Attribute::Token(false),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
                Attribute::Derive(false),
            ];
            let mut private = vec![
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                // Only so that it can be wrapped, here (and, under a
                // trusted KEK, again by a KEK rotation).
                Attribute::Extractable(true),
                Attribute::WrapWithTrusted(keys.trusted),
                Attribute::Sign(true),
                Attribute::SignRecover(false),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
            ];
            let (mechanism, key_type) = if alg.is_rsa() {
                public.push(Attribute::ModulusBits((alg.bits() as u64).into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                public.push(Attribute::KeyType(KeyType::RSA));
                private.push(Attribute::KeyType(KeyType::RSA));
                (Mechanism::RsaPkcsKeyPairGen, wrapped::WrappedType::Rsa)
            } else {
                public.push(Attribute::EcParams(public_key::ec_params(alg)?));
                public.push(Attribute::KeyType(KeyType::EC));
                private.push(Attribute::KeyType(KeyType::EC));
                (Mechanism::EccKeyPairGen, wrapped::WrappedType::Ec)
            };
            let (pub_handle, priv_handle) =
                session.generate_key_pair(&mechanism, &public, &private).map_err(from_cryptoki)?;
            let made = (|| {
                let public_key_der = self.read_public_key(session, pub_handle, alg)?;
                let request = match csr {
                    Some((subject, scheme)) => {
                        Some(crate::csr::csr_signed_by(&public_key_der, subject.clone(), scheme, |message| {
                            let digest = scheme.digest_algorithm().digest(message);
                            let (mechanism, data) = token_input(scheme, &digest);
                            let signature = session.sign(&mechanism, priv_handle, &data).map_err(from_cryptoki)?;
                            finish_signature(scheme, signature)
                        })?)
                    }
                    None => None,
                };
                let blob = self.with_wrap_mechanism(|m| {
                    self.ext()?.wrap_key(session, m, keys.kek, priv_handle).map_err(from_cryptoki)
                })?;
                Ok::<_, Error>((public_key_der, blob, request))
            })();
            for handle in [priv_handle, pub_handle] {
                if let Err(e) = session.destroy_object(handle) {
                    // A session object: it goes with the session at the latest.
                    let _ = from_cryptoki(e);
                }
            }
            let (public_key_der, blob, request) = made?;
            let input = wrapped::mac_input(key_type, index, &blob, &public_key_der, binding);
            let mac = session.sign(&Mechanism::Sha256Hmac, keys.mac, &input).map_err(from_cryptoki)?;
            let stored = wrapped::Wrapped::encode(key_type, index, &mac, &blob);
            Ok((GeneratedKey { key: KeyRef::from_stored(stored, binding, &public_key_der), public_key_der }, request))
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

    /// The public key of a key pair, as DER `SubjectPublicKeyInfo`: read from
    /// the token for an object, the one its MAC binds for a wrapped key.
    pub fn public_key(&self, key: &KeyRef, alg: KeyAlgorithm) -> Result<Vec<u8>> {
        if key.storage() == KeyStorage::Wrapped {
            self.with_session(|session| self.private_key(session, key).map(|_| ()))?;
            return Ok(key.0.public_key.clone());
        }
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
        let (mechanism, data) = token_input(scheme, digest);
        let signature = self.sign_raw(key, &mechanism, &data)?;
        finish_signature(scheme, signature)
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
    ///
    /// A wrapped key is not in the token: this only destroys its unwrapped
    /// copy, if cached (the caller deletes the stored form).
    pub fn destroy(&self, key: &KeyRef) -> Result<()> {
        if key.storage() == KeyStorage::Wrapped {
            let holder = self.holder.lock().unwrap_or_else(|p| p.into_inner());
            let removed = {
                let mut handles = self.handles.write().unwrap_or_else(|p| p.into_inner());
                let removed = handles.remove(key);
                if removed.is_some() {
                    self.wrapped_entries.fetch_sub(1, Ordering::Relaxed);
                }
                removed
            };
            if let Some(cached) = removed {
                if let (Some(owner), 1) = (holder.as_ref(), Arc::strong_count(&cached)) {
                    let _ = owner.destroy_object(cached.handle);
                }
            }
            return Ok(());
        }
        self.with_session(|session| {
            let _writing = self.lock.exclusive()?;
            for handle in session.find_objects(&[Attribute::Id(key.stored().to_vec())]).map_err(from_cryptoki)? {
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

    /// Runs `f` on a pooled, logged-in session of the token. Only for tests
    /// that check what the token itself enforces (e.g. that the KEK refuses
    /// to unwrap a readable key): inkan never uses it.
    #[doc(hidden)]
    pub fn danger_with_raw_session<T>(&self, f: impl Fn(&Session) -> T) -> Result<T> {
        self.with_session(|session| Ok(f(session)))
    }

    /// Checks that a session can be had and the token answers (for readiness probes).
    pub fn ping(&self) -> Result<()> {
        self.with_session(|session| session.get_session_info().map(|_| ()).map_err(from_cryptoki))
    }
}

/// The template a wrapped private key is unwrapped with: a sensitive,
/// sign-only session object; `extractable` only to be wrapped again (a KEK
/// rotation), which a trusted KEK's unwrap template allows under trusted keys
/// only (`CKA_WRAP_WITH_TRUSTED`) and a strict KEK's not at all.
fn unwrap_template(key_type: wrapped::WrappedType, extractable: bool, trusted: bool) -> Vec<Attribute> {
    let rsa = key_type == wrapped::WrappedType::Rsa;
    let mut template = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(if rsa { KeyType::RSA } else { KeyType::EC }),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    if trusted {
        template.push(Attribute::WrapWithTrusted(true));
    }
    template
}

/// What the token signs for `scheme` over `digest`: the mechanism and its input
/// (RSA PKCS#1 v1.5: the `DigestInfo`; PSS: MGF1 on the same hash, salt = hash
/// length; ECDSA: the digest).
fn token_input(scheme: SignatureScheme, digest: &[u8]) -> (Mechanism<'static>, Vec<u8>) {
    let alg = scheme.digest_algorithm();
    match scheme {
        SignatureScheme::RsaPkcs1v15(_) => {
            let mut info = Vec::with_capacity(19 + digest.len());
            info.extend_from_slice(alg.digest_info_prefix());
            info.extend_from_slice(digest);
            (Mechanism::RsaPkcs, info)
        }
        SignatureScheme::RsaPss(_) => {
            let params =
                PkcsPssParams { hash_alg: hash_mechanism(alg), mgf: mgf(alg), s_len: (alg.output_len() as u64).into() };
            (Mechanism::RsaPkcsPss(params), digest.to_vec())
        }
        SignatureScheme::Ecdsa(_) => (Mechanism::Ecdsa, digest.to_vec()),
    }
}

/// The token's signature as `scheme` encodes it (ECDSA: `r || s` to DER).
fn finish_signature(scheme: SignatureScheme, signature: Vec<u8>) -> Result<Vec<u8>> {
    match scheme {
        SignatureScheme::Ecdsa(_) => public_key::ecdsa_raw_to_der(&signature),
        _ => Ok(signature),
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
