//! The Atoll client agent: fingerprints its node, registers with the region's
//! servers and heartbeats, watches the allocations placed on it, runs their
//! tasks through drivers (`raw_exec`, `exec`, `mock_driver`) under their
//! restart policies, keeps its state in sqlite so a restarted agent
//! re-attaches to running tasks, and serves task logs and files over HTTP.
//!
//! * [`ClientAgent::start`] runs a real node ([`ClientAgent::shutdown`]
//!   leaves its tasks running, [`ClientAgent::shutdown_and_kill_tasks`] stops
//!   them first);
//! * [`SimulatedFleet::start`] runs many mock-driver nodes in one process.
//!
//! # How it talks to the servers ([`rpc`], [`agent`])
//! mTLS gRPC (`ClientService`), server name `server.<region>.atoll`, our
//! certificate naming `client.<region>.atoll`. Register once (any server),
//! then heartbeat every TTL/2 (jittered, TTL from each answer) to the leader:
//! a follower's `FAILED_PRECONDITION "leader=<addr>"` is followed, other
//! errors fail over to the next known server, and when none answers the
//! agent backs off exponentially (capped). `NOT_FOUND` (node unknown) makes
//! it register again. Allocations come from a `WatchAllocations` stream,
//! resumed from the last index after a reconnect; client status goes back in
//! `UpdateAllocations` batches (about every 200 ms, only what changed).
//!
//! # Tasks ([`driver`], [`runner`])
//! Each task runs under a tiny `/bin/sh` shim in its own session/process
//! group (see [`driver`]'s `shim` module docs): stop = kill signal to the
//! group, then `SIGKILL` to the group after the kill timeout; when the shim
//! exits, what is left of the group is killed too. `exec` adds a cgroup
//! (memory limit, CPU shares; v2 when the unified hierarchy has the memory and
//! cpu controllers, else v1) and PID + mount namespaces (an `sh` init as PID
//! 1 of the namespace, the task as its child, so signals work and nothing
//! outlives the namespace). Logs go through FIFOs into rotated files
//! (`alloc/logs/<task>.stdout.<n>`).
//!
//! # Restarts of the agent ([`state`])
//! `<data-dir>/client.db` (WAL, `synchronous=FULL`) keeps every allocation
//! and, per task, its state and handle: shim pid, process group and the
//! process start time (`/proc/<pid>/stat` field 22), so a reused pid is never
//! taken for the task. A new agent re-attaches to tasks still running
//! (watching them by polling `/proc`, since they are not its children)
//! instead of starting them again. A task that ended while the agent was
//! down is reported `Terminated` with the exit code its shim wrote to
//! `<task dir>/.exit_status`; if that file is missing (the shim itself was
//! killed) the exit code is reported as -1 with an "exit status is unknown"
//! message, which counts as a failure. Either way the restart policy then
//! applies.
//!
//! # Differences from Nomad worth knowing
//! * `exec` has no chroot and runs tasks as the agent's user unless the
//!   task names a `user` (then via `setpriv`).
//! * `raw_exec` is enabled by default (Nomad requires opting in).
//! * A task process that starts its own session escapes the group kill under
//!   `raw_exec` (not under `exec`, where the namespace and cgroup catch it).
//! * Poststop tasks run when the main tasks end by themselves, not when the
//!   allocation is stopped by the servers.
//! * A task's writes block (rather than fail) once 1 MiB of logs is buffered
//!   while the agent is down.

#![warn(missing_docs)]

pub mod agent;
pub mod allocdir;
pub mod config;
pub mod driver;
pub mod env;
pub mod fingerprint;
pub mod fleet;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod restart;
pub mod rpc;
pub mod runner;
pub mod state;
pub mod status;
pub mod util;

pub use agent::{ClientAgent, NodeCore};
pub use config::{ClientConfig, TlsSource};
pub use fleet::{FleetConfig, SimulatedFleet};
pub use runner::AllocView;
