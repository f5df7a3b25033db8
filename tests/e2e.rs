//! End-to-end tests: the real `walferry-archive` and `walferry-restore` binaries, driven by a
//! real PostgreSQL (`archive_command`, recovery, promotion) against a local-directory
//! repository and a real S3 server on loopback.
//!
//! Every test has its own directory (`walferry_testutil::dirs::TestDir`), cluster and
//! repository (or S3 key prefix), so tests run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

mod archive;
mod backup;
mod backup_scenarios;
mod bad_input;
mod estimate;
mod faults;
mod fetch;
mod info;
mod prefetch;
mod recovery;
mod restore;
mod verify;
