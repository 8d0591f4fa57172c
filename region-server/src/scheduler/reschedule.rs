//! Rescheduling of failed allocations: eligibility (attempts within the
//! interval, or unlimited) and the delay before the next attempt.

use proto::model::{
    Allocation, RescheduleEvent, ReschedulePolicy, RescheduleTracker, ALLOC_CLIENT_COMPLETE,
    ALLOC_CLIENT_FAILED, ALLOC_DESIRED_STOP, RESCHEDULE_DELAY_EXPONENTIAL,
    RESCHEDULE_DELAY_FIBONACCI,
};

use proto::model::time::parse_rfc3339 as parse_rfc3339_nanos;

/// How many past reschedule events an unlimited policy keeps.
pub const MAX_PAST_RESCHEDULE_EVENTS: usize = 5;

/// The reschedule policy that applies to an allocation: its own job
/// version's group policy, else `fallback`.
pub fn policy_of<'a>(
    alloc: &'a Allocation,
    fallback: Option<&'a ReschedulePolicy>,
) -> Option<&'a ReschedulePolicy> {
    alloc
        .job
        .as_ref()
        .and_then(|job| job.task_group(&alloc.task_group))
        .map(|group| group.reschedule_policy.as_ref())
        .unwrap_or(fallback)
}

/// When the allocation last changed on the client: the latest task
/// `FinishedAt`, else the latest task event, else `ModifyTime`, else `now`.
pub fn last_event_time(alloc: &Allocation, now: i64) -> i64 {
    let finished = alloc
        .task_states
        .values()
        .filter_map(|state| state.finished_at.as_deref().and_then(parse_rfc3339_nanos))
        .max();
    if let Some(time) = finished {
        return time;
    }
    let event = alloc
        .task_states
        .values()
        .flat_map(|state| state.events.iter().map(|event| event.time))
        .filter(|time| *time > 0)
        .max();
    if let Some(time) = event {
        return time;
    }
    if alloc.modify_time > 0 {
        alloc.modify_time
    } else {
        now
    }
}

fn events(alloc: &Allocation) -> &[RescheduleEvent] {
    alloc
        .reschedule_tracker
        .as_ref()
        .map(|t| t.events.as_slice())
        .unwrap_or(&[])
}

/// The delay before the next reschedule of `alloc` under `policy`:
/// `constant`, `exponential` (double the last delay) or `fibonacci` (sum of
/// the last two), capped by `MaxDelay`; once capped, a failure that came
/// long after the last reschedule starts over from `Delay`.
pub fn next_delay(alloc: &Allocation, policy: &ReschedulePolicy, now: i64) -> i64 {
    let events = events(alloc);
    let Some(last) = events.last() else {
        return policy.delay;
    };
    let mut delay = match policy.delay_function.as_str() {
        RESCHEDULE_DELAY_EXPONENTIAL => last.delay.saturating_mul(2),
        RESCHEDULE_DELAY_FIBONACCI => {
            if events.len() >= 2 {
                let n1 = last.delay;
                let n2 = events[events.len() - 2].delay;
                if n2 == policy.max_delay && n1 == policy.delay {
                    n1
                } else {
                    n1.saturating_add(n2)
                }
            } else {
                policy.delay
            }
        }
        _ => return policy.delay,
    };
    if policy.max_delay > 0 && delay > policy.max_delay {
        delay = policy.max_delay;
        let since_last = last_event_time(alloc, now) - last.reschedule_time;
        if since_last > delay {
            delay = policy.delay;
        }
    }
    delay
}

/// When the allocation may be rescheduled and whether it may be at all:
/// it must have failed (and not be stopped by the servers), and the policy
/// must allow another attempt (unlimited, or fewer than `Attempts` within
/// `Interval` before the failure).
pub fn next_reschedule_time(
    alloc: &Allocation,
    policy: Option<&ReschedulePolicy>,
    now: i64,
) -> (i64, bool) {
    let Some(policy) = policy else {
        return (0, false);
    };
    if alloc.desired_status == ALLOC_DESIRED_STOP || alloc.client_status != ALLOC_CLIENT_FAILED {
        return (0, false);
    }
    let fail_time = last_event_time(alloc, now);
    let delay = next_delay(alloc, policy, now);
    let time = fail_time.saturating_add(delay);
    let eligible = if policy.unlimited {
        true
    } else if policy.attempts <= 0 {
        false
    } else if events(alloc).is_empty() {
        true
    } else {
        let attempted = events(alloc)
            .iter()
            .filter(|event| fail_time - event.reschedule_time < policy.interval)
            .count() as i64;
        attempted < policy.attempts && delay < policy.interval
    };
    (time, eligible)
}

/// The reschedule tracker of a replacement of `prev` made at `now`: the
/// previous events that still matter plus one for this reschedule.
pub fn next_tracker(
    prev: &Allocation,
    policy: Option<&ReschedulePolicy>,
    now: i64,
) -> RescheduleTracker {
    let previous = events(prev);
    let mut events: Vec<RescheduleEvent> = match policy {
        Some(policy) if policy.attempts > 0 => previous
            .iter()
            .filter(|event| policy.interval > 0 && now - event.reschedule_time <= policy.interval)
            .cloned()
            .collect(),
        _ => previous
            .iter()
            .skip(previous.len().saturating_sub(MAX_PAST_RESCHEDULE_EVENTS))
            .cloned()
            .collect(),
    };
    let delay = policy.map(|p| next_delay(prev, p, now)).unwrap_or(0);
    events.push(RescheduleEvent {
        reschedule_time: now,
        prev_alloc_id: prev.id.clone(),
        prev_node_id: prev.node_id.clone(),
        delay,
    });
    RescheduleTracker { events }
}

/// Whether every task of the allocation finished successfully.
pub fn ran_successfully(alloc: &Allocation) -> bool {
    alloc.client_status == ALLOC_CLIENT_COMPLETE
        || (!alloc.task_states.is_empty() && alloc.task_states.values().all(|s| s.successful()))
}
