//! What a validation trusts: pinned anchors for signers and for TSAs, and
//! CRLs besides those a signature carries.

use std::path::PathBuf;

use x509_cert::Certificate;

use crate::error::{Error, Result};

/// What a validation trusts.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// The anchors of signers' certificates (for HPKI: the MHLW root).
    pub anchors: Vec<Certificate>,
    /// The anchors of TSAs' certificates.
    pub tsa_anchors: Vec<Certificate>,
    /// CRLs besides those a signature carries (DER).
    pub crls: Vec<Vec<u8>>,
    /// CA certificates a path may go through besides those a signature
    /// carries (DER; `[pki] signing_ca` and `chain`): never anchors.
    pub intermediates: Vec<Vec<u8>>,
}

fn certificates(paths: &[PathBuf], what: &str) -> Result<Vec<Certificate>> {
    let mut out = Vec::new();
    for p in paths {
        for der in crate::pki::read_certificates(p).map_err(|e| Error::Invalid(format!("{what}: {e}")))? {
            out.push(
                <Certificate as der::Decode>::from_der(&der)
                    .map_err(|e| Error::Invalid(format!("{what} {}: {e}", p.display())))?,
            );
        }
    }
    Ok(out)
}

impl Trust {
    /// Reads the anchors (PEM or DER certificate files) and CRL files (PEM
    /// or DER). Signers' anchors are required: without them nothing can be
    /// trusted.
    pub fn load(anchors: &[PathBuf], tsa_anchors: &[PathBuf], crls: &[PathBuf]) -> Result<Trust> {
        if anchors.is_empty() {
            return Err(Error::Invalid(
                "no trust anchors for signers: give --anchor PEM, or set [verify] anchors (INKAN_VERIFY_ANCHORS)"
                    .into(),
            ));
        }
        let mut crl_ders = Vec::new();
        for p in crls {
            let bytes = std::fs::read(p).map_err(|e| Error::Invalid(format!("CRL {}: {e}", p.display())))?;
            let der = if bytes.starts_with(b"-----") {
                der::pem::decode_vec(&bytes)
                    .map(|(_, d)| d)
                    .map_err(|e| Error::Invalid(format!("CRL {}: {e}", p.display())))?
            } else {
                bytes
            };
            crl_ders.push(der);
        }
        Ok(Trust {
            anchors: certificates(anchors, "anchor")?,
            tsa_anchors: certificates(tsa_anchors, "TSA anchor")?,
            crls: crl_ders,
            intermediates: Vec::new(),
        })
    }
}

impl Trust {
    /// What `[verify]` trusts: its anchors, its TSA anchors (else `[tsa]
    /// ca`), and the CRL files of `[pki] crls`. Flags given on the command
    /// line replace them (`anchors`, `tsa_anchors`; `crls` add to them).
    /// The CA certificates inkan puts into its own signatures (`[pki]
    /// signing_ca`, `chain`) may complete a path: a signature that carries
    /// only its signer's certificate (XAdES at B-B) still reaches an anchor.
    pub fn from_config(
        config: &crate::config::Config,
        anchors: &[PathBuf],
        tsa_anchors: &[PathBuf],
        crls: &[PathBuf],
    ) -> Result<Trust> {
        let pick = |given: &[PathBuf], configured: &[PathBuf]| {
            if given.is_empty() {
                configured.to_vec()
            } else {
                given.to_vec()
            }
        };
        let anchors = pick(anchors, &config.verify.anchors);
        let tsa_configured =
            if config.verify.tsa_anchors.is_empty() { &config.tsa.ca } else { &config.verify.tsa_anchors };
        let tsa_anchors = pick(tsa_anchors, tsa_configured);
        let mut all_crls = config.pki.crls.clone();
        all_crls.extend_from_slice(crls);
        let mut trust = Trust::load(&anchors, &tsa_anchors, &all_crls)?;
        // Missing files are the service's to refuse at start; a validation
        // on an operator's machine goes on without them.
        trust.intermediates = crate::keys::chain(config).unwrap_or_default();
        Ok(trust)
    }
}
