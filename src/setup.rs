//! Setting up a data directory: the SoftHSM configuration, the token and its
//! PINs, the database (`inkan init`, also the first step of the demo); and
//! opening the token and the store as every command and the service do.

use std::path::Path;
use std::sync::Arc;

use inkan_keystore::{Keystore, TokenInit};
use serde::Serialize;

use crate::auth::sessions::Invalidation;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;

/// What `inkan init` did.
#[derive(Clone, Debug, Serialize)]
pub struct Initialised {
    /// What was done or found, for people.
    #[serde(skip)]
    pub steps: Vec<String>,
    /// Whether the token was created now.
    pub token_created: bool,
    /// The database (`sqlite:<path>` or the PostgreSQL URL without its
    /// password), once [`init`] opened it.
    pub database: Option<String>,
}

/// Creates a directory (and its missing parents) that only its owner may
/// enter: the data directory holds the database, the PINs file and SoftHSM's
/// token files.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes the SoftHSM configuration from `softhsm/softhsm2.conf.in` if it is
/// missing, with its token directory beside it; returns whether it wrote.
pub fn write_softhsm_conf(conf: &Path) -> std::io::Result<bool> {
    let dir = conf.parent().unwrap_or(Path::new("."));
    let tokens = dir.join("tokens");
    create_private_dir(&tokens)?;
    if conf.exists() {
        return Ok(false);
    }
    let tokens = std::fs::canonicalize(&tokens)?;
    let text = include_str!("../softhsm/softhsm2.conf.in").replace("@TOKENDIR@", &tokens.to_string_lossy());
    std::fs::write(conf, text)?;
    Ok(true)
}

/// Creates the data directory, the SoftHSM configuration and the token (with
/// random PINs unless configured). Idempotent. The database is [`init`]'s.
pub fn init_token(config: &Config) -> Result<Initialised> {
    let mut steps = Vec::new();
    let shown = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    if !config.data_dir.exists() {
        create_private_dir(&config.data_dir)
            .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", shown.display())))?;
        steps.push(format!("data directory {} created", shown.display()));
    } else {
        steps.push(format!("data directory {}", shown.display()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config.data_dir).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o700);
        if mode & 0o077 != 0 {
            steps.push(format!(
                "warning: others may enter {} (mode {mode:o}): it holds the database, the PINs file and the token; \
                 chmod 700 {}",
                shown.display(),
                shown.display()
            ));
        }
    }
    if let Some(conf) = config.softhsm_conf() {
        if write_softhsm_conf(&conf).map_err(|e| Error::Unavailable(format!("{}: {e}", conf.display())))? {
            steps.push(format!("SoftHSM configuration written to {}", conf.display()));
        }
    }
    // Before any thread starts: `inkan init` and `serve --demo` run this first.
    config.export_softhsm_conf();
    let limits = inkan_keystore::pin_limits(&config.token.module, &config.token.label)
        .map_err(|e| Error::Unavailable(format!("cannot set up the token {:?}: {e}", config.token.label)))?;
    let (so_pin, user_pin, source) = config.init_pins((limits.min, limits.max)).map_err(|e| Error::Invalid(e.0))?;
    let lock = config.token_lock_file();
    let token =
        inkan_keystore::init_token(&config.token.module, &config.token.label, &so_pin, &user_pin, lock.as_deref())
            .map_err(|e| Error::Unavailable(format!("cannot set up the token {:?}: {e}", config.token.label)))?;
    // The PINs file appears once the token has its PINs.
    let configured = source == crate::config::secrets::PinSource::Configured;
    crate::config::secrets::settle_pins(&config.pins_path(), source).map_err(|e| Error::Unavailable(e.0))?;
    let pins =
        if configured { "PINs as configured".to_owned() } else { format!("PINs in {}", config.pins_path().display()) };
    steps.push(match token {
        TokenInit::Created => format!("token {:?} created ({pins})", config.token.label),
        TokenInit::Finished => format!(
            "token {:?} finished: an earlier init was stopped before its user PIN was set ({pins})",
            config.token.label
        ),
        TokenInit::Existing => format!("token {:?} exists", config.token.label),
    });
    if token != TokenInit::Existing && crate::config::secrets::is_default_so_pin(&so_pin) {
        steps.push(
            "warning: the SO PIN is the module's well-known default: change it with the module's own tool \
             (openCryptoki: pkcsconf -P), then give the new one as INKAN_TOKEN_SO_PIN"
                .to_owned(),
        );
    }
    // Check the PIN works, and make the key that signs ID tokens now: nodes
    // started together afterwards find it instead of each making one.
    let mut keystore = open_keystore(config)?;
    crate::auth::oidc::platform_key(&keystore, config.server.id_token_alg)
        .map_err(|e| Error::Unavailable(format!("cannot make the platform key in the token: {e}")))?;
    if config.token.kek == crate::config::schema::KekKind::Trusted {
        keystore.check_trust_reserved().map_err(|e| Error::Unavailable(e.to_string()))?;
        if crate::config::secrets::pins_file_has_so_pin(&config.pins_path()) {
            steps.push(format!(
                "warning: {} holds the SO PIN: with trusted KEKs, keep it offline and remove it from that file",
                config.pins_path().display()
            ));
        }
        let newest = keystore.newest_kek_index().map_err(|e| Error::Unavailable(e.to_string()))?;
        match newest {
            None => {
                let (reopened, _) = make_trusted_kek(config, keystore, &so_pin, 1, &mut steps)?;
                keystore = reopened;
            }
            Some(index) => {
                let strict = keystore
                    .keks()
                    .map_err(|e| Error::Unavailable(e.to_string()))?
                    .iter()
                    .any(|k| k.index == index && k.kind == inkan_keystore::KekKind::Strict);
                if strict {
                    steps.push(format!(
                        "note: KEK {index} is strict ([token] kek was \"strict\" when it was made): \
                         `inkan kek rotate` makes a trusted one for new keys; keys under KEK {index} move only \
                         by rotating them (inkan key rotate)"
                    ));
                }
            }
        }
    }
    // The key-encryption key and its MAC key, which every wrapped user key needs.
    let wrapping = keystore
        .prepare_wrapping()
        .map_err(|e| Error::Unavailable(format!("cannot make the key-encryption key in the token: {e}")))?;
    if wrapping.created {
        steps.push(format!("key-encryption key {} created in the token", wrapping.kek_index));
    }
    // The audit log's seal key (HMAC, never extractable).
    if keystore
        .prepare_seal_key()
        .map_err(|e| Error::Unavailable(format!("cannot make the audit seal key in the token: {e}")))?
    {
        steps.push("audit seal key created in the token".into());
    }
    Ok(Initialised { steps, token_created: token == TokenInit::Created, database: None })
}

