//! HPKI card mappings and My Number card links.

use std::ops::DerefMut;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{optional, SqliteTx};
use crate::auth::cards::{CardStore, HpkiMapping, JpkiLink, SubjectMapping};
use crate::seam::StoreError;

fn user_of(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Option<String>, StoreError> {
    optional(conn.prepare_cached(sql)?.query_row(p, |r| r.get(0)))
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> CardStore for SqliteTx<C> {
    async fn hpki_user_by_card(&mut self, issuer: &[u8], serial: &[u8]) -> Result<Option<String>, StoreError> {
        user_of(
            self.conn(),
            "SELECT user_id FROM hpki_mappings WHERE issuer = ?1 AND serial = ?2",
            params![issuer, serial],
        )
    }

    async fn hpki_user_by_subject(&mut self, issuer: &[u8], value: &str) -> Result<Option<String>, StoreError> {
        user_of(
            self.conn(),
            "SELECT user_id FROM hpki_subject_mappings WHERE issuer = ?1 AND attribute = 'serialNumber' AND value = ?2",
            params![issuer, value],
        )
    }

    async fn insert_hpki_mapping(&mut self, m: &HpkiMapping) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(
                "INSERT INTO hpki_mappings (issuer, serial, user_id, subject, not_after, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![m.issuer, m.serial, m.user_id, m.subject, m.not_after, m.created_at])?;
        Ok(())
    }

    async fn delete_hpki_mapping(&mut self, issuer: &[u8], serial: &[u8], user_id: &str) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached("DELETE FROM hpki_mappings WHERE issuer = ?1 AND serial = ?2 AND user_id = ?3")?
            .execute(params![issuer, serial, user_id])?;
        Ok(n > 0)
    }

    async fn insert_subject_mapping(&mut self, m: &SubjectMapping) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(
                "INSERT INTO hpki_subject_mappings (issuer, attribute, value, user_id, created_at)
                 VALUES (?1, 'serialNumber', ?2, ?3, ?4)",
            )?
            .execute(params![m.issuer, m.value, m.user_id, m.created_at])?;
        Ok(())
    }

    async fn delete_subject_mapping(&mut self, issuer: &[u8], value: &str, user_id: &str) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached(
                "DELETE FROM hpki_subject_mappings
                 WHERE issuer = ?1 AND attribute = 'serialNumber' AND value = ?2 AND user_id = ?3",
            )?
            .execute(params![issuer, value, user_id])?;
        Ok(n > 0)
    }

    async fn hpki_mappings(&mut self, user_id: Option<&str>) -> Result<Vec<HpkiMapping>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT issuer, serial, user_id, subject, not_after, created_at FROM hpki_mappings
             WHERE {} ORDER BY user_id, created_at",
            super::user_filter(user_id, "user_id", 1)
        ))?;
        let rows = stmt
            .query_map([user_id], |r| {
                Ok(HpkiMapping {
                    issuer: r.get(0)?,
                    serial: r.get(1)?,
                    user_id: r.get(2)?,
                    subject: r.get(3)?,
                    not_after: r.get(4)?,
                    created_at: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    async fn subject_mappings(&mut self, user_id: Option<&str>) -> Result<Vec<SubjectMapping>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT issuer, attribute, value, user_id, created_at FROM hpki_subject_mappings
             WHERE {} ORDER BY user_id, created_at",
            super::user_filter(user_id, "user_id", 1)
        ))?;
        let rows = stmt.query_map([user_id], |r| {
            let attribute: String = r.get(1)?;
            let m = SubjectMapping { issuer: r.get(0)?, value: r.get(2)?, user_id: r.get(3)?, created_at: r.get(4)? };
            Ok((attribute == "serialNumber")
                .then_some(m)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown subject mapping attribute {attribute:?}"))))
        })?;
        super::users::collect(rows)
    }

    async fn jpki_user(
        &mut self,
        issuer: &[u8],
        serial: &[u8],
        spki_sha256: &[u8],
    ) -> Result<Option<String>, StoreError> {
        user_of(
            self.conn(),
            "SELECT user_id FROM jpki_links WHERE (issuer = ?1 AND serial = ?2) OR spki_sha256 = ?3 LIMIT 1",
            params![issuer, serial, spki_sha256],
        )
    }

    async fn jpki_user_by_card(&mut self, issuer: &[u8], serial: &[u8]) -> Result<Option<String>, StoreError> {
        user_of(
            self.conn(),
            "SELECT user_id FROM jpki_links WHERE issuer = ?1 AND serial = ?2",
            params![issuer, serial],
        )
    }

    async fn insert_jpki_link(&mut self, l: &JpkiLink) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(
                "INSERT INTO jpki_links (issuer, serial, spki_sha256, user_id, subject, not_after, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![l.issuer, l.serial, l.spki_sha256, l.user_id, l.subject, l.not_after, l.created_at])?;
        Ok(())
    }

    async fn delete_jpki_links(&mut self, user_id: &str, card: Option<(&[u8], &[u8])>) -> Result<usize, StoreError> {
        let conn = self.writing()?;
        Ok(match card {
            Some((issuer, serial)) => conn
                .prepare_cached("DELETE FROM jpki_links WHERE issuer = ?1 AND serial = ?2 AND user_id = ?3")?
                .execute(params![issuer, serial, user_id])?,
            None => conn.prepare_cached("DELETE FROM jpki_links WHERE user_id = ?1")?.execute([user_id])?,
        })
    }

    async fn delete_jpki_link(&mut self, issuer: &[u8], serial: &[u8]) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached("DELETE FROM jpki_links WHERE issuer = ?1 AND serial = ?2")?
            .execute(params![issuer, serial])?;
        Ok(n > 0)
    }

    async fn jpki_links(&mut self, user_id: Option<&str>) -> Result<Vec<JpkiLink>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT issuer, serial, spki_sha256, user_id, subject, not_after, created_at FROM jpki_links
             WHERE {} ORDER BY user_id, created_at",
            super::user_filter(user_id, "user_id", 1)
        ))?;
        let rows = stmt
            .query_map([user_id], |r| {
                Ok(JpkiLink {
                    issuer: r.get(0)?,
                    serial: r.get(1)?,
                    spki_sha256: r.get(2)?,
                    user_id: r.get(3)?,
                    subject: r.get(4)?,
                    not_after: r.get(5)?,
                    created_at: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
