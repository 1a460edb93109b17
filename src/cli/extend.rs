//! `inkan extend`: a signature made earlier raised to a higher level, or
//! its archive time-stamp renewed, on the operator's machine (the TSA and
//! CRL sources of the configuration; no store, no token).

use std::path::PathBuf;
use std::sync::Arc;

use super::context::{write_file, CliError, Ctx, Output};
use super::verify::TrustArgs;
use crate::extend::Extender;
use crate::signing::format::Level;
use crate::verify::Trust;

/// Arguments of `inkan extend`.
#[derive(Debug, clap::Args)]
pub struct ExtendArgs {
    /// The signed file: an e-prescription document, or a CMS signature (.p7s, DER or PEM).
    pub file: PathBuf,
    /// The level: B-T, B-LT or B-LTA (B-LTA on a B-LTA signature renews its
    /// archive time-stamp).
    #[arg(long)]
    pub level: String,
    /// Where the extended file goes (written whole, or not at all).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The signed content of a detached CMS signature.
    #[arg(long, value_name = "DATA")]
    pub content: Option<PathBuf>,
    /// What the validations before and after trust (`--crl`: CRLs besides
    /// `[pki] crls`, also for what is embedded).
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// Runs `inkan extend`.
pub async fn run(ctx: &Ctx, args: ExtendArgs) -> Result<Output, CliError> {
    let level: Level = args.level.parse()?;
    let trust = Trust::from_config(&ctx.config, &args.trust.anchors, &args.trust.tsa_anchors, &[])?;
    let mut config = ctx.config.clone();
    config.pki.crls.extend(args.trust.crls.iter().cloned());
    let extender = Extender::from_config(&config, Arc::new(trust), Arc::clone(&ctx.clock))?;
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| CliError { message: format!("cannot read {}: {e}", p.display()), code: 1 })
    };
    let input = read(&args.file)?;
    let content = args.content.as_ref().map(read).transpose()?;
    let extended = extender.extend(input, content, level).await?;
    write_file(&args.out, &extended.bytes)?;
    let stamps: Vec<String> = extended.timestamps.iter().map(|a| format!("{} time-stamp {}", a.kind, a.time)).collect();
    let mut json = serde_json::to_value(&extended)?;
    json["out"] = serde_json::json!(args.out.display().to_string());
    Ok(Output::new(
        format!(
            "{} {} {} to {} ({}), written to {}",
            if extended.renewed { "renewed the archive time-stamp of" } else { "extended" },
            extended.format,
            args.file.display(),
            extended.level,
            stamps.join(", "),
            args.out.display()
        ),
        json,
    ))
}
