//! Archival: old rows of the chain moved out of the live store into sealed,
//! self-describing segment files, so that the log can grow for years.
//!
//! A segment holds the rows from the live chain's first through a sealed
//! row `S` (JSON lines: a header naming the hash its first row links to,
//! then every row with its hash, every seal and time-stamp of those rows, and
//! an end line naming `S`'s hash and seal, to which the next segment's first
//! row and seal link). The live store keeps an archive record of it
//! ([`Archived`]: its rows, `S`'s hash and seal, the file's SHA-256), MACed
//! by the token's seal key and chained to the record before; only then are
//! the rows, seals and time-stamps through `S` deleted (the store's triggers
//! allow no other deletion), in batches, finished by the next run if one is
//! killed. [`super::verify`] goes on from the last record; [`check`] walks
//! every segment against the records: a changed byte or a missing segment
//! fails.
//!
//! The seal the token recorded last stays live (an archive ends before it):
//! the token's record must be found in the database ([`super::seal`]).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{archive_input, row_hash, seal_input, Archived, AuditTx, Event, Row, Seal, TokenState};
use crate::encoding::{hex, unhex};
use crate::error::{Error, Result};
use crate::seam::Transactions;

/// What a segment's header says its format is.
pub const FORMAT: &str = "inkan-audit-segment-1";
/// Rows, seals and time-stamps read per transaction; rows deleted per transaction.
const PAGE: usize = 10_000;

/// One line of a segment file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    /// First: what follows and what it links to.
    Header {
        format: String,
        first: i64,
        last: i64,
        /// The hash the first row's chain starts from (the previous segment's last).
        prev_hash: String,
        /// The seal MAC the first seal follows (the previous segment's last).
        prev_seal_mac: String,
        /// How each row's hash is made.
        hash: String,
        made_at: String,
    },
    /// A row as stored (`at` in Unix ms, `detail` as the exact text hashed).
    Row {
        seq: i64,
        at: i64,
        actor: String,
        event: String,
        user_id: Option<String>,
        generation: Option<i64>,
        digest: Option<String>,
        outcome: String,
        detail: String,
        hash: String,
    },
    /// A seal of one of the rows.
    Seal { seq: i64, hash: String, prev: String, mac: String, at: i64 },
    /// A time-stamp of one of the rows (the token in base64).
    Timestamp { seq: i64, hash: String, token: String, at: i64 },
    /// Last: the row the segment ends at, which the next links to.
    End { last: i64, hash: String, seal_mac: String },
}

/// A digest fed as a writer.
struct DigestWriter<'a>(&'a mut Sha256);

impl Write for DigestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`archive`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Archival {
    /// The new archive record (none: nothing old enough was sealed).
    pub archived: Option<Archived>,
    /// The segment file written.
    pub file: Option<PathBuf>,
    /// Rows moved into it.
    pub rows: i64,
    /// Rows deleted from the live store by this run (also those of an
    /// earlier run that was cut short).
    pub pruned: usize,
}

fn bad(why: String) -> Error {
    Error::Invalid(why)
}

/// Deletes archived rows still in the live store, a batch a transaction;
/// `progress` hears the running count and `total`, the rows expected (0:
/// not known).
async fn prune<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    through: i64,
    total_rows: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = store.write().await?;
        let n = tx.prune_audit(through, PAGE).await?;
        tx.commit().await?;
        total += n;
        progress(total, total_rows);
        if n < PAGE {
            return Ok(total);
        }
    }
}

/// The last seal that may end a segment: after `base`, made before
/// `before_ms`, and before the seal the token recorded last (else before
/// the last seal).
async fn last_sealed_before<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    base: i64,
    before_ms: i64,
    token: &TokenState,
) -> Result<Option<Seal>> {
    let mut tx = store.read().await?;
    let keep_from = match &token.last {
        Some(r) => r.seq,
        None => tx.last_audit_seal().await?.map_or(0, |s| s.seq),
    };
    let (mut after, mut found) = (base, None);
    loop {
        let page = tx.audit_seals(after, PAGE).await?;
        let full = page.len() == PAGE;
        for s in page {
            if s.at >= before_ms || s.seq >= keep_from {
                return Ok(found);
            }
            after = s.seq;
            found = Some(s);
        }
        if !full {
            return Ok(found);
        }
    }
}

