//! `raw_exec`: runs a command on the host, without isolation, in its own
//! process group. Config: `command` (required), `args` (list).

use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::shim::Supervisor;
use super::{
    Driver, DriverError, DriverFingerprint, ExitResult, TaskConfig, TaskHandle, TaskUsage,
};

/// The driver's name.
pub const NAME: &str = "raw_exec";

/// The `raw_exec` driver.
pub struct RawExecDriver {
    sup: Supervisor,
}

impl Default for RawExecDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl RawExecDriver {
    /// A driver with no tasks.
    pub fn new() -> Self {
        Self {
            sup: Supervisor::new(NAME),
        }
    }
}

impl Driver for RawExecDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn fingerprint(&self) -> DriverFingerprint {
        if Path::new("/bin/sh").exists() {
            DriverFingerprint::healthy()
        } else {
            DriverFingerprint::unhealthy("/bin/sh is missing")
        }
    }

    fn start<'a>(&'a self, cfg: &'a TaskConfig) -> BoxFuture<'a, Result<TaskHandle, DriverError>> {
        self.sup.spawn(cfg, None).boxed()
    }

    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        async move { self.sup.recover(handle) }.boxed()
    }

    fn wait<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, ExitResult> {
        self.sup.wait(handle).boxed()
    }

    fn signal(&self, handle: &TaskHandle, signal: i32) -> Result<(), DriverError> {
        self.sup.signal(handle, signal)
    }

    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: i32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        self.sup.stop(handle, signal, timeout).boxed()
    }

    fn destroy(&self, handle: &TaskHandle) {
        self.sup.destroy(handle)
    }

    fn stats(&self, handle: &TaskHandle) -> Option<TaskUsage> {
        self.sup.stats(handle)
    }

    fn detach_all(&self) {
        self.sup.detach_all()
    }
}
