//! The restart policy on the client, after Nomad's `RestartTracker`:
//! `Attempts` restarts are allowed within each `Interval`, each after
//! `Delay` (plus up to 25% jitter). Past them, mode `fail` fails the task and
//! mode `delay` waits until the interval is over and carries on.
//! A batch task that exits successfully is done; a service task is
//! restarted even after a successful exit.

use std::time::Duration;

use proto::model::{RestartPolicy, JOB_TYPE_BATCH, JOB_TYPE_SYSBATCH, RESTART_MODE_DELAY};

use crate::driver::{DriverError, ExitResult};
use crate::util::ns;

/// What to do after a task exited or failed to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start it again after `delay`.
    Restart {
        /// Wait before starting.
        delay: Duration,
        /// Why (Nomad's `RestartReason`).
        reason: String,
    },
    /// Do not restart; the task is dead.
    NotRestart {
        /// Why.
        reason: String,
        /// Whether the task failed.
        failed: bool,
    },
    /// It finished successfully and is not restarted (batch).
    Done,
}

/// Nomad's reason for a restart within the policy.
pub const REASON_WITHIN_POLICY: &str = "Restart within policy";
/// Nomad's reason for an unrecoverable start error.
pub const REASON_UNRECOVERABLE: &str = "Error was unrecoverable";
/// Nomad's reason when the policy allows no restart.
pub const REASON_NO_RESTARTS: &str = "Policy allows no restarts";

/// Counts restarts of one task.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    batch: bool,
    count: i64,
    window_start: Option<i64>,
}

