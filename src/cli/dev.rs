//! `inkan dev ...`: the fixture PKI (test keys only, never production).

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::context::{write_file, CliError, Ctx, Output};
use crate::fixtures;
use crate::pki::profile::Qualification;

/// `inkan dev ...`
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Regenerate the fixture PKI (fixtures/pki) with new keys.
    Fixtures {
        /// Output directory.
        #[arg(long, default_value = "fixtures/pki")]
        out: PathBuf,
    },
    /// Issue a second certificate from a CSR with the fixture HPKI signing CA.
    IssueCert {
        /// The CSR (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
        /// The holder's qualification (hcRole).
        #[arg(long, default_value = "doctor")]
        qualification: Qualification,
        /// CA certificate.
        #[arg(long, default_value = "fixtures/pki/hpki-signing-ca.pem")]
        ca_cert: PathBuf,
        /// CA key.
        #[arg(long, default_value = "fixtures/pki/hpki-signing-ca.key")]
        ca_key: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 1825)]
        days: u64,
        /// Issue a certificate that expired yesterday (for tests).
        #[arg(long)]
        expired: bool,
    },
}

/// Runs a `dev` command.
pub fn run(ctx: &Ctx, cmd: DevCommand) -> Result<Output, CliError> {
    match cmd {
        DevCommand::Fixtures { out } => {
            let files = fixtures::generate(&out, ctx.clock.as_ref())?;
            Ok(Output::new(
                format!("wrote {} files to {}", files.len(), out.display()),
                json!({ "out": out, "files": files }),
            ))
        }
        DevCommand::IssueCert { csr, out, qualification, ca_cert, ca_key, days, expired } => {
            let cert = fixtures::issue_from_csr_file(
                &csr,
                &ca_cert,
                &ca_key,
                qualification,
                days,
                expired,
                ctx.clock.as_ref(),
            )?;
            write_file(&out, crate::pki::to_pem("CERTIFICATE", &cert).as_bytes())?;
            Ok(Output::new(format!("certificate written to {}", out.display()), json!({ "out": out })))
        }
    }
}
