//! Configuration: one TOML file, environment overrides, embedded defaults.
//!
//! Lookup: `--config FILE`, else `$INKAN_CONFIG`, else `./inkan.toml` if present,
//! else the embedded defaults (everything under `./var`, the fixture PKI, SoftHSM).
//! Relative paths in a file are taken relative to the file's directory; the
//! embedded defaults and the environment's are relative to the working
//! directory (the project root).
//!
//! - [`schema`]: every setting, its type and default;
//! - [`mod@env`]: the environment override of every setting (`INKAN_<SECTION>_<KEY>`);
//! - [`example`]: every setting explained, as a file (`inkan config example`);
//! - [`secrets`]: the token PINs (configured, or the PINs file `inkan init` writes).

pub mod env;
pub mod example;
pub mod schema;
pub mod secrets;

use std::path::{Path, PathBuf};

use inkan_keystore::{KeystoreConfig, Pin};

pub use schema::*;

/// Makes the relative paths written in a configuration file relative to the
/// file's directory (`base`); what the file does not set (defaults, the
/// environment) stays relative to the working directory.
fn relative_to(file: &mut toml::Table, base: &Path) {
    if base.as_os_str().is_empty() {
        return;
    }
    let fix = |v: &mut toml::Value| {
        if let toml::Value::String(p) = v {
            if Path::new(p.as_str()).is_relative() {
                *p = base.join(&*p).to_string_lossy().into_owned();
            }
        }
    };
    for setting in env::SETTINGS.iter().filter(|s| matches!(s.kind, env::Kind::Path | env::Kind::Paths)) {
        let value = match setting.key.split_once('.') {
            None => file.get_mut(setting.key),
            Some((section, key)) => file.get_mut(section).and_then(|t| t.as_table_mut()).and_then(|t| t.get_mut(key)),
        };
        match value {
            Some(toml::Value::Array(items)) => items.iter_mut().for_each(fix),
            Some(v) => fix(v),
            None => {}
        }
    }
}

impl Config {
    /// The configuration file [`Config::load`] reads, if any: `explicit`,
    /// else `$INKAN_CONFIG`, else `./inkan.toml` if present.
    pub fn file(explicit: Option<&Path>) -> Option<PathBuf> {
        let from_env = std::env::var_os("INKAN_CONFIG").map(PathBuf::from);
        match explicit.map(Path::to_path_buf).or(from_env) {
            Some(p) => Some(p),
            None => Some(PathBuf::from("inkan.toml")).filter(|p| p.exists()),
        }
    }

