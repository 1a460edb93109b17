//! Environment overrides: every setting has one, named `INKAN_<SECTION>_<KEY>`
//! (`INKAN_DATA_DIR` for the top-level `data_dir`). One table lists them with
//! their kind; the values go into the configuration's TOML table before it is
//! read, so they are checked exactly like the file's. Paths given in the
//! environment are relative to the working directory.

use super::schema::ConfigError;

/// How a variable's text becomes a TOML value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text.
    Str,
    /// A secret (a PIN, a password, a token): text never printed back.
    Secret,
    /// A path.
    Path,
    /// Paths separated by `:`.
    Paths,
    /// Words separated by commas or spaces.
    Words,
    /// A non-negative integer.
    Int,
    /// `true`/`false` (or `1`/`0`).
    Bool,
    /// One of these words.
    Choice(&'static [&'static str]),
}

/// One setting: its key in the file (`section.key`, or `key` at the top) and kind.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// `section.key` or `key`.
    pub key: &'static str,
    /// How its text is read.
    pub kind: Kind,
}

impl Setting {
    /// The environment variable: `INKAN_` and the key in capitals, `.` as `_`.
    pub fn var(&self) -> String {
        format!("INKAN_{}", self.key.replace('.', "_").to_ascii_uppercase())
    }
}

const fn s(key: &'static str, kind: Kind) -> Setting {
    Setting { key, kind }
}

use Kind::{Bool, Choice, Int, Path, Paths, Secret, Str, Words};

/// Every setting of the configuration.
pub const SETTINGS: &[Setting] = &[
    s("data_dir", Path),
    // A library path or a bare name the loader searches: never rewritten.
    s("token.module", Str),
    s("token.label", Str),
    s("token.user_pin", Secret),
    s("token.so_pin", Secret),
    s("token.softhsm_conf", Path),
    s("token.pool_size", Int),
    s("token.key_storage", Choice(&["wrapped", "object"])),
    s("token.cache_size", Int),
    s("token.kek", Choice(&["strict", "trusted"])),
    s("store.path", Path),
    s("store.synchronous", Choice(&["full", "normal"])),
    s("store.url", Str),
    s("store.password", Secret),
    s("store.max_connections", Int),
    s("store.ca", Path),
    s("pki.signing_ca", Path),
    s("pki.chain", Paths),
    s("pki.crls", Paths),
    s("pki.fetch_crls", Bool),
    s("pki.crl_max_bytes", Int),
    s("pki.crl_timeout_secs", Int),
    s("signing.rsa_scheme", Choice(&["pkcs1v15", "pss"])),
    s("signing.max_xml_bytes", Int),
    s("server.listen", Str),
    s("server.card_listen", Str),
    s("server.public_url", Str),
    s("server.card_url", Str),
    s("server.tls_cert", Path),
    s("server.tls_key", Path),
    s("server.session_hours", Int),
    s("server.max_json_bytes", Int),
    s("server.max_document_bytes", Int),
    s("server.header_timeout_secs", Int),
    s("server.proxy_from", Words),
    s("server.request_id_from", Words),
    s("server.shutdown_grace_secs", Int),
    s("server.audit_window_us", Int),
    s("server.audit_idle_window_us", Int),
    s("server.id_token_alg", Choice(&["ES256", "RS256"])),
    s("server.metrics_token", Secret),
    s("hpki.anchors", Paths),
    s("hpki.intermediates", Paths),
    s("hpki.crls", Paths),
    s("hpki.danger_allow_stale_crl", Bool),
    s("jpki.anchors", Paths),
    s("jpki.intermediates", Paths),
    s("jpki.crls", Paths),
    s("jpki.danger_allow_stale_crl", Bool),
    s("csc.scal", Choice(&["1", "2"])),
    s("csc.sad_lifetime_secs", Int),
    s("fido.rp_id", Str),
    s("fido.rp_name", Str),
    s("fido.ticket_secs", Int),
    s("fido.regcode_max_tries", Int),
    s("fido.regcode_days", Int),
    s("limits.per_address_per_minute", Int),
    s("limits.per_address_burst", Int),
    s("limits.per_network_per_minute", Int),
    s("limits.per_network_burst", Int),
    s("limits.per_user_per_minute", Int),
    s("limits.per_user_burst", Int),
    s("limits.open_per_second", Int),
    s("limits.connections", Int),
    s("limits.connections_per_address", Int),
    s("limits.connections_per_network", Int),
    s("limits.body_grace_secs", Int),
    s("limits.min_body_rate", Int),
    s("limits.enveloped_bytes", Int),
    s("tsa.url", Str),
    s("tsa.fallback_url", Str),
    s("tsa.ca", Paths),
    s("tsa.chain", Paths),
    s("tsa.username", Str),
    s("tsa.password", Secret),
    s("tsa.policy", Str),
    s("tsa.timeout_secs", Int),
    s("tsa.max_in_flight", Int),
    s("tsa.audit_every_secs", Int),
    s("verify.anchors", Paths),
    s("verify.tsa_anchors", Paths),
    s("verify.max_bytes", Int),
    s("log.format", Choice(&["text", "json"])),
    s("audit.live_days", Int),
];

