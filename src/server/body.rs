//! Reading request bodies with limits.

use std::collections::HashMap;

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// How much of an oversized body is still read (and dropped) before answering
/// 413, so that a client that sends it all reads the answer instead of a reset.
const DRAIN_LIMIT: usize = 8 << 20;

/// Reads and drops the rest of a refused body, up to 8 MiB.
pub async fn drain(body: &mut Body) {
    let mut drained = 0usize;
    while drained < DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>> {
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Invalid(format!("cannot read the request body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                drain(&mut body).await;
                return Err(Error::TooLarge { limit });
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

/// Reads and parses a JSON body (unknown fields and wrong types are refused by
/// the target type's serde attributes).
pub async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T> {
    let bytes = read_limited(body, limit).await?;
    if bytes.is_empty() {
        return Err(Error::Invalid("the request body must be a JSON object".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("invalid JSON: {e}")))
}

/// Reads a JSON body that may be empty (then the type's default).
pub async fn read_json_or_empty<T: DeserializeOwned + Default>(body: Body, limit: usize) -> Result<T> {
    let bytes = read_limited(body, limit).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("invalid JSON: {e}")))
}

/// The largest body a route anyone may call reads: every form (IDs, codes,
/// passwords, an authorization code and a client's credentials) and CSC
/// `info`. The signing APIs read theirs after the bearer token is checked.
pub const MAX_OPEN_BODY_BYTES: usize = 16 << 10;

/// Reads an `application/x-www-form-urlencoded` body of at most
/// [`MAX_OPEN_BODY_BYTES`]; a repeated parameter is refused.
pub async fn read_form(body: Body) -> Result<HashMap<String, String>> {
    let bytes = read_limited(body, MAX_OPEN_BODY_BYTES).await?;
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(&bytes) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(Error::Invalid(format!("parameter {k} is repeated")));
        }
    }
    Ok(out)
}

/// Reads a form body as [`read_form`] does, into `T` (whose unknown
/// parameters are ignored, as OAuth asks).
pub async fn read_form_as<T: DeserializeOwned>(body: Body) -> Result<T> {
    let form = read_form(body).await?;
    let fields = form.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| Error::Invalid(format!("invalid form: {e}")))
}

/// A request body as a document the signing pipeline streams.
pub struct BodyDocument(pub Body);

#[async_trait]
impl crate::signing::Document for BodyDocument {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(Error::Invalid(format!("cannot read the document: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}
