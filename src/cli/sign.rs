//! `inkan sign`: a signature made on the operator's machine, through the same
//! pipeline as the service's.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use super::context::{CliError, Ctx, Output};
use crate::auth::principal::Principal;
use crate::error::{Error, Result};
use crate::signing::format::Family;
use crate::signing::{Activation, Document, EpsInput, Format, Level, Payload, Request, Signing};
use crate::store::Tx;

/// Arguments of `inkan sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The signer.
    pub user_id: String,
    /// The document.
    pub input: PathBuf,
    /// Where to write the signature (CAdES: a .p7s) or the signed document (XAdES).
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    /// Envelope the document in the signature (CAdES; default: detached).
    #[arg(long)]
    pub attached: bool,
    /// `cades` (any document: a .p7s), or `xades` (an e-prescription
    /// document, written out signed; or a prescription CSV with
    /// `--prescription-id`).
    #[arg(long, default_value = "cades", value_parser = file_family())]
    pub format: Family,
    /// With `--format xades`: the input is the prescription's CSV, and this
    /// its PrescriptionId; the minimal prescription document is written out signed.
    #[arg(long, value_name = "ID")]
    pub prescription_id: Option<String>,
    /// `B-B` (default), `B-T` (with a time-stamp from `[tsa] url`), `B-LT`
    /// (and the data that validates it later), `B-LTA` (and an archive
    /// time-stamp over all of it).
    #[arg(long, default_value = "B-B")]
    pub level: String,
}

/// The outcome of a local signature.
#[derive(Clone, Debug, Serialize)]
pub struct Signed {
    /// Signer.
    pub user_id: String,
    /// Key generation used.
    pub generation: i64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Where the signature went.
    pub out: String,
    /// Whether the content is enveloped.
    pub attached: bool,
    /// `cades-bes` or `xades-bes`.
    pub format: &'static str,
    /// XAdES: `prescription` or `dispensing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Audit sequence number.
    pub audit_seq: i64,
}

/// A file read in chunks.
struct FileDocument(std::fs::File, PathBuf);

#[async_trait]
impl Document for FileDocument {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(Bytes::from(buf)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Invalid(format!("{}: {e}", self.1.display()))),
            }
        }
    }
}

/// Signs the file at `input` into `out`: the signature is written to a
/// temporary file beside `out` (an enveloped document is copied in from the
/// file again, streamed), synced, and renamed into place after its audit row
/// is committed.
pub async fn sign_file(
    signing: &Signing<dyn Tx>,
    principal: &Principal,
    input: &Path,
    out: &Path,
    format: Format,
    activation: Activation<'_>,
    level: Level,
) -> Result<Signed, CliError> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| CliError::from(format!("{}: {e}", p.display())));
    let mut document = FileDocument(open(input)?, input.to_path_buf());
    let attached = format == Format::CadesEnveloping;
    let mut signed = signing
        .sign(
            principal,
            Request {
                payload: Payload::Document { source: &mut document, keep: None },
                format,
                generation: None,
                activation,
                via: "cli",
                detail: Some(serde_json::json!({ "attached": attached })),
                level,
            },
        )
        .await?;
    let parts = signed.signatures.pop().ok_or_else(|| CliError::from("no signature"))?;
    write_atomically(out, |w, cannot| {
        w.write_all(&parts.prefix).map_err(cannot)?;
        if attached {
            // As many bytes as were hashed (the signature's content length).
            let signed_len = content_len(&document);
            let copied = std::io::copy(&mut open(input)?.take(signed_len), w).map_err(cannot)?;
            if copied != signed_len {
                return Err(CliError::from(format!("{} changed while it was being signed", input.display())));
            }
        }
        w.write_all(&parts.suffix).map_err(cannot)
    })?;
    Ok(Signed {
        user_id: principal.user_id.clone(),
        generation: signed.generation,
        digest: signed.digests.pop().unwrap_or_default(),
        out: out.display().to_string(),
        attached,
        format: Family::Cades.about().audit,
        kind: None,
        audit_seq: signed.audit_seq,
    })
}

/// Writes `out` through `write`: into a temporary file beside it, synced,
/// then renamed into place (a failed or killed write leaves no `out`).
fn write_atomically(
    out: &Path,
    write: impl FnOnce(&mut dyn Write, &dyn Fn(std::io::Error) -> CliError) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = out.with_file_name(format!(".{file_name}.tmp"));
    let cannot = |e: std::io::Error| CliError::from(format!("cannot write {}: {e}", tmp.display()));
    let written = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(cannot)?);
        write(&mut w, &cannot)?;
        let f = w.into_inner().map_err(|e| cannot(e.into_error()))?;
        f.sync_all().map_err(cannot)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(|e| CliError::from(format!("cannot write {}: {e}", out.display())))
}

