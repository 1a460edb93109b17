//! Seals of the audit chain: the head's hash, MACed by a key that never
//! leaves the token ([`inkan_keystore::Keystore::seal`]), each seal chained
//! to the one before it. Whoever can write the database but not use the
//! token can edit rows and recompute every hash, but cannot make the seals
//! after the edit match again, nor remove a seal from the middle.
//!
//! The server seals the head within a second of every commit; the CLI seals
//! the rows its command wrote when the head was sealed before it began (rows
//! it did not write are left to the server, or to `inkan audit seal` after
//! `inkan audit verify`); `inkan audit seal` does it at once. A seal covers its
//! row and, through the chain, every row before it.
//!
//! A sealer must never seal over a rewritten chain: before it seals, it
//! checks that the row it sealed last (a server remembers it; a fresh process
//! takes the last seal, checked by the token) still has the hash it sealed.
//! An edit at or before that row is refused with an error, not sealed. What
//! a sealer cannot see: a rewrite made while no inkan ran, with the seals
//! after the edit removed; the seals exported with [`heads`] and kept outside
//! the database catch that, and a tail cut back to an older seal.

use std::sync::Mutex;

use inkan_keystore::Keystore;

use super::{seal_input, AuditTx, Seal};
use crate::error::{Error, Result};
use crate::storage::Transactions;

/// The row a process sealed last and its hash: what it checks before it
/// seals again.
#[derive(Debug, Default)]
pub struct Anchor(Mutex<Option<(i64, Vec<u8>)>>);

impl Anchor {
    /// An anchor at row `seq` with hash `hash` (a process that saw the head
    /// sealed there before it wrote).
    pub fn at(seq: i64, hash: Vec<u8>) -> Anchor {
        Anchor(Mutex::new(Some((seq, hash))))
    }

    fn get(&self) -> Option<(i64, Vec<u8>)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, seq: i64, hash: Vec<u8>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((seq, hash));
    }
}

fn rewritten(seq: i64) -> Error {
    Error::Internal(format!(
        "the audit chain was rewritten at or before row {seq}, which was sealed: not sealing over it \
         (run `inkan audit verify`, and compare with the exported seals)"
    ))
}

/// The hash row `seq` has now.
pub(super) async fn hash_of<T: AuditTx + ?Sized>(tx: &mut T, seq: i64) -> Result<Option<Vec<u8>>> {
    Ok(tx.audit_rows(seq - 1, 1).await?.into_iter().find(|r| r.row.seq == seq).map(|r| r.hash))
}

/// Seals the chain's head unless it is sealed already; returns the row
/// sealed. The token's MAC is made outside any transaction; the seal is
/// written only if no other sealer got there first. Makes the token's seal
/// key the first time (under the database's audit lock, so that nodes never
/// make two).
pub async fn seal_head<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Keystore,
    anchor: &Anchor,
    now: i64,
) -> Result<Option<i64>> {
    let (head, last) = {
        let mut tx = store.read().await?;
        let Some((seq, hash)) = tx.audit_head().await?.filter(|(seq, _)| *seq > 0) else { return Ok(None) };
        let last = tx.last_audit_seal().await?;
        if last.as_ref().is_some_and(|l| l.seq >= seq) {
            return Ok(None);
        }
        // What this process sealed last must be as it sealed it; a process
        // that sealed nothing yet starts from the last seal, checked by the token.
        let (anchor_seq, anchor_hash) = match (anchor.get(), &last) {
            (Some(a), _) => a,
            (None, Some(l)) => {
                let mac = keystore.seal(&[seal_input(l.seq, &l.hash, &l.prev_mac)])?;
                if !mac.first().is_some_and(|m| bool::from(subtle::ConstantTimeEq::ct_eq(&m[..], &l.mac[..]))) {
                    return Err(rewritten(l.seq));
                }
                (l.seq, l.hash.clone())
            }
            (None, None) => (0, Vec::new()),
        };
        if anchor_seq > 0 && hash_of(&mut *tx, anchor_seq).await? != Some(anchor_hash) {
            return Err(rewritten(anchor_seq));
        }
        ((seq, hash), last)
    };
    let prev_mac = last.as_ref().map(|l| l.mac.clone()).unwrap_or_default();
    let mac = mac_made(store, keystore, seal_input(head.0, &head.1, &prev_mac)).await?;
    let mut tx = store.write().await?;
    // Written only if nobody sealed meanwhile and the row is still as MACed.
    let still = tx.last_audit_seal().await?.map(|l| l.seq) == last.as_ref().map(|l| l.seq)
        && hash_of(&mut *tx, head.0).await?.as_ref() == Some(&head.1);
    if !still {
        return Ok(None);
    }
    tx.insert_audit_seal(&Seal { seq: head.0, hash: head.1.clone(), prev_mac, mac, at: now }).await?;
    tx.commit().await?;
    anchor.set(head.0, head.1);
    Ok(Some(head.0))
}

/// The token's MAC of one input by the seal key, which is made the first
/// time (under the database's audit lock, so that nodes never make two).
async fn mac_made<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Keystore,
    input: Vec<u8>,
) -> Result<Vec<u8>> {
    let inputs = [input];
    let mac = match keystore.seal(&inputs) {
        Err(inkan_keystore::Error::KeyNotFound { .. }) => {
            // Under the audit lock: another node making it now waits, then finds it.
            let lock = store.write().await?;
            keystore.prepare_seal_key()?;
            drop(lock);
            keystore.seal(&inputs)?
        }
        other => other?,
    };
    Ok(mac.into_iter().next().unwrap_or_default())
}

/// A secret for another purpose that every node derives alike and nobody
/// without the token can: the seal key's MAC of `purpose`. Its input can
/// never be a seal's ([`seal_input`] begins otherwise), so it tells nothing
/// about the seals, nor they about it.
pub async fn derived_secret<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Keystore,
    purpose: &str,
) -> Result<[u8; 32]> {
    let input = [b"inkan derived secret v1\0".as_slice(), purpose.as_bytes()].concat();
    let mac = mac_made(store, keystore, input).await?;
    mac.try_into().map_err(|m: Vec<u8>| Error::Internal(format!("the token's MAC has {} bytes, not 32", m.len())))
}

/// The chain's head if it is sealed, or row 0 if nothing was ever sealed:
/// where a command that is about to write can anchor the seal of its own
/// rows. `None` when rows after the last seal exist (left to a sealer that
/// can vouch for them).
pub async fn sealed_head<T: AuditTx + ?Sized>(store: &dyn Transactions<T>) -> Result<Option<(i64, Vec<u8>)>> {
    let mut tx = store.read().await?;
    let head = tx.audit_head().await?.filter(|(seq, _)| *seq > 0);
    Ok(match (head, tx.last_audit_seal().await?) {
        (_, None) => Some((0, Vec::new())),
        (Some((seq, hash)), Some(last)) if last.seq == seq => Some((seq, hash)),
        _ => None,
    })
}

/// Whether the chain's head is not sealed yet (one read, no token).
pub async fn needs_seal<T: AuditTx + ?Sized>(store: &dyn Transactions<T>) -> Result<bool> {
    let mut tx = store.read().await?;
    Ok(match tx.audit_head().await? {
        Some((seq, _)) if seq > 0 => tx.last_audit_seal().await?.is_none_or(|l| l.seq < seq),
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
