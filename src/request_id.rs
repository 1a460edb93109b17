//! Request ids: each HTTPS request gets one (taken from a balancer's
//! `X-Request-Id`, or made here), and it travels with the request's work as
//! a task-local value, so that every log line of the request (its span) and
//! every audit row it writes ([`stamp`]) names it.

use std::fmt;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// A request id: 1 to 64 characters of `A-Z a-z 0-9 - _ . :` (what log
/// lines and audit rows can carry without escaping or injection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

/// Longest id taken from a balancer.
const MAX_LEN: usize = 64;

impl RequestId {
    /// A new random id (96 bits, 24 hexadecimal digits).
    pub fn new() -> RequestId {
        let mut bytes = [0u8; 12];
        // Without the system's randomness an id is still made (a counter):
        // ids correlate, they never protect anything.
        if getrandom::fill(&mut bytes).is_err() {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            bytes[4..].copy_from_slice(&NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes());
        }
        RequestId(crate::encoding::hex(&bytes))
    }

    /// An id a balancer sent, if it is well formed.
    pub fn parse(text: &str) -> Option<RequestId> {
        let ok = !text.is_empty()
            && text.len() <= MAX_LEN
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        ok.then(|| RequestId(text.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Runs `work` with this id as the current one.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of the request being served on this task, if any (none in the CLI).
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Adds the current request's id to an audit row's detail (`request_id`):
/// a detail that is an object gets the field, an empty one becomes
/// `{"request_id": …}`, anything else is left as it is.
pub fn stamp(detail: &mut serde_json::Value) {
    let Some(id) = current() else { return };
    match detail {
        serde_json::Value::Object(map) => {
            map.entry("request_id").or_insert_with(|| id.0.into());
        }
        serde_json::Value::Null => *detail = serde_json::json!({ "request_id": id.0 }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_made_unique_and_taken_only_when_well_formed() {
        let (a, b) = (RequestId::new(), RequestId::new());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 24);
        assert!(RequestId::parse(a.as_str()).is_some());
        assert_eq!(RequestId::parse("lb-1:abc.42_x").map(|r| r.0), Some("lb-1:abc.42_x".into()));
        for bad in ["", "a b", "a\nb", "ü", "x\"y", "a=1", &"a".repeat(65)] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(RequestId::parse(&"a".repeat(64)).is_some());
    }

    #[tokio::test]
    async fn audit_details_carry_the_current_id() {
        let mut outside = serde_json::json!({ "x": 1 });
        stamp(&mut outside);
        assert_eq!(outside, serde_json::json!({ "x": 1 }), "no request, no id");
        let id = RequestId::parse("req-7").expect("id");
        let (object, null, text) = id
            .scope(async {
                let mut object = serde_json::json!({ "x": 1 });
                let mut null = serde_json::Value::Null;
                let mut text = serde_json::json!("kept");
                stamp(&mut object);
                stamp(&mut null);
                stamp(&mut text);
                (object, null, text)
            })
            .await;
        assert_eq!(object, serde_json::json!({ "x": 1, "request_id": "req-7" }));
        assert_eq!(null, serde_json::json!({ "request_id": "req-7" }));
        assert_eq!(text, serde_json::json!("kept"));
    }
}
