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
//! A sealer must never seal over a rewritten chain. The token keeps a
//! record of the last seal it made ([`TokenState`], a private data object
//! nobody without the PIN can write or remove), written right after the seal
//! is committed. Before it seals, a sealer (a fresh process too) reads the
//! token first, then checks that the database still holds that seal, that
//! every seal after it follows it under the token's key, and that the last
//! one's row still has the hash it sealed. Seals removed after an edit, all
//! seals removed, or the log cut back are refused, and the refusal is kept
//! in the token: no process or node seals again until an operator has
//! checked the log and cleared it (`inkan audit seal --clear-refusal`).
//! What no sealer can see: rows written after the last seal (a running
//! server seals within a second; `inkan audit verify` fails on rows left
//! unsealed longer), and the seals the crash of a sealer leaves committed
//! but not yet recorded (the next sealer records them).

use std::sync::Mutex;

use super::{seal_input, AuditTx, Refusal, Seal, TokenState};
use crate::error::{Error, Result};
use crate::seam::Transactions;
use inkan_keystore::Keystore;

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

fn rewritten(seq: i64) -> String {
    format!("the audit chain was rewritten at or before row {seq}, which was sealed")
}

/// The token's data objects of the audit log: their application and labels.
const TOKEN_APP: &str = "inkan-audit";
const RECORD: &str = "inkan-audit-seal-record";
const REFUSAL: &str = "inkan-audit-seal-refusal";

impl Refusal {
    /// The error a sealer answers while the refusal stands.
    fn error(&self) -> Error {
        Error::Conflict(format!(
            "sealing of the audit log stopped at {}: {}; nothing is sealed until `inkan audit verify` finds the log intact and `inkan audit seal --clear-refusal` is run",
            crate::clock::rfc3339(self.at),
            self.reason
        ))
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (input.get(..n)?, input.get(n..)?);
    *input = rest;
    Some(head)
}

fn take_i64(input: &mut &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(take(input, 8)?.try_into().ok()?))
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_be_bytes(take(input, 4)?.try_into().ok()?) as usize;
    take(input, n)
}

const RECORD_V1: &[u8] = b"inkan audit seal record v1\0";
const REFUSAL_V1: &[u8] = b"inkan audit seal refusal v1\0";

fn encode_record(seal: &Seal) -> Vec<u8> {
    let mut out = RECORD_V1.to_vec();
    out.extend_from_slice(&seal.seq.to_be_bytes());
    out.extend_from_slice(&seal.at.to_be_bytes());
    for part in [&seal.hash, &seal.prev_mac, &seal.mac] {
        put(&mut out, part);
    }
    out
}

fn decode_record(value: &[u8]) -> Option<Seal> {
    let mut input = value.strip_prefix(RECORD_V1)?;
    let (seq, at) = (take_i64(&mut input)?, take_i64(&mut input)?);
    let (hash, prev_mac, mac) = (take_bytes(&mut input)?, take_bytes(&mut input)?, take_bytes(&mut input)?);
    input.is_empty().then(|| Seal { seq, hash: hash.to_vec(), prev_mac: prev_mac.to_vec(), mac: mac.to_vec(), at })
}

fn encode_refusal(r: &Refusal) -> Vec<u8> {
    let mut out = REFUSAL_V1.to_vec();
    out.extend_from_slice(&r.seq.to_be_bytes());
    out.extend_from_slice(&r.at.to_be_bytes());
    put(&mut out, r.reason.as_bytes());
    out
}

fn decode_refusal(value: &[u8]) -> Option<Refusal> {
    let mut input = value.strip_prefix(REFUSAL_V1)?;
    let (seq, at) = (take_i64(&mut input)?, take_i64(&mut input)?);
    let reason = String::from_utf8_lossy(take_bytes(&mut input)?).into_owned();
    Some(Refusal { seq, at, reason })
}

/// What the token keeps: the highest seal recorded and the first refusal.
/// Read it before the database, so that a record another node writes
/// meanwhile is of a seal the database already holds.
pub fn token_state(keystore: &Keystore) -> Result<TokenState> {
    let objects = keystore.data_objects(TOKEN_APP)?;
    let last =
        objects.iter().filter(|o| o.label == RECORD).filter_map(|o| decode_record(&o.value)).max_by_key(|s| s.seq);
    let refusal =
        objects.iter().filter(|o| o.label == REFUSAL).filter_map(|o| decode_refusal(&o.value)).min_by_key(|r| r.at);
    Ok(TokenState { last, refusal })
}

