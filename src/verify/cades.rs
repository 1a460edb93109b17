//! CAdES / CMS `SignedData`: each signer's signed attributes (content-type,
//! message-digest over the content, ESS signing-certificate naming the
//! signer's certificate), its signature, its certificate's HPKI policy, its
//! signature time-stamp (over the signature value) and archive time-stamps
//! v3 (EN 319 122-1 5.5.3, with the ats-hash-index-v3 in the token: every
//! item it lists must still be there), the order of its times, and its
//! signer's path at its proven time.
//!
//! What the archive time-stamp covers is read off the bytes as they are
//! (the decoder would re-encode them), so a signature that is not DER
//! fails as a format failure rather than being validated as something else.

use std::cell::RefCell;
use std::time::SystemTime;

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::{Decode, Encode};
use inkan_keystore::DigestAlgorithm;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use super::evidence::{self, Pool, Stamp};
use super::report::{Check, Report, SignatureReport, SubIndication};
use super::trust::Trust;
use crate::signing::format::Family;
use crate::signing::signed_data::{ARCHIVE_TIME_STAMP_V3, ATS_HASH_INDEX_V3, SIGNATURE_TIME_STAMP_TOKEN};
use crate::tsa::token;

const FORMAT: &str = "CAdES (CMS SignedData)";

mod oids {
    use der::oid::ObjectIdentifier;
    pub const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
    pub const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
    pub const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
    pub const SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
    pub const SIGNING_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
    pub const SIGNING_CERTIFICATE_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
}

/// The TLVs inside a constructed TLV (each whole), or `None` if it is not DER.
pub(crate) fn children(tlv: &[u8]) -> Option<Vec<&[u8]>> {
    use der::Reader;
    let mut outer = der::SliceReader::new(tlv).ok()?;
    let header = der::Header::decode(&mut outer).ok()?;
    let value = outer.read_slice(header.length()).ok()?;
    if !outer.is_finished() {
        return None;
    }
    let mut reader = der::SliceReader::new(value).ok()?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        let start = usize::try_from(reader.position()).ok()?;
        der::asn1::AnyRef::decode(&mut reader).ok()?;
        let end = usize::try_from(reader.position()).ok()?;
        out.push(&value[start..end]);
    }
    Some(out)
}

pub(crate) fn tag(tlv: &[u8]) -> u8 {
    tlv.first().copied().unwrap_or(0)
}

/// The raw parts of a SignedData the archive time-stamp covers.
struct Raw<'a> {
    content_type: &'a [u8],
    certificates: Vec<&'a [u8]>,
    crls: Vec<&'a [u8]>,
    signer_infos: Vec<&'a [u8]>,
}

fn raw(der: &[u8]) -> Option<Raw<'_>> {
    let ci = children(der)?;
    let explicit = children(ci.get(1)?)?;
    let sd = children(explicit.first()?)?;
    if sd.len() < 4 {
        return None;
    }
    let encap = children(sd.get(2)?)?;
    let mut certificates = Vec::new();
    let mut crls = Vec::new();
    for part in &sd[3..sd.len() - 1] {
        match tag(part) {
            0xa0 => certificates = children(part)?,
            0xa1 => crls = children(part)?,
            _ => return None,
        }
    }
    Some(Raw { content_type: encap.first()?, certificates, crls, signer_infos: children(sd.last()?)? })
}

/// A CMS signature's level by what it carries, each on the one below (EN
/// 319 122-1 baselines): a signature time-stamp (B-T), CRLs besides it
/// (B-LT), an archive-time-stamp-v3 over them (B-LTA).
pub(crate) fn level(signature_timestamp: bool, crls: bool, archive_timestamp: bool) -> &'static str {
    match (signature_timestamp, crls, archive_timestamp) {
        (true, true, true) => "B-LTA",
        (true, true, false) => "B-LT",
        (true, false, _) => "B-T",
        (false, _, _) => "B-B",
    }
}

/// At most this many signers are validated in one file.
const MAX_SIGNERS: usize = 8;

