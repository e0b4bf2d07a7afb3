//! The API's integration tests, one binary (one link of the API, its dependencies and the
//! shared harness instead of one per file): each module a part of the contract, run against
//! the real API and importer binaries, Postgres, Redis and Garage (`common`: the harness;
//! `services`: private Postgres, Redis and Garage instances to crash).

#[path = "../common/mod.rs"]
mod common;
#[path = "../../../importer/tests/services/mod.rs"]
mod services;

mod abuse;
mod bounds;
mod contracts;
mod control;
mod fairness;
mod faults;
mod from_storage;
mod http;
mod lifecycle;
mod options;
mod organizations;
mod preview;
mod queueing;
mod security;
mod sweeper;
mod web;
