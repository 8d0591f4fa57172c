//! Per-region operator endpoints: autopilot health
//! (`/v1/operator/autopilot/health`), the autopilot configuration and the
//! scheduler configuration (`/v1/operator/{autopilot,scheduler}/configuration`).
//!
//! Health is computed on whichever server answers: it asks every Raft
//! server of its membership for its view (`ClusterInfo` over the region's
//! gRPC: last log index, term, time since it heard from the leader) and
//! reads gossip for each server's status. A server is healthy (Nomad's
//! autopilot rule) when gossip has it alive, it answered, it heard from the
//! leader within `LastContactThreshold`, and its log is within
//! `MaxTrailingLogs` of the leader's.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use proto::model::{
    AutopilotConfiguration, OperatorHealthReply, SchedulerConfiguration, ServerHealth,
};
use serde_json::json;

use super::http::{parse_body, ApiResult, ApiState, Q};
use super::query::parse_duration;
use super::ApiError;
use crate::leader::now_ns;
use crate::service::ClusterInfo;
use crate::state::{table, Command, CommandResponse};

/// When each server's health last changed, per answering server:
/// (answering id, server id) -> (healthy, since in Unix ns).
static STABLE: Mutex<BTreeMap<(u64, u64), (bool, i64)>> = Mutex::new(BTreeMap::new());

fn go_duration_ms(ms: u64) -> String {
    if ms == 0 {
        "0s".to_string()
    } else {
        format!("{ms}ms")
    }
}

fn rfc3339(ns: i64) -> String {
    proto::model::time::format_rfc3339(ns)
}

/// `GET /v1/operator/autopilot/health`.
pub async fn autopilot_health(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.service().read(q.stale).await?;
    let config = t.autopilot_config.as_deref().cloned().unwrap_or_default();
    let threshold = parse_duration("LastContactThreshold", &config.last_contact_threshold)
        .unwrap_or(Duration::from_millis(200));
    let local = s.service().cluster_info();
    let leader_id = local.leader.as_ref().map(|(id, _)| *id);
    let servers: Vec<(u64, crate::raft::ServerNode, bool)> = local
        .voters
        .iter()
        .map(|(id, n)| (*id, n.clone(), true))
        .chain(local.learners.iter().map(|(id, n)| (*id, n.clone(), false)))
        .collect();

    // Every server's own view, asked concurrently.
    let views: Vec<Option<ClusterInfo>> =
        futures::future::join_all(servers.iter().map(|(id, node, _)| {
            let service = s.service().clone();
            let local = local.clone();
            let id = *id;
            let addr = node.rpc_addr.clone();
            async move {
                if id == service.id {
                    Some(local)
                } else {
                    service.probe(&addr).await.ok()
                }
            }
        }))
        .await;
    let leader_index = servers
        .iter()
        .zip(&views)
        .find(|((id, _, _), _)| Some(*id) == leader_id)
        .and_then(|(_, v)| v.as_ref().map(|v| v.last_log_index));

    let gossip: BTreeMap<String, &'static str> = s
        .gossip()
        .map(|pool| {
            pool.members()
                .into_iter()
                .map(|m| {
                    let status = match m.status {
                        ops_kit::gossip::MemberStatus::Alive => "alive",
                        ops_kit::gossip::MemberStatus::Failed => "failed",
                        ops_kit::gossip::MemberStatus::Left => "left",
                    };
                    (m.info.rpc_addr.clone(), status)
                })
                .collect()
        })
        .unwrap_or_default();

    let now = now_ns();
    let mut out = Vec::new();
    for ((id, node, voter), view) in servers.iter().zip(views) {
        let serf_status = match s.gossip() {
            Some(_) => gossip.get(&node.rpc_addr).copied().unwrap_or("none"),
            // Without gossip, a server that answered counts as alive.
            None if view.is_some() => "alive",
            None => "failed",
        };
        let is_leader = Some(*id) == leader_id;
        let (last_index, last_term, contact_ms) = view
            .as_ref()
            .map(|v| (v.last_log_index, v.term, v.last_contact_ms))
            .unwrap_or((0, 0, u64::MAX));
        let healthy = serf_status == "alive"
            && view.is_some()
            && leader_id.is_some()
            && (is_leader || Duration::from_millis(contact_ms) <= threshold)
            && leader_index.is_some_and(|li| last_index + config.max_trailing_logs >= li);
        let since = {
            let mut stable = STABLE.lock().unwrap_or_else(|e| e.into_inner());
            let entry = stable
                .entry((s.service().id, *id))
                .or_insert((healthy, now));
            if entry.0 != healthy {
                *entry = (healthy, now);
            }
            entry.1
        };
        out.push(ServerHealth {
            id: id.to_string(),
            name: node.name.clone(),
            address: node.rpc_addr.clone(),
            serf_status: serf_status.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            leader: is_leader,
            last_contact: if view.is_some() {
                go_duration_ms(contact_ms)
            } else {
                String::new()
            },
            last_term,
            last_index,
            healthy,
            voter: *voter,
            stable_since: rfc3339(since),
        });
    }
    let voters = out.iter().filter(|h| h.voter).count() as i64;
    let healthy_voters = out.iter().filter(|h| h.voter && h.healthy).count() as i64;
    let reply = OperatorHealthReply {
        healthy: !out.is_empty() && out.iter().all(|h| h.healthy),
        failure_tolerance: (healthy_voters - (voters / 2 + 1)).max(0),
        servers: out,
    };
    s.json(t.index.max(1), &reply)
}

