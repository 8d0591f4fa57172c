//! Following an evaluation and then its deployment until they finish, as
//! `nomad job run` does: every change is printed as it happens (blocking
//! queries, no polling delay), so the output reads well on a terminal and
//! in a log alike.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::client::ApiClient;
use crate::format::{n, s, short, table};

/// How long one blocking query waits before asking again.
const WAIT: Duration = Duration::from_secs(10);

fn stamp() -> String {
    crate::format::time(crate::format::now())
}

/// Follows evaluation `eval_id` (and the deployment it starts, unless
/// `detach_deployment`). Exit code: 0 when everything was placed (and the
/// deployment succeeded), 2 when some allocations could not be placed (as
/// Nomad), 1 when the evaluation or deployment failed.
pub async fn eval(
    client: &ApiClient,
    eval_id: &str,
    follow_deployment: bool,
) -> anyhow::Result<u8> {
    println!(
        "==> {}: Monitoring evaluation \"{}\"",
        stamp(),
        short(eval_id)
    );
    let path = format!("/v1/evaluation/{eval_id}");
    let mut index = 0;
    let mut last_status = String::new();
    let mut printed_trigger = false;
    let ev = loop {
        let r = client.block(&path, index, WAIT).await?;
        index = r.index;
        let ev = r.body;
        if !printed_trigger {
            printed_trigger = true;
            let by = s(&ev, "TriggeredBy");
            match s(&ev, "NodeID").as_str() {
                "" => println!(
                    "    {}: Evaluation triggered by job \"{}\"",
                    stamp(),
                    s(&ev, "JobID")
                ),
                node => println!(
                    "    {}: Evaluation triggered by {by} of node \"{}\"",
                    stamp(),
                    short(node)
                ),
            }
        }
        let status = s(&ev, "Status");
        if status != last_status {
            if !last_status.is_empty() {
                println!(
                    "    {}: Evaluation status changed: \"{last_status}\" -> \"{status}\"",
                    stamp()
                );
            }
            last_status = status.clone();
        }
        if matches!(status.as_str(), "complete" | "failed" | "canceled") {
            break ev;
        }
    };

    let allocs = client
        .get(&format!("/v1/evaluation/{eval_id}/allocations"), &[])
        .await?;
    for a in allocs.as_array().into_iter().flatten() {
        println!(
            "    {}: Allocation \"{}\" created: node \"{}\", group \"{}\"",
            stamp(),
            short(&s(a, "ID")),
            short(&s(a, "NodeID")),
            s(a, "TaskGroup")
        );
    }
    let deployment = s(&ev, "DeploymentID");
    if !deployment.is_empty() {
        println!(
            "    {}: Evaluation within deployment: \"{}\"",
            stamp(),
            short(&deployment)
        );
    }
    let status = s(&ev, "Status");
    println!(
        "==> {}: Evaluation \"{}\" finished with status \"{status}\"",
        stamp(),
        short(eval_id)
    );
    let failed = placement_failures(&ev);
    if !failed.is_empty() {
        println!("\n{}", failed.join("\n"));
        if !s(&ev, "BlockedEval").is_empty() {
            println!(
                "    Evaluation \"{}\" waiting for additional capacity to place remainder",
                short(&s(&ev, "BlockedEval"))
            );
        }
        return Ok(2);
    }
    if status != "complete" {
        let why = s(&ev, "StatusDescription");
        if !why.is_empty() {
            println!("    {why}");
        }
        return Ok(1);
    }
    if follow_deployment && !deployment.is_empty() {
        return self::deployment(client, &deployment).await;
    }
    Ok(0)
}

