//! Users (doctors, dentists and pharmacists) and the records of their keys,
//! with the storage they need ([`UserStore`]).

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use inkan_keystore::KeyAlgorithm;
use serde::Serialize;

use crate::audit::AuditStore;
use crate::audit::{self, Event};
use crate::clock::Clock;
use crate::error::{Error, Forbidden, Missing, Result};
use crate::pki::profile::Qualification;
use crate::seam::{StoreError, Transaction, Transactions};

/// Whether a user may sign and log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// May sign and log in.
    Active,
    /// Disabled by an operator.
    Disabled,
}

impl UserStatus {
    /// `active` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for UserStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(StoreError::Corrupt(format!("unknown user status {other:?}"))),
        }
    }
}

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    /// User ID (本人ID), e.g. `999001-jpa`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Qualification (`doctor`, `dentist`, `pharmacist`).
    pub qualification: String,
    /// Whether the user may sign.
    pub status: UserStatus,
    /// Creation time, Unix milliseconds (RFC 3339 in JSON).
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
    pub created_at: i64,
}

impl User {
    /// Whether the user may sign and log in.
    pub fn is_active(&self) -> bool {
        self.status == UserStatus::Active
    }
}

/// Where a key generation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Generated, waiting for its certificate.
    Pending,
    /// Signs.
    Active,
    /// Signs no more.
    Retired,
}

impl KeyState {
    /// `pending`, `active` or `retired`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(KeyState::Pending),
            "active" => Ok(KeyState::Active),
            "retired" => Ok(KeyState::Retired),
            other => Err(StoreError::Corrupt(format!("unknown key state {other:?}"))),
        }
    }
}

/// A key generation of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Owner.
    pub user_id: String,
    /// 1, 2, ... per user.
    pub generation: i64,
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// `CKA_ID` in the token.
    pub token_id: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// DER PKCS#10 request.
    pub csr: Vec<u8>,
    /// DER certificate, once imported.
    pub certificate: Option<Vec<u8>>,
    /// Where it stands.
    pub state: KeyState,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub activated_at: Option<i64>,
    /// Unix milliseconds.
    pub retired_at: Option<i64>,
}

/// Where an enabled user's keys stand ([`UserStore::key_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    /// The user.
    pub user_id: String,
    /// Whether the user has an active key.
    pub active: bool,
    /// The generation of the user's pending key, if any.
    pub pending: Option<i64>,
}

/// A user's active key, as a login reads it with its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveKey {
    /// Its generation.
    pub generation: i64,
    /// `CKA_ID` in the token.
    pub token_id: Vec<u8>,
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
}

/// Parses a stored key algorithm.
pub fn parse_algorithm(s: &str) -> Result<KeyAlgorithm, StoreError> {
    s.parse().map_err(|e: inkan_keystore::Error| StoreError::Corrupt(e.to_string()))
}

