//! Domain model (filled in next).
