//! The published contract: the JSON Schemas, the examples of docs/messages.md,
//! the names the architecture documents use, and the properties of the
//! parsers that take producer input first.
//!
//! One test binary for these files (each its own module, so a test is
//! `contract_schemas::name`): `cargo test --test contract`, or one file's with
//! `cargo test --test contract contract_schemas::`.

mod common;

mod contract_schemas;
mod reader_properties;
