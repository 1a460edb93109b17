//! inkan's integration tests: one binary, real components only.
//!
//! - the `inkan` binary, run as an operator would, against
//! - SoftHSM (each test its own token directory and label),
//! - a real SQLite file, or with `INKAN_TEST_STORE=postgres` a real PostgreSQL
//!   server (a throwaway cluster the tests start, `postgres.rs`),
//! - signatures checked by `openssl cms -verify`.
//!
//! `hostile.rs` holds the tests of what an attacker without credentials can
//! do, grouped by attack. In process, without sockets: the keystore's rooms
//! (`keystore/`) and the phone flows (`flows.rs`: the domain over a real
//! SQLite file and a token of the shared SoftHSM pool, a clock the test moves).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

mod audit_time;
mod authenticator;
mod browser;
mod cades;
mod certomancer;
mod cli;
mod database;
mod extend;
mod fido;
mod flows;
mod harness;
mod hostile;
mod http;
mod keystore;
mod layout;
mod nodes;
mod openapi;
mod operations;
mod postgres;
mod service;
mod tsa;
mod xades;
