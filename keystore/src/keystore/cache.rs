//! The key cache and wrapped keys: handles resolved once, wrapped keys
//! unwrapped into session objects (their MAC checked against the row they
//! came from), the least recently used evicted, the KEKs' wrapping keys.

use super::*;

impl Keystore {
    /// Forgets every cached handle and closes the session holding the
    /// unwrapped keys (which destroys them). A signature in flight with one of
    /// them fails as stale and is retried; SoftHSM never reuses a handle.
    pub(super) fn forget_handles(&self) {
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
    pub(super) fn private_key(&self, session: &Session, key: &KeyRef) -> Result<Arc<CachedKey>> {
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
    pub(super) fn unwrap(&self, session: &Session, key: &KeyRef) -> Result<Arc<CachedKey>> {
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
    pub(super) fn evict(&self, owner: &Session) {
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
    pub(super) fn check_mac(
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
    pub(super) fn wrapping_keys(&self, session: &Session, index: u32) -> Result<WrapKeys> {
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
    pub(super) fn newest_kek(&self, session: &Session) -> Result<Option<u32>> {
        if let Some(newest) = self.wrapping.read().unwrap_or_else(|p| p.into_inner()).newest {
            return Ok(newest);
        }
        let newest = self.list_keks(session)?.last().map(|k| k.index);
        self.wrapping.write().unwrap_or_else(|p| p.into_inner()).newest = Some(newest);
        Ok(newest)
    }

    /// The module's function list (for what `cryptoki` cannot call), opened once.
    pub(super) fn ext(&self) -> Result<&inkan_pkcs11_ffi::Module> {
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
    pub(super) fn wrap_mechanisms(&self) -> Result<[cryptoki_sys::CK_MECHANISM_TYPE; 2]> {
        if let Some(m) = self.wrap_mechanisms.get() {
            return Ok(*m);
        }
        let offered = self.ext()?.mechanisms(self.slot()?).map_err(from_cryptoki)?;
        Ok(*self.wrap_mechanisms.get_or_init(|| kek::wrap_mechanisms(&offered)))
    }

    /// Runs `op` with the preferred key-wrap mechanism, and with the other if
    /// the token refuses the first (a KEK made before the module learnt KWP).
    pub(super) fn with_wrap_mechanism<T>(
        &self,
        op: impl Fn(cryptoki_sys::CK_MECHANISM_TYPE) -> Result<T>,
    ) -> Result<T> {
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

    pub(super) fn find_one(&self, session: &Session, class: ObjectClass, key: &KeyRef) -> Result<ObjectHandle> {
        let _reading = self.lock.shared()?;
        let found = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(key.stored().to_vec())])
            .map_err(from_cryptoki)?;
        found.first().copied().ok_or_else(|| Error::KeyNotFound { id: key.hex() })
    }
}

/// The template a wrapped private key is unwrapped with: a sensitive,
/// sign-only session object; `extractable` only to be wrapped again (a KEK
/// rotation), which a trusted KEK's unwrap template allows under trusted keys
/// only (`CKA_WRAP_WITH_TRUSTED`) and a strict KEK's not at all.
pub(super) fn unwrap_template(key_type: wrapped::WrappedType, extractable: bool, trusted: bool) -> Vec<Attribute> {
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
