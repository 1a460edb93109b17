//! The seam between extension and a signature format: what extension
//! reads of a signature, and the parts it adds, in the format's own form.

use inkan_keystore::DigestAlgorithm;

use crate::error::Result;
use crate::signing::format::{ArchiveStamp, Level, ValidationData};
use crate::tsa::Checked;

/// A signature being extended, in its format.
pub trait Extendable: Send {
    /// `XAdES` or `CAdES`.
    fn format(&self) -> &'static str;
    /// The level it has now.
    fn level(&self) -> Level;
    /// The signer's certificate (DER).
    fn signer_certificate(&self) -> Result<Vec<u8>>;
    /// Every certificate it carries (DER).
    fn certificates(&self) -> Vec<Vec<u8>>;
    /// What a signature time-stamp covers (its SHA-256 is stamped).
    fn signature_timestamp_input(&self) -> Result<Vec<u8>>;
    /// Its signature time-stamp token, if it has one.
    fn signature_timestamp(&self) -> Result<Option<Vec<u8>>>;
    /// Its newest archive time-stamp token, if it has one.
    fn newest_archive_timestamp(&self) -> Result<Option<Vec<u8>>>;
    /// Adds a signature time-stamp.
    fn add_signature_timestamp(&mut self, stamp: &Checked) -> Result<()>;
    /// Adds the validation data of B-LT.
    fn add_long_term(&mut self, data: &ValidationData) -> Result<()>;
    /// Adds the newest archive time-stamp's TSA path and current CRLs (renewal).
    fn add_archive_validation(&mut self, path: &[Vec<u8>], crls: &[Vec<u8>]) -> Result<()>;
    /// What an archive time-stamp over all of it covers, and with which digest.
    fn archive_timestamp_input(&self) -> Result<(DigestAlgorithm, Vec<u8>)>;
    /// Adds an archive time-stamp (made over [`Self::archive_timestamp_input`]).
    fn add_archive_timestamp(&mut self, archive: &ArchiveStamp) -> Result<()>;
    /// The file, extended.
    fn into_bytes(self: Box<Self>) -> Result<Vec<u8>>;
}