/// What users and keys need from storage.
#[async_trait]
pub trait UserStore: Send {
    /// A user by ID.
    async fn user(&mut self, id: &str) -> Result<Option<User>, StoreError>;
    /// All users, by ID.
    async fn users(&mut self) -> Result<Vec<User>, StoreError>;
    /// Inserts a user ([`StoreError::Conflict`] if the ID exists).
    async fn insert_user(&mut self, user: &User) -> Result<(), StoreError>;
    /// Sets a user's status; false if there is no such user.
    async fn set_user_status(&mut self, id: &str, status: UserStatus) -> Result<bool, StoreError>;
    /// Keys of one user (or of everyone), by user and oldest generation first.
    async fn keys(&mut self, user_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError>;
    /// Every enabled user, by ID, with whether they have an active key and
    /// their pending key's generation (for the bulk key commands: no blobs read).
    async fn key_status(&mut self) -> Result<Vec<KeyStatus>, StoreError>;
    /// The user's active key, if any.
    async fn active_key(&mut self, user_id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// The next generation number of a user's keys.
    async fn next_generation(&mut self, user_id: &str) -> Result<i64, StoreError>;
    /// Inserts a key generation (at most one pending and one active per user).
    async fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError>;
    /// Makes a pending key active with its certificate; false if it was not pending.
    async fn activate_key(
        &mut self,
        user_id: &str,
        generation: i64,
        certificate: &[u8],
        at: i64,
    ) -> Result<bool, StoreError>;
    /// Retires one generation; false if it was retired already (or absent).
    async fn retire_key(&mut self, user_id: &str, generation: i64, at: i64) -> Result<bool, StoreError>;
    /// Up to `limit` keys of any state after `after` (user, generation), in
    /// that order (the database's): for commands that walk every key.
    async fn keys_after(&mut self, after: Option<(&str, i64)>, limit: usize) -> Result<Vec<KeyRecord>, StoreError>;
    /// Replaces a key's stored reference (a KEK rotation wrapped it again) if
    /// it is still `old`; false otherwise (changed or gone meanwhile).
    async fn replace_key_ref(
        &mut self,
        user_id: &str,
        generation: i64,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError>;
}

/// What user operations need in one transaction.
pub trait UsersTx: UserStore + AuditStore + Transaction {}
impl<T: UserStore + AuditStore + Transaction + ?Sized> UsersTx for T {}

/// Checks a user ID (本人ID): 1 to 64 characters, ASCII letters, digits and `-`,
/// such as `999001-jpa`, `F12345` or `R0000123`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid user ID {id:?}: use 1-64 ASCII letters, digits and '-' (e.g. 999001-jpa)")))
    }
}

/// The error for an unknown user ID, with what to do.
pub fn unknown(id: &str) -> Error {
    Error::NotFound(
        Missing::User,
        format!("unknown user {id:?}: list users with `inkan user list`, add one with `inkan user add`"),
    )
}

/// The error for a disabled user, with what to do.
pub fn disabled(id: &str) -> Error {
    Error::Forbidden(
        Forbidden::Disabled,
        format!("user {id:?} is disabled: enable it with `inkan user enable {id}` first"),
    )
}

/// A user that must exist, inside a transaction.
pub async fn get_in<U: UserStore + ?Sized>(tx: &mut U, id: &str) -> Result<User> {
    tx.user(id).await?.ok_or_else(|| unknown(id))
}

/// A user that must exist.
pub async fn get<T: UserStore + Transaction + ?Sized>(store: &dyn Transactions<T>, id: &str) -> Result<User> {
    let mut tx = store.read().await?;
    get_in(&mut *tx, id).await
}

/// All users, by ID.
pub async fn list<T: UserStore + Transaction + ?Sized>(store: &dyn Transactions<T>) -> Result<Vec<User>> {
    Ok(store.read().await?.users().await?)
}

/// Adds a user.
pub async fn add<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    id: &str,
    name: &str,
    qualification: Qualification,
) -> Result<User> {
    validate_id(id)?;
    let name = checked_name(name)?;
    let now = clock.now_ms();
    let user = User {
        id: id.to_owned(),
        name: name.to_owned(),
        qualification: qualification.as_str().to_owned(),
        status: UserStatus::Active,
        created_at: now,
    };
    let mut tx = store.write().await?;
    if tx.user(id).await?.is_some() {
        return Err(Error::Conflict(format!("user {id:?} exists already: see it with `inkan user show {id}`")));
    }
    tx.insert_user(&user).await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "name": user.name, "qualification": user.qualification }),
            ..Event::new(actor, crate::audit::Name::UserAdd)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// Checks a user's display name; returns it trimmed.
fn checked_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::Invalid("the name must have 1 to 200 characters".into()));
    }
    Ok(name)
}

/// One user to import (a row of `inkan user import`).
#[derive(Clone, Debug)]
pub struct ImportRow {
    /// The row's line in the file (for the report).
    pub line: usize,
    /// User ID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `doctor`, `dentist` or `pharmacist`.
    pub qualification: String,
}

/// A row that was not imported, and why.
#[derive(Clone, Debug, Serialize)]
pub struct ImportFailure {
    /// The line in the file.
    pub line: usize,
    /// The user ID as written (may be malformed).
    pub user_id: String,
    /// What is wrong, and what to do.
    pub error: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// Rows read.
    pub rows: usize,
    /// Users added.
    pub added: usize,
    /// Rows whose user exists already with the same name and qualification
    /// (an import run again after a kill finds these).
    pub unchanged: usize,
    /// Rows refused, each with its reason.
    pub failed: Vec<ImportFailure>,
}