/// Digests of the content, each algorithm's made once.
struct Content<'a> {
    data: Option<&'a [u8]>,
    digests: RefCell<Vec<(DigestAlgorithm, Vec<u8>)>>,
}

impl Content<'_> {
    fn digest(&self, alg: DigestAlgorithm) -> Option<Vec<u8>> {
        let data = self.data?;
        if let Some((_, d)) = self.digests.borrow().iter().find(|(a, _)| *a == alg) {
            return Some(d.clone());
        }
        let d = alg.digest(data);
        self.digests.borrow_mut().push((alg, d.clone()));
        Some(d)
    }
}

/// Validates a CMS signature (DER, or PEM `CMS`/`PKCS7`) at `at`; a
/// detached one over `content`.
pub fn validate(input: &[u8], content: Option<&[u8]>, trust: &Trust, at: SystemTime) -> Report {
    let format_failure = |why: String| {
        Report::new(FORMAT, at, Vec::new(), vec![Check::failed("structure", SubIndication::FormatFailure, why)])
    };
    let der = if input.starts_with(b"-----BEGIN") {
        match der::pem::decode_vec(input) {
            Ok((label, der)) if label == "CMS" || label == "PKCS7" => der,
            Ok((label, _)) => return format_failure(format!("a PEM {label}, not CMS or PKCS7")),
            Err(e) => return format_failure(format!("not PEM: {e}")),
        }
    } else {
        input.to_vec()
    };
    let ci = match ContentInfo::from_der(&der) {
        Ok(ci) => ci,
        Err(e) => return format_failure(format!("not a DER CMS ContentInfo: {e}")),
    };
    if ci.content_type != oids::SIGNED_DATA {
        return format_failure(format!("a CMS {}, not SignedData", ci.content_type));
    }
    let sd: SignedData = match ci.content.decode_as() {
        Ok(sd) => sd,
        Err(e) => return format_failure(format!("the SignedData: {e}")),
    };
    let Some(raw) = raw(&der) else { return format_failure("the SignedData is not DER".into()) };
    if raw.signer_infos.len() > MAX_SIGNERS {
        return format_failure(format!("{} signers; inkan validates at most {MAX_SIGNERS}", raw.signer_infos.len()));
    }
    let mut pool = Pool::new(trust);
    let mut file_checks = Vec::new();
    for c in &raw.certificates {
        if !pool.add_cert(c) {
            file_checks.push(Check::info("certificates", "an entry that is not an X.509 certificate, ignored"));
        }
    }
    for c in &raw.crls {
        if !pool.add_crl(c) {
            file_checks.push(Check::info("CRLs", "an entry that is not a CRL (OCSP?), ignored"));
        }
    }
    let attached = sd
        .encap_content_info
        .econtent
        .as_ref()
        .and_then(|e| e.to_der().ok())
        .and_then(|d| der::asn1::OctetString::from_der(&d).ok())
        .map(|o| o.as_bytes().to_vec());
    if attached.is_some() && content.is_some() {
        file_checks.push(Check::info("content", "the signature holds its content; the content given is not used"));
    }
    let content = Content { data: attached.as_deref().or(content), digests: RefCell::new(Vec::new()) };
    // Each signer as the file has it (a decoded SET OF may be in another order).
    let reports = raw
        .signer_infos
        .iter()
        .enumerate()
        .map(|(i, raw_si)| match SignerInfo::from_der(raw_si) {
            Ok(si) => signer(i, &si, raw_si, &raw, &sd, &content, &pool, trust, at),
            Err(e) => {
                let mut r = SignatureReport::new(format!("signer-{}", i + 1), Family::Cades.about().name, at);
                r.checks.push(Check::failed("structure", SubIndication::FormatFailure, format!("the SignerInfo: {e}")));
                r.conclude();
                r
            }
        })
        .collect();
    Report::new(FORMAT, at, reports, file_checks)
}

