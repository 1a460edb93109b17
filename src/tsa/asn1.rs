//! The ASN.1 of RFC 3161 (Time-Stamp Protocol) on inkan's der 0.8 stack
//! (RustCrypto's `x509-tsp` is published for der 0.7 only): requests are
//! encoded with der's derive, responses and `TSTInfo` are read by hand, so
//! that what TSAs actually send (a `genTime` with fractions of a second,
//! fields in any optional combination) is taken and checked field by field.

use std::time::{Duration, SystemTime};

use der::asn1::{AnyRef, Int, ObjectIdentifier, OctetString, Uint};
use der::{Decode, Encode, Reader, Sequence, SliceReader, Tag, Tagged};
use spki::AlgorithmIdentifierOwned;

/// What is wrong with a TSA's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(what: &str) -> impl Fn(der::Error) -> Malformed + '_ {
    move |e| Malformed(format!("{what}: {e}"))
}

/// ```text
/// MessageImprint ::= SEQUENCE {
///      hashAlgorithm                AlgorithmIdentifier,
///      hashedMessage                OCTET STRING  }
/// ```
/// (RFC 3161 §2.4.1)
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct MessageImprint {
    /// The hash algorithm.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// The hash of the data to be timestamped.
    pub hashed_message: OctetString,
}

/// ```text
/// TimeStampReq ::= SEQUENCE  {
///    version                      INTEGER  { v1(1) },
///    messageImprint               MessageImprint,
///    reqPolicy             TSAPolicyId              OPTIONAL,
///    nonce                 INTEGER                  OPTIONAL,
///    certReq               BOOLEAN                  DEFAULT FALSE,
///    extensions            [0] IMPLICIT Extensions  OPTIONAL  }
/// ```
/// (RFC 3161 §2.4.1; no extensions are sent)
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TimeStampReq {
    /// 1.
    pub version: u8,
    /// What is stamped.
    pub message_imprint: MessageImprint,
    /// The policy asked for, if any.
    #[asn1(optional = "true")]
    pub req_policy: Option<ObjectIdentifier>,
    /// A random number the answer must repeat.
    #[asn1(optional = "true")]
    pub nonce: Option<Uint>,
    /// Whether the TSA puts its certificate into the token.
    #[asn1(default = "Default::default")]
    pub cert_req: bool,
}

/// `PKIStatusInfo` (RFC 3161 §2.4.2): the status, its text, the failure bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusInfo {
    /// 0 granted, 1 grantedWithMods, 2 rejection, 3 waiting, 4 revocationWarning,
    /// 5 revocationNotification.
    pub status: i64,
    /// `statusString`, joined.
    pub text: Option<String>,
    /// `failInfo`, as its bits' names.
    pub fail: Vec<&'static str>,
}

impl StatusInfo {
    /// Whether a token was granted (with or without modifications).
    pub fn granted(&self) -> bool {
        self.status == 0 || self.status == 1
    }

    /// The status said in words, for an error.
    pub fn describe(&self) -> String {
        let name = match self.status {
            0 => "granted",
            1 => "grantedWithMods",
            2 => "rejection",
            3 => "waiting",
            4 => "revocationWarning",
            5 => "revocationNotification",
            _ => "an unknown status",
        };
        let mut out = format!("{name} ({})", self.status);
        if !self.fail.is_empty() {
            out.push_str(&format!(", failInfo {}", self.fail.join(" ")));
        }
        if let Some(t) = &self.text {
            out.push_str(&format!(": {t:?}"));
        }
        out
    }
}

/// ```text
/// TimeStampResp ::= SEQUENCE  {
///      status                  PKIStatusInfo,
///      timeStampToken          TimeStampToken     OPTIONAL  }
/// ```
/// The token is kept as its DER (a `ContentInfo`).
#[derive(Clone, Debug)]
pub struct TimeStampResp {
    /// The status.
    pub status: StatusInfo,
    /// The token (DER of a `ContentInfo`).
    pub token: Option<Vec<u8>>,
}

const FAIL_BITS: [&str; 26] = [
    "badAlg",
    "1",
    "badRequest",
    "3",
    "4",
    "badDataFormat",
    "6",
    "7",
    "8",
    "9",
    "10",
    "11",
    "12",
    "13",
    "timeNotAvailable",
    "unacceptedPolicy",
    "unacceptedExtension",
    "addInfoNotAvailable",
    "18",
    "19",
    "20",
    "21",
    "22",
    "23",
    "24",
    "systemFailure",
];