/// The TOML value of a variable's text, or what is wrong with it.
fn value(setting: &Setting, text: &str) -> Result<toml::Value, ConfigError> {
    let var = setting.var();
    Ok(match setting.kind {
        Str | Secret | Path => toml::Value::String(text.to_owned()),
        Paths => toml::Value::Array(
            text.split(':').filter(|p| !p.is_empty()).map(|p| toml::Value::String(p.to_owned())).collect(),
        ),
        Words => toml::Value::Array(
            text.split([',', ' ']).filter(|w| !w.is_empty()).map(|w| toml::Value::String(w.to_owned())).collect(),
        ),
        Int => toml::Value::Integer(
            text.trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| ConfigError(format!("{var} must be a number, not {text:?}")))?,
        ),
        Bool => toml::Value::Boolean(match text.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(ConfigError(format!("{var} must be true or false, not {text:?}"))),
        }),
        Choice(words) => {
            if !words.contains(&text) {
                return Err(ConfigError(format!("{var} must be {}, not {text:?}", words.join(" or "))));
            }
            toml::Value::String(text.to_owned())
        }
    })
}

/// Puts the value of every set variable into the configuration's table
/// (`lookup` reads a variable; empty values count as unset). A section the
/// table does not have starts from its default (`defaults`, the embedded
/// configuration as a table), so one variable changes one setting.
pub fn apply(
    table: &mut toml::Table,
    defaults: &toml::Table,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for setting in SETTINGS {
        let Some(text) = lookup(&setting.var()).filter(|v| !v.is_empty()) else { continue };
        let value = value(setting, &text)?;
        match setting.key.split_once('.') {
            None => {
                table.insert(setting.key.to_owned(), value);
            }
            Some((section, key)) => {
                let entry = table.entry(section.to_owned()).or_insert_with(|| {
                    defaults.get(section).cloned().unwrap_or_else(|| toml::Value::Table(toml::Table::new()))
                });
                let toml::Value::Table(section_table) = entry else {
                    return Err(ConfigError(format!("[{section}] in the configuration file is not a section")));
                };
                section_table.insert(key.to_owned(), value);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Every leaf key of a TOML table, as `section.key`.
    fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) => keys(t, &key, out),
                _ => out.push(key),
            }
        }
    }

    fn defaults_table() -> toml::Table {
        toml::Table::try_from(Config::default()).expect("serialise")
    }

    #[test]
    fn every_setting_has_an_override_and_every_override_a_setting() {
        let table = defaults_table();
        let mut defaults = Vec::new();
        keys(&table, "", &mut defaults);
        let listed: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        for key in &defaults {
            assert!(listed.contains(&key.as_str()), "{key} has no environment override");
        }
        // Settings without a default value are not serialised: they must
        // still be settings of the schema (an override for a key the schema
        // does not know would fail when the configuration is read).
        for setting in SETTINGS {
            let mut table = toml::Table::new();
            let sample = match setting.kind {
                Kind::Choice(words) => words[0].to_owned(),
                Kind::Int => "7".into(),
                Kind::Bool => "true".into(),
                Kind::Words => "10.0.0.0/8, fd00::1".into(),
                _ => "x".into(),
            };
            apply(&mut table, &defaults_table(), |v| (v == setting.var()).then(|| sample.clone())).expect("apply");
            let parsed: Result<Config, _> = table.try_into();
            assert!(parsed.is_ok(), "{}: {:?}", setting.var(), parsed.err());
        }
        assert_eq!(SETTINGS.len(), 84, "docs/configuration.md promises an override for each of the 84 settings");
    }

    #[test]
    fn values_are_checked_and_name_their_variable() {
        let mut table = toml::Table::new();
        let d = defaults_table();
        let err =
            apply(&mut table, &d, |v| (v == "INKAN_SERVER_SESSION_HOURS").then(|| "soon".into())).expect_err("bad");
        assert!(err.0.contains("INKAN_SERVER_SESSION_HOURS") && err.0.contains("number"), "{err}");
        let err = apply(&mut table, &d, |v| (v == "INKAN_STORE_SYNCHRONOUS").then(|| "off".into())).expect_err("bad");
        assert!(err.0.contains("full or normal"), "{err}");
        apply(&mut table, &d, |v| match v {
            "INKAN_PKI_CHAIN" => Some("a.pem:b.pem".into()),
            "INKAN_HPKI_DANGER_ALLOW_STALE_CRL" => Some("1".into()),
            "INKAN_DATA_DIR" => Some("/srv/inkan".into()),
            _ => None,
        })
        .expect("apply");
        let config: Config = table.try_into().expect("config");
        assert_eq!(config.pki.chain, vec![std::path::PathBuf::from("a.pem"), "b.pem".into()]);
        assert!(config.hpki.danger_allow_stale_crl);
        assert_eq!(config.data_dir, std::path::PathBuf::from("/srv/inkan"));
    }
}
