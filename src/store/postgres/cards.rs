//! HPKI card mappings and My Number card links.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::row::get;
use super::PgTx;
use crate::auth::cards::{CardStore, HpkiMapping, JpkiLink, SubjectMapping};
use crate::seam::StoreError;

impl PgTx {
    async fn user_of(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<String>, StoreError> {
        self.row(sql, params).await?.as_ref().map(|r| get(r, 0)).transpose()
    }
}

#[async_trait]
impl CardStore for PgTx {
    async fn hpki_user_by_card(&mut self, issuer: &[u8], serial: &[u8]) -> Result<Option<String>, StoreError> {
        self.user_of("SELECT user_id FROM hpki_mappings WHERE issuer = $1 AND serial = $2", &[&issuer, &serial]).await
    }

    async fn hpki_user_by_subject(&mut self, issuer: &[u8], value: &str) -> Result<Option<String>, StoreError> {
        self.user_of(
            "SELECT user_id FROM hpki_subject_mappings WHERE issuer = $1 AND attribute = 'serialNumber' AND value = $2",
            &[&issuer, &value],
        )
        .await
    }

    async fn insert_hpki_mapping(&mut self, m: &HpkiMapping) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO hpki_mappings (issuer, serial, user_id, subject, not_after, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&m.issuer, &m.serial, &m.user_id, &m.subject, &m.not_after, &m.created_at],
        )
        .await?;
        Ok(())
    }

    async fn delete_hpki_mapping(&mut self, issuer: &[u8], serial: &[u8], user_id: &str) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "DELETE FROM hpki_mappings WHERE issuer = $1 AND serial = $2 AND user_id = $3",
                &[&issuer, &serial, &user_id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn insert_subject_mapping(&mut self, m: &SubjectMapping) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO hpki_subject_mappings (issuer, attribute, value, user_id, created_at)
             VALUES ($1, 'serialNumber', $2, $3, $4)",
            &[&m.issuer, &m.value, &m.user_id, &m.created_at],
        )
        .await?;
        Ok(())
    }

    async fn delete_subject_mapping(&mut self, issuer: &[u8], value: &str, user_id: &str) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "DELETE FROM hpki_subject_mappings
                 WHERE issuer = $1 AND attribute = 'serialNumber' AND value = $2 AND user_id = $3",
                &[&issuer, &value, &user_id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn hpki_mappings(&mut self, user_id: Option<&str>) -> Result<Vec<HpkiMapping>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT issuer, serial, user_id, subject, not_after, created_at FROM hpki_mappings
                     WHERE {} ORDER BY user_id COLLATE \"C\", created_at",
                    super::user_filter(user_id, "user_id", 1)
                ),
                &[&user_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HpkiMapping {
                    issuer: get(r, 0)?,
                    serial: get(r, 1)?,
                    user_id: get(r, 2)?,
                    subject: get(r, 3)?,
                    not_after: get(r, 4)?,
                    created_at: get(r, 5)?,
                })
            })
            .collect()
    }

    async fn subject_mappings(&mut self, user_id: Option<&str>) -> Result<Vec<SubjectMapping>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT issuer, attribute, value, user_id, created_at FROM hpki_subject_mappings
                     WHERE {} ORDER BY user_id COLLATE \"C\", created_at",
                    super::user_filter(user_id, "user_id", 1)
                ),
                &[&user_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let attribute: &str = get(r, 1)?;
                if attribute != "serialNumber" {
                    return Err(StoreError::Corrupt(format!("unknown subject mapping attribute {attribute:?}")));
                }
                Ok(SubjectMapping {
                    issuer: get(r, 0)?,
                    value: get(r, 2)?,
                    user_id: get(r, 3)?,
                    created_at: get(r, 4)?,
                })
            })
            .collect()
    }

    async fn jpki_user(
        &mut self,
        issuer: &[u8],
        serial: &[u8],
        spki_sha256: &[u8],
    ) -> Result<Option<String>, StoreError> {
        self.user_of(
            "SELECT user_id FROM jpki_links WHERE (issuer = $1 AND serial = $2) OR spki_sha256 = $3 LIMIT 1",
            &[&issuer, &serial, &spki_sha256],
        )
        .await
    }

    async fn jpki_user_by_card(&mut self, issuer: &[u8], serial: &[u8]) -> Result<Option<String>, StoreError> {
        self.user_of("SELECT user_id FROM jpki_links WHERE issuer = $1 AND serial = $2", &[&issuer, &serial]).await
    }

    async fn insert_jpki_link(&mut self, l: &JpkiLink) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO jpki_links (issuer, serial, spki_sha256, user_id, subject, not_after, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&l.issuer, &l.serial, &l.spki_sha256, &l.user_id, &l.subject, &l.not_after, &l.created_at],
        )
        .await?;
        Ok(())
    }

    async fn delete_jpki_links(&mut self, user_id: &str, card: Option<(&[u8], &[u8])>) -> Result<usize, StoreError> {
        let n = match card {
            Some((issuer, serial)) => {
                self.exec(
                    "DELETE FROM jpki_links WHERE issuer = $1 AND serial = $2 AND user_id = $3",
                    &[&issuer, &serial, &user_id],
                )
                .await?
            }
            None => self.exec("DELETE FROM jpki_links WHERE user_id = $1", &[&user_id]).await?,
        };
        Ok(n as usize)
    }

    async fn delete_jpki_link(&mut self, issuer: &[u8], serial: &[u8]) -> Result<bool, StoreError> {
        let n = self.exec("DELETE FROM jpki_links WHERE issuer = $1 AND serial = $2", &[&issuer, &serial]).await?;
        Ok(n > 0)
    }

    async fn jpki_links(&mut self, user_id: Option<&str>) -> Result<Vec<JpkiLink>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT issuer, serial, spki_sha256, user_id, subject, not_after, created_at FROM jpki_links
                     WHERE {} ORDER BY user_id COLLATE \"C\", created_at",
                    super::user_filter(user_id, "user_id", 1)
                ),
                &[&user_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JpkiLink {
                    issuer: get(r, 0)?,
                    serial: get(r, 1)?,
                    spki_sha256: get(r, 2)?,
                    user_id: get(r, 3)?,
                    subject: get(r, 4)?,
                    not_after: get(r, 5)?,
                    created_at: get(r, 6)?,
                })
            })
            .collect()
    }
}
