//! Key generation: key pairs in the token, or wrapped under the newest KEK
//! (with their certification request signed before they are wrapped), and
//! their public keys.

use super::*;

impl Keystore {
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
    pub(super) fn generate_wrapped(&self, alg: KeyAlgorithm, binding: &[u8]) -> Result<GeneratedKey> {
        self.generate_wrapped_with(alg, binding, None).map(|(g, _)| g)
    }

    /// [`Keystore::generate_wrapped`], signing a PKCS#10 request for `csr`'s
    /// subject with the new private key before it is wrapped.
    pub(super) fn generate_wrapped_with(
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

    pub(super) fn read_public_key(
        &self,
        session: &Session,
        handle: ObjectHandle,
        alg: KeyAlgorithm,
    ) -> Result<Vec<u8>> {
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
}
