//! `inkan verify`: a signature validated on the operator's machine, as the
//! service validates it (no store, no token).

use std::path::PathBuf;

use super::context::{CliError, Ctx, Output};
use crate::verify::{self, Trust};

/// Arguments of `inkan verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The file: an e-prescription document, or a CMS signature (.p7s, DER or PEM).
    pub file: PathBuf,
    /// The signed content of a detached CMS signature.
    #[arg(long, value_name = "DATA")]
    pub content: Option<PathBuf>,
    /// Validate as of this time (RFC 3339; default now). A time to the
    /// second covers that whole second.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// What the validation trusts.
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// The trust flags of `inkan verify` and `inkan extend`.
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// A trust anchor for signers' certificates (PEM; repeat for more).
    /// Default: `[verify] anchors`.
    #[arg(long = "anchor", value_name = "PEM")]
    pub anchors: Vec<PathBuf>,
    /// A trust anchor for TSAs' certificates (PEM; repeat for more).
    /// Default: `[verify] tsa_anchors`, else `[tsa] ca`.
    #[arg(long = "tsa-anchor", value_name = "PEM")]
    pub tsa_anchors: Vec<PathBuf>,
    /// A CRL (DER or PEM) besides those the signature carries and `[pki] crls`.
    #[arg(long = "crl", value_name = "FILE")]
    pub crls: Vec<PathBuf>,
}

/// Exit status when nothing was validated (unreadable file, bad flags).
const NOT_VALIDATED: i32 = 3;

/// Runs `inkan verify`.
pub fn run(ctx: &Ctx, args: VerifyArgs) -> Result<Output, CliError> {
    let fail = |message: String| CliError { message, code: NOT_VALIDATED };
    let trust = Trust::from_config(&ctx.config, &args.trust.anchors, &args.trust.tsa_anchors, &args.trust.crls)
        .map_err(|e| fail(e.to_string()))?;
    let at = match &args.at {
        Some(text) => verify::validation_time(text).map_err(|e| fail(e.to_string()))?,
        None => ctx.clock.now(),
    };
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| fail(format!("cannot read {}: {e}", p.display())));
    let input = read(&args.file)?;
    let content = args.content.as_ref().map(read).transpose()?;
    let report = verify::validate(&input, content.as_deref(), &trust, at);
    let mut out = Output::new(report.text().trim_end().to_owned(), serde_json::to_value(&report)?);
    out.code = report.exit_code();
    Ok(out)
}
