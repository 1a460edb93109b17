//! Reading values out of rows.

use tokio_postgres::Row;

use crate::seam::StoreError;

/// Reads column `i` of a row; a value of another type is corrupt data.
pub fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

/// A stored count as a `u32`.
pub fn count_u32(n: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} {n}")))
}
