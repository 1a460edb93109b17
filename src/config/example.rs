//! `inkan config example`: every setting with its default, its environment
//! variable and its explanation, as a configuration file. The explanations
//! are the schema's own doc comments, read from its source (compiled in), and
//! the defaults are the schema's `Default`: the example cannot drift from
//! the settings it describes, and a setting without an explanation fails a
//! test.

use std::collections::BTreeMap;

use super::env::{Kind, SETTINGS};
use super::schema::{Config, ConfigError};

/// The schema's source: its doc comments are the settings' explanations.
const SCHEMA: &str = include_str!("schema.rs");

/// Longest comment line of the example (before the `# `).
const WIDTH: usize = 98;

/// The doc comment of every field of every struct of the schema:
/// `struct → field → text` (lines joined by spaces).
fn field_docs(source: &str) -> BTreeMap<&str, BTreeMap<&str, String>> {
    let mut out: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    let mut current: Option<&str> = None;
    let mut doc: Vec<&str> = Vec::new();
    for line in source.lines() {
        let trimmed = line.trim();
        if let Some(name) = line.strip_prefix("pub struct ").and_then(|r| r.strip_suffix(" {")) {
            current = Some(name);
            doc.clear();
        } else if line == "}" {
            current = None;
        } else if let Some(text) = trimmed.strip_prefix("///") {
            doc.push(text.trim());
        } else if trimmed.starts_with("#[") {
            // Attributes between a doc comment and its field.
        } else if let (Some(name), Some(field)) = (current, trimmed.strip_prefix("pub ")) {
            if let Some((field, _)) = field.split_once(':') {
                out.entry(name).or_default().insert(field, doc.join(" "));
            }
            doc.clear();
        } else {
            doc.clear();
        }
    }
    out
}

/// Every setting's explanation, by key (`section.key`, or `key` at the top):
/// a section's struct is the type of its field in `Config`.
pub(crate) fn explanations() -> BTreeMap<String, String> {
    let docs = field_docs(SCHEMA);
    let mut out = BTreeMap::new();
    let Some(top) = docs.get("Config") else { return out };
    let section_types: BTreeMap<&str, &str> = SCHEMA
        .lines()
        .skip_while(|l| *l != "pub struct Config {")
        .take_while(|l| *l != "}")
        .filter_map(|l| l.trim().strip_prefix("pub ")?.strip_suffix(','))
        .filter_map(|l| l.split_once(": "))
        .collect();
    for (field, text) in top {
        match section_types.get(field).and_then(|ty| docs.get(ty)) {
            Some(fields) => {
                for (key, text) in fields {
                    out.insert(format!("{field}.{key}"), text.clone());
                }
            }
            None => {
                out.insert((*field).to_owned(), text.clone());
            }
        }
    }
    out
}

/// `text` as `# ` comment lines of at most [`WIDTH`] characters.
fn comment(text: &str, out: &mut String) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&format!("# {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("# {line}\n"));
    }
}

/// A setting's line: its default, or (a setting without one) commented out
/// with an empty value of its kind.
fn value_line(key: &str, kind: Kind, default: Option<&toml::Value>) -> String {
    match default {
        Some(v) => format!("{key} = {v}\n"),
        None => {
            let empty = match kind {
                Kind::Paths | Kind::Words => "[]",
                Kind::Int => "0",
                Kind::Bool => "false",
                _ => "\"\"",
            };
            format!("# {key} = {empty}\n")
        }
    }
}

/// The example configuration file: every setting, section by section, with
/// its explanation, its environment variable and its default (settings
/// without a default, commented out).
pub fn example() -> Result<String, ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).map_err(|e| ConfigError(e.to_string()))?;
    let docs = explanations();
    let mut out = String::from(
        "# inkan configuration: every setting with its default (`inkan config example`).\n\
         # Relative paths are taken from this file's directory. Each setting can also be\n\
         # given in the environment variable named above it, which wins over this file.\n\
         # Check a configuration with `inkan config check`.\n",
    );
    let mut section = "";
    for setting in SETTINGS {
        let (sec, key) = setting.key.split_once('.').unwrap_or(("", setting.key));
        if sec != section {
            section = sec;
            out.push_str(&format!("\n[{sec}]\n"));
        }
        out.push('\n');
        let text = docs.get(setting.key).map_or("", String::as_str);
        comment(text, &mut out);
        out.push_str(&format!("# env: {}\n", setting.var()));
        let default = match sec {
            "" => defaults.get(key),
            _ => defaults.get(sec).and_then(|t| t.get(key)),
        };
        out.push_str(&value_line(key, setting.kind, default));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_explained_and_every_field_of_the_schema_is_a_setting() {
        let docs = explanations();
        for setting in SETTINGS {
            let text = docs.get(setting.key).map_or("", String::as_str);
            assert!(text.len() > 10, "{} has no explanation in schema.rs", setting.key);
        }
        let listed: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        for key in docs.keys() {
            assert!(listed.contains(&key.as_str()), "{key} is in the schema but not in env::SETTINGS");
        }
        assert_eq!(docs.len(), SETTINGS.len());
    }

    #[test]
    fn the_example_is_the_defaults() {
        let text = example().expect("example");
        let parsed: toml::Table = toml::from_str(&text).expect("the example is TOML");
        let defaults = toml::Table::try_from(Config::default()).expect("defaults");
        assert_eq!(parsed, defaults, "the example reads back as the embedded defaults");
        let config: Config = parsed.try_into().expect("a configuration");
        config.validate().expect("valid");
        assert!(text.contains("# env: INKAN_LIMITS_CONNECTIONS\nconnections = 4096\n"), "{text}");
        assert!(text.contains("# env: INKAN_TOKEN_USER_PIN\n# user_pin = \"\"\n"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH + 2), "lines wrapped");
    }
}
