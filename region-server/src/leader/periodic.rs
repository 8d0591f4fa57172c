//! The periodic dispatcher: launches children of periodic jobs on their cron
//! schedule.
//!
//! It runs on the leader only and keeps no state of its own that matters:
//! every pass reads the jobs and the `periodic_launches` table (Nomad's
//! `PeriodicLaunch`), so a new leader picks up where the old one stopped.
//! A child is registered through Raft as `<parent>/periodic-<unix seconds
//! of the launch>` with `ParentID` set, and its registration records the
//! launch in the same entry. Launch times are the schedule's own (not the
//! clock's when the dispatcher woke), and a child is registered only if no
//! job has its ID yet, so two leaders racing over one launch create one
//! child. After downtime the dispatcher launches once for the latest missed
//! time, as Nomad does, not once per missed time.
//!
//! With `ProhibitOverlap`, a launch due while an earlier child is still
//! pending or running is skipped (Nomad's rule). Skips are remembered in
//! memory only: a new leader may launch a skipped slot late, once, when the
//! overlap has ended.

use std::collections::HashMap;
use std::time::Duration;

use proto::model::{periodic_child_id, Evaluation, Job, EVAL_TRIGGER_PERIODIC_JOB};
use tokio::sync::watch;

use super::now_ns;
use crate::service::{Service, ServiceError};
use crate::state::{table, Command, CommandResponse, NsKey, Tables};

/// Longest sleep between passes when nothing is due sooner.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Sleep after a failed launch before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// The child a periodic job launches at `launch_ns` (Nomad's `deriveJob`):
/// a copy without the periodic block, named after its ID.
pub fn derive_child(parent: &Job, launch_ns: i64) -> Job {
    let id = periodic_child_id(&parent.id, launch_ns);
    Job {
        name: id.clone(),
        id,
        parent_id: parent.id.clone(),
        periodic: None,
        status: String::new(),
        status_description: String::new(),
        stable: false,
        version: 0,
        submit_time: 0,
        create_index: 0,
        modify_index: 0,
        job_modify_index: 0,
        ..parent.clone()
    }
}

/// A pending evaluation for `job`.
pub fn new_eval(job: &Job, triggered_by: &str, now: i64) -> Evaluation {
    Evaluation {
        id: uuid::Uuid::new_v4().to_string(),
        namespace: job.namespace.clone(),
        priority: job.priority,
        r#type: job.r#type.clone(),
        triggered_by: triggered_by.to_string(),
        job_id: job.id.clone(),
        status: proto::model::constants::EVAL_STATUS_PENDING.to_string(),
        create_time: now,
        modify_time: now,
        ..Default::default()
    }
}

/// What a launch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launched {
    /// The child was registered with its evaluation.
    Child {
        /// The child's ID.
        job_id: String,
        /// Its evaluation.
        eval_id: String,
        /// The evaluation's create index.
        eval_create_index: u64,
        /// Raft index of the registration.
        index: u64,
    },
    /// A job with the child's ID exists already (this launch happened).
    Exists(String),
}

/// Register the child of `parent` for the launch at `launch_ns` through
/// Raft, unless a job with its ID exists.
pub async fn launch(
    service: &Service,
    parent: &Job,
    launch_ns: i64,
) -> Result<Launched, ServiceError> {
    let now = now_ns();
    let child = derive_child(parent, launch_ns);
    let job_id = child.id.clone();
    let eval = new_eval(&child, EVAL_TRIGGER_PERIODIC_JOB, now);
    let cmd = Command::JobRegister {
        job: Box::new(child),
        eval: Some(Box::new(eval)),
        now,
        enforce_index: Some(0),
    };
    let (resp, index) = service.write(cmd).await?;
    match resp {
        CommandResponse::Job {
            eval_id,
            eval_create_index,
            ..
        } => Ok(Launched::Child {
            job_id,
            eval_id: eval_id.unwrap_or_default(),
            eval_create_index,
            index: service.effective_index(index),
        }),
        CommandResponse::Conflict(_) => Ok(Launched::Exists(job_id)),
        other => Err(ServiceError::Internal(format!(
            "periodic launch of {}: unexpected result {other:?}",
            parent.id
        ))),
    }
}

/// Whether a child of `parent` is still pending or running.
pub fn has_live_child(t: &Tables, parent: &Job) -> bool {
    t.children_of(&parent.namespace, &parent.id)
        .iter()
        .any(|child| child.status != "dead")
}

