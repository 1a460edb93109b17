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

mod cache;
mod data;
mod generate;
mod kek;
mod seal;
mod sign;
use cache::unwrap_template;
pub use data::DataObject;
pub use kek::{create_trusted_kek, KekInfo, KekKind};
use sign::{finish_signature, token_input};

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
                    Error::Interface { reason } => {
                        Error::TokenUnavailable { reason: format!("{reason} for token {:?}", self.label) }
                    }
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
