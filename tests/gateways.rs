//! The gateway clients, as the worker builds them, against the simulator over
//! real HTTP: their answers, what they do not take on trust, and `call`, which
//! runs one operation from the command line.
//!
//! One test binary for these files (each its own module, so a test is
//! `call_cli::name`): `cargo test --test gateways`, or one file's with
//! `cargo test --test gateways call_cli::`.

mod gateway_support;

mod call_cli;
mod gateway_clients;
mod gateway_trust;
