//! Signers: a user's active key with its certificate and chain, and what each
//! format encodes once from them, cached by (user, key generation). A key
//! generation's certificate never changes, so an entry stays true; a new active
//! key is a new generation, which a principal brings from its session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use der::Decode;
use inkan_keystore::{KeyAlgorithm, KeyRef};

use crate::config::RsaScheme;
use crate::error::{Error, Result};
use crate::seam::{Transaction, Transactions};
use crate::users::{ActiveKey, UserStore};

use super::signed_data::SignerIdentity;

/// A user's key, ready to sign.
#[derive(Debug)]
pub struct Signer {
    /// The user.
    pub user_id: String,
    /// The key generation.
    pub generation: i64,
    /// The token key.
    pub key: KeyRef,
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
    /// The chain certificates included in signatures (signing CA first), DER.
    pub chain: Arc<Vec<Vec<u8>>>,
    /// What CAdES encodes once per signer.
    pub cades: SignerIdentity,
    /// The user's qualification (`doctor`, `dentist`, `pharmacist`).
    pub qualification: String,
    /// The certificate's hcRole (`Medical Doctor`, ...), if it names one.
    pub hc_role: Option<String>,
    /// The certificate as XAdES writes it (KeyInfo, CertDigest).
    pub xml_certificate: crate::xml::EncodedCertificate,
}

impl Signer {
    /// The signer's certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        self.cades.certificate()
    }
}

/// Signers kept in memory at most (then the cache starts over).
const MAX_CACHED_SIGNERS: usize = 100_000;

/// The signer cache.
pub struct Signers<T: ?Sized + Send> {
    store: Arc<dyn Transactions<T>>,
    rsa_scheme: RsaScheme,
    chain: Arc<Vec<Vec<u8>>>,
    cache: Mutex<HashMap<(String, i64), Arc<Signer>>>,
}

impl<T: UserStore + Transaction + ?Sized> Signers<T> {
    /// Signers of `store`'s keys, with the configured RSA scheme and chain.
    pub fn new(store: Arc<dyn Transactions<T>>, rsa_scheme: RsaScheme, chain: Vec<Vec<u8>>) -> Self {
        Signers { store, rsa_scheme, chain: Arc::new(chain), cache: Mutex::new(HashMap::new()) }
    }

    /// The signer of a user's active key.
    pub async fn get(&self, user_id: &str, key: &ActiveKey) -> Result<Arc<Signer>> {
        let cache_key = (user_id.to_owned(), key.generation);
        if let Some(s) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&cache_key) {
            return Ok(Arc::clone(s));
        }
        let mut tx = self.store.read().await?;
        let qualification = crate::users::get_in(&mut *tx, user_id).await?.qualification;
        let record = tx
            .keys(Some(user_id))
            .await?
            .into_iter()
            .find(|k| k.generation == key.generation && k.token_id == key.token_id)
            .ok_or_else(|| Error::Internal(format!("active key {}.g{} not in the store", user_id, key.generation)))?;
        let certificate = record.certificate.as_deref().ok_or_else(|| {
            Error::Internal(format!("active key {}.g{} without certificate", user_id, key.generation))
        })?;
        // Bound to its owner and generation: a wrapped key copied from another
        // row is refused by the keystore when it is first used.
        let token_key = crate::keys::key_ref(&record);
        let cades = SignerIdentity::new(token_key.clone(), key.algorithm, self.rsa_scheme, certificate, &self.chain)
            .map_err(|e| Error::Internal(format!("signer {user_id}.g{}: {e}", key.generation)))?;
        let hc_role =
            x509_cert::Certificate::from_der(certificate).ok().and_then(|c| crate::pki::profile::read_hc_role(&c));
        let signer = Arc::new(Signer {
            user_id: user_id.to_owned(),
            generation: key.generation,
            key: token_key,
            algorithm: key.algorithm,
            chain: Arc::clone(&self.chain),
            cades,
            qualification,
            hc_role,
            xml_certificate: crate::xml::EncodedCertificate::new(certificate),
        });
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_SIGNERS {
            cache.clear();
        }
        cache.insert(cache_key, Arc::clone(&signer));
        Ok(signer)
    }
}