impl RestartTracker {
    /// A tracker for a task of a job of `job_type` with `policy` (Nomad's
    /// default for the job type when `None`).
    pub fn new(policy: Option<RestartPolicy>, job_type: &str) -> Self {
        let policy = policy
            .or_else(|| RestartPolicy::default_for(job_type))
            .or_else(|| RestartPolicy::default_for("service"))
            .unwrap_or_default();
        Self {
            policy,
            batch: job_type == JOB_TYPE_BATCH || job_type == JOB_TYPE_SYSBATCH,
            count: 0,
            window_start: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Replaces the policy (job update); the counts stay.
    pub fn set_policy(&mut self, policy: Option<RestartPolicy>, job_type: &str) {
        let fresh = Self::new(policy, job_type);
        self.policy = fresh.policy;
        self.batch = fresh.batch;
    }

    /// The decision after the task exited with `exit` at `now` (Unix ns),
    /// before jitter; `jitter` in `[0, 1)` adds up to 25% of the delay.
    pub fn on_exit(&mut self, exit: &ExitResult, now: i64, jitter: f64) -> RestartDecision {
        if exit.successful() && self.batch {
            return RestartDecision::Done;
        }
        self.next(now, jitter)
    }

    /// The decision after the task failed to start.
    pub fn on_start_error(&mut self, err: &DriverError, now: i64, jitter: f64) -> RestartDecision {
        if !err.recoverable() {
            return RestartDecision::NotRestart {
                reason: REASON_UNRECOVERABLE.into(),
                failed: true,
            };
        }
        self.next(now, jitter)
    }

    fn next(&mut self, now: i64, jitter: f64) -> RestartDecision {
        let p = &self.policy;
        let start = *self.window_start.get_or_insert(now);
        if now > start.saturating_add(p.interval) {
            self.count = 0;
            self.window_start = Some(now);
        }
        let start = self.window_start.unwrap_or(now);
        self.count += 1;
        if self.count > p.attempts {
            if p.mode == RESTART_MODE_DELAY {
                let delay = ns(start.saturating_add(p.interval) - now);
                return RestartDecision::Restart {
                    delay,
                    reason: format!(
                        "Exceeded allowed attempts {} in interval {} and mode is \"delay\", delaying by {}",
                        p.attempts,
                        proto::model::format_duration(p.interval),
                        proto::model::format_duration(delay.as_nanos() as i64)
                    ),
                };
            }
            let reason = if p.attempts == 0 {
                REASON_NO_RESTARTS.to_string()
            } else {
                format!(
                    "Exceeded allowed attempts {} in interval {} and mode is \"fail\"",
                    p.attempts,
                    proto::model::format_duration(p.interval)
                )
            };
            return RestartDecision::NotRestart {
                reason,
                failed: true,
            };
        }
        let base = ns(p.delay);
        let extra = base.mul_f64(0.25 * jitter.clamp(0.0, 1.0));
        RestartDecision::Restart {
            delay: base + extra,
            reason: REASON_WITHIN_POLICY.into(),
        }
    }

    /// Restarts counted in the current window.
    pub fn count(&self) -> i64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::model::{MINUTE, RESTART_MODE_FAIL, SECOND};

    fn policy(attempts: i64, mode: &str) -> RestartPolicy {
        RestartPolicy {
            attempts,
            interval: 10 * MINUTE,
            delay: 15 * SECOND,
            mode: mode.into(),
            render_templates: false,
        }
    }

    fn failed() -> ExitResult {
        ExitResult::from_code(1)
    }

    #[test]
    fn fail_mode_gives_up_after_attempts() {
        let mut t = RestartTracker::new(Some(policy(2, RESTART_MODE_FAIL)), "service");
        let now = 1_000 * SECOND;
        for i in 0..2 {
            assert_eq!(
                t.on_exit(&failed(), now + i * SECOND, 0.0),
                RestartDecision::Restart {
                    delay: Duration::from_secs(15),
                    reason: REASON_WITHIN_POLICY.into()
                }
            );
        }
        match t.on_exit(&failed(), now + 3 * SECOND, 0.0) {
            RestartDecision::NotRestart { reason, failed } => {
                assert!(failed);
                assert!(
                    reason.contains("Exceeded allowed attempts 2 in interval 10m0s"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn window_resets_after_interval() {
        let mut t = RestartTracker::new(Some(policy(1, RESTART_MODE_FAIL)), "service");
        let now = 1_000 * SECOND;
        assert!(matches!(
            t.on_exit(&failed(), now, 0.0),
            RestartDecision::Restart { .. }
        ));
        // After the interval the count starts over.
        assert!(matches!(
            t.on_exit(&failed(), now + 11 * MINUTE, 0.0),
            RestartDecision::Restart { .. }
        ));
        assert!(matches!(
            t.on_exit(&failed(), now + 11 * MINUTE + SECOND, 0.0),
            RestartDecision::NotRestart { .. }
        ));
    }

    #[test]
    fn delay_mode_waits_for_the_interval() {
        let mut t = RestartTracker::new(Some(policy(1, RESTART_MODE_DELAY)), "service");
        let now = 1_000 * SECOND;
        assert!(matches!(
            t.on_exit(&failed(), now, 0.0),
            RestartDecision::Restart { .. }
        ));
        match t.on_exit(&failed(), now + 60 * SECOND, 0.0) {
            RestartDecision::Restart { delay, reason } => {
                assert_eq!(delay, Duration::from_secs(9 * 60));
                assert!(reason.contains("mode is \"delay\""), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // After waiting, the window is new.
        assert_eq!(
            t.on_exit(&failed(), now + 10 * MINUTE + SECOND, 0.0),
            RestartDecision::Restart {
                delay: Duration::from_secs(15),
                reason: REASON_WITHIN_POLICY.into()
            }
        );
    }

    #[test]
    fn batch_success_is_done_but_service_restarts() {
        let ok = ExitResult::from_code(0);
        let mut b = RestartTracker::new(None, "batch");
        assert_eq!(b.on_exit(&ok, 0, 0.0), RestartDecision::Done);
        let mut s = RestartTracker::new(None, "service");
        assert!(matches!(
            s.on_exit(&ok, 0, 0.0),
            RestartDecision::Restart { .. }
        ));
    }

    #[test]
    fn no_attempts_and_unrecoverable_errors() {
        let mut t = RestartTracker::new(Some(policy(0, RESTART_MODE_FAIL)), "service");
        assert_eq!(
            t.on_exit(&failed(), 0, 0.0),
            RestartDecision::NotRestart {
                reason: REASON_NO_RESTARTS.into(),
                failed: true
            }
        );
        let mut t = RestartTracker::new(Some(policy(5, RESTART_MODE_FAIL)), "service");
        let err = DriverError::Start {
            message: "nope".into(),
            recoverable: false,
        };
        assert_eq!(
            t.on_start_error(&err, 0, 0.0),
            RestartDecision::NotRestart {
                reason: REASON_UNRECOVERABLE.into(),
                failed: true
            }
        );
        let err = DriverError::Start {
            message: "later".into(),
            recoverable: true,
        };
        assert!(matches!(
            t.on_start_error(&err, 0, 0.0),
            RestartDecision::Restart { .. }
        ));
    }

    #[test]
    fn jitter_adds_up_to_a_quarter() {
        let mut t = RestartTracker::new(Some(policy(5, RESTART_MODE_FAIL)), "service");
        match t.on_exit(&failed(), 0, 0.999) {
            RestartDecision::Restart { delay, .. } => {
                assert!(delay > Duration::from_secs(15));
                assert!(delay < Duration::from_millis(18_750));
            }
            other => panic!("{other:?}"),
        }
    }
}
