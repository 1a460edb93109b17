//! `inkan init` and `inkan demo`.

use serde_json::json;

use super::context::{CliError, Ctx, Output};
use crate::demo::DEMO_USERS;
use crate::signing::{Activation, Format, Level};

/// `inkan init`
pub async fn init(ctx: &Ctx) -> Result<Output, CliError> {
    let done = crate::setup::init(&ctx.config).await?;
    Ok(Output::new(
        done.steps.join("\n"),
        json!({
            "data_dir": ctx.config.data_dir,
            "database": done.database,
            "token": ctx.config.token.label,
            "token_created": done.token_created,
        }),
    ))
}

/// `inkan demo`: init, the demo users, and one signed demo document.
pub async fn demo(ctx: &Ctx) -> Result<Output, CliError> {
    let config = &ctx.config;
    let mut lines = crate::setup::init(config).await?.steps;
    let store = ctx.store().await?;
    lines.extend(
        crate::demo::users(config, store.as_ref(), &std::sync::Arc::new(ctx.keystore()?), ctx.clock.as_ref()).await?,
    );
    let doc = config.data_dir.join("demo-document.txt");
    std::fs::write(&doc, "処方箋 (demo prescription)\nRp.1 ロキソプロフェン錠60mg 3錠 分3 毎食後 5日分\n")?;
    let out = config.data_dir.join("demo-document.txt.p7s");
    let signing = ctx.signing(&store)?;
    let signer = DEMO_USERS[0].0;
    let principal = crate::signing::operator(store.tx(), "demo", signer).await?;
    super::sign::sign_file(&signing, &principal, &doc, &out, Format::CadesDetached, Activation::Session, Level::BB)
        .await?;
    let bundle = config.data_dir.join("demo-ca-bundle.pem");
    let mut pem = std::fs::read_to_string(&config.pki.signing_ca)?;
    for c in &config.pki.chain {
        pem.push_str(&std::fs::read_to_string(c)?);
    }
    std::fs::write(&bundle, pem)?;
    lines.push(format!("signed {} as {signer} -> {}", doc.display(), out.display()));
    lines.push(format!(
        "verify it:\n  openssl cms -verify -binary -inform DER -in {} -content {} -CAfile {} -purpose any -out /dev/null",
        out.display(),
        doc.display(),
        bundle.display()
    ));
    lines.push(format!("inspect it:\n  openssl cms -cmsout -print -inform DER -in {}", out.display()));
    lines.push("start the HTTPS service with the demo users and client:\n  cargo run --release -- serve --demo".into());
    Ok(Output::new(
        lines.join("\n"),
        json!({ "document": doc, "signature": out, "ca_bundle": bundle, "signer": signer, "users": DEMO_USERS.iter().map(|u| u.0).collect::<Vec<_>>() }),
    ))
}
