//! What only the leader runs.

pub mod broker;
