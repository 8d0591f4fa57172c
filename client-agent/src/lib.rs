//! The client agent: fingerprints its node and runs allocations (built with the client issue).
