//! The OpenAPI 3.1 document of inkan's API (`GET /openapi.json`): the
//! signing API under `/api/v1`, CSC v2 under `/csc/v2` and the same methods
//! under `/csc/v1` (v1's field names accepted), and the OpenID Connect
//! token, revoke and userinfo endpoints.
//!
//! Nothing here is written twice: every operation comes from its handler's
//! `#[utoipa::path]`, registered by the router ([`super::main_router`])
//! through the same call that routes it, and every schema is the type the
//! handler reads or answers. This module adds only what is the document's
//! own: its title, the security schemes, the server's URL, and distinct
//! operation IDs for the CSC v1 copies.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Server, ServerBuilder};
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
            if v1 {
                id = format!("v1_{id}");
                operation.description = Some(format!(
                    "CSC v1: as under /csc/v2, with v1's `hash` and `hashAlgo` accepted for `hashes` and \
                     `hashAlgorithmOID`.\n\n{}",
                    operation.description.take().unwrap_or_default()
                ));
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
}
