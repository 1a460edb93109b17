//! The names of audit events: each written once, here.

use serde::Serialize;

/// Every kind of audit row: its name in the log (`as_str`) is written once,
/// here, and read back by people and tools (`inkan audit tail`, archives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Name {
    /// `user.add`
    #[serde(rename = "user.add")]
    UserAdd,
    /// `user.enable`
    #[serde(rename = "user.enable")]
    UserEnable,
    /// `user.disable`
    #[serde(rename = "user.disable")]
    UserDisable,
    /// `key.generate`
    #[serde(rename = "key.generate")]
    KeyGenerate,
    /// `key.rotate`
    #[serde(rename = "key.rotate")]
    KeyRotate,
    /// `key.activate`
    #[serde(rename = "key.activate")]
    KeyActivate,
    /// `key.retire`
    #[serde(rename = "key.retire")]
    KeyRetire,
    /// `key.refused`
    #[serde(rename = "key.refused")]
    KeyRefused,
    /// `kek.create`
    #[serde(rename = "kek.create")]
    KekCreate,
    /// `kek.rewrap`
    #[serde(rename = "kek.rewrap")]
    KekRewrap,
    /// `sign`
    #[serde(rename = "sign")]
    Sign,
    /// `sign.undelivered`
    #[serde(rename = "sign.undelivered")]
    SignUndelivered,
    /// `signature.extend`
    #[serde(rename = "signature.extend")]
    SignatureExtend,
    /// `session.open`
    #[serde(rename = "session.open")]
    SessionOpen,
    /// `session.logout`
    #[serde(rename = "session.logout")]
    SessionLogout,
    /// `session.revoke`
    #[serde(rename = "session.revoke")]
    SessionRevoke,
    /// `client.add`
    #[serde(rename = "client.add")]
    ClientAdd,
    /// `client.remove`
    #[serde(rename = "client.remove")]
    ClientRemove,
    /// `hpki.map`
    #[serde(rename = "hpki.map")]
    HpkiMap,
    /// `hpki.map_subject`
    #[serde(rename = "hpki.map_subject")]
    HpkiMapSubject,
    /// `hpki.unmap`
    #[serde(rename = "hpki.unmap")]
    HpkiUnmap,
    /// `hpki.unmap_subject`
    #[serde(rename = "hpki.unmap_subject")]
    HpkiUnmapSubject,
    /// `jpki.link`
    #[serde(rename = "jpki.link")]
    JpkiLink,
    /// `jpki.unlink`
    #[serde(rename = "jpki.unlink")]
    JpkiUnlink,
    /// `jpki.renew`
    #[serde(rename = "jpki.renew")]
    JpkiRenew,
    /// `fido.register`
    #[serde(rename = "fido.register")]
    FidoRegister,
    /// `fido.replace`
    #[serde(rename = "fido.replace")]
    FidoReplace,
    /// `fido.remove`
    #[serde(rename = "fido.remove")]
    FidoRemove,
    /// `fido.signin`
    #[serde(rename = "fido.signin")]
    FidoSignin,
    /// `regcode.issue`
    #[serde(rename = "regcode.issue")]
    RegcodeIssue,
    /// `regcode.lock`
    #[serde(rename = "regcode.lock")]
    RegcodeLock,
    /// `regcode.revoke`
    #[serde(rename = "regcode.revoke")]
    RegcodeRevoke,
    /// `audit.seal_refusal_cleared`
    #[serde(rename = "audit.seal_refusal_cleared")]
    AuditSealRefusalCleared,
    /// `audit.archive`
    #[serde(rename = "audit.archive")]
    AuditArchive,
}

impl Name {
    /// Every name, in the order above.
    pub const ALL: &'static [Name] = &[
        Name::UserAdd,
        Name::UserEnable,
        Name::UserDisable,
        Name::KeyGenerate,
        Name::KeyRotate,
        Name::KeyActivate,
        Name::KeyRetire,
        Name::KeyRefused,
        Name::KekCreate,
        Name::KekRewrap,
        Name::Sign,
        Name::SignUndelivered,
        Name::SignatureExtend,
        Name::SessionOpen,
        Name::SessionLogout,
        Name::SessionRevoke,
        Name::ClientAdd,
        Name::ClientRemove,
        Name::HpkiMap,
        Name::HpkiMapSubject,
        Name::HpkiUnmap,
        Name::HpkiUnmapSubject,
        Name::JpkiLink,
        Name::JpkiUnlink,
        Name::JpkiRenew,
        Name::FidoRegister,
        Name::FidoReplace,
        Name::FidoRemove,
        Name::FidoSignin,
        Name::RegcodeIssue,
        Name::RegcodeLock,
        Name::RegcodeRevoke,
        Name::AuditSealRefusalCleared,
        Name::AuditArchive,
    ];

    /// The name as the log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Name::UserAdd => "user.add",
            Name::UserEnable => "user.enable",
            Name::UserDisable => "user.disable",
            Name::KeyGenerate => "key.generate",
            Name::KeyRotate => "key.rotate",
            Name::KeyActivate => "key.activate",
            Name::KeyRetire => "key.retire",
            Name::KeyRefused => "key.refused",
            Name::KekCreate => "kek.create",
            Name::KekRewrap => "kek.rewrap",
            Name::Sign => "sign",
            Name::SignUndelivered => "sign.undelivered",
            Name::SignatureExtend => "signature.extend",
            Name::SessionOpen => "session.open",
            Name::SessionLogout => "session.logout",
            Name::SessionRevoke => "session.revoke",
            Name::ClientAdd => "client.add",
            Name::ClientRemove => "client.remove",
            Name::HpkiMap => "hpki.map",
            Name::HpkiMapSubject => "hpki.map_subject",
            Name::HpkiUnmap => "hpki.unmap",
            Name::HpkiUnmapSubject => "hpki.unmap_subject",
            Name::JpkiLink => "jpki.link",
            Name::JpkiUnlink => "jpki.unlink",
            Name::JpkiRenew => "jpki.renew",
            Name::FidoRegister => "fido.register",
            Name::FidoReplace => "fido.replace",
            Name::FidoRemove => "fido.remove",
            Name::FidoSignin => "fido.signin",
            Name::RegcodeIssue => "regcode.issue",
            Name::RegcodeLock => "regcode.lock",
            Name::RegcodeRevoke => "regcode.revoke",
            Name::AuditSealRefusalCleared => "audit.seal_refusal_cleared",
            Name::AuditArchive => "audit.archive",
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    #[test]
    fn every_audit_name_is_written_once_and_serialised_as_written() {
        let mut seen = std::collections::BTreeSet::new();
        for name in Name::ALL {
            let text = name.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(text.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'), "{text}");
            assert_eq!(serde_json::to_value(name).ok(), Some(serde_json::Value::from(text)));
            assert_eq!(name.to_string(), text);
        }
        assert_eq!(seen.len(), 34, "a new name goes into Name::ALL too");
    }
}