/// Writes JSON lines into a file while hashing them.
struct SegmentWriter {
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
}

impl SegmentWriter {
    fn line(&mut self, line: &Line) -> Result<()> {
        let mut text = serde_json::to_vec(line).map_err(Error::internal)?;
        text.push(b'\n');
        self.hasher.update(&text);
        self.file.write_all(&text).map_err(|e| Error::Unavailable(format!("cannot write the segment: {e}")))
    }
}

/// Moves the rows sealed before `before_ms` (and before the token's last
/// seal) out of the live store into a new segment file in `dir`, records
/// it (MACed by the token, with an audit row), and deletes them. Finishes
/// the deletion of an earlier run first. Refuses a chain that does not
/// verify. `progress` hears the rows deleted so far and how many there are.
pub async fn archive<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &inkan_keystore::Keystore,
    dir: &Path,
    before_ms: i64,
    now_ms: i64,
    actor: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Archival> {
    let previous = store.read().await?.audit_archived().await?;
    let base = previous.as_ref().map_or(0, |a| a.seq);
    // Those of an earlier run that was cut short first.
    let mut pruned = prune(store, base, 0, progress).await?;
    let token = super::seal::token_state(keystore)?;
    if let Some(refusal) = &token.refusal {
        return Err(Error::Conflict(format!(
            "sealing stopped ({}): the log is archived only once `inkan audit verify` finds it intact",
            refusal.reason
        )));
    }
    let Some(end) = last_sealed_before(store, base, before_ms, &token).await? else {
        return Ok(Archival { archived: None, file: None, rows: 0, pruned });
    };
    let first = base + 1;
    let name = format!("audit-{first:012}-{:012}.jsonl", end.seq);
    std::fs::create_dir_all(dir).map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    // One archive at a time writes into a directory (cron jobs on several
    // nodes sharing it): the lock is released when this run ends or dies.
    let lock_path = dir.join(".inkan-archive.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(Error::Conflict(format!(
            "another `inkan audit archive` is writing into {}: let it finish, then run this one again",
            dir.display()
        )));
    }
    let (path, partial) = (dir.join(&name), dir.join(format!("{name}.partial")));
    if path.exists() {
        return Err(Error::Conflict(format!(
            "{} exists and is not recorded as archived: move it away (it may be from another database)",
            path.display()
        )));
    }
    let file = std::fs::File::create(&partial)
        .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", partial.display())))?;
    let mut out = SegmentWriter { file: std::io::BufWriter::new(file), hasher: Sha256::new() };
    let mut prev = previous.as_ref().map_or_else(|| vec![0u8; 32], |a| a.hash.clone());
    let mut prev_mac = previous.as_ref().map(|a| a.seal_mac.clone()).unwrap_or_default();
    out.line(&Line::Header {
        format: FORMAT.into(),
        first,
        last: end.seq,
        prev_hash: hex(&prev),
        prev_seal_mac: hex(&prev_mac),
        hash: "SHA-256(prev_hash || each column length-prefixed), as inkan::audit::row_hash".into(),
        made_at: crate::clock::rfc3339_ms(now_ms),
    })?;
    // Each row, then its seal (checked by the token) and its time-stamps:
    // a reader checks a segment line by line. A broken chain is not archived.
    let mut after = base;
    let mut tx = store.read().await?;
    while after < end.seq {
        let page = tx.audit_rows(after, PAGE).await?;
        if page.is_empty() {
            return Err(bad(format!("row {} is missing: run `inkan audit verify`", after + 1)));
        }
        // A page of rows has at most as many seals and time-stamps.
        let seals = tx.audit_seals(after, PAGE).await?;
        let inputs: Vec<Vec<u8>> = seals.iter().map(|s| seal_input(s.seq, &s.hash, &s.prev_mac)).collect();
        let macs = keystore.seal(&inputs)?;
        let mut seals = seals.into_iter().zip(macs).peekable();
        let mut stamps = tx.audit_timestamps(after, PAGE).await?.into_iter().peekable();
        for r in page.into_iter().take_while(|r| r.seq <= end.seq) {
            if r.seq != after + 1 || r.prev_hash != prev || row_hash(&prev, &r)[..] != r.hash[..] {
                return Err(bad(format!(
                    "the chain does not verify at row {}: nothing archived; run `inkan audit verify`",
                    after + 1
                )));
            }
            let Row { seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash: _, hash } = r;
            out.line(&Line::Row {
                seq,
                at,
                actor,
                event,
                user_id,
                generation,
                digest,
                outcome,
                detail,
                hash: hex(&hash),
            })?;
            if let Some((s, mac)) = seals.next_if(|(s, _)| s.seq == seq) {
                let made_here = bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &s.mac[..]));
                if s.prev_mac != prev_mac || s.hash != hash || !made_here {
                    return Err(bad(format!("the seal of row {seq} does not verify: run `inkan audit verify`")));
                }
                prev_mac = s.mac.clone();
                out.line(&Line::Seal { seq, hash: hex(&s.hash), prev: hex(&s.prev_mac), mac: hex(&s.mac), at: s.at })?;
            }
            while let Some(t) = stamps.next_if(|t| t.seq == seq) {
                let token = Base64::encode_string(&t.token);
                out.line(&Line::Timestamp { seq, hash: hex(&t.hash), token, at: t.at })?;
            }
            prev = hash;
            after = seq;
        }
    }
    drop(tx);
    if prev != end.hash || prev_mac != end.mac {
        return Err(bad(format!("row {} does not have the hash its seal names: run `inkan audit verify`", end.seq)));
    }
    out.line(&Line::End { last: end.seq, hash: hex(&end.hash), seal_mac: hex(&end.mac) })?;
    let SegmentWriter { file, hasher } = out;
    let file = file.into_inner().map_err(|e| Error::Unavailable(format!("cannot write the segment: {e}")))?;
    file.sync_all().map_err(|e| Error::Unavailable(format!("cannot sync the segment: {e}")))?;
    std::fs::rename(&partial, &path).map_err(|e| Error::Unavailable(format!("cannot name the segment: {e}")))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::Unavailable(format!("{e}")))?;
    let segment = hasher.finalize().to_vec();
    // The file as it is on disk, read back, before any row goes.
    let mut on_disk = Sha256::new();
    let mut file =
        std::fs::File::open(&path).map_err(|e| Error::Unavailable(format!("cannot read the segment: {e}")))?;
    std::io::copy(&mut file, &mut DigestWriter(&mut on_disk))
        .map_err(|e| Error::Unavailable(format!("cannot read the segment: {e}")))?;
    if on_disk.finalize()[..] != segment[..] {
        return Err(Error::Unavailable(format!(
            "{} is not what was written: nothing archived (check the disk, then run this again)",
            path.display()
        )));
    }

    let mut record = Archived {
        first,
        seq: end.seq,
        hash: end.hash.clone(),
        seal_mac: end.mac.clone(),
        segment,
        file: name,
        at: now_ms,
        prev_mac: previous.as_ref().map(|a| a.mac.clone()).unwrap_or_default(),
        mac: Vec::new(),
    };
    record.mac = keystore.seal(&[archive_input(&record)])?.pop().unwrap_or_default();
    let mut tx = store.write().await?;
    if tx.audit_archived().await?.map(|a| a.seq) != previous.as_ref().map(|a| a.seq) {
        return Err(Error::Conflict("another archive ran meanwhile: run this one again".into()));
    }
    tx.insert_audit_archive(&record).await?;
    super::append(
        &mut *tx,
        now_ms,
        &[Event {
            outcome: "ok",
            detail: serde_json::json!({
                "first": record.first,
                "last": record.seq,
                "file": record.file,
                "sha256": hex(&record.segment),
            }),
            ..Event::new(actor, crate::audit::Name::AuditArchive)
        }],
    )
    .await?;
    tx.commit().await?;
    pruned += prune(store, record.seq, (record.seq - base) as usize, progress).await?;
    Ok(Archival { rows: record.seq - base, archived: Some(record), file: Some(path), pruned })
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveCheck {
    /// Segments checked.
    pub segments: usize,
    /// Rows in them.
    pub rows: i64,
    /// Seals in them the token checked.
    pub seals: usize,
    /// Time-stamps in them.
    pub timestamps: usize,
    /// Files in the directory no archive record names.
    pub unknown_files: Vec<String>,
}