/// Signs an e-prescription document (or a prescription CSV) at `input` with
/// XAdES and writes the signed document to `out`.
pub async fn sign_xades_file(
    signing: &Signing<dyn Tx>,
    principal: &Principal,
    input: &Path,
    out: &Path,
    prescription_id: Option<String>,
    max_bytes: usize,
    level: Level,
) -> Result<Signed, CliError> {
    let size = std::fs::metadata(input).map_err(|e| CliError::from(format!("{}: {e}", input.display())))?.len();
    if size > max_bytes as u64 {
        return Err(CliError::from(format!(
            "{} has {size} bytes, more than [signing] max_xml_bytes ({max_bytes})",
            input.display()
        )));
    }
    let bytes = std::fs::read(input).map_err(|e| CliError::from(format!("{}: {e}", input.display())))?;
    let input_kind = match prescription_id {
        Some(prescription_id) => EpsInput::PrescriptionCsv { csv: bytes, prescription_id },
        None => EpsInput::Document(bytes),
    };
    let document = crate::signing::read_eps(input_kind).await?;
    let kind = document.kind;
    let mut signed = signing
        .sign(
            principal,
            Request {
                payload: Payload::Eps(EpsInput::Read(document)),
                format: Format::Xades(None),
                generation: None,
                activation: Activation::Session,
                via: "cli",
                detail: None,
                level,
            },
        )
        .await?;
    let parts = signed.signatures.pop().ok_or_else(|| CliError::from("no signature"))?;
    let document = parts.document.ok_or_else(|| CliError::from("no signed document"))?;
    write_atomically(out, |w, cannot| w.write_all(&document).map_err(cannot))?;
    Ok(Signed {
        user_id: principal.user_id.clone(),
        generation: signed.generation,
        digest: signed.digests.pop().unwrap_or_default(),
        out: out.display().to_string(),
        attached: false,
        format: "xades-bes",
        kind: Some(kind.as_str()),
        audit_seq: signed.audit_seq,
    })
}

/// How many bytes of the file the signature was made over (what was read).
fn content_len(document: &FileDocument) -> u64 {
    use std::io::Seek;
    let mut f = &document.0;
    f.stream_position().unwrap_or(0)
}

/// The families that sign a file.
const FILE_FAMILIES: [Family; 2] = [Family::Cades, Family::Xades];

/// `--format`: the API names of [`FILE_FAMILIES`], listed in `--help` and errors.
fn file_family() -> impl clap::builder::TypedValueParser<Value = Family> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(FILE_FAMILIES.map(|f| f.about().api))
        .map(|name| FILE_FAMILIES.into_iter().find(|f| f.about().api == name).unwrap_or(Family::Cades))
}

/// `inkan sign USER INPUT --out OUT [--attached | --format xades [--prescription-id ID]]`
pub async fn run(ctx: &Ctx, args: SignArgs) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    // Refuse early, before touching the token: an unknown or disabled user, no active key, no file.
    let principal = crate::signing::operator(store.tx(), &ctx.actor, &args.user_id).await?;
    principal.active_key()?;
    if !args.input.is_file() {
        return Err(CliError { message: format!("{}: no such file", args.input.display()), code: 1 });
    }
    let level: Level = args.level.parse()?;
    let signing = ctx.signing(&store)?;
    let input = args.input.display();
    if args.format == Family::Xades {
        if args.attached {
            return Err(CliError::from("--attached is for CAdES: XAdES goes into the document"));
        }
        let max = ctx.config.signing.max_xml_bytes;
        let signed =
            sign_xades_file(&signing, &principal, &args.input, &args.out, args.prescription_id, max, level).await?;
        return Ok(Output::new(
            format!(
                "signed the {} {input} as {} (key generation {}), XAdES-BES written to {}\n  verify: xmlsec1 --verify --id-attr:id {} ...",
                signed.kind.unwrap_or_default(),
                signed.user_id,
                signed.generation,
                signed.out,
                if signed.kind == Some("dispensing") { "Dispensing" } else { "PrescriptionDocument" },
            ),
            serde_json::to_value(&signed)?,
        ));
    }
    if args.prescription_id.is_some() {
        return Err(CliError::from("--prescription-id goes with --format xades"));
    }
    let format = if args.attached { Format::CadesEnveloping } else { Format::CadesDetached };
    let signed = sign_file(&signing, &principal, &args.input, &args.out, format, Activation::Session, level).await?;
    Ok(Output::new(
        format!(
            "signed {input} as {} (key generation {}), {} signature written to {}\n  verify: openssl cms -verify -binary -inform DER -in {}{} -CAfile <(cat fixtures/pki/hpki-root.pem fixtures/pki/hpki-signing-ca.pem) -purpose any -out /dev/null",
            signed.user_id,
            signed.generation,
            if args.attached { "attached" } else { "detached" },
            signed.out,
            signed.out,
            if args.attached { String::new() } else { format!(" -content {input}") },
        ),
        serde_json::to_value(&signed)?,
    ))
}
