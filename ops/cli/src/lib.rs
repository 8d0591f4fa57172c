//! The operator CLI `atoll` and `atoll dev` (built with the operating issue).
//!
//! The binary (`src/main.rs`) only parses flags; each subcommand lives in a
//! module of this library:
//! - [`bench`]: `atoll bench ...`, measurements of Atoll against references
//!   (`atoll bench raft`: replicated durable writes against etcd;
//!   `atoll bench gossip`: the gossip pool against HashiCorp Serf;
//!   `atoll bench clients`: client agent footprint and leader load from
//!   heartbeats; `atoll bench gateway`: a read through a federation gateway
//!   against the same read made at a server).

pub mod bench;
pub mod bench_clients;
pub mod bench_gateway;
pub mod bench_gossip;