impl TimeStampResp {
    /// Reads a response (DER, nothing after it).
    pub fn from_der(der: &[u8]) -> Result<TimeStampResp, Malformed> {
        let mut reader = SliceReader::new(der).map_err(malformed("the TSA's answer"))?;
        let resp = reader
            .sequence(|r| {
                let status = r.sequence(|s| {
                    // PKIStatus: 0 to 5 (any other number is refused below).
                    let status = Int::decode(s)?;
                    let status = match status.as_bytes() {
                        [n] if *n < 0x80 => i64::from(*n),
                        _ => -1,
                    };
                    let mut text = None;
                    let mut fail = Vec::new();
                    while !s.is_finished() {
                        let any = AnyRef::decode(s)?;
                        match any.tag() {
                            Tag::Sequence => {
                                let mut strings = Vec::new();
                                let mut inner = SliceReader::new(any.value())?;
                                while !inner.is_finished() {
                                    let u = AnyRef::decode(&mut inner)?;
                                    strings.push(String::from_utf8_lossy(u.value()).into_owned());
                                }
                                text = Some(strings.join("; "));
                            }
                            Tag::BitString => {
                                let bits = any.value();
                                for (i, name) in FAIL_BITS.iter().enumerate() {
                                    let (byte, bit) = (1 + i / 8, 7 - i % 8);
                                    if bits.get(byte).is_some_and(|b| b & (1 << bit) != 0) {
                                        fail.push(*name);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    Ok::<_, der::Error>(StatusInfo { status, text, fail })
                })?;
                let token = if r.is_finished() { None } else { Some(AnyRef::decode(r)?.to_der()?) };
                Ok::<_, der::Error>(TimeStampResp { status, token })
            })
            .map_err(malformed("the TSA's answer is not a TimeStampResp"))?;
        reader.finish().map_err(malformed("the TSA's answer has bytes after the TimeStampResp"))?;
        Ok(resp)
    }
}

/// The fields of a `TSTInfo` inkan checks (RFC 3161 §2.4.2):
///
/// ```text
/// TSTInfo ::= SEQUENCE  {
///    version                      INTEGER  { v1(1) },
///    policy                       TSAPolicyId,
///    messageImprint               MessageImprint,
///    serialNumber                 INTEGER,
///    genTime                      GeneralizedTime,
///    accuracy                     Accuracy                 OPTIONAL,
///    ordering                     BOOLEAN             DEFAULT FALSE,
///    nonce                        INTEGER                  OPTIONAL,
///    tsa                          [0] GeneralName          OPTIONAL,
///    extensions                   [1] IMPLICIT Extensions   OPTIONAL  }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TstInfo {
    /// The TSA's policy.
    pub policy: ObjectIdentifier,
    /// What was stamped.
    pub message_imprint: MessageImprint,
    /// The token's serial number (big-endian bytes).
    pub serial: Vec<u8>,
    /// The time, as the TSA wrote it (`YYYYMMDDhhmmss[.f]Z`).
    pub gen_time_text: String,
    /// The time (fractions of a second kept to the microsecond).
    pub gen_time: SystemTime,
    /// The nonce (big-endian bytes, as encoded), if any.
    pub nonce: Option<Vec<u8>>,
}

impl TstInfo {
    /// Reads a `TSTInfo` (DER).
    pub fn from_der(der: &[u8]) -> Result<TstInfo, Malformed> {
        let mut reader = SliceReader::new(der).map_err(malformed("TSTInfo"))?;
        let info = reader
            .sequence(|r| {
                let version = Int::decode(r)?;
                if version.as_bytes() != [1] {
                    return Err(der::Error::from(der::ErrorKind::Value { tag: Tag::Integer }));
                }
                let policy = ObjectIdentifier::decode(r)?;
                let message_imprint = MessageImprint::decode(r)?;
                let serial = Int::decode(r)?.as_bytes().to_vec();
                let time = AnyRef::decode(r)?;
                if time.tag() != Tag::GeneralizedTime {
                    return Err(der::Error::from(der::ErrorKind::Value { tag: Tag::GeneralizedTime }));
                }
                let gen_time_text = String::from_utf8_lossy(time.value()).into_owned();
                let mut nonce = None;
                while !r.is_finished() {
                    let any = AnyRef::decode(r)?;
                    if any.tag() == Tag::Integer {
                        nonce = Some(any.value().to_vec());
                    }
                }
                Ok::<_, der::Error>((policy, message_imprint, serial, gen_time_text, nonce))
            })
            .map_err(malformed("TSTInfo"))?;
        reader.finish().map_err(malformed("TSTInfo"))?;
        let (policy, message_imprint, serial, gen_time_text, nonce) = info;
        let gen_time = generalized_time(&gen_time_text)
            .ok_or_else(|| Malformed(format!("TSTInfo: genTime {gen_time_text:?} is not a GeneralizedTime in UTC")))?;
        Ok(TstInfo { policy, message_imprint, serial, gen_time_text, gen_time, nonce })
    }
}

/// A GeneralizedTime in UTC as RFC 3161 allows it: `YYYYMMDDhhmmss`, an
/// optional fraction without trailing zeros, `Z`.
pub fn generalized_time(text: &str) -> Option<SystemTime> {
    let body = text.strip_suffix('Z')?;
    let (whole, fraction) = match body.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) && !f.ends_with('0') => (w, Some(f)),
        Some(_) => return None,
        None => (body, None),
    };
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| whole[r].parse::<u16>().ok();
    let dt = der::DateTime::new(
        n(0..4)?,
        n(4..6)? as u8,
        n(6..8)? as u8,
        n(8..10)? as u8,
        n(10..12)? as u8,
        n(12..14)? as u8,
    )
    .ok()?;
    let mut t = dt.to_system_time();
    if let Some(f) = fraction {
        let micros: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
        t += Duration::from_micros(micros.parse().ok()?);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_times_with_fractions() {
        let t = generalized_time("20220907081825.197Z").expect("time");
        let base = generalized_time("20220907081825Z").expect("time");
        assert_eq!(t.duration_since(base).expect("after"), Duration::from_millis(197));
        for bad in ["20220907081825", "20220907081825.Z", "20220907081825.10Z", "2022090708182Z", "20221307081825Z"] {
            assert!(generalized_time(bad).is_none(), "{bad}");
        }
    }
}
