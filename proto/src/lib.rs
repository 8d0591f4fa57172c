//! Atoll's contract: the Nomad-compatible domain model with its defaults and
//! validation, and the gRPC protocol generated from `proto/atoll.proto`.

pub mod client;
pub mod hcl;
pub mod model;

/// Generated gRPC messages, clients and servers (`atoll.v1`).
pub mod rpc {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("atoll.v1");
}
