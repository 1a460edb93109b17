//! The signing pipeline: one entry point for every signature inkan makes.
//!
//! [`Signing::sign`] takes a [`Principal`] and a [`Request`] (what to sign:
//! digests or a document stream; the [`Format`]; the signature activation a
//! CSC client brings) and returns the signatures, in order. On the way it does,
//! once for every caller (`/api/v1/*`, CSC `signHash` and `signDoc`, the CLI's
//! `inkan sign`, the demo):
//!
//! 1. authorization: the `sign` scope of the session, the user's active key
//!    (and that it is the credential the caller named), the CSC SAD under
//!    SCAL 2;
//! 2. the digests: given, or hashed from the document as it streams in
//!    (constant memory; an enveloped document is kept, up to a limit);
//! 3. the signer: the user's active key with its certificate and chain,
//!    encoded once and cached ([`signers`]);
//! 4. the token: one `C_Sign` per signature, on the request's own worker for a
//!    few signatures (moving them to the blocking pool costs two thread
//!    hand-offs, more than it saves: measured), on the blocking pool for larger
//!    batches so they do not stall other requests;
//! 5. the audit rows, committed before the signatures are returned (group
//!    commit when serving, see [`crate::audit::writer`]);
//! 6. the metrics: signatures by outcome, latency, token errors, audit wait.
//!
//! Formats sit behind [`mod@format`]'s seam (prepare, sign, assemble): CAdES
//! ([`cades`], built by [`signed_data`]), raw signature values ([`raw`]) and
//! XAdES in the e-prescription profile ([`xades`], over documents read by
//! [`crate::eps`]).

mod audit_rows;
pub mod cades;
pub mod format;
mod levels;
pub mod parts;
pub mod raw;
pub mod signed_data;
pub mod signers;
pub mod xades;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use inkan_keystore::{Digest, DigestAlgorithm, Keystore, SignatureScheme};
use sha2::Digest as _;

use crate::audit::writer::{AuditWriter, Expected};
use crate::audit::{self, Event};
use crate::auth::principal::Principal;
use crate::auth::sad;
use crate::auth::sad::SadStore;
use crate::clock::Clock;
use crate::config::Config;
use crate::encoding::hex;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::seam::Transactions;
use crate::users::UsersTx;

pub use format::{Level, Parts};
pub use signers::{Signer, Signers};

/// Batches up to this size are signed on the request's own worker thread.
const INLINE_SIGNATURES: usize = 4;

/// Most digests in one request.
pub const MAX_HASHES: usize = 1000;

/// The formats callers choose from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CAdES-BES / baseline-B, detached (a `.p7s` beside the document).
    CadesDetached,
    /// CAdES-BES / baseline-B enveloping the document.
    CadesEnveloping,
    /// The bare signature value (PKCS#1 v1.5, PSS or ECDSA), with the
    /// credential's default scheme unless one is given.
    Raw(Option<SignatureScheme>),
    /// XAdES-BES in the e-prescription profile: over Reference 1 digests
    /// of this kind ([`Payload::Digests`]: each answer is an `xs:Signature`
    /// element), or into a document ([`Payload::Eps`]: its kind comes from
    /// the document, and must be this one if given).
    Xades(Option<crate::eps::Kind>),
}

impl Format {
    /// Its family: what every interface calls it ([`format::Family::about`]).
    pub fn family(self) -> format::Family {
        match self {
            Format::CadesDetached | Format::CadesEnveloping => format::Family::Cades,
            Format::Raw(_) => format::Family::Raw,
            Format::Xades(_) => format::Family::Xades,
        }
    }

    /// The format's encoder.
    pub fn encoder(self) -> Box<dyn format::Encoder> {
        match self {
            Format::CadesDetached => Box::new(cades::Cades { enveloping: false }),
            Format::CadesEnveloping => Box::new(cades::Cades { enveloping: true }),
            Format::Raw(scheme) => Box::new(raw::Raw { scheme }),
            Format::Xades(kind) => {
                Box::new(xades::Xades { kind: kind.unwrap_or(crate::eps::Kind::Prescription), document: None })
            }
        }
    }
}

