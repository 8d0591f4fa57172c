//! Atoll region server.