/// Records `seal` in the token (after it was committed), then removes the
/// records below the one before it (a record a power loss tore then falls
/// back to the one before).
fn record(keystore: &Keystore, seal: &Seal) -> Result<()> {
    keystore.create_data_object(TOKEN_APP, RECORD, &encode_record(seal))?;
    let mut seqs: Vec<i64> = keystore
        .data_objects(TOKEN_APP)?
        .iter()
        .filter(|o| o.label == RECORD)
        .filter_map(|o| decode_record(&o.value))
        .map(|s| s.seq)
        .collect();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    if let Some(&keep_from) = seqs.get(1) {
        keystore.prune_data_objects(TOKEN_APP, RECORD, &|v| decode_record(v).is_none_or(|s| s.seq < keep_from))?;
    }
    Ok(())
}

/// Stops sealing for every process and node: the refusal goes into the
/// token (unless one stands), and is returned as the error to report.
fn refuse(keystore: &Keystore, seq: i64, reason: String, now: i64) -> Error {
    let refusal = Refusal { seq, at: now, reason };
    tracing::error!("audit log: {}", refusal.reason);
    match token_state(keystore) {
        Ok(TokenState { refusal: Some(earlier), .. }) => return earlier.error(),
        Ok(_) => {
            if let Err(e) = keystore.create_data_object(TOKEN_APP, REFUSAL, &encode_refusal(&refusal)) {
                tracing::error!("the refusal to seal could not be kept in the token: {e}");
            }
        }
        Err(e) => tracing::error!("the refusal to seal could not be kept in the token: {e}"),
    }
    refusal.error()
}

/// Clears a refusal to seal, once the caller has found the log intact: an
/// audit row says who cleared which refusal, then the token forgets it.
pub async fn clear_refusal<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Keystore,
    actor: &str,
    now: i64,
) -> Result<Option<Refusal>> {
    let Some(standing) = token_state(keystore)?.refusal else { return Ok(None) };
    let mut tx = store.write().await?;
    super::append(
        &mut *tx,
        now,
        &[super::Event {
            detail: serde_json::json!({
                "seq": standing.seq,
                "refused_at": crate::clock::rfc3339(standing.at),
                "reason": standing.reason,
            }),
            ..super::Event::new(actor, super::Name::AuditSealRefusalCleared)
        }],
    )
    .await?;
    tx.commit().await?;
    // Only the refusal that was checked: one a sealer writes meanwhile stays.
    let cleared = encode_refusal(&standing);
    keystore.prune_data_objects(TOKEN_APP, REFUSAL, &|v| v == cleared.as_slice())?;
    Ok(Some(standing))
}

/// Checks that the database still holds the token's `recorded` seal, that
/// every later seal follows it under the token's key, and that the last
/// one's row still has its hash: that last seal, or what is wrong.
async fn descends<T: AuditTx + ?Sized>(
    tx: &mut T,
    keystore: &Keystore,
    recorded: &Seal,
) -> Result<std::result::Result<Seal, (i64, String)>> {
    const PAGE: usize = 1000;
    let gone = || {
        (
            recorded.seq,
            format!(
                "the token sealed row {} at {}, and the database no longer holds that seal: seals were removed, or the log was cut back",
                recorded.seq,
                crate::clock::rfc3339(recorded.at)
            ),
        )
    };
    let first = tx.audit_seals(recorded.seq - 1, 1).await?;
    match first.first() {
        Some(s) if s.seq == recorded.seq && s.mac == recorded.mac && s.hash == recorded.hash => {}
        _ => return Ok(Err(gone())),
    }
    let mut last = recorded.clone();
    loop {
        let page = tx.audit_seals(last.seq, PAGE).await?;
        let done = page.len() < PAGE;
        if !page.is_empty() {
            let inputs: Vec<Vec<u8>> = page.iter().map(|s| seal_input(s.seq, &s.hash, &s.prev_mac)).collect();
            let macs = keystore.seal(&inputs)?;
            for (s, mac) in page.into_iter().zip(macs) {
                if s.prev_mac != last.mac {
                    return Ok(Err((s.seq, format!("the seal of row {} does not follow the seal before it", s.seq))));
                }
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &s.mac[..])) {
                    return Ok(Err((
                        s.seq,
                        format!("the seal of row {} was not made by this token's seal key", s.seq),
                    )));
                }
                last = s;
            }
        }
        if done {
            break;
        }
    }
    Ok(match hash_of(tx, last.seq).await? {
        Some(hash) if hash == last.hash => Ok(last),
        Some(_) => Err((last.seq, rewritten(last.seq))),
        None => Err((last.seq, format!("row {}, which was sealed, is gone: rows were deleted from the end", last.seq))),
    })
}

/// The hash row `seq` has now.
pub(super) async fn hash_of<T: AuditTx + ?Sized>(tx: &mut T, seq: i64) -> Result<Option<Vec<u8>>> {
    Ok(tx.audit_rows(seq - 1, 1).await?.into_iter().find(|r| r.seq == seq).map(|r| r.hash))
}

