//! The history of a workload: every operation's invocation, response and
//! returned index, as the clients saw them.
//!
//! Times are nanoseconds since the history began, taken on one monotonic
//! clock (all clients run in the test process), so "A completed before B
//! was invoked" is meaningful across clients.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

/// What an operation did to (or read from) one job, seen as a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Register (or update) the job with meta value `v`.
    Write(u64),
    /// Deregister (purge) the job: the register becomes empty.
    Delete,
    /// Read the job without `?stale`.
    Read,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Acknowledged. For reads, the value seen (`None`: no such job).
    Ok(Option<u64>),
    /// Definitely had no effect (the request was refused before it could
    /// reach the log, e.g. 400/404 on a write). Reads that failed in any way
    /// are also `Failed`: a read without an answer constrains nothing.
    Failed,
    /// No answer or an ambiguous error (timeout, connection reset, 5xx):
    /// a write may or may not have taken effect, at any time after its
    /// invocation.
    Unknown,
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The client (worker) that issued it.
    pub client: usize,
    /// The job id (the register's key).
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// Invocation time, ns since the history began.
    pub invoke: u64,
    /// Response time, ns since the history began (for `Unknown`, when the
    /// client gave up).
    pub complete: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// `X-Nomad-Index` of the answer (0 without one).
    pub index: u64,
    /// Where it went (`s1`, `gw2`, ...).
    pub via: String,
    /// The error text, for failed or unknown operations.
    pub error: Option<String>,
}

impl Op {
    /// Whether the operation was acknowledged.
    pub fn acknowledged(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// One JSON line describing the operation.
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, value) = match self.kind {
            OpKind::Write(v) => ("write", Some(v)),
            OpKind::Delete => ("delete", None),
            OpKind::Read => ("read", None),
        };
        let (outcome, seen) = match self.outcome {
            Outcome::Ok(v) => ("ok", v),
            Outcome::Failed => ("fail", None),
            Outcome::Unknown => ("info", None),
        };
        json!({
            "client": self.client,
            "key": self.key,
            "f": kind,
            "value": value,
            "invoke_ns": self.invoke,
            "complete_ns": self.complete,
            "type": outcome,
            "read": seen,
            "index": self.index,
            "via": self.via,
            "error": self.error,
        })
    }
}

/// A history being recorded by concurrent clients.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Nanoseconds since the history began.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant the history began.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Record a finished operation.
    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Every operation recorded so far, ordered by invocation.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ops.sort_by_key(|o| (o.invoke, o.complete));
        ops
    }

    /// Write the history as JSON lines (one operation per line).
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for op in self.ops() {
            writeln!(f, "{}", op.to_json())?;
        }
        f.flush()
    }
}