/// One periodic job's due launch, if any, and its next launch after `now`.
fn due(t: &Tables, job: &Job, skipped: Option<i64>, now: i64) -> (Option<i64>, Option<i64>) {
    let Some(schedule) = job.periodic.as_ref().and_then(|p| p.schedule().ok()) else {
        return (None, None);
    };
    let key = (job.namespace.clone(), job.id.clone());
    let last = t
        .periodic_launches
        .get(&key)
        .map(|l| l.launch)
        .unwrap_or(job.submit_time);
    let floor = last.max(skipped.unwrap_or(i64::MIN));
    let due = schedule
        .latest_at_or_before(now)
        .filter(|&launch| launch > floor);
    (due, schedule.next_after(now))
}

/// Launch periodic children while this server leads.
pub async fn run(service: Service, mut stop: watch::Receiver<bool>) {
    let mut skipped: HashMap<NsKey, i64> = HashMap::new();
    loop {
        let t = service.store.snapshot();
        let now = now_ns();
        let mut sleep = MAX_SLEEP;
        // Every active periodic job has a launch row (its registration
        // records one), so the rows name them without a scan of every job
        // on every change of the jobs table.
        let periodic: Vec<_> = t
            .periodic_launches
            .keys()
            .filter_map(|key| t.jobs.get(key))
            .filter(|j| j.is_periodic_active())
            .cloned()
            .collect();
        skipped.retain(|key, _| t.jobs.get(key).is_some_and(|j| j.is_periodic_active()));
        for job in periodic {
            if *stop.borrow() {
                return;
            }
            let key = (job.namespace.clone(), job.id.clone());
            let (due, next) = due(&t, &job, skipped.get(&key).copied(), now);
            if let Some(next) = next {
                let wait = u64::try_from(next.saturating_sub(now)).unwrap_or(0);
                sleep = sleep.min(Duration::from_nanos(wait));
            }
            let Some(launch_ns) = due else { continue };
            let prohibit = job.periodic.as_ref().is_some_and(|p| p.prohibit_overlap);
            if prohibit && has_live_child(&t, &job) {
                tracing::info!(job = %job.id, launch = launch_ns, "periodic: skipping launch, an earlier child is still running (prohibit_overlap)");
                skipped.insert(key, launch_ns);
                continue;
            }
            match launch(&service, &job, launch_ns).await {
                Ok(Launched::Child { job_id, .. }) => {
                    tracing::info!(job = %job.id, child = %job_id, "periodic: launched");
                }
                Ok(Launched::Exists(job_id)) => {
                    tracing::debug!(job = %job.id, child = %job_id, "periodic: already launched");
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "periodic: launch failed; retrying");
                    sleep = sleep.min(RETRY);
                }
            }
        }
        if !super::wait_for_change_or_stop(
            &service,
            &[table::JOBS, table::PERIODIC_LAUNCH],
            sleep,
            &mut stop,
        )
        .await
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::model::PeriodicConfig;

    const S: i64 = 1_000_000_000;

    fn periodic_job(spec: &str) -> Job {
        Job {
            id: "report".into(),
            namespace: "default".into(),
            r#type: "batch".into(),
            submit_time: 100 * S,
            periodic: Some(PeriodicConfig {
                enabled: true,
                spec: spec.into(),
                spec_type: "cron".into(),
                prohibit_overlap: false,
                time_zone: "UTC".into(),
            }),
            ..Job::default()
        }
    }

    #[test]
    fn due_launches_follow_the_last_recorded_launch() {
        let job = periodic_job("*/10 * * * * * *");
        let mut t = Tables::default();
        t.apply(
            1,
            Command::JobRegister {
                job: Box::new(job.clone()),
                eval: None,
                now: 100 * S,
                enforce_index: None,
            },
        );
        let job = t.job("default", "report").expect("registered");
        // Nothing due before the first slot after registration.
        assert_eq!(due(&t, &job, None, 105 * S), (None, Some(110 * S)));
        // Due at the slot, named after it.
        assert_eq!(due(&t, &job, None, 112 * S), (Some(110 * S), Some(120 * S)));
        // A launch recorded by a child's registration is not repeated.
        let child = derive_child(&job, 110 * S);
        assert_eq!(child.id, "report/periodic-110");
        assert_eq!(child.parent_id, "report");
        assert!(child.periodic.is_none());
        t.apply(
            2,
            Command::JobRegister {
                job: Box::new(child),
                eval: None,
                now: 112 * S,
                enforce_index: Some(0),
            },
        );
        assert_eq!(due(&t, &job, None, 119 * S), (None, Some(120 * S)));
        // After downtime: one launch, for the latest missed slot.
        assert_eq!(due(&t, &job, None, 171 * S), (Some(170 * S), Some(180 * S)));
        // A skipped slot is not launched again.
        assert_eq!(due(&t, &job, Some(170 * S), 175 * S), (None, Some(180 * S)));
        let summary = t
            .job_summaries
            .get(&("default".to_string(), "report".to_string()))
            .expect("summary");
        assert_eq!(summary.children.pending, 1);
    }
}
