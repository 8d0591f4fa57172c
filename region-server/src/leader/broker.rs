//! The evaluation broker: the leader's queue of evaluations waiting for a
//! scheduler worker (Nomad's EvalBroker is the model).
//!
//! - one ready queue per scheduler type, ordered by priority then age;
//! - at most one evaluation per job is ready or in flight; later ones wait
//!   in `pending`, and when the in-flight one is acked only the newest
//!   pending one is released — the older ones are superseded and reported as
//!   cancelable so the leader marks them `canceled`;
//! - dequeued evaluations are unacked until acked or nacked; an unacked
//!   evaluation whose timeout passes is nacked; after `delivery_limit`
//!   deliveries an evaluation goes to the failed queue;
//! - evaluations with `WaitUntil` in the future wait in a delay heap;
//! - blocked evaluations wait in a per-job table until capacity changes.
//!
//! The broker is a plain data structure driven by explicit `now` values, so
//! it is tested without a clock; [`SharedBroker`] adds the async wrapper.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::model::Evaluation;
use tokio::sync::Notify;

/// `(namespace, job id)`.
type JobKey = (String, String);

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// How long a worker may hold an evaluation before it is nacked.
    pub nack_timeout: Duration,
    /// Deliveries before an evaluation goes to the failed queue.
    pub delivery_limit: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            nack_timeout: Duration::from_secs(60),
            delivery_limit: 3,
        }
    }
}

#[derive(Debug, Clone)]
struct Ready {
    eval: Evaluation,
    seq: u64,
}

impl PartialEq for Ready {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ready {
    /// Max-heap: higher priority first, then older (lower seq) first.
    fn cmp(&self, o: &Self) -> Ordering {
        self.eval
            .priority
            .cmp(&o.eval.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

#[derive(Debug)]
struct Unacked {
    eval: Evaluation,
    token: String,
    deadline_ns: i64,
}

/// Counters for metrics and `/v1/agent/self`-style stats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Ready evaluations, all types.
    pub ready: usize,
    /// Evaluations held by workers.
    pub unacked: usize,
    /// Evaluations waiting behind another of their job.
    pub pending: usize,
    /// Evaluations waiting for `WaitUntil`.
    pub delayed: usize,
    /// Blocked evaluations.
    pub blocked: usize,
    /// Evaluations that exhausted their deliveries.
    pub failed: usize,
}

/// The broker state.
#[derive(Debug)]
pub struct Broker {
    cfg: BrokerConfig,
    seq: u64,
    ready: HashMap<String, BinaryHeap<Ready>>,
    unacked: HashMap<String, Unacked>,
    deliveries: HashMap<String, u32>,
    /// The job's evaluation that is ready or in flight.
    job_active: HashMap<JobKey, String>,
    pending: HashMap<JobKey, Vec<Evaluation>>,
    delayed: BinaryHeap<Reverse<(i64, u64, String)>>,
    delayed_evals: HashMap<String, Evaluation>,
    blocked: BTreeMap<JobKey, Evaluation>,
    failed: Vec<Evaluation>,
    cancelable: Vec<Evaluation>,
    token_seq: u64,
    /// Every evaluation currently held anywhere in the broker.
    tracked: HashSet<String>,
    /// An operator paused the broker (`PauseEvalBroker`): nothing is
    /// handed out; evaluations keep queueing.
    paused: bool,
}

/// Errors of ack and nack.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    /// The evaluation is not held by anyone.
    #[error("evaluation {0} is not outstanding")]
    NotOutstanding(String),
    /// The token does not match the delivery.
    #[error("evaluation {0}: token does not match")]
    TokenMismatch(String),
}

fn job_key(e: &Evaluation) -> JobKey {
    (e.namespace.clone(), e.job_id.clone())
}

/// `WaitUntil` in Unix nanoseconds (0 when unset or unparsable).
pub fn wait_until_ns(e: &Evaluation) -> i64 {
    e.wait_until
        .as_deref()
        .and_then(proto::model::time::parse_rfc3339)
        .unwrap_or(0)
}

impl Broker {
    /// An empty broker.
    pub fn new(cfg: BrokerConfig) -> Self {
        Self {
            cfg,
            seq: 0,
            ready: HashMap::new(),
            unacked: HashMap::new(),
            deliveries: HashMap::new(),
            job_active: HashMap::new(),
            pending: HashMap::new(),
            delayed: BinaryHeap::new(),
            delayed_evals: HashMap::new(),
            blocked: BTreeMap::new(),
            failed: Vec::new(),
            cancelable: Vec::new(),
            token_seq: 0,
            tracked: HashSet::new(),
            paused: false,
        }
    }