/// The lines explaining `FailedTGAllocs` of an evaluation.
pub fn placement_failures(ev: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(failed) = ev["FailedTGAllocs"].as_object() else {
        return out;
    };
    if failed.is_empty() {
        return out;
    }
    out.push("==> Failed to place all allocations:".to_string());
    for (group, metric) in failed {
        let coalesced = n(metric, "CoalescedFailures");
        let extra = if coalesced > 0 {
            format!(" ({} unplaced)", coalesced + 1)
        } else {
            String::new()
        };
        out.push(format!("    Task Group \"{group}\"{extra}:"));
        let evaluated = n(metric, "NodesEvaluated");
        let available: i64 = metric["NodesAvailable"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_i64).sum())
            .unwrap_or(0);
        if evaluated == 0 && available == 0 {
            out.push("      * No nodes were eligible for evaluation".to_string());
        }
        for (key, label) in [
            ("ConstraintFiltered", "Constraint"),
            ("DimensionExhausted", "Resources exhausted"),
            ("ClassFiltered", "Class"),
        ] {
            if let Some(m) = metric[key].as_object() {
                for (what, count) in m {
                    out.push(format!(
                        "      * {label} \"{what}\": {} nodes excluded by filter",
                        count.as_i64().unwrap_or(0)
                    ));
                }
            }
        }
    }
    out
}

/// Follows deployment `id` until it succeeds, fails or is cancelled,
/// printing the progress table whenever it changes. 0 when it succeeded.
pub async fn deployment(client: &ApiClient, id: &str) -> anyhow::Result<u8> {
    println!("==> {}: Monitoring deployment \"{}\"", stamp(), short(id));
    let path = format!("/v1/deployment/{id}");
    let mut index = 0;
    let mut last = String::new();
    let mut seen_status = BTreeSet::new();
    loop {
        let r = client.block(&path, index, WAIT).await?;
        index = r.index;
        let d = r.body;
        let status = s(&d, "Status");
        let progress = deployment_table(&d);
        let view = format!("{status}\n{progress}");
        if view != last {
            if seen_status.insert(status.clone()) || status != "running" {
                println!(
                    "    {}: Deployment \"{}\" {status}: {}",
                    stamp(),
                    short(id),
                    s(&d, "StatusDescription")
                );
            }
            println!("{}\n", indent(&progress));
            last = view;
        }
        match status.as_str() {
            "successful" => {
                println!("  ✓ Deployment \"{}\" successful", short(id));
                return Ok(0);
            }
            "failed" | "cancelled" => {
                println!(
                    "  ! Deployment \"{}\" {status}: {}",
                    short(id),
                    s(&d, "StatusDescription")
                );
                return Ok(1);
            }
            _ => {}
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The per-group progress of a deployment.
pub fn deployment_table(d: &Value) -> String {
    let mut rows = Vec::new();
    if let Some(groups) = d["TaskGroups"].as_object() {
        for (name, st) in groups {
            let canaries = n(st, "DesiredCanaries");
            let promoted = if canaries > 0 {
                st["Promoted"].as_bool().unwrap_or(false).to_string()
            } else {
                "-".to_string()
            };
            let row = vec![
                name.clone(),
                promoted,
                n(st, "DesiredTotal").to_string(),
                canaries.to_string(),
                n(st, "PlacedAllocs").to_string(),
                n(st, "HealthyAllocs").to_string(),
                n(st, "UnhealthyAllocs").to_string(),
            ];
            rows.push(row);
        }
    }
    table(
        &[
            "Task Group",
            "Promoted",
            "Desired",
            "Canaries",
            "Placed",
            "Healthy",
            "Unhealthy",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn placement_failures_explain_filters() {
        let ev = json!({"FailedTGAllocs": {"web": {
            "NodesEvaluated": 2,
            "NodesAvailable": {"dc1": 2},
            "ConstraintFiltered": {"${attr.kernel.name} = windows": 2},
            "CoalescedFailures": 1
        }}});
        assert_eq!(
            placement_failures(&ev),
            vec![
                "==> Failed to place all allocations:",
                "    Task Group \"web\" (2 unplaced):",
                "      * Constraint \"${attr.kernel.name} = windows\": 2 nodes excluded by filter",
            ]
        );
        assert!(placement_failures(&json!({"FailedTGAllocs": null})).is_empty());
    }

    #[test]
    fn deployment_progress_table() {
        let d = json!({"TaskGroups": {"web": {
            "DesiredTotal": 3, "PlacedAllocs": 2, "HealthyAllocs": 1, "UnhealthyAllocs": 0
        }}});
        assert_eq!(
            deployment_table(&d),
            "Task Group  Promoted  Desired  Canaries  Placed  Healthy  Unhealthy\n\
             web         -         3        0         2       1        0"
        );
    }
}
