//! backoffice-worker: runs back-office payment commands from RabbitMQ against
//! payment gateways, exactly once in effect, and records every attempt.
//!
//! Start with `docs/architecture.md`. The modules, in the order a command meets them:
//! [`config`] (what the deployment says), [`gateways`] (talking to Paymentz and
//! Praxis, and deciding what each answer means), [`simulator`] (a faithful
//! stand-in for both gateways), [`call`] (the operator's one-off call) and
//! [`ops`] (the operator's commands around a running worker).

pub mod admin;
pub mod bench;
pub mod broker;
pub mod call;
pub mod command;
pub mod config;
pub mod console;
pub mod events;
pub mod gateways;
pub mod listener;
pub mod metrics;
pub mod money;
pub mod notifications;
pub mod ops;
pub mod outcome;
pub mod pipeline;
pub mod simulator;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod worker;