    /// Pause or resume handing out evaluations.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Add an evaluation (pending, delayed by `WaitUntil`, or blocked).
    pub fn enqueue(&mut self, eval: Evaluation, now: i64) {
        if !self.tracked.insert(eval.id.clone()) {
            return;
        }
        if eval.status == "blocked" {
            // One blocked evaluation per job: the newest wins.
            if let Some(old) = self.blocked.insert(job_key(&eval), eval) {
                self.tracked.remove(&old.id);
                self.cancelable.push(old);
            }
            return;
        }
        let wait_until = wait_until_ns(&eval);
        if wait_until > now {
            self.seq += 1;
            self.delayed
                .push(Reverse((wait_until, self.seq, eval.id.clone())));
            self.delayed_evals.insert(eval.id.clone(), eval);
            return;
        }
        self.enqueue_ready(eval);
    }

    fn enqueue_ready(&mut self, eval: Evaluation) {
        let key = job_key(&eval);
        match self.job_active.get(&key) {
            Some(active) if *active != eval.id => {
                self.pending.entry(key).or_default().push(eval);
            }
            _ => {
                self.job_active.insert(key, eval.id.clone());
                self.push_ready(eval);
            }
        }
    }

    fn push_ready(&mut self, eval: Evaluation) {
        self.seq += 1;
        let seq = self.seq;
        self.ready
            .entry(eval.r#type.clone())
            .or_default()
            .push(Ready { eval, seq });
    }

    /// Move delayed evaluations whose time has come, and nack unacked ones
    /// whose timeout passed. Returns the earliest future deadline, if any.
    pub fn tick(&mut self, now: i64) -> Option<i64> {
        while let Some(Reverse((at, _, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, id))) = self.delayed.pop() else {
                break;
            };
            if let Some(e) = self.delayed_evals.remove(&id) {
                self.enqueue_ready(e);
            }
        }
        let expired: Vec<(String, String)> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.deadline_ns <= now)
            .map(|(id, u)| (id.clone(), u.token.clone()))
            .collect();
        for (id, token) in expired {
            let _ = self.nack(&id, &token);
        }
        let next_delay = self.delayed.peek().map(|Reverse((at, _, _))| *at);
        let next_nack = self.unacked.values().map(|u| u.deadline_ns).min();
        match (next_delay, next_nack) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Take the highest-priority ready evaluation of one of `types`.
    pub fn dequeue(&mut self, types: &[&str], now: i64) -> Option<(Evaluation, String)> {
        if self.paused {
            return None;
        }
        let best_type = types
            .iter()
            .filter_map(|t| {
                self.ready
                    .get(*t)
                    .and_then(|h| h.peek())
                    .map(|r| (*t, r.clone()))
            })
            .max_by(|a, b| a.1.cmp(&b.1))
            .map(|(t, _)| t.to_string())?;
        let r = self.ready.get_mut(&best_type)?.pop()?;
        self.token_seq += 1;
        let token = format!("{}-{}", r.eval.id, self.token_seq);
        *self.deliveries.entry(r.eval.id.clone()).or_default() += 1;
        self.unacked.insert(
            r.eval.id.clone(),
            Unacked {
                eval: r.eval.clone(),
                token: token.clone(),
                deadline_ns: now + self.cfg.nack_timeout.as_nanos() as i64,
            },
        );
        Some((r.eval, token))
    }

    fn take_unacked(&mut self, id: &str, token: &str) -> Result<Unacked, BrokerError> {
        match self.unacked.get(id) {
            None => Err(BrokerError::NotOutstanding(id.to_string())),
            Some(u) if u.token != token => Err(BrokerError::TokenMismatch(id.to_string())),
            Some(_) => self
                .unacked
                .remove(id)
                .ok_or_else(|| BrokerError::NotOutstanding(id.to_string())),
        }
    }

    /// The worker finished the evaluation: release its job's next one.
    pub fn ack(&mut self, id: &str, token: &str) -> Result<(), BrokerError> {
        let u = self.take_unacked(id, token)?;
        self.deliveries.remove(id);
        self.tracked.remove(id);
        self.release_job(&job_key(&u.eval));
        Ok(())
    }

