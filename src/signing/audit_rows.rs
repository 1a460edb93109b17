//! The signatures' audit rows: announced before the token signs, committed
//! after, and what the log says of signatures refused or not delivered.

use super::*;

impl<T: UsersTx + ?Sized> Signing<T> {
    /// Records signatures the token made but that were not delivered (no
    /// TSA stamped them, or their validation data could not be had, at the
    /// level asked): what happened, and to what.
    pub(super) async fn audit_undelivered(
        &self,
        principal: &Principal,
        generation: i64,
        alg: DigestAlgorithm,
        digests: &[inkan_keystore::Digest],
        level: Level,
        e: &Error,
    ) {
        let names: Vec<String> =
            digests.iter().map(|d| format!("{}:{}", digest_name(alg), hex(d.as_bytes()))).collect();
        let detail = serde_json::json!({ "level": level.as_str(), "reason": e.to_string(), "delivered": false });
        let recorded = async {
            let mut tx = self.store.write().await?;
            let events: Vec<Event<'_>> = names
                .iter()
                .map(|d| Event {
                    actor: principal.actor.as_str().into(),
                    event: crate::audit::Name::SignUndelivered,
                    user_id: Some(principal.user_id.as_str().into()),
                    generation: Some(generation),
                    digest: Some(d.into()),
                    outcome: "failed",
                    detail: detail.clone(),
                })
                .collect();
            audit::append(&mut *tx, self.clock.now_ms(), &events).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = recorded {
            tracing::error!("cannot record the undelivered signatures in the audit log: {e}");
        }
    }

    pub(super) fn announce(&self) -> Option<Expected> {
        match &self.audit {
            AuditSink::Writer(w) => Some(w.expect()),
            AuditSink::Direct => None,
        }
    }

    /// Records that the keystore refused the user's wrapped key (its MAC does
    /// not match the row it was read from: the row was altered, or the key was
    /// copied from another user's) and says so in the log. Nothing was signed.
    pub(super) async fn audit_refused(&self, principal: &Principal, generation: i64, e: &Error) {
        tracing::error!(
            user = %principal.user_id,
            generation,
            "the stored key was refused and nothing was signed: {e} (was the keys table edited? compare with \
             `inkan key list {}` and the audit log)",
            principal.user_id
        );
        let recorded = async {
            let mut tx = self.store.write().await?;
            audit::append(
                &mut *tx,
                self.clock.now_ms(),
                &[Event {
                    user_id: Some(principal.user_id.as_str().into()),
                    generation: Some(generation),
                    outcome: "refused",
                    detail: serde_json::json!({ "reason": "the wrapped key's MAC does not match its record" }),
                    ..Event::new(&principal.actor, crate::audit::Name::KeyRefused)
                }],
            )
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = recorded {
            tracing::error!("cannot record the refused key in the audit log: {e}");
        }
    }

    /// Commits the signatures' audit rows; returns the last sequence number.
    pub(super) async fn commit(
        &self,
        principal: &Principal,
        generation: i64,
        digests: &[String],
        detail: serde_json::Value,
        announced: Option<Expected>,
    ) -> Result<i64> {
        let at = self.clock.now_ms();
        // Owned: the group-commit writer keeps them until its commit.
        let events: Vec<Event<'static>> = digests
            .iter()
            .map(|d| Event {
                user_id: Some(principal.user_id.clone().into()),
                generation: Some(generation),
                digest: Some(d.clone().into()),
                detail: detail.clone(),
                ..Event::new(principal.actor.clone(), crate::audit::Name::Sign)
            })
            .collect();
        match &self.audit {
            AuditSink::Writer(w) => w.commit(at, events, announced).await,
            AuditSink::Direct => {
                let mut tx = self.store.write().await?;
                let seq = audit::append(&mut *tx, at, &events).await?;
                tx.commit().await?;
                Ok(seq)
            }
        }
    }
}