    /// Loads the configuration as described in the module documentation.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let file = Config::file(explicit);
        let mut table = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read the configuration file {}: {e}", path.display())))?;
                let mut table: toml::Table = toml::from_str(&text)
                    .map_err(|e| ConfigError(format!("configuration file {}: {e}", path.display())))?;
                relative_to(&mut table, path.parent().unwrap_or(Path::new("")));
                table
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default()).map_err(|e| ConfigError(e.to_string()))?;
        env::apply(&mut table, &defaults, |var| std::env::var(var).ok())?;
        let config: Config = table.try_into().map_err(|e| {
            let origin = file.as_ref().map_or("the INKAN_* environment".to_owned(), |f| {
                format!("the configuration file {} (and the INKAN_* environment)", f.display())
            });
            ConfigError(format!("{origin}: {e}"))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !["1", "2"].contains(&self.csc.scal.as_str()) {
            return Err(ConfigError(format!("[csc] scal must be \"1\" or \"2\", not {:?}", self.csc.scal)));
        }
        if self.fido.ticket_secs < 30 || self.fido.regcode_max_tries == 0 {
            return Err(ConfigError("[fido] ticket_secs must be at least 30 and regcode_max_tries at least 1".into()));
        }
        if self.server.session_hours == 0 {
            return Err(ConfigError("[server] session_hours must be at least 1".into()));
        }
        if self.server.audit_window_us > MAX_AUDIT_WINDOW_US || self.server.audit_idle_window_us > MAX_AUDIT_WINDOW_US {
            return Err(ConfigError(format!(
                "[server] audit_window_us and audit_idle_window_us must be at most {MAX_AUDIT_WINDOW_US} (1 s): every signature may wait that long"
            )));
        }
        if let Some(url) = &self.store.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError(format!(
                    "[store] url must be a postgres:// URL, not {:?}",
                    schema::redact_url(url)
                )));
            }
        }
        if self.store.max_connections == 0 {
            return Err(ConfigError("[store] max_connections must be at least 1".into()));
        }
        let l = &self.limits;
        if (l.per_address_per_minute > 0 && l.per_address_burst == 0)
            || (l.per_network_per_minute > 0 && l.per_network_burst == 0)
            || (l.per_user_per_minute > 0 && l.per_user_burst == 0)
            || l.connections == 0
            || l.connections_per_address == 0
            || l.connections_per_network == 0
            || l.min_body_rate == 0
        {
            return Err(ConfigError(
                "[limits] a burst (with its rate above 0), connections, connections_per_address, connections_per_network and min_body_rate must be at least 1"
                    .into(),
            ));
        }
        if l.body_grace_secs > 3600 {
            return Err(ConfigError("[limits] body_grace_secs must be at most 3600".into()));
        }
        if self.server.metrics_token.as_ref().is_some_and(|t| t.0.trim().len() < 16) {
            return Err(ConfigError(
                "[server] metrics_token must be at least 16 characters (a random secret), or unset".into(),
            ));
        }
        if l.enveloped_bytes < self.server.max_document_bytes {
            return Err(ConfigError(
                "[limits] enveloped_bytes must be at least [server] max_document_bytes (one document must fit)".into(),
            ));
        }
        Ok(())
    }

    /// The SQLite file.
    pub fn store_path(&self) -> PathBuf {
        self.store.path.clone().unwrap_or_else(|| self.data_dir.join("inkan.db"))
    }

    /// Whether the module is SoftHSM (then inkan manages its configuration file).
    pub fn is_softhsm(&self) -> bool {
        self.token.module.to_string_lossy().contains("softhsm")
    }

    /// The SoftHSM configuration file inkan uses, if any.
    pub fn softhsm_conf(&self) -> Option<PathBuf> {
        self.token
            .softhsm_conf
            .clone()
            .or_else(|| self.is_softhsm().then(|| self.data_dir.join("softhsm/softhsm2.conf")))
    }

    /// The PINs file written by `inkan init`.
    pub fn pins_path(&self) -> PathBuf {
        self.data_dir.join("token-pins.toml")
    }

    /// The user PIN: from the file/environment, else from the PINs file.
    pub fn user_pin(&self) -> Result<Pin, ConfigError> {
        secrets::user_pin(&self.token, &self.pins_path())
    }

    /// The security officer's PIN for `inkan kek rotate` with trusted KEKs:
    /// configured only, never from the PINs file.
    pub fn so_pin(&self) -> Result<Pin, ConfigError> {
        secrets::so_pin(&self.token)
    }

    /// The SO and user PINs for `inkan init`: configured ones, the PINs file's,
    /// or new random ones (then written to the PINs file, mode 0600).
    pub fn init_pins(&self, limits: (usize, usize)) -> Result<(Pin, Pin, secrets::PinSource), ConfigError> {
        secrets::init_pins(&self.token, &self.pins_path(), limits)
    }

    /// Sets `SOFTHSM2_CONF` for the module about to be loaded (before any thread starts).
    pub fn export_softhsm_conf(&self) {
        if let Some(conf) = self.softhsm_conf() {
            if conf.exists() {
                // Called from the main thread before the runtime or any worker starts.
                std::env::set_var("SOFTHSM2_CONF", conf);
            }
        }
    }

    /// The keystore settings.
    pub fn keystore(&self) -> Result<KeystoreConfig, ConfigError> {
        let mut ks = KeystoreConfig::new(self.token.module.clone(), self.token.label.clone(), self.user_pin()?);
        if self.token.pool_size > 0 {
            ks.pool_size = self.token.pool_size;
        }
        ks.lock_file = self.token_lock_file();
        ks.key_storage = match self.token.key_storage {
            schema::KeyStorage::Wrapped => inkan_keystore::KeyStorage::Wrapped,
            schema::KeyStorage::Object => inkan_keystore::KeyStorage::Object,
        };
        if self.token.cache_size == 0 {
            return Err(ConfigError("[token] cache_size must be at least 1".into()));
        }
        ks.cache_size = self.token.cache_size;
        Ok(ks)
    }

    /// The lock file through which processes sharing SoftHSM's token
    /// directory (nodes, the CLI) order their writes of it: beside SoftHSM's
    /// configuration; none for other modules.
    pub fn token_lock_file(&self) -> Option<PathBuf> {
        self.softhsm_conf().and_then(|c| c.parent().map(|d| d.join("inkan-token.lock")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_commit_windows_are_bounded() {
        assert!(Config::default().validate().is_ok());
        let mut config = Config::default();
        config.server.audit_idle_window_us = 2_000_000;
        let e = config.validate().expect_err("a 2 s window");
        assert!(e.0.contains("audit_idle_window_us") && e.0.contains("at most"), "{}", e.0);
        let mut config = Config::default();
        config.server.audit_window_us = MAX_AUDIT_WINDOW_US;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn paths_written_in_a_file_are_relative_to_it_and_the_module_is_left_alone() {
        let mut table: toml::Table = toml::from_str(
            r#"
            data_dir = "var"
            [token]
            module = "libsofthsm2.so"
            [store]
            path = "/abs/inkan.db"
            [hpki]
            anchors = ["a.pem", "/etc/b.pem"]
            intermediates = []
            crls = ["c.crl"]
            "#,
        )
        .expect("toml");
        relative_to(&mut table, Path::new("/etc/inkan"));
        let config: Config = table.try_into().expect("config");
        assert_eq!(config.data_dir, PathBuf::from("/etc/inkan/var"));
        assert_eq!(config.token.module, PathBuf::from("libsofthsm2.so"), "the loader searches a bare name");
        assert_eq!(config.store.path, Some(PathBuf::from("/abs/inkan.db")));
        assert_eq!(config.hpki.anchors, vec![PathBuf::from("/etc/inkan/a.pem"), PathBuf::from("/etc/b.pem")]);
        assert_eq!(config.hpki.crls, vec![PathBuf::from("/etc/inkan/c.crl")]);
        assert_eq!(config.pki.signing_ca, Config::default().pki.signing_ca, "defaults stay as they are");
    }
}