/// A document the pipeline reads once, chunk by chunk (a request body, a file).
#[async_trait]
pub trait Document: Send {
    /// The next chunk; `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>>;
}

/// What to sign.
pub enum Payload<'a> {
    /// Digests of the content, made by the caller (each checked for its
    /// algorithm's length where it was made: [`Digest::new`]), all of one
    /// algorithm.
    Digests(Vec<Digest>),
    /// A document the caller holds and has hashed itself: an enveloping
    /// signature is assembled for its length, and the caller puts the document
    /// between the signature's parts.
    Hashed {
        /// The document's digest.
        digest: Digest,
        /// The document's length in bytes.
        len: u64,
    },
    /// A document, hashed here with SHA-256 as it is read.
    Document {
        /// The document.
        source: &'a mut dyn Document,
        /// For an enveloping signature: keep the document (at most this many
        /// bytes, else [`Error::TooLarge`]) and return it with the signature.
        /// `None`: the caller has the document again (a file) and puts it
        /// between the signature's parts itself.
        keep: Option<usize>,
    },
    /// An e-prescription document (XAdES), read, checked and canonicalised
    /// here; the signature is spliced into it.
    Eps(EpsInput),
}

/// An e-prescription document as a signing system sends it.
#[derive(Clone, Debug)]
pub enum EpsInput {
    /// The whole document (a prescription or a dispensing record).
    Document(Vec<u8>),
    /// A prescription's CSV and its PrescriptionId: the minimal document is made.
    PrescriptionCsv {
        /// The CSV (UTF-8, LF, first line `SJ1`).
        csv: Vec<u8>,
        /// Its PrescriptionId.
        prescription_id: String,
    },
    /// A document read already ([`read_eps`]).
    Read(Arc<crate::eps::Document>),
}

/// Documents larger than this are read on the blocking pool.
const INLINE_XML_BYTES: usize = 64 << 10;

/// Reads an e-prescription document ([`crate::eps::Document::read`]): what
/// is signed (Reference 1's digest) is known before any activation is used.
pub async fn read_eps(input: EpsInput) -> Result<Arc<crate::eps::Document>> {
    let text = match input {
        EpsInput::Document(text) => text,
        EpsInput::PrescriptionCsv { csv, prescription_id } => {
            return Ok(Arc::new(crate::eps::Document::from_csv(&csv, &prescription_id)?))
        }
        EpsInput::Read(document) => return Ok(document),
    };
    let document = if text.len() <= INLINE_XML_BYTES {
        crate::eps::Document::read(text)?
    } else {
        tokio::task::spawn_blocking(move || crate::eps::Document::read(text)).await.map_err(Error::internal)??
    };
    Ok(Arc::new(document))
}

/// What activates a signature beyond the session (CSC `credentials/authorize`).
#[derive(Clone, Copy, Debug)]
pub enum Activation<'a> {
    /// The session is enough (inkan's API, the CLI, the demo).
    Session,
    /// A CSC client: its SAD, if it sent one; under `[csc] scal = "2"` one is required.
    Csc(Option<&'a str>),
    /// A CSC request whose activation [`Signing::activate`] granted already
    /// (`signDoc`: one SAD for all of its signatures).
    Granted,
}

/// A signature request.
pub struct Request<'a> {
    /// What to sign.
    pub payload: Payload<'a>,
    /// How.
    pub format: Format,
    /// The key generation the caller named (a CSC credential), if any.
    pub generation: Option<i64>,
    /// Signature activation.
    pub activation: Activation<'a>,
    /// Which door it came through (`api.sign`, `csc.signHash`, `cli`, `demo`), for the audit log.
    pub via: &'static str,
    /// More audit detail (never a secret), merged into each row's.
    pub detail: Option<serde_json::Value>,
    /// The level: B-B, or with a time-stamp (B-T).
    pub level: Level,
}