/// `GET /v1/operator/scheduler/configuration`.
pub async fn get_scheduler_config(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::OPERATOR_CONFIG]).await?;
    let config = t.scheduler_config.as_deref().cloned().unwrap_or_default();
    let index = t.table_index(table::OPERATOR_CONFIG);
    s.json(
        index,
        &json!({ "SchedulerConfig": config, "Index": index.max(1) }),
    )
}

/// The `?cas=` index of a configuration write, if given.
fn cas(q: &super::query::QueryOptions) -> Result<Option<u64>, ApiError> {
    q.other
        .iter()
        .find(|(k, _)| k == "cas")
        .map(|(_, v)| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("Error parsing cas value: {v:?}")))
        })
        .transpose()
}

/// Answer a configuration write as Nomad does: `{Updated, Index}`, with
/// `Updated: false` when the check-and-set index did not match.
async fn write_config(s: &ApiState, cmd: Command) -> ApiResult {
    let (resp, index) = s.service().write(cmd).await?;
    let index = s.service().effective_index(index);
    let updated = match resp {
        CommandResponse::Ok => true,
        CommandResponse::Conflict(_) => false,
        other => {
            return Err(ApiError::internal(format!(
                "unexpected configuration result: {other:?}"
            )))
        }
    };
    s.json(index, &json!({ "Updated": updated, "Index": index }))
}

/// `PUT /v1/operator/scheduler/configuration` (`?cas=<ModifyIndex>`).
pub async fn set_scheduler_config(State(s): State<ApiState>, query: Q, body: Bytes) -> ApiResult {
    let q = s.query(query)?;
    let mut config: SchedulerConfiguration = parse_body(&body)?;
    config.canonicalize();
    config.validate().map_err(ApiError::bad_request)?;
    let cmd = Command::SchedulerSetConfig {
        config: Box::new(config),
        cas_index: cas(&q)?,
    };
    write_config(&s, cmd).await
}

/// `GET /v1/operator/autopilot/configuration`.
pub async fn get_autopilot_config(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::OPERATOR_CONFIG]).await?;
    let config = t.autopilot_config.as_deref().cloned().unwrap_or_default();
    s.json(t.table_index(table::OPERATOR_CONFIG), &config)
}

/// `PUT /v1/operator/autopilot/configuration` (`?cas=<ModifyIndex>`).
pub async fn set_autopilot_config(State(s): State<ApiState>, query: Q, body: Bytes) -> ApiResult {
    let q = s.query(query)?;
    let config: AutopilotConfiguration = parse_body(&body)?;
    for (field, value) in [
        ("LastContactThreshold", &config.last_contact_threshold),
        ("ServerStabilizationTime", &config.server_stabilization_time),
    ] {
        parse_duration(field, value)?;
    }
    let cmd = Command::AutopilotSetConfig {
        config: Box::new(config),
        cas_index: cas(&q)?,
    };
    write_config(&s, cmd).await
}
