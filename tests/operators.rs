//! What an operator uses: the operator commands, the console over HTTP, the
//! bench, and the README's sessions typed as a new user types them.
//!
//! One test binary for these files (each its own module, so a test is
//! `bench_cli::name`): `cargo test --test operators`, or one file's with
//! `cargo test --test operators bench_cli::`.

mod common;
mod console_support;

mod bench_cli;
mod console_http;
mod notifications_session;
mod ops_cli;
mod readme_session;
