//! The HTTP layer's state: the service, and what only HTTP needs (limits).

use std::ops::Deref;

use axum::http::HeaderMap;

use crate::auth::principal::Principal;
use crate::config::Config;
use crate::error::{Credential, Error, Result};
use crate::service::Service;

use super::limits::Limits;

/// Everything a request handler needs: the service (its parts are reached
/// through it, `app.signing`, `app.sessions`, ...) and the limits.
pub struct App {
    /// The domain.
    pub service: Service,
    /// Rate and connection limits.
    pub limits: Limits,
}

impl Deref for App {
    type Target = Service;

    fn deref(&self) -> &Service {
        &self.service
    }
}

impl App {
    /// The service and the limits.
    pub async fn build(config: Config, demo_mode: bool) -> Result<App> {
        let limits = Limits::new(&config.limits);
        // Every page's template parses, or the server does not start.
        super::pages::templates().check()?;
        Ok(App { service: Service::open(config, demo_mode).await?, limits })
    }

    /// Now, in Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The principal behind the request's bearer token.
    pub async fn principal(&self, headers: &HeaderMap) -> Result<Principal> {
        let invalid = |m: &str| Error::Unauthenticated(Credential::Bearer, m.to_owned());
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| invalid("missing Authorization: Bearer <access token>"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| invalid("the Authorization header must be Bearer <access token>"))?;
        let principal = self.sessions.authenticate(token).await?;
        super::slots::prove_connection();
        Ok(principal)
    }
}
