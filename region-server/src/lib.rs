//! Atoll region server: one server of a region's Raft cluster.
//!
//! - [`raft`]: openraft with the log in sqlite, snapshots as sqlite files,
//!   and mTLS gRPC transport;
//! - [`state`]: the in-memory tables the Raft log is applied to;
//! - [`service`]: writes, linearizable reads and membership, used by both APIs;
//! - [`api`]: the Nomad-compatible HTTP API;
//! - [`server`]: composition: start and stop a server.

pub mod api;
pub mod client_rpc;
pub mod config;
pub mod leader;
pub mod metrics;
pub mod raft;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod state;

pub use config::{ServerConfig, TlsSource};
pub use server::RegionServer;
