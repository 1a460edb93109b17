//! Users: doctors, dentists and pharmacists known to inkan.

use crate::audit::{self, Event};
use crate::clock::Clock;
use crate::pki::profile::Qualification;
use crate::store::{tx, Store, StoreError, User};

/// A user operation that cannot be done, with what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user.
    #[error("unknown user {0:?}: list users with `inkan user list`, add one with `inkan user add`")]
    Unknown(String),
    /// The ID is taken.
    #[error("user {0:?} exists already: see it with `inkan user show {0}`")]
    Duplicate(String),
    /// The ID or a field is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a user ID (本人ID): 1 to 64 characters, ASCII letters, digits and `-`,
/// such as `999001-jpa`, `F12345` or `R0000123`.
pub fn validate_id(id: &str) -> Result<(), UserError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(UserError::Invalid(format!(
            "invalid user ID {id:?}: use 1-64 ASCII letters, digits and '-' (e.g. 999001-jpa)"
        )))
    }
}

/// Adds a user.
pub fn add(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    id: &str,
    name: &str,
    qualification: Qualification,
) -> Result<User, UserError> {
    validate_id(id)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(UserError::Invalid("the name must have 1 to 200 characters".into()));
    }
    let now = clock.now_ms();
    let user = User {
        id: id.to_owned(),
        name: name.to_owned(),
        qualification: qualification.as_str().to_owned(),
        status: "active".into(),
        created_at: now,
    };
    store.write(|t| {
        if t.query_row("SELECT 1 FROM users WHERE id = ?1", [id], |_| Ok(())).is_ok() {
            return Ok(Err(UserError::Duplicate(id.to_owned())));
        }
        tx::insert_user(t, &user)?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "user.add",
                user_id: Some(id),
                outcome: "ok",
                detail: serde_json::json!({ "name": user.name, "qualification": user.qualification }),
                ..Default::default()
            }],
        )?;
        Ok(Ok(()))
    })??;
    Ok(user)
}

/// A user that must exist.
pub fn get(store: &Store, id: &str) -> Result<User, UserError> {
    store.user(id)?.ok_or_else(|| UserError::Unknown(id.to_owned()))
}

/// Enables or disables a user.
pub fn set_status(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    id: &str,
    enabled: bool,
) -> Result<User, UserError> {
    get(store, id)?;
    let status = if enabled { "active" } else { "disabled" };
    let now = clock.now_ms();
    store.write(|t| {
        tx::set_user_status(t, id, status)?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: if enabled { "user.enable" } else { "user.disable" },
                user_id: Some(id),
                outcome: "ok",
                detail: serde_json::json!({}),
                ..Default::default()
            }],
        )?;
        Ok(())
    })?;
    get(store, id)
}
