//! The OpenAPI 3.1 document of inkan's API (`GET /openapi.json`): the
//! signing API under `/api/v1`, CSC v2 under `/csc/v2` and the same methods
//! under `/csc/v1` (v1's field names accepted), and the OpenID Connect
//! token, revoke and userinfo endpoints.
//!
//! Nothing here is written twice: every operation comes from its handler's
//! `#[utoipa::path]`, registered by the router ([`super::main_router`])
//! through the same call that routes it, and every schema is the type the
//! handler reads or answers. This module adds only what is the document's
//! own: its title, the security schemes, the server's URL, the error answers
//! every operation shares (413, 429, 500, 503), and distinct operation IDs
//! for the CSC v1 copies.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response, ResponseBuilder, Server, ServerBuilder};
use utoipa::{Modify, OpenApi};

/// The document's parts that are no handler's.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "inkan",
        description = "Remote signing for doctors and pharmacists: HPKI second keys in a PKCS#11 token, CAdES and \
                       XAdES (the national e-prescription profile) signatures, validation and extension.\n\n\
                       A signing system opens an auth session with OpenID Connect (the user logs in with an HPKI \
                       card, a My Number card or a phone: `/oidc/authorize`, see \
                       `/.well-known/openid-configuration`); the access token is the bearer of every other call.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "signing", description = "Documents and hashes signed with the session's key"),
        (name = "verification", description = "Signatures validated and extended (time-stamps, validation data)"),
        (name = "csc", description = "The Cloud Signature Consortium API (v2; under /csc/v1 the same with v1's names)"),
        (name = "oidc", description = "OpenID Connect: the session's tokens, logout and the user's claims"),
    ),
    modifiers(&SecuritySchemes),
)]
pub struct Base;

/// The two ways a caller proves who it is.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The access token of `/oidc/token`: the auth session (18 h by default)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "client",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The signing system's client ID and secret (`client_secret_basic`; `client_secret_post` \
                         in the form instead)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The prefix of the CSC v1 copies.
const CSC_V1: &str = "/csc/v1/";

/// The v1 methods that take v1's own field names (`hash`, `hashAlgo`).
const V1_NAMES: [&str; 2] = ["credentials/authorize", "signatures/signHash"];

/// The operations of the routes limited as `/oidc/token` is (failed client
/// authentications counted): they may answer 429.
const RATE_LIMITED: [&str; 2] = ["token", "revoke"];

/// An error answer with the error body.
fn error_answer(description: &str) -> RefOr<Response> {
    let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", body).build())
}

/// The answers every operation may give besides its own (each handler lists
/// the ones that are its own): 500 and 503 everywhere (the store or the token
/// can be away), 413 where there is a body, 429 on the rate-limited routes.
fn shared_answers(id: &str, operation: &mut Operation) {
    let mut add = |status: &str, description: &str| {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error_answer(description));
    };
    if operation.request_body.is_some() {
        add("413", "The body is over its limit");
    }
    if RATE_LIMITED.contains(&id) {
        add("429", "Too many refused requests from this address: `too_many_requests`, retry after `Retry-After`");
    }
    add("500", "An internal error (the log says more; the body does not)");
    add("503", "The token or the store is unavailable, or the service is busy: retry after `Retry-After`");
}

/// The finished document for a service at `public_url`: the routed
/// operations (`routed`, from the router) with the server's URL, the CSC v1
/// copies given their own operation IDs (`v1_` before v2's), and a handler
/// routed for two methods given one ID each (the second method's name after
/// it): an operation ID is unique in a document.
pub fn finish(mut routed: utoipa::openapi::OpenApi, public_url: &str) -> utoipa::openapi::OpenApi {
    routed.servers = Some(vec![server(public_url)]);
    let mut seen = std::collections::BTreeSet::new();
    for (path, item) in routed.paths.paths.iter_mut() {
        let v1 = path.starts_with(CSC_V1);
        let operations = [
            ("Get", &mut item.get),
            ("Put", &mut item.put),
            ("Post", &mut item.post),
            ("Delete", &mut item.delete),
            ("Patch", &mut item.patch),
            ("Head", &mut item.head),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let Some(mut id) = operation.operation_id.take() else { continue };
            shared_answers(&id, operation);
            if v1 {
                id = format!("v1_{id}");
                let note = if V1_NAMES.iter().any(|m| path.ends_with(m)) {
                    "CSC v1: as under /csc/v2 (both take v1's `hash` and `hashAlgo` for `hashes` and \
                     `hashAlgorithmOID`)."
                } else {
                    "CSC v1: as under /csc/v2."
                };
                operation.description = Some(format!("{note}\n\n{}", operation.description.take().unwrap_or_default()));
            }
            if !seen.insert(id.clone()) {
                id = format!("{id}{method}");
                seen.insert(id.clone());
            }
            operation.operation_id = Some(id);
        }
    }
    routed
}

fn server(public_url: &str) -> Server {
    ServerBuilder::new().url(public_url.trim_end_matches('/')).description(Some("this inkan")).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_both_security_schemes() {
        let doc = finish(Base::openapi(), "https://inkan.example/");
        let json = serde_json::to_value(&doc).unwrap_or_default();
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(json["servers"][0]["url"], "https://inkan.example");
        assert_eq!(json["components"]["securitySchemes"]["session"]["scheme"], "bearer");
        assert_eq!(json["components"]["securitySchemes"]["client"]["scheme"], "basic");
    }

    #[test]
    fn every_operation_gets_the_answers_all_share() {
        let mut operation = Operation::new();
        operation.request_body = Some(utoipa::openapi::RefOr::T(Default::default()));
        shared_answers("token", &mut operation);
        let statuses: Vec<&String> = operation.responses.responses.keys().collect();
        assert_eq!(statuses, ["413", "429", "500", "503"]);
        let mut operation = Operation::new();
        shared_answers("me", &mut operation);
        assert_eq!(operation.responses.responses.keys().collect::<Vec<_>>(), ["500", "503"]);
    }
}
