//! `inkan config ...`: every setting explained, and a configuration checked.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::context::{CliError, Output};
use crate::config::env::{Kind, SETTINGS};
use crate::config::{schema, Config};

/// `inkan config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting with its default, its environment variable and
    /// what it does, as a configuration file (`inkan config example >
    /// inkan.toml` starts one).
    Example,
    /// Read the configuration (the file and the INKAN_* environment), check
    /// it, and print the settings in effect (secrets as `***`) and where
    /// each came from. Exit status 2 when a file it names is missing.
    Check,
}

/// `inkan config example` (needs no configuration).
pub fn example() -> Result<Output, CliError> {
    let text = crate::config::example::example()?;
    let settings: serde_json::Map<String, serde_json::Value> =
        SETTINGS.iter().map(|s| (s.key.to_owned(), json!({ "env": s.var() }))).collect();
    let explanations = crate::config::example::explanations();
    let mut json = json!({ "file": text, "settings": settings });
    if let Some(map) = json["settings"].as_object_mut() {
        for (key, entry) in map.iter_mut() {
            entry["explanation"] = json!(explanations.get(key));
        }
    }
    Ok(Output::new(text.trim_end(), json))
}

/// Where a setting's value came from.
fn origin(key: &str, var: &str, file: Option<&toml::Table>) -> &'static str {
    if std::env::var(var).is_ok_and(|v| !v.is_empty()) {
        return "environment";
    }
    let in_file = file.is_some_and(|t| match key.split_once('.') {
        None => t.contains_key(key),
        Some((sec, k)) => t.get(sec).and_then(|s| s.get(k)).is_some(),
    });
    if in_file {
        "file"
    } else {
        "default"
    }
}

/// Paths the configuration names that must exist before `inkan init` or
/// `inkan serve` (what `init` makes, and a module name the loader searches,
/// are not checked).
fn must_exist(key: &str) -> bool {
    !matches!(key, "data_dir" | "store.path" | "token.softhsm_conf" | "token.module")
}

/// `inkan config check`: `config` is what [`Config::load`] made of `explicit`.
pub fn check(config: &Config, explicit: Option<&Path>) -> Result<Output, CliError> {
    let file = Config::file(explicit);
    let file_table: Option<toml::Table> =
        file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).and_then(|t| toml::from_str(&t).ok());
    let effective = toml::Table::try_from(config)?;
    let (mut settings, mut problems, mut warnings) = (serde_json::Map::new(), Vec::new(), Vec::new());
    let mut text = format!(
        "configuration: {} and the INKAN_* environment\n",
        file.as_ref().map_or("the embedded defaults".to_owned(), |f| format!("{}", f.display()))
    );
    let mut section = "";
    for setting in SETTINGS {
        let (sec, key) = setting.key.split_once('.').unwrap_or(("", setting.key));
        let value = match sec {
            "" => effective.get(key),
            _ => effective.get(sec).and_then(|t| t.get(key)),
        };
        let from = origin(setting.key, &setting.var(), file_table.as_ref());
        let shown: Option<toml::Value> = match (setting.kind, value) {
            // Secrets are never serialised: set is what the file or the environment set.
            (Kind::Secret, _) if from != "default" => Some(toml::Value::String("***".into())),
            (_, None) => None,
            (_, Some(toml::Value::String(url))) if setting.key == "store.url" => {
                Some(toml::Value::String(schema::redact_url(url)))
            }
            (_, Some(v)) => Some(v.clone()),
        };
        if matches!(setting.kind, Kind::Path | Kind::Paths) && must_exist(setting.key) {
            let paths: Vec<&str> = match value {
                Some(toml::Value::String(p)) => vec![p.as_str()],
                Some(toml::Value::Array(items)) => items.iter().filter_map(toml::Value::as_str).collect(),
                _ => Vec::new(),
            };
            for p in paths {
                if !Path::new(p).exists() {
                    problems.push(format!("{} names {p}, which does not exist", setting.key));
                } else if p.contains("fixtures/") {
                    warnings
                        .push(format!("{} is the fixture PKI's {p}: test keys only, never production", setting.key));
                }
            }
        }
        if sec != section {
            section = sec;
            text.push_str(&format!("\n[{sec}]\n"));
        }
        match &shown {
            Some(v) => text.push_str(&format!("{key} = {v}")),
            None => text.push_str(&format!("# {key} (not set)")),
        }
        if from != "default" {
            text.push_str(&format!("    # from the {}", if from == "file" { "file".into() } else { setting.var() }));
        }
        text.push('\n');
        settings.insert(
            setting.key.to_owned(),
            json!({ "value": shown.map(|v| toml_to_json(&v)), "from": from, "env": setting.var() }),
        );
    }
    if config.token.user_pin.is_none() {
        warnings.push(format!(
            "[token] user_pin is not set: the PINs file {} is used (written by `inkan init`)",
            config.pins_path().display()
        ));
    }
    for w in &warnings {
        text.push_str(&format!("\nwarning: {w}"));
    }
    for p in &problems {
        text.push_str(&format!("\nproblem: {p}"));
    }
    text.push_str(if problems.is_empty() {
        "\n\nthe configuration is valid"
    } else {
        "\n\nthe configuration is not usable: mend the paths above (relative paths in a file are taken from its directory)"
    });
    let mut out = Output::new(
        text,
        json!({
            "file": file.map(|f| f.display().to_string()),
            "valid": problems.is_empty(),
            "settings": settings,
            "warnings": warnings,
            "problems": problems,
        }),
    );
    if !out.json["valid"].as_bool().unwrap_or(false) {
        out.code = 2;
    }
    Ok(out)
}

/// A TOML value as JSON.
fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
