//! Route modules; each exposes `router()` and the top level merges them.

pub mod auth;
pub mod control;
pub mod customers;
pub mod docs;
pub mod downloads;
pub mod events;
pub mod health;
pub mod import_prefixes;
pub mod imports;
pub mod orgs;
pub mod preview;
pub mod web;
