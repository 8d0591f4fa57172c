//! What every Atoll process shares at run time: identity and TLS ([`tls`]),
//! logging and metrics ([`telemetry`]), configuration files ([`config`]), and
//! membership in the federation's WAN gossip pool ([`gossip`]), who may call
//! which gRPC service ([`authz`]), and HTTP carried over gRPC between regions
//! ([`forward`]), and serving an HTTP API over TLS ([`https`]).
//!
//! This crate sits just above `proto` in the workspace: every binary (region
//! server, federation gateway, client agent, CLI) depends on it, and it depends
//! on no Atoll crate but `proto`.

#![warn(missing_docs)]

pub mod authz;
pub mod config;
pub mod forward;
pub mod gossip;
pub mod https;
pub mod pki;
pub mod telemetry;
pub mod tls;
