//! Placeholder until the paymentz client lands; its building blocks are here already.
pub mod classify;
pub mod signing;
pub mod token;
pub mod wire;
use std::sync::Arc;

use crate::config::{ConfigError, Section};
use crate::gateways::http::HttpTransport;
use crate::gateways::registry::GatewayKind;
use crate::gateways::Gateway;

pub const KIND: GatewayKind = GatewayKind {
    name: "paymentz",
    build,
};

fn build(
    section: &Section<'_>,
    _account: &str,
    _transport: HttpTransport,
) -> Result<Arc<dyn Gateway>, ConfigError> {
    Err(section.error("base_url", "not implemented yet"))
}