/// A signed attribute that must be there once, with one value.
fn single<'a>(
    attrs: &'a [&'a x509_cert::attr::Attribute],
    oid: der::oid::ObjectIdentifier,
) -> Result<Option<&'a der::Any>, String> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(a), None) if a.values.len() == 1 => Ok(a.values.iter().next()),
        _ => Err(format!("the signed attribute {oid} appears twice, or with several values (RFC 5652 11)")),
    }
}

#[allow(clippy::too_many_arguments)]
fn signer(
    i: usize,
    si: &SignerInfo,
    raw_si: &[u8],
    raw: &Raw<'_>,
    sd: &SignedData,
    content: &Content<'_>,
    pool: &Pool,
    trust: &Trust,
    at: SystemTime,
) -> SignatureReport {
    let mut r = SignatureReport::new(format!("signer-{}", i + 1), Family::Cades.about().name, at);
    let raw_unsigned = raw_unsigned(raw_si);
    let has = |oid: der::oid::ObjectIdentifier| {
        let der = oid.to_der().unwrap_or_default();
        raw_unsigned.iter().any(|(t, _)| *t == der.as_slice())
    };
    r.level = level(has(SIGNATURE_TIME_STAMP_TOKEN), !raw.crls.is_empty(), has(ARCHIVE_TIME_STAMP_V3));

    // The signer's certificate, by its identifier.
    let cert = pool.certs().iter().find(|c| match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            c.tbs_certificate().issuer() == &isn.issuer && c.tbs_certificate().serial_number() == &isn.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            matches!(c.tbs_certificate().get_extension::<SubjectKeyIdentifier>(), Ok(Some((_, k))) if k == *ski)
        }
    });
    let Some(cert) = cert.cloned() else {
        r.checks.push(Check::indeterminate(
            "signing certificate",
            SubIndication::NoSigningCertificateFound,
            "the SignedData does not hold the certificate the signer identifies",
        ));
        r.conclude();
        return r;
    };
    let cert_der = cert.to_der().unwrap_or_default();
    r.signer = evidence::signer(&cert_der);

    // Signed attributes: each that matters once, with one value.
    let Some(signed) = si.signed_attrs.as_ref() else {
        r.checks.push(Check::failed(
            "signed attributes",
            SubIndication::FormatFailure,
            "there are none (CAdES needs them)",
        ));
        r.conclude();
        return r;
    };
    let attrs: Vec<&x509_cert::attr::Attribute> = signed.iter().collect();
    let read = || -> Result<_, String> {
        Ok((
            single(&attrs, oids::CONTENT_TYPE)?,
            single(&attrs, oids::MESSAGE_DIGEST)?,
            single(&attrs, oids::SIGNING_TIME)?,
            single(&attrs, oids::SIGNING_CERTIFICATE_V2)?,
            single(&attrs, oids::SIGNING_CERTIFICATE)?,
        ))
    };
    let (content_type, digest, signing_time, ess_v2, ess_v1) = match read() {
        Ok(a) => a,
        Err(e) => {
            r.checks.push(Check::failed("signed attributes", SubIndication::FormatFailure, e));
            r.conclude();
            return r;
        }
    };
    let content_type = content_type.and_then(|v| v.decode_as::<der::oid::ObjectIdentifier>().ok());
    let digest = digest.and_then(|v| v.decode_as::<der::asn1::OctetString>().ok());
    let (Some(content_type), Some(digest)) = (content_type, digest) else {
        r.checks.push(Check::failed(
            "signed attributes",
            SubIndication::FormatFailure,
            "content-type or message-digest is missing",
        ));
        r.conclude();
        return r;
    };
    if content_type != sd.encap_content_info.econtent_type {
        r.checks.push(Check::failed(
            "signed attributes",
            SubIndication::FormatFailure,
            "the signed content-type is not the SignedData's",
        ));
        r.conclude();
        return r;
    }
    let claimed = signing_time.and_then(|v| v.decode_as::<x509_cert::time::Time>().ok()).map(|t| t.to_system_time());
    r.signing_time = claimed.map(super::time::rfc3339);
    if let Err(e) = token::ess_names(ess_v2, ess_v1, &cert_der) {
        r.checks.push(Check::indeterminate("signing certificate", SubIndication::NoSigningCertificateFound, e));
        r.conclude();
        return r;
    }
    r.checks.push(Check::passed(
        "signed attributes",
        "content-type, message-digest and an ESS signing-certificate naming the signer's certificate, each once",
    ));

    // The content's digest.
    let Some(alg) = DigestAlgorithm::from_oid(&si.digest_alg.oid) else {
        r.checks.push(Check::indeterminate(
            "message digest",
            SubIndication::CryptoConstraintsFailure,
            format!("digest algorithm {} is not one inkan accepts", si.digest_alg.oid),
        ));
        r.conclude();
        return r;
    };
    match content.digest(alg) {
        Some(d) if d == digest.as_bytes() => {
            r.checks.push(Check::passed("message digest", format!("{} of the content matches", alg.name())))
        }
        Some(_) => r.checks.push(Check::failed(
            "message digest",
            SubIndication::HashFailure,
            "the content's digest is not the signed message-digest: the content was changed, or is another",
        )),
        None => r.checks.push(Check::indeterminate(
            "message digest",
            SubIndication::SignedDataNotFound,
            "a detached signature: give the signed content too",
        )),
    }

    // The signature over the signed attributes.
    let signature = si.signature.as_bytes();
    match signed.to_der() {
        Ok(data) => match crate::pki::verify_cms_signature(&cert, &si.signature_algorithm, alg, &data, signature) {
            Ok(()) => r.checks.push(Check::passed("signature value", "verifies with the signer's certificate")),
            Err(crate::pki::SignatureCheck::Invalid) => r.checks.push(Check::failed(
                "signature value",
                SubIndication::SigCryptoFailure,
                "does not verify with the signer's certificate",
            )),
            Err(crate::pki::SignatureCheck::Unsupported(e)) => {
                r.checks.push(Check::indeterminate("signature value", SubIndication::CryptoConstraintsFailure, e))
            }
        },
        Err(e) => r.checks.push(Check::failed("signature value", SubIndication::FormatFailure, e.to_string())),
    }
    if !crate::pki::has_non_repudiation(&cert) {
        r.checks.push(Check::indeterminate(
            "signer's role",
            SubIndication::SigConstraintsFailure,
            "the signer's certificate lacks keyUsage nonRepudiation",
        ));
    }
    r.checks.push(match super::xades::policy_problems(&cert) {
        None => Check::passed("certificate policy", "an HPKI signing policy (1.2.392.100495.1.5.1.1.*)"),
        Some(p) => Check::indeterminate("certificate policy", SubIndication::SigConstraintsFailure, p),
    });
    if r.failed() {
        r.conclude();
        return r;
    }

    // Time-stamps, as the file has them (each TSA's path from the token's
    // certificates and the SignedData's, its CRLs from the SignedData's).
    let count: usize =
        raw_unsigned.iter().filter(|(t, _)| stamp_kind(t).is_some()).map(|(_, values)| values.len()).sum();
    if count > evidence::MAX_STAMPS {
        r.checks.push(Check::failed(
            "time-stamps",
            SubIndication::FormatFailure,
            format!("{count} time-stamps; inkan reads at most {}", evidence::MAX_STAMPS),
        ));
        r.conclude();
        return r;
    }
    let mut stamps: Vec<Stamp> = Vec::new();
    // Per stamp: what an archive time-stamp's index hashes for it, and
    // (archive ones) the index's hashes of unsigned attribute values.
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    let mut indexed: Vec<Option<(DigestAlgorithm, Vec<Vec<u8>>)>> = Vec::new();
    for (attr_type, values) in &raw_unsigned {
        let Some(kind) = stamp_kind(attr_type) else { continue };
        for value in values {
            let (stamp, index) = if kind == "signature" {
                (evidence::timestamp(pool, &trust.tsa_anchors, kind, value, signature, &mut r.checks), None)
            } else {
                match archive_input(value, raw, raw_si, &raw_unsigned, content, alg, digest.as_bytes()) {
                    Ok((input, index_alg, hashes)) => (
                        evidence::timestamp(pool, &trust.tsa_anchors, kind, value, &input, &mut r.checks),
                        Some((index_alg, hashes)),
                    ),
                    Err(e) => {
                        r.checks
                            .push(Check::failed("archive time-stamp", SubIndication::FormatFailure, e).not_deciding());
                        continue;
                    }
                }
            };
            stamps.push(stamp);
            inputs.push([*attr_type, *value].concat());
            indexed.push(index);
        }
    }
    // What each archive time-stamp covers: the stamps its index lists.
    for j in 0..stamps.len() {
        if let Some((index_alg, hashes)) = &indexed[j] {
            let listed =
                (0..stamps.len()).filter(|k| *k != j && hashes.contains(&index_alg.digest(&inputs[*k]))).collect();
            stamps[j].covers = evidence::Covers::Listed(listed);
        }
    }
    // Signature time-stamps first, then archive time-stamps in time order.
    let mut order: Vec<usize> = (0..stamps.len()).collect();
    order.sort_by_key(|k| (stamps[*k].kind == "archive", stamps[*k].time));
    let position: Vec<usize> = (0..stamps.len()).map(|k| order.iter().position(|o| *o == k).unwrap_or(k)).collect();
    let mut sorted: Vec<Stamp> = order.iter().map(|k| stamps[*k].clone()).collect();
    for s in &mut sorted {
        if let evidence::Covers::Listed(list) = &mut s.covers {
            *list = list.iter().map(|k| position[*k]).collect();
        }
    }
    let proven = super::xades::conclude_times(pool, &mut r, &sorted, at, at);
    r.checks.push(super::xades::order(None, &sorted));
    if let (Some(claimed), Some(first)) =
        (claimed, sorted.iter().filter(|s| s.kind == "signature").filter_map(|s| s.time).min())
    {
        if claimed > first {
            r.checks.push(Check::indeterminate(
                "time order",
                SubIndication::TimestampOrderFailure,
                "the signed signing-time is after the signature time-stamp",
            ));
        }
    }
    evidence::signer_chain(pool, &cert, &trust.anchors, proven.unwrap_or(at), proven.is_some(), &mut r.checks);
    r.conclude();
    r
}