/// Checks every archived segment in `dir` against the live store's archive
/// records (each MACed by the token, chained to the one before): every
/// record's file is there with its SHA-256, its rows chain from the
/// previous segment's last hash and hash as stored, its seals follow one
/// another under the token's key, and it ends at the row and seal its
/// record names. The first problem is an error naming the file.
pub async fn check<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &inkan_keystore::Keystore,
    dir: &Path,
) -> Result<ArchiveCheck> {
    let records = store.read().await?.audit_archives().await?;
    let mut report = ArchiveCheck::default();
    let (mut prev_hash, mut prev_seal, mut prev_record) = (vec![0u8; 32], Vec::new(), Vec::new());
    let (mut expected_first, mut names) = (1, Vec::new());
    for record in &records {
        let name = &record.file;
        names.push(name.clone());
        let mac = keystore.seal(&[archive_input(record)])?.pop().unwrap_or_default();
        if record.prev_mac != prev_record || !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &record.mac[..])) {
            return Err(bad(format!(
                "the archive record of {name} was not made by this token's seal key, or one before it was removed"
            )));
        }
        if record.first != expected_first {
            return Err(bad(format!("rows {expected_first}-{} are in no archive record", record.first - 1)));
        }
        let path = dir.join(name);
        let file = std::fs::File::open(&path).map_err(|e| {
            bad(format!("segment {name} (rows {}-{}) is missing from {}: {e}", record.first, record.seq, dir.display()))
        })?;
        let (rows, seals, stamps) = check_segment(keystore, name, file, record, &prev_hash, &prev_seal)?;
        report.segments += 1;
        report.rows += rows;
        report.seals += seals;
        report.timestamps += stamps;
        prev_hash = record.hash.clone();
        prev_seal = record.seal_mac.clone();
        prev_record = record.mac.clone();
        expected_first = record.seq + 1;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut unknown: Vec<String> = entries
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("audit-") && !names.contains(n))
            .collect();
        unknown.sort();
        report.unknown_files = unknown;
    }
    Ok(report)
}