    /// The job's in-flight evaluation is done: release the newest waiting
    /// one; the older waiting ones are superseded.
    fn release_job(&mut self, key: &JobKey) {
        self.job_active.remove(key);
        if let Some(mut waiting) = self.pending.remove(key) {
            waiting.sort_by_key(|e| (e.modify_index, e.create_time));
            if let Some(newest) = waiting.pop() {
                for old in &waiting {
                    self.tracked.remove(&old.id);
                }
                self.cancelable.extend(waiting);
                self.enqueue_ready(newest);
            }
        }
    }

    /// The worker gave the evaluation back: requeue it, or fail it after
    /// too many deliveries.
    pub fn nack(&mut self, id: &str, token: &str) -> Result<(), BrokerError> {
        let u = self.take_unacked(id, token)?;
        let delivered = self.deliveries.get(id).copied().unwrap_or(0);
        if delivered >= self.cfg.delivery_limit {
            self.deliveries.remove(id);
            self.tracked.remove(id);
            let key = job_key(&u.eval);
            self.failed.push(u.eval);
            self.release_job(&key);
        } else {
            self.push_ready(u.eval);
        }
        Ok(())
    }

    /// Capacity changed (a node joined or became eligible, allocations
    /// stopped): every blocked evaluation becomes ready again; the scheduler
    /// then places what now fits or blocks it anew. Returns how many.
    pub fn unblock_all(&mut self) -> usize {
        let blocked = std::mem::take(&mut self.blocked);
        let n = blocked.len();
        for e in blocked.into_values() {
            self.enqueue_ready(e);
        }
        n
    }

    /// Superseded evaluations the leader should mark canceled.
    pub fn take_cancelable(&mut self) -> Vec<Evaluation> {
        std::mem::take(&mut self.cancelable)
    }

    /// Evaluations that exhausted their deliveries.
    pub fn take_failed(&mut self) -> Vec<Evaluation> {
        std::mem::take(&mut self.failed)
    }

    /// Counters.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            ready: self.ready.values().map(|h| h.len()).sum(),
            unacked: self.unacked.len(),
            pending: self.pending.values().map(|v| v.len()).sum(),
            delayed: self.delayed_evals.len(),
            blocked: self.blocked.len(),
            failed: self.failed.len(),
        }
    }
}

/// The broker shared by the leader's tasks, with waiting dequeues.
#[derive(Clone)]
pub struct SharedBroker {
    inner: Arc<Mutex<Broker>>,
    notify: Arc<Notify>,
}

