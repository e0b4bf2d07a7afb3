//! The importer's integration tests, one binary (one link instead of one per file): the real
//! importer binary against real Postgres and storage (`common`: the harness; `services`:
//! private Postgres and Garage instances to crash; `checks`: the properties the fuzz targets
//! share).

#[path = "../../../fuzz/src/checks.rs"]
mod checks;
#[path = "../common/mod.rs"]
mod common;
#[path = "../services/mod.rs"]
mod services;

mod bounds;
mod crash;
mod dialects;
mod edges;
mod faults;
mod import;
mod properties;
