//! The operator CLI `atoll` and `atoll dev` (built with the operating issue).
