//! Secrets of the configuration: the token's PINs. Given in the file or the
//! environment (`INKAN_TOKEN_USER_PIN`, `INKAN_TOKEN_SO_PIN`), else read from
//! the PINs file `inkan init` writes (`<data_dir>/token-pins.toml`, mode 0600,
//! random PINs the first time). PINs never appear in logs or errors.

use std::path::Path;

use inkan_keystore::Pin;
use serde::{Deserialize, Serialize};

use super::schema::{ConfigError, TokenConfig};

/// The token PINs file written by `inkan init`. It holds no SO PIN with
/// trusted KEKs (`[token] kek = "trusted"`): whoever has both PINs could mark
/// a key of their own trusted and wrap every user's key out under it.
#[derive(Deserialize, Serialize)]
struct PinsFile {
    user_pin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    so_pin: Option<String>,
}

fn read(path: &Path) -> Option<PinsFile> {
    let text = std::fs::read_to_string(path).ok()?;
    toml::from_str(&text).ok()
}

/// The user PIN: configured, else from the PINs file at `pins`.
pub fn user_pin(token: &TokenConfig, pins: &Path) -> Result<Pin, ConfigError> {
    if let Some(p) = &token.user_pin {
        return Ok(Pin::new(p.clone()));
    }
    read(pins).map(|f| Pin::new(f.user_pin)).ok_or_else(|| {
        ConfigError(format!(
            "no token user PIN: set INKAN_TOKEN_USER_PIN, or run `inkan init` to create {}",
            pins.display()
        ))
    })
}

/// The SO PIN for trusted KEKs (`inkan kek rotate`): configured only, never
/// the PINs file's (which holds no SO PIN with trusted KEKs).
pub fn so_pin(token: &TokenConfig) -> Result<Pin, ConfigError> {
    token.so_pin.as_ref().map(|p| Pin::new(p.clone())).ok_or_else(|| {
        ConfigError(
            "no SO PIN: give the security officer's PIN as INKAN_TOKEN_SO_PIN to this command only \
             (with trusted KEKs it is never read from the PINs file, nor kept in the server's configuration)"
                .into(),
        )
    })
}

/// Whether the PINs file at `pins` holds an SO PIN.
pub fn pins_file_has_so_pin(pins: &Path) -> bool {
    read(pins).is_some_and(|f| f.so_pin.is_some())
}

/// Where `inkan init` keeps new random PINs until the token has them: the
/// PINs file only appears once the token is made, and a killed init finds
/// them here to finish the token with.
pub fn pending_path(pins: &Path) -> std::path::PathBuf {
    pins.with_extension("pending")
}

/// The SO and user PINs for `inkan init`: configured ones, the PINs file's, a
/// killed init's pending ones, or new random ones of a length the token takes
/// (`limits`: its shortest and longest PIN), kept in the pending file (mode
/// 0600) until [`commit_pins`].
pub fn init_pins(
    token: &TokenConfig,
    pins: &Path,
    limits: (usize, usize),
) -> Result<(Pin, Pin, PinSource), ConfigError> {
    let (existing, source) = match read(pins) {
        Some(f) => (Some(f), PinSource::File),
        None => (read(&pending_path(pins)), PinSource::Pending),
    };
    // Trusted KEKs: the SO PIN is the operator's to give, and kept nowhere.
    let keep_so = token.kek != super::schema::KekKind::Trusted;
    if !keep_so && token.so_pin.is_none() {
        return Err(ConfigError(
            "[token] kek = \"trusted\" keeps the SO PIN apart from the user PIN: give it as INKAN_TOKEN_SO_PIN \
             to `inkan init` and `inkan kek rotate` only (it is not written to the PINs file)"
                .into(),
        ));
    }
    let so = token.so_pin.clone().or_else(|| existing.as_ref().and_then(|f| f.so_pin.clone()));
    let user = token.user_pin.clone().or_else(|| existing.as_ref().map(|f| f.user_pin.clone()));
    if let (Some(so), Some(user)) = (&so, &user) {
        let source = if token.so_pin.is_some() && token.user_pin.is_some() { PinSource::Configured } else { source };
        return Ok((Pin::new(so.clone()), Pin::new(user.clone()), source));
    }
    let (min, max) = limits;
    if max < min || max < 4 {
        return Err(ConfigError(format!(
            "the token takes PINs of {min} to {max} characters: set INKAN_TOKEN_USER_PIN and INKAN_TOKEN_SO_PIN"
        )));
    }
    let length = 16usize.clamp(min.max(4), max);
    let so = match so {
        Some(p) => p,
        None => random_pin(length)?,
    };
    let user = match user {
        Some(p) => p,
        None => random_pin(length)?,
    };
    let text = toml::to_string(&PinsFile { user_pin: user.clone(), so_pin: keep_so.then(|| so.clone()) })
        .map_err(|e| ConfigError(format!("PINs file: {e}")))?;
    let pending = pending_path(pins);
    write_private(&pending, text.as_bytes())
        .map_err(|e| ConfigError(format!("cannot write {}: {e}", pending.display())))?;
    Ok((Pin::new(so), Pin::new(user), PinSource::New))
}

