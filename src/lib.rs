//! inkan (印鑑, the personal seal): a remote-signing service for doctors and pharmacists.
//!
//! Each user's second signing key lives in a PKCS#11 token ([`inkan_keystore`]).
//! This crate composes it with the rest of the service:
//!
//! - [`config`]: one TOML file with environment overrides;
//! - [`store`]: SQLite (WAL) with migrations: users, keys, audit;
//! - [`audit`]: the append-only, hash-chained audit log;
//! - [`cades`]: CAdES-BES / baseline-B `SignedData` over documents or digests;
//! - [`pki`]: certificate profiles (HPKI, JPKI), a small CA for fixtures and demos,
//!   and the checks made when a certificate is imported;
//! - [`keys`]: the key lifecycle (generate, CSR, import, rotate, retire) and signing;
//! - [`auth`]: card certificates, auth sessions, OpenID Connect;
//! - [`server`]: the HTTPS service (`inkan serve`): OIDC, signing API, CSC API;
//! - [`cli`]: the operator CLI.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod cades;
pub mod cli;
pub mod clock;
pub mod config;
pub mod fido;
pub mod fixtures;
pub mod keys;
pub mod pki;
pub mod server;
pub mod store;
pub mod users;

pub use inkan_keystore as keystore;
