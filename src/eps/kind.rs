//! What an e-prescription signature is over, and who may sign it.

use crate::error::{Error, Forbidden, Result};
use crate::pki::profile::Qualification;

/// What an e-prescription signature is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A prescription (処方箋), signed by a doctor or dentist.
    Prescription,
    /// A dispensing record (調剤結果), signed by a pharmacist.
    Dispensing,
}

impl Kind {
    /// The name in the API and the audit log (`prescription`, `dispensing`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Prescription => "prescription",
            Kind::Dispensing => "dispensing",
        }
    }

    /// The signature's `Id`, which is also the name of the element it goes
    /// into (`PrescriptionSign`, `DispensingSign`).
    pub fn signature_id(self) -> &'static str {
        match self {
            Kind::Prescription => "PrescriptionSign",
            Kind::Dispensing => "DispensingSign",
        }
    }

    /// The `id` Reference 1 points to (`PrescriptionDocument`, `Dispensing`),
    /// which is also the name of its element, beside the signature's slot.
    pub fn target_id(self) -> &'static str {
        match self {
            Kind::Prescription => "PrescriptionDocument",
            Kind::Dispensing => "Dispensing",
        }
    }

    /// The first field of the document's CSV (`SJ1`, `CJ1`).
    pub fn csv_tag(self) -> &'static str {
        match self {
            Kind::Prescription => "SJ1",
            Kind::Dispensing => "CJ1",
        }
    }

    /// The CSC `signatureQualifier` that names this kind in hash mode.
    pub fn signature_qualifier(self) -> &'static str {
        match self {
            Kind::Prescription => "jp_eps_prescription",
            Kind::Dispensing => "jp_eps_dispensing",
        }
    }

    /// The hcRole values of certificates that may sign this kind.
    pub fn signer_roles(self) -> &'static [&'static str] {
        match self {
            Kind::Prescription => &["Medical Doctor", "Dentist"],
            Kind::Dispensing => &["Pharmacist"],
        }
    }

    /// Whether a user of this qualification may sign this kind.
    pub fn permits(self, qualification: Qualification) -> bool {
        match self {
            Kind::Prescription => matches!(qualification, Qualification::Doctor | Qualification::Dentist),
            Kind::Dispensing => qualification == Qualification::Pharmacist,
        }
    }

    /// Checks that a user of `qualification` whose certificate names
    /// `hc_role` may sign this kind: both must allow it (a prescription: a
    /// doctor or dentist; a dispensing record: a pharmacist).
    pub fn check_signer(self, qualification: &str, hc_role: Option<&str>) -> Result<()> {
        let forbidden = |why: String| Error::Forbidden(Forbidden::Role, why);
        let q: Qualification = qualification.parse().map_err(|_| {
            forbidden(format!("the user's qualification {qualification:?} may not sign a {}", self.as_str()))
        })?;
        if !self.permits(q) {
            return Err(forbidden(format!(
                "a {} is signed by {}; this user is a {} ({})",
                self.as_str(),
                match self {
                    Kind::Prescription => "a doctor or dentist",
                    Kind::Dispensing => "a pharmacist",
                },
                q.as_str(),
                q.japanese()
            )));
        }
        match hc_role {
            Some(role) if self.signer_roles().contains(&role) && role == q.hc_role() => Ok(()),
            Some(role) => Err(forbidden(format!(
                "the signing certificate's hcRole is {role:?}, which does not match the user's qualification \
                 ({}) for a {}: import a certificate issued for the right qualification",
                q.as_str(),
                self.as_str()
            ))),
            None => Err(forbidden(format!(
                "the signing certificate names no hcRole, so it may not sign a {}: import an HPKI signing certificate",
                self.as_str()
            ))),
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "prescription" | "jp_eps_prescription" => Ok(Kind::Prescription),
            "dispensing" | "jp_eps_dispensing" => Ok(Kind::Dispensing),
            other => Err(Error::Invalid(format!("kind must be prescription or dispensing, not {other:?}"))),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_doctors_and_dentists_prescribe_and_only_pharmacists_dispense() {
        assert!(Kind::Prescription.check_signer("doctor", Some("Medical Doctor")).is_ok());
        assert!(Kind::Prescription.check_signer("dentist", Some("Dentist")).is_ok());
        assert!(Kind::Dispensing.check_signer("pharmacist", Some("Pharmacist")).is_ok());
        for (kind, q, role) in [
            (Kind::Prescription, "pharmacist", Some("Pharmacist")),
            (Kind::Dispensing, "doctor", Some("Medical Doctor")),
            // The certificate and the user disagree.
            (Kind::Prescription, "doctor", Some("Pharmacist")),
            (Kind::Prescription, "doctor", Some("Dentist")),
            (Kind::Prescription, "doctor", None),
        ] {
            let e = kind.check_signer(q, role).expect_err("refused");
            assert!(matches!(e, Error::Forbidden(Forbidden::Role, _)), "{e}");
        }
    }
}