/// Where [`init_pins`] found the PINs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// Both in the configuration (file or environment).
    Configured,
    /// The PINs file.
    File,
    /// A killed init's pending file.
    Pending,
    /// Made now (in the pending file).
    New,
}

/// After the token has its PINs: pending PINs become the PINs file if they
/// are the ones used; a stale pending file (PINs given otherwise since) goes.
pub fn settle_pins(pins: &Path, source: PinSource) -> Result<bool, ConfigError> {
    match source {
        PinSource::Pending | PinSource::New => commit_pins(pins),
        PinSource::Configured | PinSource::File => {
            let pending = pending_path(pins);
            if pending.exists() {
                std::fs::remove_file(&pending)
                    .map_err(|e| ConfigError(format!("cannot remove {}: {e}", pending.display())))?;
            }
            Ok(false)
        }
    }
}

/// Makes pending PINs the PINs file, once the token has them.
pub fn commit_pins(pins: &Path) -> Result<bool, ConfigError> {
    let pending = pending_path(pins);
    if !pending.exists() {
        return Ok(false);
    }
    std::fs::rename(&pending, pins).map_err(|e| ConfigError(format!("cannot write {}: {e}", pins.display())))?;
    Ok(true)
}

/// Whether an SO PIN is a module's well-known default (openCryptoki ships
/// `87654321`): anyone can then re-initialise the token.
pub fn is_default_so_pin(pin: &Pin) -> bool {
    ["87654321", "12345678", "1234", "0000"].contains(&pin.expose())
}

/// A random PIN of `length` digits; an error if the system gives no randomness.
fn random_pin(length: usize) -> Result<String, ConfigError> {
    let mut bytes = vec![0u8; length];
    getrandom::fill(&mut bytes)
        .map_err(|e| ConfigError(format!("the operating system gives no randomness for a PIN: {e}")))?;
    // 256 % 10 = 6: digits 0-5 are a little more likely (entropy > 52 bits for 16 digits).
    Ok(bytes.iter().map(|b| char::from(b'0' + b % 10)).collect())
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_random_pins_once_and_configured_ones_win() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let pins = dir.path().join("var/token-pins.toml");
        let token = TokenConfig::default();
        let (so, user, source) = init_pins(&token, &pins, (4, 255)).expect("init");
        assert_eq!(source, PinSource::New);
        assert_eq!((so.expose().len(), user.expose().len()), (16, 16));
        assert_ne!(so.expose(), user.expose());
        assert!(!pins.exists(), "no PINs file before the token has them");
        let pending = pending_path(&pins);
        assert_eq!(std::fs::metadata(&pending).expect("file").permissions().mode() & 0o777, 0o600);
        let (so1, user1, source) = init_pins(&token, &pins, (4, 255)).expect("after a kill");
        assert_eq!(source, PinSource::Pending);
        assert_eq!((so1.expose(), user1.expose()), (so.expose(), user.expose()), "a killed init's PINs, again");
        assert!(commit_pins(&pins).expect("commit"));
        assert!(pins.exists() && !pending.exists());
        assert_eq!(std::fs::metadata(&pins).expect("file").permissions().mode() & 0o777, 0o600);
        let (so2, user2, _) = init_pins(&token, &pins, (4, 255)).expect("again");
        assert_eq!((so2.expose(), user2.expose()), (so.expose(), user.expose()), "read back, not replaced");
        assert_eq!(user_pin(&token, &pins).expect("user pin").expose(), user.expose());
        let configured = TokenConfig { user_pin: Some("4321".into()), ..TokenConfig::default() };
        assert_eq!(user_pin(&configured, &pins).expect("configured").expose(), "4321");
        let missing = user_pin(&token, &dir.path().join("none.toml")).expect_err("no PIN");
        assert!(missing.0.contains("INKAN_TOKEN_USER_PIN"), "{missing}");
    }

    #[test]
    fn random_pins_fit_the_token() {
        let dir = tempfile::tempdir().expect("dir");
        let token = TokenConfig::default();
        let (so, user, _) = init_pins(&token, &dir.path().join("a.toml"), (4, 8)).expect("4-8");
        assert_eq!((so.expose().len(), user.expose().len()), (8, 8), "openCryptoki: at most 8");
        let (so, _, _) = init_pins(&token, &dir.path().join("b.toml"), (20, 64)).expect("20-64");
        assert_eq!(so.expose().len(), 20);
        assert!(init_pins(&token, &dir.path().join("c.toml"), (4, 3)).is_err());
        assert!(is_default_so_pin(&Pin::new("87654321")) && !is_default_so_pin(&so));
        // Pending PINs of a failed run, then PINs given in the configuration:
        // the pending ones must not become the PINs file.
        let pins = dir.path().join("c.toml");
        init_pins(&token, &pins, (4, 255)).expect("pending");
        let given =
            TokenConfig { user_pin: Some("111111".into()), so_pin: Some("222222".into()), ..TokenConfig::default() };
        let (_, _, source) = init_pins(&given, &pins, (4, 255)).expect("configured");
        assert_eq!(source, PinSource::Configured);
        assert!(!settle_pins(&pins, source).expect("settle"));
        assert!(!pins.exists() && !pending_path(&pins).exists(), "stale pending PINs removed, never committed");
    }
}