impl SharedBroker {
    /// A new shared broker.
    pub fn new(cfg: BrokerConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Broker::new(cfg))),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Run `f` on the broker and wake waiting workers.
    pub fn with<T>(&self, f: impl FnOnce(&mut Broker) -> T) -> T {
        let r = {
            let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut b)
        };
        self.notify.notify_waiters();
        r
    }

    /// Wait up to `timeout` for an evaluation of one of `types`.
    pub async fn dequeue(
        &self,
        types: &[&str],
        now: impl Fn() -> i64,
        timeout: Duration,
    ) -> Option<(Evaluation, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(got) = {
                let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                b.dequeue(types, now())
            } {
                return Some(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, job: &str, prio: i64, ty: &str) -> Evaluation {
        Evaluation {
            id: id.into(),
            namespace: "default".into(),
            job_id: job.into(),
            priority: prio,
            r#type: ty.into(),
            status: "pending".into(),
            ..Default::default()
        }
    }

    fn broker() -> Broker {
        Broker::new(BrokerConfig {
            nack_timeout: Duration::from_nanos(100),
            delivery_limit: 2,
        })
    }

    #[test]
    fn priority_then_fifo_per_type() {
        let mut b = broker();
        b.enqueue(ev("a", "j1", 50, "service"), 0);
        b.enqueue(ev("b", "j2", 70, "service"), 0);
        b.enqueue(ev("c", "j3", 50, "service"), 0);
        b.enqueue(ev("d", "j4", 99, "batch"), 0);
        let order: Vec<String> =
            std::iter::from_fn(|| b.dequeue(&["service"], 0).map(|(e, _)| e.id)).collect();
        assert_eq!(order, vec!["b", "a", "c"]);
        assert_eq!(
            b.dequeue(&["service", "batch"], 0).map(|(e, _)| e.id),
            Some("d".into())
        );
    }

    #[test]
    fn one_eval_per_job_and_newest_supersedes() {
        let mut b = broker();
        b.enqueue(ev("a", "j", 50, "service"), 0);
        let mut e2 = ev("b", "j", 50, "service");
        e2.modify_index = 2;
        let mut e3 = ev("c", "j", 50, "service");
        e3.modify_index = 3;
        b.enqueue(e2, 0);
        b.enqueue(e3, 0);
        let (e, tok) = b.dequeue(&["service"], 0).expect("first");
        assert_eq!(e.id, "a");
        assert!(
            b.dequeue(&["service"], 0).is_none(),
            "job already in flight"
        );
        assert_eq!(b.stats().pending, 2);
        b.ack("a", &tok).expect("ack");
        let (e, _) = b.dequeue(&["service"], 0).expect("next");
        assert_eq!(e.id, "c", "newest pending wins");
        let canceled: Vec<String> = b.take_cancelable().into_iter().map(|e| e.id).collect();
        assert_eq!(canceled, vec!["b"]);
    }

    #[test]
    fn nack_requeues_then_fails_after_limit() {
        let mut b = broker();
        b.enqueue(ev("a", "j", 50, "service"), 0);
        let (_, t1) = b.dequeue(&["service"], 0).expect("1st");
        assert_eq!(
            b.ack("a", "wrong"),
            Err(BrokerError::TokenMismatch("a".into()))
        );
        b.nack("a", &t1).expect("nack");
        let (_, t2) = b.dequeue(&["service"], 0).expect("2nd delivery");
        b.nack("a", &t2).expect("nack");
        assert!(b.dequeue(&["service"], 0).is_none());
        assert_eq!(b.take_failed().len(), 1);
        assert_eq!(
            b.ack("a", &t2),
            Err(BrokerError::NotOutstanding("a".into()))
        );
    }

    #[test]
    fn unacked_times_out() {
        let mut b = broker();
        b.enqueue(ev("a", "j", 50, "service"), 0);
        let _ = b.dequeue(&["service"], 0).expect("deliver");
        assert_eq!(b.tick(50), Some(100));
        assert!(b.dequeue(&["service"], 60).is_none());
        b.tick(100);
        assert!(
            b.dequeue(&["service"], 100).is_some(),
            "nacked by timeout and redelivered"
        );
    }

    #[test]
    fn delayed_until_wait_until() {
        let mut b = broker();
        let mut e = ev("a", "j", 50, "service");
        e.wait_until = Some(proto::model::time::format_rfc3339(1_000));
        b.enqueue(e, 0);
        assert!(b.dequeue(&["service"], 0).is_none());
        assert_eq!(b.tick(10), Some(1_000));
        b.tick(1_000);
        assert!(b.dequeue(&["service"], 1_000).is_some());
    }

    #[test]
    fn blocked_waits_for_capacity() {
        let mut b = broker();
        let mut e = ev("a", "j", 50, "service");
        e.status = "blocked".into();
        b.enqueue(e.clone(), 0);
        let mut newer = e.clone();
        newer.id = "b".into();
        b.enqueue(newer, 0);
        assert_eq!(b.stats().blocked, 1);
        assert_eq!(b.take_cancelable().len(), 1);
        assert!(b.dequeue(&["service"], 0).is_none());
        assert_eq!(b.unblock_all(), 1);
        assert_eq!(
            b.dequeue(&["service"], 0).map(|(e, _)| e.id),
            Some("b".into())
        );
    }

    #[tokio::test]
    async fn shared_dequeue_wakes_on_enqueue() {
        let b = SharedBroker::new(BrokerConfig::default());
        let b2 = b.clone();
        let waiter =
            tokio::spawn(
                async move { b2.dequeue(&["service"], || 0, Duration::from_secs(5)).await },
            );
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.with(|br| br.enqueue(ev("a", "j", 50, "service"), 0));
        let got = waiter.await.expect("task");
        assert_eq!(got.map(|(e, _)| e.id), Some("a".into()));
        assert!(b
            .dequeue(&["service"], || 0, Duration::from_millis(20))
            .await
            .is_none());
    }
}