/// Checks one segment's lines as they are read, and its SHA-256 against
/// the record's; returns its rows, seals and time-stamps.
fn check_segment(
    keystore: &inkan_keystore::Keystore,
    name: &str,
    file: std::fs::File,
    record: &Archived,
    prev_hash: &[u8],
    prev_seal: &[u8],
) -> Result<(i64, usize, usize)> {
    let broken = |line: usize, why: &str| bad(format!("segment {name}, line {line}: {why}"));
    let field = |line: usize, text: &str| unhex(text).ok_or_else(|| broken(line, "not hexadecimal"));
    let check_seals = |seals: &mut Vec<Seal>| -> Result<()> {
        let inputs: Vec<Vec<u8>> = seals.iter().map(|s| seal_input(s.seq, &s.hash, &s.prev_mac)).collect();
        for (s, mac) in seals.iter().zip(keystore.seal(&inputs)?) {
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &s.mac[..])) {
                return Err(bad(format!("segment {name}: the seal of row {} was not made by this token", s.seq)));
            }
        }
        seals.clear();
        Ok(())
    };
    let (mut prev, mut prev_mac) = (prev_hash.to_vec(), prev_seal.to_vec());
    // The last row read: its seal and time-stamps follow it.
    let mut last: Option<(i64, Vec<u8>)> = None;
    let (mut rows, mut seals, mut checked, mut stamps, mut ended) = (0, Vec::new(), 0, 0, false);
    let (mut reader, mut hasher, mut text) = (std::io::BufReader::new(file), Sha256::new(), Vec::new());
    for n in 1.. {
        text.clear();
        let read = reader.read_until(b'\n', &mut text).map_err(|e| bad(format!("cannot read segment {name}: {e}")))?;
        if read == 0 {
            break;
        }
        hasher.update(&text);
        let line: Line = serde_json::from_slice(&text).map_err(|e| broken(n, &format!("not a segment line ({e})")))?;
        match (n, line) {
            (1, Line::Header { format, first, last, prev_hash, prev_seal_mac, .. }) => {
                if format != FORMAT || first != record.first || last != record.seq {
                    return Err(broken(n, "its header does not match its archive record"));
                }
                if field(n, &prev_hash)? != prev || field(n, &prev_seal_mac)? != prev_mac {
                    return Err(broken(n, "it does not link to the segment before it"));
                }
            }
            (1, _) | (_, Line::Header { .. }) => return Err(broken(n, "a segment has one header, first")),
            (_, _) if ended => return Err(broken(n, "lines after the end")),
            (_, Line::Row { seq, at, actor, event, user_id, generation, digest, outcome, detail, hash }) => {
                let expected = record.first + rows;
                if seq != expected {
                    return Err(broken(n, &format!("row {expected} is missing (next is {seq})")));
                }
                let hash = field(n, &hash)?;
                let row = Row {
                    seq,
                    at,
                    actor,
                    event,
                    user_id,
                    generation,
                    digest,
                    outcome,
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                if row_hash(&prev, &row)[..] != hash[..] {
                    return Err(broken(n, &format!("row {seq} does not match its hash: the segment was changed")));
                }
                prev = hash.clone();
                last = Some((seq, hash));
                rows += 1;
            }
            (_, Line::Seal { seq, hash, prev: p, mac, at }) => {
                let seal = Seal { seq, hash: field(n, &hash)?, prev_mac: field(n, &p)?, mac: field(n, &mac)?, at };
                if seal.prev_mac != prev_mac || last.as_ref() != Some(&(seq, seal.hash.clone())) {
                    return Err(broken(n, &format!("the seal of row {seq} does not follow the chain")));
                }
                prev_mac = seal.mac.clone();
                seals.push(seal);
                checked += 1;
                if seals.len() == PAGE {
                    check_seals(&mut seals)?;
                }
            }
            (_, Line::Timestamp { seq, hash, token, .. }) => {
                if last.as_ref() != Some(&(seq, field(n, &hash)?)) || Base64::decode_vec(&token).is_err() {
                    return Err(broken(n, &format!("the time-stamp of row {seq} does not match it")));
                }
                stamps += 1;
            }
            (_, Line::End { last, hash, seal_mac }) => {
                if last != record.seq
                    || field(n, &hash)? != record.hash
                    || prev != record.hash
                    || field(n, &seal_mac)? != record.seal_mac
                    || prev_mac != record.seal_mac
                {
                    return Err(broken(n, "it does not end at the row and seal its record names"));
                }
                ended = true;
            }
        }
    }
    if !ended || rows != record.seq - record.first + 1 {
        return Err(bad(format!("segment {name} is cut short")));
    }
    if hasher.finalize()[..] != record.segment[..] {
        return Err(bad(format!("segment {name} is not the file that was archived (its SHA-256 differs)")));
    }
    check_seals(&mut seals)?;
    Ok((rows, checked, stamps))
}