/// Has the security officer make trusted KEK `index` (`inkan init`, `inkan
/// kek rotate`): `keystore` is closed first (the token allows one kind of
/// login at a time in a process) and opened again. Returns it and whether the
/// KEK was made now; says so in `steps`, with SoftHSM's warning.
pub fn make_trusted_kek(
    config: &Config,
    keystore: Keystore,
    so_pin: &inkan_keystore::Pin,
    index: u32,
    steps: &mut Vec<String>,
) -> Result<(Keystore, bool)> {
    drop(keystore);
    let lock = config.token_lock_file();
    let made =
        inkan_keystore::create_trusted_kek(&config.token.module, &config.token.label, so_pin, lock.as_deref(), index)
            .map_err(|e| Error::Unavailable(format!("cannot make trusted key-encryption key {index}: {e}")))?;
    let keystore = open_keystore(config)?;
    if made {
        steps.push(format!("trusted key-encryption key {index} made by the security officer"));
    }
    if config.is_softhsm() {
        steps.push(
            "warning: SoftHSM keeps a trusted KEK (a public object) unencrypted in its token directory: whoever \
             reads that directory can unwrap every user's key. Use [token] kek = \"trusted\" with an HSM; on \
             SoftHSM keep \"strict\""
                .to_owned(),
        );
    }
    Ok((keystore, made))
}

/// [`init_token`], then the database (created and migrated).
pub async fn init(config: &Config) -> Result<Initialised> {
    let mut done = init_token(config)?;
    let store = open_store(config).await?;
    let described = match &config.store.url {
        Some(_) => store.describe(),
        None => {
            let path = config.store_path();
            format!("sqlite:{}", std::path::absolute(&path).unwrap_or(path).display())
        }
    };
    done.steps.push(format!("database {described} ready"));
    done.database = Some(store.describe());
    Ok(done)
}

/// Opens the token, with a hint when it cannot be used. SoftHSM's
/// configuration must have been exported first ([`Config::export_softhsm_conf`],
/// before any thread starts).
pub fn open_keystore(config: &Config) -> Result<Keystore> {
    let ks_config = config.keystore().map_err(|e| Error::Invalid(e.0))?;
    Keystore::open(ks_config).map_err(|e| {
        let hint = match &e {
            inkan_keystore::Error::LoginFailed { .. } => {
                " (check INKAN_TOKEN_USER_PIN or the pins file written by `inkan init`)"
            }
            inkan_keystore::Error::TokenUnavailable { .. } => " (run `inkan init`, or check [token] module and label)",
            _ => "",
        };
        Error::Unavailable(format!("cannot use the token {:?}: {e}{hint}", config.token.label))
    })
}

/// How the configured store tells running servers that auth state changed,
/// without opening the store (the CLI's note after every command): SQLite's
/// epoch file, or PostgreSQL's version row over a connection of its own.
pub fn invalidation(config: &Config) -> Arc<dyn Invalidation> {
    if config.store.url.is_some() {
        return Arc::new(crate::store::postgres::epoch::PgBump::new(&config.store));
    }
    let epoch = crate::store::sqlite::epoch::path_for(&config.store_path());
    Arc::new(crate::store::sqlite::epoch::EpochFile::new(epoch))
}

/// Refuses to go on when the configured SQLite database does not exist:
/// only `inkan init` (and the demo) make one, so that a command run in the
/// wrong directory says so instead of working on a new, empty database.
pub fn require_database(config: &Config) -> Result<()> {
    if config.store.url.is_some() {
        return Ok(());
    }
    let path = config.store_path();
    if path.exists() {
        return Ok(());
    }
    let shown = std::path::absolute(&path).unwrap_or(path);
    Err(Error::Unavailable(format!(
        "no inkan database at {}: run `inkan init` to make one there, or point --config (or INKAN_CONFIG) at the \
         installation's configuration file",
        shown.display()
    )))
}

/// Opens (creating and migrating) the configured store: PostgreSQL at
/// `[store] url`, else SQLite at `[store] path`.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    if let Some(url) = &config.store.url {
        return crate::store::postgres::PgStore::open(&config.store)
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| {
                Error::Unavailable(format!("cannot open the database {}: {e}", crate::config::redact_url(url)))
            });
    }
    crate::store::sqlite::SqliteStore::open(&config.store_path(), config.store.synchronous)
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| Error::Unavailable(format!("cannot open the database {}: {e}", config.store_path().display())))
}
