//! Why a daemon did not start: one error for the whole startup (config against the host, the
//! tenant claims, state, drivers, network, listeners), each naming what to do.

use crate::{network, tenant_lock};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Jail(#[from] bulkhead_jail::JailError),
    #[error(transparent)]
    Cgroup(#[from] bulkhead_sandbox::CgroupError),
    #[error("the {name} driver cannot start here: {source}")]
    Driver {
        name: String,
        #[source]
        source: bulkhead_driver::DriverError,
    },
    #[error(transparent)]
    Store(#[from] bulkhead_store::StoreError),
    #[error("network: {0}")]
    Network(#[from] network::NetworkError),
}

impl From<tenant_lock::LockError> for StartError {
    fn from(e: tenant_lock::LockError) -> Self {
        match e {
            tenant_lock::LockError::Refused(m) => StartError::Refused(m),
            tenant_lock::LockError::Io { what, source } => StartError::Io { what, source },
        }
    }
}

pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}
