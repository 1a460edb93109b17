//! inkan (印鑑, the personal seal): a remote-signing service for doctors and pharmacists.
//!
//! Each user's second signing key lives in a PKCS#11 token ([`inkan_keystore`]).
//! This crate composes it with the rest of the service, in three layers; an
//! arrow only ever points inwards:
//!
//! - **Adapters**: [`server`] (HTTPS: parse, authenticate the caller into a
//!   principal, call one domain operation, render) and [`cli`] (one file per
//!   command group). No SQL, no token calls, no flow decisions.
//! - **Domain**: [`signing`] (one pipeline, formats behind a seam), [`auth`]
//!   (cards, OpenID Connect, sessions, SADs), [`fido`] (phones: the typed
//!   ticket state machine and its flows), [`users`] and [`keys`] (lifecycle),
//!   [`audit`] (the hash chain and its group-commit writer), [`pki`]
//!   (certificate profiles and checks), [`demo`] and [`setup`], assembled by
//!   [`service`]. Each area declares the storage it needs as a trait
//!   (the [`seam`]); errors are [`error::Error`].
//! - **Infrastructure**: [`inkan_keystore`] (PKCS#11 only), [`store`] (every
//!   area's storage composed, and its SQLite implementation: nothing else
//!   names the driver), [`config`], [`clock`], [`metrics`].
//!
//! Where a change goes:
//! - a new signature format: a module in `signing/` behind [`signing::format`];
//! - a second storage backend: a module in `store/` implementing [`store::Store`];
//! - a new login method: [`auth`] (see its module docs) and its pages in `server/`;
//! - a new phone flow: a ticket kind in [`fido::ticket`] and its operation in [`fido::flows`].
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
mod crash;
pub mod demo;
pub mod encoding;
pub mod eps;
pub mod error;
pub mod extend;
pub mod fetch;
pub mod fido;
pub mod fixtures;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod kek;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod request_id;
pub mod revocation;
pub mod seam;
pub mod server;
pub mod service;
pub mod setup;
pub mod signing;
pub mod store;
pub mod throttle;
pub mod tsa;
pub mod users;
pub mod verify;
pub mod xml;

pub use error::{Error, Result};
pub use inkan_keystore as keystore;
