//! The worker end to end against the real PostgreSQL and RabbitMQ: commands in,
//! effects at the simulator, events out; the failures it must survive; its
//! listeners, retention, store retries and query plans; `run` as a user meets it.
//!
//! One test binary for these files (each its own module, so a test is
//! `hostile_intake::name`): `cargo test --test worker`, or one file's with
//! `cargo test --test worker hostile_intake::`.

mod common;
mod gateway_support;

mod batch_writers;
mod hostile_intake;
mod intake_one_statement;
mod listeners;
mod plans;
mod relay_resilience;
mod retention;
mod run_cli;
mod store_retry;
mod worker_e2e;
mod worker_faults;
mod worker_resilience;
mod write_amplification;
