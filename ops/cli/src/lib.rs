//! The operator CLI `atoll` and `atoll dev`.
//!
//! The binary (`src/main.rs`) only parses flags; each subcommand lives in a
//! module of this library:
//! - [`cmd`]: the operator commands over the HTTP API (`job`, `alloc`,
//!   `node`, `eval`, `server`, `operator`, `region`, `status`, `tls`), one
//!   module per noun, with [`client`] (the HTTP client: address, region,
//!   token, TLS) and [`format`] (tables, times, job diffs);
//! - [`dev`]: `atoll dev`, a whole federation in one process (the
//!   composition root: servers, gateway and clients are libraries);
//! - [`bench`]: `atoll bench ...`, measurements of Atoll against references
//!   (`atoll bench raft`: replicated durable writes against etcd;
//!   `atoll bench gossip`: the gossip pool against HashiCorp Serf;
//!   `atoll bench clients`: client agent footprint and leader load from
//!   heartbeats).

pub mod bench;
pub mod bench_clients;
pub mod bench_gossip;
pub mod client;
pub mod cmd;
pub mod dev;
pub mod format;
