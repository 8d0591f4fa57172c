//! Allocation status from task states (Nomad's `getClientStatus`), and task
//! state bookkeeping (events, timestamps).

use std::collections::BTreeMap;

use proto::model::{
    TaskEvent, TaskState, ALLOC_CLIENT_COMPLETE, ALLOC_CLIENT_FAILED, ALLOC_CLIENT_PENDING,
    ALLOC_CLIENT_RUNNING, TASK_STATE_DEAD, TASK_STATE_PENDING, TASK_STATE_RUNNING,
};

/// Task events kept per task (Nomad keeps 10).
pub const MAX_TASK_EVENTS: usize = 10;

/// The allocation's client status and description: any task failed ->
/// `failed`; else any running -> `running`; else any pending -> `pending`;
/// else (all dead, none failed) -> `complete`.
pub fn client_status(states: &BTreeMap<String, TaskState>) -> (&'static str, &'static str) {
    let (mut pending, mut running, mut dead, mut failed) = (false, false, false, false);
    for s in states.values() {
        match s.state.as_str() {
            TASK_STATE_RUNNING => running = true,
            TASK_STATE_DEAD => {
                if s.failed {
                    failed = true
                } else {
                    dead = true
                }
            }
            _ => pending = true,
        }
    }
    if failed {
        (ALLOC_CLIENT_FAILED, "Failed tasks")
    } else if running {
        (ALLOC_CLIENT_RUNNING, "Tasks are running")
    } else if pending {
        (ALLOC_CLIENT_PENDING, "No tasks have started")
    } else if dead {
        (ALLOC_CLIENT_COMPLETE, "All tasks have completed")
    } else {
        (ALLOC_CLIENT_PENDING, "No tasks")
    }
}

/// A new pending task state.
pub fn pending_state() -> TaskState {
    TaskState {
        state: TASK_STATE_PENDING.into(),
        ..Default::default()
    }
}

/// Appends an event, keeping the last [`MAX_TASK_EVENTS`].
pub fn push_event(state: &mut TaskState, ev: TaskEvent) {
    state.events.push(ev);
    if state.events.len() > MAX_TASK_EVENTS {
        let extra = state.events.len() - MAX_TASK_EVENTS;
        state.events.drain(..extra);
    }
}

/// An event of `kind` now, with its display message.
pub fn event(kind: &str, message: impl Into<String>) -> TaskEvent {
    let message = message.into();
    TaskEvent {
        r#type: kind.to_string(),
        time: crate::util::now_ns(),
        display_message: message.clone(),
        message,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: &str, failed: bool) -> TaskState {
        TaskState {
            state: state.into(),
            failed,
            ..Default::default()
        }
    }

    fn states(list: &[(&str, TaskState)]) -> BTreeMap<String, TaskState> {
        list.iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect()
    }

    #[test]
    fn aggregation_rules() {
        let pending = st(TASK_STATE_PENDING, false);
        let running = st(TASK_STATE_RUNNING, false);
        let done = st(TASK_STATE_DEAD, false);
        let failed = st(TASK_STATE_DEAD, true);
        assert_eq!(
            client_status(&states(&[("a", pending.clone())])).0,
            ALLOC_CLIENT_PENDING
        );
        assert_eq!(
            client_status(&states(&[("a", pending.clone()), ("b", running.clone())])).0,
            ALLOC_CLIENT_RUNNING
        );
        assert_eq!(
            client_status(&states(&[("a", done.clone()), ("b", running.clone())])).0,
            ALLOC_CLIENT_RUNNING
        );
        assert_eq!(
            client_status(&states(&[("a", done.clone()), ("b", done.clone())])).0,
            ALLOC_CLIENT_COMPLETE
        );
        assert_eq!(
            client_status(&states(&[("a", failed.clone()), ("b", running)])).0,
            ALLOC_CLIENT_FAILED
        );
        assert_eq!(
            client_status(&states(&[("a", failed), ("b", done.clone())])).0,
            ALLOC_CLIENT_FAILED
        );
        assert_eq!(
            client_status(&states(&[("a", done), ("b", pending)])).0,
            ALLOC_CLIENT_PENDING
        );
    }

    #[test]
    fn events_are_bounded() {
        let mut s = pending_state();
        for i in 0..15 {
            push_event(&mut s, event("Started", format!("{i}")));
        }
        assert_eq!(s.events.len(), MAX_TASK_EVENTS);
        assert_eq!(s.events[0].message, "5");
    }
}
