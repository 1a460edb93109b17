//! The demo set-up on the embedded defaults: two demo users with active keys
//! whose certificates come from the fixture HPKI signing CA, the fixture cards
//! mapped and linked to them, and a demo signing client (`serve --demo`,
//! `inkan demo`). Every step is skipped when already done.

use std::sync::Arc;

use inkan_keystore::{KeyAlgorithm, Keystore};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{self, Purpose};
use crate::pki::ca::Ca;
use crate::pki::profile::{Kind, Qualification};
use crate::pki::{self};
use crate::store::Store;
use crate::users::KeyState;

/// The demo client's ID.
pub const DEMO_CLIENT: &str = "demo";

/// The demo users: (user ID, name, qualification).
pub const DEMO_USERS: &[(&str, &str, Qualification)] =
    &[("100001", "山田 太郎", Qualification::Doctor), ("999001-jpa", "佐藤 花子", Qualification::Pharmacist)];

/// Demo card holders and their users: (fixture holder, scheme, user ID).
pub const DEMO_CARDS: &[(&str, &str, &str)] =
    &[("hpki-doctor", "hpki", "100001"), ("hpki-pharmacist", "hpki", "999001-jpa"), ("jpki-1", "jpki", "100001")];

const ACTOR: &str = "demo";

/// The demo users, each with an active key whose certificate the fixture
/// signing CA (`[pki] signing_ca`, its key beside it) issued. Returns a line
/// per user.
pub async fn users(
    config: &Config,
    store: &dyn Store,
    keystore: &Arc<Keystore>,
    clock: &dyn Clock,
) -> Result<Vec<String>> {
    let store = store.tx();
    let ca_cert = config.pki.signing_ca.clone();
    let ca = Ca::load(&ca_cert, &ca_cert.with_extension("key"))?;
    let mut lines = Vec::new();
    for (id, name, role) in DEMO_USERS {
        let known = store.read().await?.user(id).await?;
        if known.is_none() {
            crate::users::add(store, clock, ACTOR, id, name, *role).await?;
        }
        let keys = keys::list(store, Some(id)).await?;
        if !keys.iter().any(|k| k.state == KeyState::Active) {
            let csr = match keys.iter().find(|k| k.state == KeyState::Pending) {
                Some(p) => p.csr.clone(),
                None => {
                    keys::generate(store, keystore, clock, ACTOR, id, KeyAlgorithm::Rsa2048, Purpose::First).await?;
                    keys::find(store, id, None, KeyState::Pending).await?.csr
                }
            };
            let now = clock.now();
            let kind =
                Kind::HpkiSigning { role: *role, crl_url: "http://localhost:8443/crl/hpki-signing-ca.crl".into() };
            let five_years = std::time::Duration::from_secs(1825 * 86_400);
            let cert = ca.issue_from_csr(kind, &csr, now - std::time::Duration::from_secs(60), now + five_years)?;
            let der = der::Encode::to_der(&cert).map_err(|e| Error::Internal(e.to_string()))?;
            keys::import_certificate(store, config, clock, ACTOR, id, &der, keys::Nonconforming::Refuse).await?;
        }
        lines.push(format!("demo user {id} ({name}, {}) has an active key", role.as_str()));
    }
    Ok(lines)
}

/// The fixture card certificates of [`DEMO_CARDS`] (under `fixtures`),
/// mapped or linked to their users unless they already are (to anyone).
pub async fn cards(store: &dyn Store, clock: &dyn Clock, fixtures: &std::path::Path) -> Result<()> {
    use crate::auth::cards;
    let store = store.tx();
    use der::{Decode, Encode};
    for (holder, scheme, user) in DEMO_CARDS {
        let path = fixtures.join(format!("holders/{holder}.pem"));
        let der = pki::read_certificates(&path)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid(format!("{}: no certificate", path.display())))?;
        let cert = x509_cert::Certificate::from_der(&der).map_err(|e| Error::Invalid(e.to_string()))?;
        let issuer = cert.tbs_certificate().issuer().to_der().map_err(|e| Error::Invalid(e.to_string()))?;
        let serial = cert.tbs_certificate().serial_number().as_bytes().to_vec();
        let known = {
            let mut tx = store.read().await?;
            if *scheme == "jpki" {
                tx.jpki_user_by_card(&issuer, &serial).await?
            } else {
                tx.hpki_user_by_card(&issuer, &serial).await?
            }
        };
        if known.is_some() {
            continue;
        }
        if *scheme == "jpki" {
            cards::jpki_link(store, clock, ACTOR, user, &der).await?;
        } else {
            cards::hpki_map(store, clock, ACTOR, user, &der).await?;
        }
    }
    Ok(())
}

/// The demo signing client, registered afresh (a new secret each start);
/// returns its ID and secret.
pub async fn client(config: &Config, store: &dyn Store, clock: &dyn Clock) -> Result<(String, String)> {
    use crate::auth::clients;
    let store = store.tx();
    if clients::get(store, DEMO_CLIENT).await?.is_some() {
        clients::remove(store, clock, ACTOR, DEMO_CLIENT).await?;
    }
    let redirect = format!("{}/demo/callback", config.server.public_url.trim_end_matches('/'));
    let (client, secret) =
        clients::add(store, clock, ACTOR, "inkan demo signing system", &[redirect], Some(DEMO_CLIENT)).await?;
    Ok((client.id, secret))
}