/// Seals the chain's head unless it is sealed already; returns the row
/// sealed. Reads the token's record first and checks the database against
/// it (see the module's documentation); a log that fails the check is not
/// sealed, and the refusal is kept in the token. The token's MAC is made
/// outside any transaction; the seal is written only if no other sealer got
/// there first, and recorded in the token once committed. Makes the token's
/// seal key the first time (under the database's audit lock, so that nodes
/// never make two).
pub async fn seal_head<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Keystore,
    anchor: &Anchor,
    now: i64,
) -> Result<Option<i64>> {
    let token = token_state(keystore)?;
    if let Some(refusal) = &token.refusal {
        return Err(refusal.error());
    }
    let (head, last) = {
        let mut tx = store.read().await?;
        let Some((seq, hash)) = tx.audit_head().await?.filter(|(seq, _)| *seq > 0) else { return Ok(None) };
        let last = match &token.last {
            Some(recorded) => match descends(&mut *tx, keystore, recorded).await? {
                Ok(last) => Some(last),
                Err((at, reason)) => return Err(refuse(keystore, at, reason, now)),
            },
            // Nothing recorded yet (a token from before records, or its
            // first seal): the last seal, checked by the token.
            None => match tx.last_audit_seal().await? {
                Some(l) => {
                    let mac = keystore.seal(&[seal_input(l.seq, &l.hash, &l.prev_mac)])?;
                    if !mac.first().is_some_and(|m| bool::from(subtle::ConstantTimeEq::ct_eq(&m[..], &l.mac[..]))) {
                        return Err(refuse(keystore, l.seq, rewritten(l.seq), now));
                    }
                    if hash_of(&mut *tx, l.seq).await?.as_ref() != Some(&l.hash) {
                        return Err(refuse(keystore, l.seq, rewritten(l.seq), now));
                    }
                    Some(l)
                }
                None => None,
            },
        };
        // What this process sealed last must be as it sealed it: in the live
        // store, or in a segment archived since (its record, MACed by the
        // token, names the last row's hash; the rows before it were checked
        // when they were archived).
        if let Some((anchor_seq, anchor_hash)) = anchor.get().filter(|(seq, _)| *seq > 0) {
            let archived = tx.audit_archived().await?.filter(|a| a.seq >= anchor_seq);
            if let Some(a) = &archived {
                // A record forged to delete rows under it: refused.
                let mac = keystore.seal(&[super::archive_input(a)])?;
                if !mac.first().is_some_and(|m| bool::from(subtle::ConstantTimeEq::ct_eq(&m[..], &a.mac[..]))) {
                    let reason = format!(
                        "the archive record of rows {}-{} was not made by this token's seal key: rows were removed",
                        a.first, a.seq
                    );
                    return Err(refuse(keystore, a.seq, reason, now));
                }
            }
            let found = match &archived {
                Some(a) if a.seq == anchor_seq => Some(a.hash.clone()),
                Some(_) => Some(anchor_hash.clone()),
                None => hash_of(&mut *tx, anchor_seq).await?,
            };
            if found != Some(anchor_hash) {
                return Err(refuse(keystore, anchor_seq, rewritten(anchor_seq), now));
            }
        }
        if let Some(l) = last.as_ref().filter(|l| l.seq >= seq) {
            // Sealed already: the token's record catches up (a sealer killed
            // between its commit and its record).
            if token.last.as_ref().is_none_or(|r| r.seq < l.seq) {
                record(keystore, l)?;
            }
            return Ok(None);
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
    let seal = Seal { seq: head.0, hash: head.1.clone(), prev_mac, mac, at: now };
    tx.insert_audit_seal(&seal).await?;
    tx.commit().await?;
    anchor.set(head.0, head.1);
    crate::crash::point("seal-before-record");
    record(keystore, &seal).map_err(|e| {
        Error::Unavailable(format!("row {} was sealed, but the token's record of it was not written: {e}", seal.seq))
    })?;
    Ok(Some(seal.seq))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_objects_read_back_and_nothing_else_reads_as_one() {
        let seal = Seal { seq: 42, hash: vec![1; 32], prev_mac: vec![2; 32], mac: vec![3; 32], at: 1_700_000_000_000 };
        assert_eq!(decode_record(&encode_record(&seal)), Some(seal.clone()));
        let first = Seal { prev_mac: Vec::new(), ..seal.clone() };
        assert_eq!(decode_record(&encode_record(&first)), Some(first));
        let refusal = Refusal { seq: 7, at: 1, reason: "seals were removed".into() };
        assert_eq!(decode_refusal(&encode_refusal(&refusal)), Some(refusal.clone()));
        let whole = encode_record(&seal);
        for cut in 0..whole.len() {
            assert_eq!(decode_record(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_record(&[whole.as_slice(), b"x"].concat()), None);
        assert_eq!(decode_record(&encode_refusal(&refusal)), None);
        assert_eq!(decode_refusal(&encode_record(&seal)), None);
    }
}
