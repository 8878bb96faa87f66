//! The gateway simulator over real HTTP: each gateway's side, the faults it
//! injects, `simulate` as a user runs it, and its throughput (ignored).
//!
//! One test binary for these files (each its own module, so a test is
//! `simulator_cli::name`): `cargo test --test simulator`, or one file's with
//! `cargo test --test simulator simulator_cli::`.

mod simulator_support;

mod simulator_cli;
mod simulator_faults;
mod simulator_load;
mod simulator_paymentz;
mod simulator_praxis;
