//! Who is asking: the caller of a domain operation, after authentication.

use crate::error::{Error, Forbidden, Result};
use crate::users::ActiveKey;

use super::Method;

/// An authenticated caller acting for a user.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user whose key signs.
    pub user_id: String,
    /// Who acts, as the audit log names them: `client:<id>` for a signing
    /// system holding a session, `cli:<os user>` for an operator.
    pub actor: String,
    /// What authenticated the caller.
    pub authority: Authority,
    /// The user's active key when the caller was authenticated.
    pub key: Option<ActiveKey>,
}

/// What a principal's authority rests on.
#[derive(Clone, Debug)]
pub enum Authority {
    /// A signing system with an auth session the user opened by logging in.
    Session(SessionGrant),
    /// An operator on the machine (the CLI), acting for the user.
    Operator,
}

/// An auth session, as a principal carries it.
#[derive(Clone, Debug)]
pub struct SessionGrant {
    /// The signing system.
    pub client_id: String,
    /// How the user logged in.
    pub method: Method,
    /// Granted scope (space-separated).
    pub scope: String,
    /// Unix ms of the login.
    pub auth_time: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// The stored hash of the bearer token.
    pub token_hash: Vec<u8>,
}

impl Principal {
    /// An operator acting for `user_id` with the user's `key` (looked up by the caller).
    pub fn operator(actor: &str, user_id: &str, key: Option<ActiveKey>) -> Principal {
        Principal { user_id: user_id.to_owned(), actor: actor.to_owned(), authority: Authority::Operator, key }
    }

    /// The session, if the principal holds one.
    pub fn session(&self) -> Option<&SessionGrant> {
        match &self.authority {
            Authority::Session(s) => Some(s),
            Authority::Operator => None,
        }
    }

    /// How the user logged in (`cli` for an operator).
    pub fn method(&self) -> &'static str {
        self.session().map_or("cli", |s| s.method.as_str())
    }

    /// Requires the `sign` scope of a session (operators may always sign).
    pub fn require_sign_scope(&self) -> Result<()> {
        match self.session() {
            Some(s) if !s.scope.split(' ').any(|x| x == "sign") => {
                Err(Error::Forbidden(Forbidden::Scope, "the access token was not granted the sign scope".into()))
            }
            _ => Ok(()),
        }
    }

    /// The active key, or the error that the user has none.
    pub fn active_key(&self) -> Result<&ActiveKey> {
        self.key.as_ref().ok_or_else(|| {
            Error::Forbidden(
                Forbidden::NoActiveKey,
                match self.authority {
                    Authority::Session(_) => format!("user {} has no active signing key; ask the operator", self.user_id),
                    Authority::Operator => format!(
                        "user {} has no active key: generate one with `inkan key generate {}` and import its certificate",
                        self.user_id, self.user_id
                    ),
                },
            )
        })
    }
}