/// `signature` or `archive` for the attribute types of time-stamps.
fn stamp_kind(attr_type: &[u8]) -> Option<&'static str> {
    let oid = der::oid::ObjectIdentifier::from_der(attr_type).ok()?;
    if oid == SIGNATURE_TIME_STAMP_TOKEN {
        Some("signature")
    } else if oid == ARCHIVE_TIME_STAMP_V3 {
        Some("archive")
    } else {
        None
    }
}

/// The signer's unsigned attributes as they are in the bytes: each
/// attribute's type and values (whole TLVs).
fn raw_unsigned(raw_si: &[u8]) -> Vec<(&[u8], Vec<&[u8]>)> {
    let Some(fields) = children(raw_si) else { return Vec::new() };
    let Some(unsigned) = fields.iter().find(|f| tag(f) == 0xa1) else { return Vec::new() };
    children(unsigned)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|attr| {
            let parts = children(attr)?;
            Some((*parts.first()?, children(parts.get(1)?)?))
        })
        .collect()
}

/// The input of an archive-time-stamp-v3 `token` (EN 319 122-1 5.5.3): the
/// eContentType, the content's digest with the token's algorithm, the
/// signer's fields but its unsigned attributes, and the ats-hash-index-v3
/// the token carries, every entry of which must name an item still there.
/// With the index's algorithm and its hashes of unsigned attribute values
/// (what it covers).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn archive_input(
    token_der: &[u8],
    raw: &Raw<'_>,
    raw_si: &[u8],
    raw_unsigned: &[(&[u8], Vec<&[u8]>)],
    content: &Content<'_>,
    signer_alg: DigestAlgorithm,
    message_digest: &[u8],
) -> Result<(Vec<u8>, DigestAlgorithm, Vec<Vec<u8>>), String> {
    let info = token::tst_info(token_der).map_err(|e| e.0)?;
    let alg = DigestAlgorithm::from_oid(&info.message_imprint.hash_algorithm.oid)
        .ok_or("its imprint's algorithm is not one inkan checks")?;
    let index = hash_index(token_der)?;
    let parts = children(&index).ok_or("its ats-hash-index-v3 is not DER")?;
    let (index_alg, lists) = match parts.as_slice() {
        [a, c, l, u] => {
            let a = spki::AlgorithmIdentifierOwned::from_der(a).map_err(|e| format!("hashIndAlgorithm: {e}"))?;
            (DigestAlgorithm::from_oid(&a.oid).ok_or("hashIndAlgorithm is not one inkan checks")?, [*c, *l, *u])
        }
        [c, l, u] => (DigestAlgorithm::Sha256, [*c, *l, *u]),
        _ => return Err("its ats-hash-index-v3 does not have three lists".into()),
    };
    if index_alg != alg {
        return Err("the hash index's algorithm is not the time-stamp's".into());
    }
    let held: [Vec<Vec<u8>>; 3] = [
        raw.certificates.iter().map(|c| alg.digest(c)).collect(),
        raw.crls.iter().map(|c| alg.digest(c)).collect(),
        raw_unsigned
            .iter()
            .flat_map(|(t, values)| values.iter().map(move |v| alg.digest(&[*t, *v].concat())))
            .collect(),
    ];
    let mut unsigned_hashes = Vec::new();
    for (n, ((list, held), what)) in
        lists.iter().zip(&held).zip(["certificate", "CRL", "unsigned attribute value"]).enumerate()
    {
        for entry in children(list).ok_or("a hash list is not DER")? {
            let hash = der::asn1::OctetString::from_der(entry).map_err(|e| e.to_string())?;
            if !held.iter().any(|h| h.as_slice() == hash.as_bytes()) {
                return Err(format!("its hash index lists a {what} the signature no longer holds"));
            }
            if n == 2 {
                unsigned_hashes.push(hash.as_bytes().to_vec());
            }
        }
    }
    let content_digest = match content.digest(alg) {
        Some(d) => d,
        None if alg == signer_alg => message_digest.to_vec(),
        None => return Err("a detached signature: give the signed content to check its archive time-stamp".into()),
    };
    let fields = children(raw_si).ok_or("the SignerInfo is not DER")?;
    let mut input = raw.content_type.to_vec();
    input.extend_from_slice(&content_digest);
    for f in fields.iter().filter(|f| tag(f) != 0xa1) {
        input.extend_from_slice(f);
    }
    input.extend_from_slice(&index);
    Ok((input, alg, unsigned_hashes))
}

/// The ats-hash-index-v3 in a time-stamp token's unsigned attributes (DER):
/// exactly one.
fn hash_index(token_der: &[u8]) -> Result<Vec<u8>, String> {
    let ci = ContentInfo::from_der(token_der).map_err(|e| e.to_string())?;
    let sd: SignedData = ci.content.decode_as().map_err(|e: der::Error| e.to_string())?;
    let si = sd.signer_infos.0.iter().next().ok_or("the token has no signer")?;
    let mut found = si.unsigned_attrs.iter().flat_map(|a| a.iter()).filter(|a| a.oid == ATS_HASH_INDEX_V3);
    match (found.next(), found.next()) {
        (Some(a), None) if a.values.len() == 1 => a
            .values
            .iter()
            .next()
            .and_then(|v| v.to_der().ok())
            .ok_or_else(|| "its hash index does not encode".to_owned()),
        (None, _) => Err("its token carries no ats-hash-index-v3".into()),
        _ => Err("its token carries more than one ats-hash-index-v3".into()),
    }
}