/// Users committed per transaction by [`import`]: a killed import loses at
/// most the batch in flight, which a second run adds.
pub const IMPORT_BATCH: usize = 500;

/// Adds users in batches, one transaction (and one audit row per user) per
/// batch; a row that is malformed, or names an existing user with other data,
/// is reported and the others go on. A user that exists with the same data is
/// counted as unchanged, so running an import again adds only what is missing.
/// `progress` is called with the rows done after each batch.
pub async fn import<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    rows: &[ImportRow],
    mut report: ImportReport,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<ImportReport> {
    report.rows += rows.len();
    let mut done = 0;
    for batch in rows.chunks(IMPORT_BATCH) {
        let now = clock.now_ms();
        let mut tx = store.write().await?;
        let mut added: Vec<User> = Vec::new();
        let mut in_batch: std::collections::HashMap<String, (String, String)> = std::collections::HashMap::new();
        for row in batch {
            let checked = (|| {
                validate_id(&row.id)?;
                let name = checked_name(&row.name)?;
                let q: Qualification = row.qualification.trim().parse().map_err(|_| {
                    Error::Invalid(format!(
                        "qualification {:?} is not doctor, dentist or pharmacist",
                        row.qualification.trim()
                    ))
                })?;
                Ok::<_, Error>((name.to_owned(), q.as_str().to_owned()))
            })();
            let (name, qualification) = match checked {
                Ok(v) => v,
                Err(e) => {
                    report.failed.push(ImportFailure { line: row.line, user_id: row.id.clone(), error: e.to_string() });
                    continue;
                }
            };
            // A line repeated in the file is the same user again; the same ID
            // with other data is refused.
            match in_batch.get(&row.id) {
                Some(first) if *first == (name.clone(), qualification.clone()) => {
                    report.unchanged += 1;
                    continue;
                }
                Some(_) => {
                    report.failed.push(ImportFailure {
                        line: row.line,
                        user_id: row.id.clone(),
                        error: "the same user ID is on an earlier line of the file with other data".into(),
                    });
                    continue;
                }
                None => {
                    in_batch.insert(row.id.clone(), (name.clone(), qualification.clone()));
                }
            }
            match tx.user(&row.id).await? {
                Some(u) if u.name == name && u.qualification == qualification => report.unchanged += 1,
                Some(u) => report.failed.push(ImportFailure {
                    line: row.line,
                    user_id: row.id.clone(),
                    error: format!(
                        "user {} exists already as {} ({}): change the row, or the user with `inkan user show {}`",
                        u.id, u.name, u.qualification, u.id
                    ),
                }),
                None => {
                    let user =
                        User { id: row.id.clone(), name, qualification, status: UserStatus::Active, created_at: now };
                    tx.insert_user(&user).await?;
                    added.push(user);
                }
            }
        }
        let events: Vec<Event<'_>> = added
            .iter()
            .map(|u| Event {
                user_id: Some(u.id.as_str().into()),
                outcome: "ok",
                detail: serde_json::json!({ "name": u.name, "qualification": u.qualification, "via": "import" }),
                ..Event::new(actor, crate::audit::Name::UserAdd)
            })
            .collect();
        if !events.is_empty() {
            audit::append(&mut *tx, now, &events).await?;
        }
        tx.commit().await?;
        crate::crash::point("user-import-after-batch");
        report.added += added.len();
        done += batch.len();
        progress(done);
    }
    Ok(report)
}

/// Enables or disables a user.
pub async fn set_status<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    id: &str,
    enabled: bool,
) -> Result<User> {
    let status = if enabled { UserStatus::Active } else { UserStatus::Disabled };
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    let mut user = get_in(&mut *tx, id).await?;
    tx.set_user_status(id, status).await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(id.into()),
            outcome: "ok",
            detail: serde_json::json!({}),
            ..Event::new(actor, if enabled { crate::audit::Name::UserEnable } else { crate::audit::Name::UserDisable })
        }],
    )
    .await?;
    tx.commit().await?;
    user.status = status;
    Ok(user)
}