/// The signatures of a request.
#[derive(Debug)]
pub struct Signed {
    /// One per digest (or the document's), in order.
    pub signatures: Vec<Parts>,
    /// The document, when it was kept for an enveloping signature.
    pub content: Option<Vec<u8>>,
    /// The signed digests, `sha256:<hex>`, in order.
    pub digests: Vec<String>,
    /// The key generation that signed.
    pub generation: i64,
    /// The last audit row's sequence number.
    pub audit_seq: i64,
}

/// Where the audit rows of signatures go.
pub enum AuditSink {
    /// The group-commit writer (the service).
    Writer(AuditWriter),
    /// One transaction per request on the store (the CLI).
    Direct,
}

/// The pipeline.
pub struct Signing<T: ?Sized + Send> {
    keystore: Arc<Keystore>,
    /// The audit row this process sealed last ([`audit::seal::Anchor`]).
    seal_anchor: audit::seal::Anchor,
    store: Arc<dyn Transactions<T>>,
    sads: Arc<dyn SadStore>,
    clock: Arc<dyn Clock>,
    signers: Signers<T>,
    audit: AuditSink,
    metrics: Arc<Metrics>,
    scal2: bool,
    sad_lifetime_ms: i64,
    tsa: Option<Arc<crate::tsa::Tsa>>,
    crls: Arc<crate::revocation::Crls>,
    /// How often the audit log is time-stamped (`None`: never, unless asked).
    audit_every: Option<std::time::Duration>,
    /// When it is next due.
    next_audit_stamp: std::sync::Mutex<Option<Instant>>,
}

/// The audit name of a digest algorithm (`sha256`).
fn digest_name(alg: DigestAlgorithm) -> String {
    alg.name().to_ascii_lowercase().replace('-', "")
}

impl<T: UsersTx + ?Sized> Signing<T> {
    /// The pipeline over a token and a store (SADs in `sads`); `audit` says
    /// how its rows are committed.
    pub fn new(
        config: &Config,
        keystore: Arc<Keystore>,
        store: Arc<dyn Transactions<T>>,
        sads: Arc<dyn SadStore>,
        clock: Arc<dyn Clock>,
        audit: AuditSink,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let chain = crate::keys::chain(config)?;
        Ok(Signing {
            signers: Signers::new(Arc::clone(&store), config.signing.rsa_scheme, chain),
            keystore,
            store,
            sads,
            clock,
            audit,
            metrics,
            scal2: config.csc.scal == "2",
            sad_lifetime_ms: config.csc.sad_lifetime_secs as i64 * 1000,
            seal_anchor: Default::default(),
            tsa: crate::tsa::Tsa::new(&config.tsa)?.map(Arc::new),
            audit_every: (config.tsa.audit_every_secs > 0)
                .then(|| std::time::Duration::from_secs(config.tsa.audit_every_secs)),
            next_audit_stamp: std::sync::Mutex::new(None),
            crls: Arc::new(crate::revocation::Crls::new(
                &config.pki.crls,
                config.pki.fetch_crls,
                std::time::Duration::from_secs(config.pki.crl_timeout_secs.max(1)),
                config.pki.crl_max_bytes,
            )?),
        })
    }

    /// The TSA client, if `[tsa]` has one (shared with extension).
    pub fn tsa(&self) -> Option<Arc<crate::tsa::Tsa>> {
        self.tsa.clone()
    }

    /// The CRL sources (shared with extension).
    pub fn crls(&self) -> Arc<crate::revocation::Crls> {
        Arc::clone(&self.crls)
    }

    /// Whether the token answers (a session of the pool can be used).
    pub async fn token_ready(&self) -> Result<()> {
        let ks = Arc::clone(&self.keystore);
        Ok(tokio::task::spawn_blocking(move || ks.ping()).await.map_err(Error::internal)??)
    }

