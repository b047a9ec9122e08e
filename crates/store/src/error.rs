//! [`StoreError`]: what a store operation can fail with, and how it maps to the domain's errors
//! (a taken name is the caller's to fix; everything else is internal).

use crate::schema::SchemaError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database {path}: {source}")]
    Schema {
        path: String,
        #[source]
        source: SchemaError,
    },
    #[error("node {0:?} already exists")]
    Exists(String),
    #[error("the state database's writer did not answer (stopped, or failed on this request: see the daemon's log)")]
    Closed,
    #[error("starting the state database's writer thread")]
    Thread(#[source] std::io::Error),
}

impl From<StoreError> for bulkhead_core::DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(n) => bulkhead_core::DomainError::new(
                bulkhead_core::Code::AlreadyExists,
                format!("node {n:?} already exists: choose another hostname"),
            ),
            e => bulkhead_core::DomainError::internal(e.to_string()),
        }
    }
}
