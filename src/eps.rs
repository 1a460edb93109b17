//! Japan's electronic prescriptions (電子処方箋) and dispensing records
//! (調剤結果): the documents inkan signs with XAdES in the national profile
//! (`signing::xades` builds the signature), and the rules around them.
//!
//! - [`kind`]: a prescription, signed by a doctor or dentist into
//!   `<PrescriptionSign>`, or a dispensing record, signed by a pharmacist into
//!   `<DispensingSign>` over the doctor's signed prescription.
//! - [`document`]: a whole document as a signing system sends it: its kind,
//!   Reference 1's digest, where the signature goes, the ids it holds.
//! - [`csv`]: the prescription CSV (`SJ1`) and the minimal document made from it.
//! - [`check`]: whether a signature already in a document verifies (the
//!   doctor's, before a pharmacist signs over it).
//! - [`dispensing`]: a dispensing record made over a signed prescription.

pub mod archive;
pub mod check;
pub mod csv;
pub mod dispensing;
pub mod document;
pub mod kind;

pub use document::Document;
pub use kind::Kind;