    /// Seals the audit chain's head with the token's seal key, unless it is
    /// sealed already ([`audit::seal::seal_head`]); returns the row sealed.
    pub async fn seal_audit(&self, at_start: bool) -> Result<Option<i64>> {
        // One read of the database when nothing is new; the token only when
        // there is something to seal, and once at the start (the token's
        // record of a seal a killed sealer left unrecorded catches up then).
        if !at_start && !audit::seal::needs_seal(self.store.as_ref()).await? {
            return Ok(None);
        }
        let seal = audit::seal::seal_head(self.store.as_ref(), &self.keystore, &self.seal_anchor, self.clock.now_ms());
        // The token's record may wait for its lock (a backup holds it while
        // it copies the token and the database): not on a worker that
        // requests need.
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(seal))
            }
            _ => seal.await,
        }
    }

    /// Time-stamps the audit log at its newest seal ([`audit::stamp`]) when
    /// a TSA is configured and it is due (`[tsa] audit_every_secs`; a
    /// failure is tried again within a minute), or at once with `now`.
    /// Returns the row stamped and the token's time.
    pub async fn stamp_audit(&self, now: bool) -> Result<Option<(i64, String)>> {
        let Some(tsa) = &self.tsa else { return Ok(None) };
        let due = |next: &mut Option<Instant>, wait: std::time::Duration| *next = Some(Instant::now() + wait);
        if !now {
            let Some(every) = self.audit_every else { return Ok(None) };
            let mut next = self.next_audit_stamp.lock().unwrap_or_else(|p| p.into_inner());
            if next.is_some_and(|n| Instant::now() < n) {
                return Ok(None);
            }
            // Claimed: the next tick does not ask too.
            due(&mut next, every);
        }
        let stamped = audit::stamp::stamp_head(self.store.as_ref(), tsa, self.clock.now()).await;
        if stamped.is_err() {
            let retry = self.audit_every.unwrap_or_default().min(std::time::Duration::from_secs(60));
            due(&mut self.next_audit_stamp.lock().unwrap_or_else(|p| p.into_inner()), retry);
        }
        Ok(stamped?.map(|(s, at)| (s.seq, at)))
    }

    /// Calls of the token's sign function so far, and the CPU time spent in them.
    pub fn token_sign_time(&self) -> &inkan_keystore::SignTime {
        self.keystore.sign_time()
    }

    /// The figures of the keystore's cache of unwrapped keys.
    pub fn key_cache(&self) -> inkan_keystore::CacheStats {
        self.keystore.cache_stats()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The group-commit writer, if this pipeline has one.
    pub fn audit_writer(&self) -> Option<&AuditWriter> {
        match &self.audit {
            AuditSink::Writer(w) => Some(w),
            AuditSink::Direct => None,
        }
    }

    /// The signer (active key, certificate, chain) of a principal.
    pub async fn signer(&self, principal: &Principal) -> Result<Arc<Signer>> {
        let key = principal.active_key()?;
        self.signers.get(&principal.user_id, key).await
    }

    /// Checks, before anything is used up, that a request of `format` (over
    /// `document`, if the caller sent one) can be made at `level` here (CSC
    /// `signDoc` asks before it takes the SAD; [`Signing::sign`] checks again).
    pub fn check_level(
        &self,
        format: Format,
        document: Option<&Arc<crate::eps::Document>>,
        level: Level,
    ) -> Result<()> {
        let encoder: Box<dyn format::Encoder> = match (format, document) {
            (Format::Xades(kind), Some(d)) => {
                Box::new(xades::Xades { kind: kind.unwrap_or(d.kind), document: Some(Arc::clone(d)) })
            }
            _ => format.encoder(),
        };
        encoder.check_level(level)?;
        self.require_tsa(level)
    }

    /// The levels this service can make: B-B alone without a TSA, all four
    /// with one (a format may still refuse some, see [`Signing::check_level`]).
    pub fn levels(&self) -> &'static [Level] {
        if self.tsa.is_some() {
            &Level::ALL
        } else {
            &Level::ALL[..1]
        }
    }

    fn require_tsa(&self, level: Level) -> Result<()> {
        if level != Level::BB && self.tsa.is_none() {
            return Err(Error::Invalid(format!(
                "level {} needs a time-stamp authority, and this service has none: ask for B-B, or have the \
                 operator set [tsa] url and ca",
                level.as_str()
            )));
        }
        Ok(())
    }

    /// Issues signature activation data (CSC `credentials/authorize`) for the
    /// principal's active key: `num` signatures, bound to `hashes` if given
    /// (required under SCAL 2). Returns the SAD and its lifetime in seconds.
    pub async fn authorize(
        &self,
        principal: &Principal,
        generation: i64,
        num: u32,
        hashes: Vec<Digest>,
    ) -> Result<(String, i64)> {
        principal.require_sign_scope()?;
        let key = principal.active_key()?;
        let session = principal.session().ok_or_else(|| Error::Invalid("SADs belong to auth sessions".into()))?;
        if key.generation != generation {
            return Err(Error::Invalid("Invalid parameter credentialID".into()));
        }
        if num == 0 || num as usize > MAX_HASHES {
            return Err(Error::Invalid("Invalid parameter numSignatures".into()));
        }
        if !hashes.is_empty() && hashes.len() != num as usize {
            return Err(Error::Invalid("Invalid parameter numSignatures: it must equal the number of hashes".into()));
        }
        if self.scal2 && hashes.is_empty() {
            return Err(Error::Invalid("Missing parameter hashes: SCAL 2 binds the SAD to the hashes".into()));
        }
        let now = self.clock.now_ms();
        let token = sad::authorize(
            self.sads.as_ref(),
            sad::Sad {
                session: session.token_hash.clone(),
                generation,
                hashes: (!hashes.is_empty()).then(|| hashes.into_iter().map(Digest::into_bytes).collect()),
                remaining: num,
                expires_at: now + self.sad_lifetime_ms,
            },
            now,
        )
        .await?;
        Ok((token, self.sad_lifetime_ms / 1000))
    }

    /// Checks a CSC client's signature activation for `digests`: its SAD (used
    /// up, unless given back) must be this session's, for this key, and
    /// cover the digests; under SCAL 2 a SAD is required. Returns the SAD
    /// taken.
    pub async fn activate(
        &self,
        principal: &Principal,
        generation: i64,
        sad: Option<&str>,
        digests: &[Digest],
    ) -> Result<Option<sad::Taken>> {
        match (sad, principal.session()) {
            (Some(token), Some(session)) => {
                sad::consume(self.sads.as_ref(), token, &session.token_hash, generation, digests, self.clock.now_ms())
                    .await
                    .map(Some)
            }
            (Some(_), None) => Err(Error::Invalid("Invalid parameter SAD".into())),
            (None, _) if self.scal2 => Err(Error::Invalid("Missing parameter SAD (SCAL 2)".into())),
            (None, _) => Ok(None),
        }
    }

    /// Gives back a SAD taken by [`Signing::activate`] for signatures that
    /// could not be made (token or store unavailable).
    pub async fn give_back(&self, taken: sad::Taken) {
        sad::give_back(self.sads.as_ref(), taken, self.clock.now_ms()).await;
    }

    /// Signs: see the module documentation.
    pub async fn sign(&self, principal: &Principal, request: Request<'_>) -> Result<Signed> {
        let started = Instant::now();
        // 1. Authorization.
        principal.require_sign_scope()?;
        let key = principal.active_key()?.clone();
        if request.generation.is_some_and(|g| g != key.generation) {
            return Err(Error::Invalid("Invalid parameter credentialID".into()));
        }
        // 2. What is signed: digests given, a document hashed as it
        // streams in, or an e-prescription document read and canonicalised.
        match (&request.payload, request.format) {
            (Payload::Digests(digests), Format::Xades(Some(_)))
                if digests.iter().any(|d| d.algorithm() != DigestAlgorithm::Sha256) =>
            {
                return Err(Error::Invalid("Reference 1 digests are SHA-256 in the e-prescription profile".into()))
            }
            (Payload::Eps(_), Format::Xades(_)) | (Payload::Digests(_), Format::Xades(Some(_))) => {}
            (Payload::Eps(_), _) => {
                return Err(Error::Invalid("an e-prescription document is signed with XAdES".into()))
            }
            (_, Format::Xades(None)) => {
                return Err(Error::Invalid("XAdES over a digest needs the kind: prescription or dispensing".into()))
            }
            (_, Format::Xades(Some(_))) => {
                return Err(Error::Invalid("XAdES signs an e-prescription document or Reference 1 digests".into()))
            }
            _ => {}
        }
        let mut encoder = request.format.encoder();
        let (alg, digests, content_len, content) = match request.payload {
            Payload::Digests(digests) => {
                let Some(alg) = digests.first().map(Digest::algorithm) else {
                    return Err(Error::Invalid("hashes must hold at least one digest".into()));
                };
                if digests.len() > MAX_HASHES {
                    return Err(Error::Invalid(format!("at most {MAX_HASHES} hashes per request")));
                }
                if digests.iter().any(|d| d.algorithm() != alg) {
                    return Err(Error::Invalid("the hashes of one request are of one algorithm".into()));
                }
                (alg, digests, None, None)
            }
            Payload::Hashed { digest, len } => (digest.algorithm(), vec![digest], Some(len), None),
            Payload::Document { source, keep } => {
                let keep = if encoder.envelops() { keep } else { None };
                let (digest, len, content) = hash_document(source, keep).await?;
                (DigestAlgorithm::Sha256, vec![digest], Some(len), content)
            }
            Payload::Eps(input) => {
                let document = read_eps(input).await?;
                if let Format::Xades(Some(kind)) = request.format {
                    if kind != document.kind {
                        return Err(Error::Invalid(format!("the document is a {}, not a {kind}", document.kind)));
                    }
                }
                let digest = document.digest.clone();
                encoder = Box::new(xades::Xades { kind: document.kind, document: Some(document) });
                (DigestAlgorithm::Sha256, vec![digest], None, None)
            }
        };
        // 3. The signer, whether it may sign this, and at this level.
        let signer = self.signers.get(&principal.user_id, &key).await?;
        encoder.permits(&signer)?;
        let level = request.level;
        encoder.check_level(level)?;
        self.require_tsa(level)?;
        // The CSC signature activation, for exactly these digests.
        let taken = match request.activation {
            Activation::Csc(sad) => self.activate(principal, key.generation, sad, &digests).await?,
            _ => None,
        };
        let (via, mut extra) = (request.via, request.detail);
        if let Some(audit) = encoder.audit() {
            let merged = extra.get_or_insert_with(|| serde_json::json!({}));
            if let (Some(m), Some(a)) = (merged.as_object_mut(), audit.as_object()) {
                m.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        // Steps 4 to 6; an outage in them used nothing up: the client
        // retries with the same SAD.
        let signed: Result<Signed> = async {
            let format_name = encoder.audit_name();
            // 4. The token. (A row is announced to the audit writer, which
            // may wait for it, only when no TSA stands between the token
            // and the commit.)
            let announced = if level == Level::BB { self.announce() } else { None };
            let now = self.clock.now();
            let n = digests.len() as u64;
            let refused = Arc::new(AtomicBool::new(false));
            let result =
                self.run(Arc::clone(&signer), encoder, digests.clone(), now, content_len, Arc::clone(&refused)).await;
            let assembled = match result {
                Ok(s) => s,
                Err(e) => {
                    self.metrics.signatures(n, false, started.elapsed());
                    if refused.load(Ordering::Relaxed) {
                        self.audit_refused(principal, key.generation, &e).await;
                    }
                    return Err(e);
                }
            };
            // 5. What the level adds after signing: a time-stamp over each
            // signature (the TSA's calls overlap).
            let inputs = match level {
                Level::BB => Ok(Vec::new()),
                _ => assembled.iter().map(|a| timestamp_digest(a.as_ref())).collect::<Result<Vec<_>>>(),
            };
            let unsigned = match async { self.unsigned(&signer, inputs?, n as usize, level).await }.await {
                Ok(u) => u,
                Err(e) => {
                    self.metrics.signatures(n, false, started.elapsed());
                    self.audit_undelivered(principal, key.generation, alg, &digests, level, &e).await;
                    return Err(e);
                }
            };
            // B-LTA: an archive time-stamp over each signature as B-LT made it.
            let unsigned = if level == Level::BLTA {
                let inputs = assembled
                    .iter()
                    .zip(unsigned.iter())
                    .map(|(a, u)| archive_digest(a.as_ref(), u))
                    .collect::<Result<Vec<_>>>();
                match async { self.archive(inputs?, unsigned).await }.await {
                    Ok(u) => u,
                    Err(e) => {
                        self.metrics.signatures(n, false, started.elapsed());
                        self.audit_undelivered(principal, key.generation, alg, &digests, level, &e).await;
                        return Err(e);
                    }
                }
            } else {
                unsigned
            };
            let signatures = match assembled
                .into_iter()
                .zip(unsigned.iter())
                .map(|(a, u)| a.finish(u))
                .collect::<Result<Vec<_>>>()
            {
                Ok(s) => s,
                Err(e) => {
                    self.metrics.signatures(n, false, started.elapsed());
                    self.audit_undelivered(principal, key.generation, alg, &digests, level, &e).await;
                    return Err(e);
                }
            };
            // 6. The audit rows, durable before anything is returned.
            let mut detail = serde_json::json!({
                "via": via,
                "format": format_name,
                "method": principal.method(),
            });
            if level != Level::BB {
                detail["level"] = serde_json::json!(level.as_str());
            }
            if let (Some(extra), Some(obj)) = (extra.as_ref().and_then(|d| d.as_object()), detail.as_object_mut()) {
                obj.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let names: Vec<String> =
                digests.iter().map(|d| format!("{}:{}", digest_name(alg), hex(d.as_bytes()))).collect();
            let signed = Instant::now();
            let audit_seq = self.commit(principal, key.generation, &names, detail, announced).await?;
            self.metrics.audit_wait(signed.elapsed());
            // 7. The metrics.
            self.metrics.signatures(n, true, started.elapsed());
            Ok(Signed { signatures, content, digests: names, generation: key.generation, audit_seq })
        }
        .await;
        if let (Err(e), Some(taken)) = (&signed, taken) {
            if e.is_unavailable() {
                self.give_back(taken).await;
            }
        }
        signed
    }

    /// The token calls, inline for a few signatures, else on the blocking pool.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        signer: Arc<Signer>,
        encoder: Box<dyn format::Encoder>,
        digests: Vec<Digest>,
        at: SystemTime,
        content_len: Option<u64>,
        refused: Arc<AtomicBool>,
    ) -> Result<Vec<Box<dyn format::Assembled>>> {
        let (ks, metrics) = (Arc::clone(&self.keystore), Arc::clone(&self.metrics));
        let inline = digests.len() <= INLINE_SIGNATURES;
        let work = move || {
            let mut token = |scheme, digest: &Digest| {
                ks.sign_digest(&signer.key, scheme, digest).inspect_err(|e| {
                    if e.is_unavailable()
                        || matches!(e, inkan_keystore::Error::Pkcs11 { .. } | inkan_keystore::Error::Interface { .. })
                    {
                        metrics.token_error();
                    }
                    if matches!(e, inkan_keystore::Error::KeyRefused { .. }) {
                        refused.store(true, Ordering::Relaxed);
                    }
                })
            };
            digests.iter().map(|d| format::sign(encoder.as_ref(), &signer, d, at, content_len, &mut token)).collect()
        };
        if inline {
            work()
        } else {
            tokio::task::spawn_blocking(work).await.map_err(Error::internal)?
        }
    }
}

/// The CRL of each certificate of a path (DER, the leaf first) from the
/// next one, current at `at` ([`crate::revocation::Crls::for_path`]): a
/// revoked certificate is a conflict, a missing CRL no validation data.
pub(crate) async fn path_crls(
    crls: &crate::revocation::Crls,
    path: &[Vec<u8>],
    at: SystemTime,
) -> Result<Vec<Vec<u8>>> {
    crls.for_path(path, at).await.map_err(|e| match e {
        crate::revocation::PathCrlError::Path(why) => Error::Internal(why),
        crate::revocation::PathCrlError::Crl(crate::revocation::CrlError::Revoked(why)) => Error::Conflict(why),
        crate::revocation::PathCrlError::Crl(crate::revocation::CrlError::Missing(why)) => Error::NoValidationData(why),
    })
}

/// SHA-256 of what a signature time-stamp covers, for the TSA.
fn timestamp_digest(signature: &dyn format::Assembled) -> Result<Vec<u8>> {
    let input = signature.signature_timestamp_input()?.ok_or_else(|| {
        Error::Invalid(format!("this format takes no time-stamp: ask for level {}", Level::BB.as_str()))
    })?;
    Ok(DigestAlgorithm::Sha256.digest(&input))
}

/// The digest (and its algorithm) of what an archive time-stamp covers, for the TSA.
fn archive_digest(
    signature: &dyn format::Assembled,
    unsigned: &format::Unsigned,
) -> Result<(DigestAlgorithm, Vec<u8>)> {
    let (alg, input) = signature.archive_timestamp_input(unsigned)?.ok_or_else(|| {
        Error::Invalid(format!("this format takes no archive time-stamp: ask for level {}", Level::BLT.as_str()))
    })?;
    Ok((alg, alg.digest(&input)))
}

/// The principal of an operator signing for a user (the CLI): the user must
/// exist and be enabled; the key is the user's active one.
pub async fn operator<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    actor: &str,
    user_id: &str,
) -> Result<Principal> {
    let mut tx = store.read().await?;
    let user = crate::users::get_in(&mut *tx, user_id).await?;
    if !user.is_active() {
        return Err(crate::users::disabled(user_id));
    }
    let key = tx.active_key(user_id).await?.map(|k| crate::users::ActiveKey {
        generation: k.generation,
        token_id: k.token_id,
        algorithm: k.algorithm,
    });
    Ok(Principal::operator(actor, user_id, key))
}

/// Hashes a document with SHA-256 in constant memory, keeping it when asked
/// (at most `keep` bytes). Returns the digest, the length and the kept bytes.
async fn hash_document(source: &mut dyn Document, keep: Option<usize>) -> Result<(Digest, u64, Option<Vec<u8>>)> {
    let mut hasher = sha2::Sha256::new();
    let mut kept = keep.map(|_| Vec::new());
    let mut len: u64 = 0;
    while let Some(chunk) = source.next_chunk().await? {
        len += chunk.len() as u64;
        hasher.update(&chunk);
        if let (Some(buf), Some(limit)) = (kept.as_mut(), keep) {
            if buf.len() + chunk.len() > limit {
                return Err(Error::TooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
    }
    Ok((Digest::sha256(hasher.finalize().into()), len, kept))
}

#[cfg(test)]
mod tests;
