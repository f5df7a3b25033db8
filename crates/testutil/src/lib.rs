//! Test support for walferry.
//!
//! This crate is a dev-dependency only. It provides:
//!
//! - [`s3`]: a real S3 HTTP server on 127.0.0.1 (the `s3s-fs` library with
//!   the fixes walferry's tests need), for in-process tests and, through the
//!   `walferry-s3-server` binary, for benchmarks and demos.

#![deny(missing_docs)]

pub mod dirs;
pub mod pg;
pub mod s3;
