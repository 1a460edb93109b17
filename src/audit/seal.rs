//! Seals of the audit chain: the head's hash, MACed by a key that never
//! leaves the token ([`inkan_keystore::Keystore::seal`]). Whoever can write
//! the database but not use the token can edit rows and recompute every hash,
//! but cannot make the seals after the edit match again.
//!
//! The server seals the head within a second of every commit; the CLI seals
//! after its commands; `inkan audit seal` does it at once. A seal covers its
//! row and, through the chain, every row before it. The seals, exported
//! ([`heads`]) and kept outside the database, also catch a tail deleted back
//! to an older seal.

use inkan_keystore::Keystore;

use super::{seal_input as input, AuditTx, Seal};
use crate::error::Result;
use crate::storage::Transactions;

/// Seals the chain's head unless it is sealed already; returns the row
/// sealed. Makes the token's seal key the first time (under the database's
/// audit lock, so that nodes never make two).
pub async fn seal_head<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Keystore,
    now: i64,
) -> Result<Option<i64>> {
    // Read first: a sealed head costs no write lock and no token call.
    if !needs_seal(store).await? {
        return Ok(None);
    }
    let mut tx = store.write().await?;
    let Some((seq, hash)) = tx.audit_head().await?.filter(|(seq, _)| *seq > 0) else { return Ok(None) };
    if tx.last_audit_seal().await? == Some(seq) {
        return Ok(None);
    }
    let inputs = [input(seq, &hash)];
    let mac = match keystore.seal(&inputs) {
        Err(inkan_keystore::Error::KeyNotFound { .. }) => {
            keystore.prepare_seal_key()?;
            keystore.seal(&inputs)?
        }
        other => other?,
    };
    let mac = mac.into_iter().next().unwrap_or_default();
    tx.insert_audit_seal(&Seal { seq, hash, mac, at: now }).await?;
    tx.commit().await?;
    Ok(Some(seq))
}

/// Whether the chain's head is not sealed yet (one read, no token).
pub async fn needs_seal<T: AuditTx + ?Sized>(store: &dyn Transactions<T>) -> Result<bool> {
    let mut tx = store.read().await?;
    Ok(match tx.audit_head().await? {
        Some((seq, _)) if seq > 0 => tx.last_audit_seal().await? != Some(seq),
        _ => false,
    })
}

/// The seals after row `after`, in order: for the operator to keep outside
/// the database (`inkan audit heads`), and give back to `inkan audit verify
/// --heads`.
pub async fn heads<T: AuditTx + ?Sized>(store: &dyn Transactions<T>, after: i64) -> Result<Vec<Seal>> {
    let mut out = Vec::new();
    let mut tx = store.read().await?;
    let mut from = after;
    loop {
        let page = tx.audit_seals(from, 10_000).await?;
        let done = page.len() < 10_000;
        from = page.last().map_or(from, |s| s.seq);
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}
