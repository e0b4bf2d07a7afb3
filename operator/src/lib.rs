//! The bulk-import operator: turns each `ImportJob` into a batch/v1 Job running the
//! importer and keeps the ImportJob's status and the Postgres row true.

pub mod actions;
pub mod admission;
pub mod adopt;
pub mod config;
pub mod context;
pub mod controller;
pub mod crd_check;
pub mod job_template;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod placement;
pub mod plan;
pub mod quantity;
pub mod queued;
pub mod status;
pub mod status_apply;
pub mod sweep;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod reconcile_tests;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the Job and pod caches did not sync in time")]
    CacheNotReady,
    #[error("the ImportJob has no namespace")]
    MissingNamespace,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
