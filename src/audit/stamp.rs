//! The audit log's time anchor: with a TSA configured (`[tsa] url`), the
//! chain is time-stamped at its newest seal (RFC 3161, the token's imprint
//! that row's SHA-256 hash), by each server at most every `[tsa]
//! audit_every_secs` and by `inkan audit seal`. A token proves that the row,
//! and through the chain every row before it, existed at the token's time:
//! whoever can write the database can drop a time-stamp (the proof then
//! ends earlier) but cannot make one that says an edited chain existed
//! earlier, nor move a time-stamp's time. `inkan audit verify` checks each
//! against the TSA's anchors and says up to which row, and when, the log is
//! proven to have existed.

use std::time::SystemTime;

use der::Decode;
use inkan_keystore::DigestAlgorithm;
use x509_cert::Certificate;

use super::{AuditTx, Broken, TimeProof, TimeStamp};
use crate::error::Result;
use crate::seam::Transactions;
use crate::tsa::token;

/// Time-stamps the chain at its newest seal, unless that row has a
/// time-stamp already; returns it, with the token's time.
pub async fn stamp_head<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    tsa: &crate::tsa::Tsa,
    now: SystemTime,
) -> Result<Option<(TimeStamp, String)>> {
    let seal = {
        let mut tx = store.read().await?;
        let Some(seal) = tx.last_audit_seal().await? else { return Ok(None) };
        if tx.last_audit_timestamp().await?.is_some_and(|t| t.seq >= seal.seq) {
            return Ok(None);
        }
        seal
    };
    // The seal's hash, as the token MACed it: a chain rewritten since is
    // `audit verify`'s to find, and is not what this stamps.
    let checked = tsa.stamp(DigestAlgorithm::Sha256, &seal.hash, now).await?;
    let stamp = TimeStamp { seq: seal.seq, hash: seal.hash, token: checked.token, at: crate::clock::unix_ms(now) };
    let mut tx = store.write().await?;
    let inserted = tx.insert_audit_timestamp(&stamp).await?;
    tx.commit().await?;
    Ok(inserted.then_some((stamp, crate::clock::rfc3339(crate::clock::unix_ms(checked.info.gen_time)))))
}

/// Time-stamps read per transaction.
const PAGE: usize = 10_000;

/// Checks every time-stamp of a chain whose rows after `archived` through
/// `rows` are live and verified: each must
/// name a row that has the hash it stamped and, with `anchors`, carry a
/// token over that hash that checks against them. The first that does not
/// is where the log is broken.
pub async fn prove<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    anchors: Option<&[Certificate]>,
    (archived, rows): (i64, i64),
) -> Result<std::result::Result<TimeProof, Broken>> {
    let mut proof = TimeProof { checked: anchors.is_some(), ..Default::default() };
    let mut tx = store.read().await?;
    // Those of archived rows are their segments' (`archive::check`).
    let mut after = archived;
    loop {
        let page = tx.audit_timestamps(after, PAGE).await?;
        let done = page.len() < PAGE;
        after = page.last().map_or(after, |s| s.seq);
        for stamp in page {
            proof.timestamps += 1;
            let stored = crate::clock::rfc3339(stamp.at);
            if stamp.seq > rows {
                return Ok(Err(Broken {
                    seq: rows + 1,
                    reason: format!(
                        "a time-stamp (stored {stored}) names row {}, after the log's last row {rows}: rows were \
                         deleted from the end",
                        stamp.seq
                    ),
                }));
            }
            if super::seal::hash_of(&mut *tx, stamp.seq).await?.as_deref() != Some(&stamp.hash[..]) {
                return Ok(Err(Broken {
                    seq: stamp.seq,
                    reason: format!(
                        "row {} no longer has the hash time-stamped (stored {stored}): the chain was rewritten at or \
                         before it",
                        stamp.seq
                    ),
                }));
            }
            let Some(anchors) = anchors else { continue };
            let expected = token::Expected { alg: DigestAlgorithm::Sha256, digest: &stamp.hash, nonce: None };
            match token::check(&stamp.token, &expected, anchors, &[]) {
                Ok(c) => {
                    proof.proven_through = Some(stamp.seq);
                    proof.proven_at = Some(crate::clock::rfc3339(crate::clock::unix_ms(c.info.gen_time)));
                    proof.tsa = Certificate::from_der(&c.tsa_certificate)
                        .ok()
                        .map(|t| t.tbs_certificate().subject().to_string());
                }
                Err(e) => {
                    return Ok(Err(Broken {
                        seq: stamp.seq,
                        reason: format!(
                            "its time-stamp (stored {stored}) does not check against the TSA anchors: {} (a forged \
                             token, or anchors that are not the TSA's)",
                            e.0
                        ),
                    }))
                }
            }
        }
        if done {
            return Ok(Ok(proof));
        }
    }
}
