//! In-process region tests: elections, failover, catch-up from snapshots,
//! membership, quorum loss, bootstrap, snapshot save/restore, blocking
//! queries and input checking, through the Nomad-compatible HTTP API.
//!
//! Every test holds `serial()`: they measure time and must not compete with
//! each other for the CPU.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use atoll_tests::{
    delete, get, get_bytes, get_json, job_spec, must_register, poll, put_json, put_raw, register,
    register_job, serial, wait_ok, TestRegion, DEFAULT_TIMEOUT,
};
use base64::Engine as _;
use futures::StreamExt;
use region_server::RegionServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Design target: a new leader within the election timeout (max 1 s) plus
/// 1 s, with slack for a loaded CI machine.
const FAILOVER_BUDGET: Duration = Duration::from_millis(2500);

/// Raft ids of the running servers.
fn ids(r: &TestRegion) -> BTreeSet<u64> {
    r.running()
        .into_iter()
        .map(|i| r.server(i).service.id)
        .collect()
}

/// The servers of `/v1/operator/raft/configuration` on `base`: id -> voter.
async fn raft_servers(base: &str, stale: bool) -> anyhow::Result<BTreeMap<u64, bool>> {
    let url = format!(
        "{base}/v1/operator/raft/configuration{}",
        if stale { "?stale" } else { "" }
    );
    let r = get(&url).await?.expect(StatusCode::OK)?;
    let body = r.json();
    let servers = body["Servers"]
        .as_array()
        .with_context(|| format!("no Servers in {body}"))?;
    servers
        .iter()
        .map(|s| {
            let id: u64 = s["ID"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("bad ID in {s}"))?;
            Ok((id, s["Voter"].as_bool().unwrap_or(false)))
        })
        .collect()
}

/// `GET /v1/jobs` on `base`: the job IDs and `X-Nomad-Index`.
async fn job_ids(base: &str) -> anyhow::Result<(Vec<String>, u64)> {
    let r = get(&format!("{base}/v1/jobs"))
        .await?
        .expect(StatusCode::OK)?;
    let ids = r
        .json()
        .as_array()
        .context("job list is not an array")?
        .iter()
        .map(|j| j["ID"].as_str().unwrap_or_default().to_string())
        .collect();
    Ok((ids, r.index()))
}

/// Wait until the running servers agree on a leader whose membership is
/// settled: exactly `voters` as voters, no learners, no joint configuration,
/// and the configuration committed and applied. Returns the leader's slot.
async fn wait_settled_membership(r: &TestRegion, voters: &BTreeSet<u64>) -> anyhow::Result<usize> {
    poll("a settled membership", DEFAULT_TIMEOUT, || async {
        let leader = r.agreed_leader(&r.running())?;
        let m = r.server(leader).service.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let settled = membership.get_joint_config().len() == 1
            && membership.voter_ids().collect::<BTreeSet<_>>() == *voters
            && membership.learner_ids().next().is_none()
            && m.membership_config.log_id().map(|l| l.index) <= m.last_applied.map(|l| l.index);
        settled.then_some(leader)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_elect_one_leader_and_serve_follower_writes_everywhere() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let r = TestRegion::start(3, "basic").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;

    // Exactly one leader, and a healthy leader stays leader.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let leaders: Vec<usize> = r
            .running()
            .into_iter()
            .filter(|i| r.server(*i).service.is_leader())
            .collect();
        ensure!(
            leaders == vec![leader],
            "leaders {leaders:?}, expected only {leader}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = ids(&r);
    for i in 0..3 {
        let info = r.server(i).service.cluster_info();
        ensure!(
            info.voters.keys().copied().collect::<BTreeSet<_>>() == all,
            "server {i} voters {:?}",
            info.voters.keys()
        );
        let (code, addr) = get_json(&format!("{}/v1/status/leader", r.http(i))).await?;
        ensure!(code == StatusCode::OK);
        ensure!(
            addr == json!(r.rpc_addr(leader)),
            "server {i} names leader {addr}"
        );
        let (_, peers) = get_json(&format!("{}/v1/status/peers", r.http(i))).await?;
        ensure!(peers.as_array().map(Vec::len) == Some(3), "peers {peers}");
    }

    let follower = r.others(leader)[0];
    must_register(&r.http(follower), "web").await?;
    // Linearizable (default) reads see it at once on every server.
    for i in 0..3 {
        let reply = get(&format!("{}/v1/job/web", r.http(i))).await?;
        let reply = reply
            .expect(StatusCode::OK)
            .with_context(|| format!("linearizable read on server {i}"))?;
        ensure!(reply.json()["ID"] == "web", "server {i}: {}", reply.body);
        ensure!(reply.header("X-Nomad-KnownLeader") == Some("true"));
        ensure!(reply.index() > 0);
    }
    // Stale reads see it shortly after.
    for i in 0..3 {
        let job = wait_ok(
            &format!("{}/v1/job/web?stale", r.http(i)),
            Duration::from_secs(5),
        )
        .await?;
        ensure!(job["ID"] == "web");
    }
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_failover_keeps_acknowledged_writes_and_the_old_leader_catches_up(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut r = TestRegion::start(3, "failover").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    let mut acked = Vec::new();
    for k in 0..20 {
        let id = format!("job-{k:02}");
        must_register(&r.http(k % 3), &id).await?;
        acked.push(id);
    }

    let old_id = r.server(leader).service.id;
    let started = Instant::now();
    let stopping = tokio::spawn(r.take(leader).shutdown());
    let survivors = r.running();
    let new_leader = r
        .wait_leader_among(&survivors, Duration::from_secs(15))
        .await?;
    let took = started.elapsed();
    stopping.await?;
    eprintln!("failover: new leader after {took:?}");
    ensure!(r.server(new_leader).service.id != old_id);
    ensure!(
        took < FAILOVER_BUDGET,
        "new leader after {took:?}, budget {FAILOVER_BUDGET:?}"
    );

    for id in &acked {
        for i in &survivors {
            get(&format!("{}/v1/job/{id}", r.http(*i)))
                .await?
                .expect(StatusCode::OK)
                .with_context(|| format!("acknowledged job {id} on server {i}"))?;
        }
    }
    for i in &survivors {
        must_register(&r.http(*i), &format!("after-failover-{i}")).await?;
    }

    r.restart(leader).await?;
    for i in &survivors {
        wait_ok(
            &format!("{}/v1/job/after-failover-{i}?stale", r.http(leader)),
            DEFAULT_TIMEOUT,
        )
        .await
        .context("restarted server catching up")?;
    }
    r.wait_leader(DEFAULT_TIMEOUT).await?;
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_purged_log_catches_up_from_a_snapshot() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut r = TestRegion::start_with(3, "catchup", |c| {
        c.raft.snapshot_threshold = 50;
        c.raft.trailing_logs = 10;
    })
    .await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    let follower = r.others(leader)[0];
    let behind = r
        .server(follower)
        .service
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    r.stop(follower).await;

    let base = r.http(leader);
    let results: Vec<anyhow::Result<serde_json::Value>> =
        futures::stream::iter((0..200).map(|k| {
            let base = base.clone();
            async move { must_register(&base, &format!("job-{k:03}")).await }
        }))
        .buffer_unordered(8)
        .collect()
        .await;
    for res in results {
        res?;
    }

    let raft = r.server(leader).service.raft.clone();
    let (snapshot, purged) = poll(
        "a snapshot and a purged log on the leader",
        DEFAULT_TIMEOUT,
        || async {
            let m = raft.metrics().borrow().clone();
            match (m.snapshot, m.purged) {
                (Some(s), Some(p)) if p.index > behind => Some((s, p)),
                _ => None,
            }
        },
    )
    .await?;
    eprintln!("leader snapshot {snapshot}, purged up to {purged}, follower stopped at {behind}");

    r.restart(follower).await?;
    wait_ok(
        &format!("{}/v1/job/job-199?stale", r.http(follower)),
        DEFAULT_TIMEOUT,
    )
    .await
    .context("follower catching up")?;
    let installed = r.server(follower).service.raft.metrics().borrow().snapshot;
    ensure!(
        installed.is_some(),
        "the follower caught up without a snapshot"
    );
    let (_, list) = get_json(&format!("{}/v1/jobs?stale", r.http(follower))).await?;
    ensure!(
        list.as_array().map(Vec::len) == Some(200),
        "follower lists {} jobs",
        list.as_array().map(Vec::len).unwrap_or(0)
    );
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_join_a_running_region_and_a_peer_can_be_removed() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut r = TestRegion::start(1, "members").await?;
    r.wait_leader(DEFAULT_TIMEOUT).await?;
    must_register(&r.http(0), "before-join").await?;
    let first = r.rpc_addr(0);
    for _ in 0..2 {
        let i = r.plan_server(None, vec![first.clone()], |_| {})?;
        r.start_server(i).await?;
    }
    let all = ids(&r);
    poll("three voters", DEFAULT_TIMEOUT, || async {
        let servers = raft_servers(&r.http(0), false).await.ok()?;
        (servers.keys().copied().collect::<BTreeSet<_>>() == all && servers.values().all(|v| *v))
            .then_some(())
    })
    .await?;
    // The last join's configuration change may still be in flight.
    let leader = wait_settled_membership(&r, &all).await?;
    for i in 0..3 {
        wait_ok(
            &format!("{}/v1/job/before-join?stale", r.http(i)),
            DEFAULT_TIMEOUT,
        )
        .await?;
    }

    // Remove a follower through the other follower (forwarded to the leader).
    let followers = r.others(leader);
    let (victim, via) = (followers[0], followers[1]);
    let victim_id = r.server(victim).service.id;
    delete(&format!(
        "{}/v1/operator/raft/peer?id={victim_id}",
        r.http(via)
    ))
    .await?
    .expect(StatusCode::OK)?;
    let servers = raft_servers(&r.http(leader), false).await?;
    ensure!(servers.len() == 2, "after removal: {servers:?}");
    ensure!(!servers.contains_key(&victim_id), "{servers:?}");
    r.stop(victim).await;
    must_register(&r.http(via), "after-removal").await?;
    get(&format!("{}/v1/job/after-removal", r.http(leader)))
        .await?
        .expect(StatusCode::OK)?;
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_peer_removals_both_take_effect() -> anyhow::Result<()> {
    let _serial = serial().await;
    let r = TestRegion::start(5, "remove2").await?;
    let leader = wait_settled_membership(&r, &ids(&r)).await?;
    let followers = r.others(leader);
    let (a, b) = (
        r.server(followers[0]).service.id,
        r.server(followers[1]).service.id,
    );
    // Two operators remove two peers at the same time; Raft takes one
    // configuration change at a time, so the server has to serialize them.
    let base = r.http(leader);
    let (url_a, url_b) = (
        format!("{base}/v1/operator/raft/peer?id={a}"),
        format!("{base}/v1/operator/raft/peer?id={b}"),
    );
    let (ra, rb) = tokio::join!(delete(&url_a), delete(&url_b));
    let (ra, rb) = (ra?, rb?);
    let mut problems = Vec::new();
    for (id, reply) in [(a, &ra), (b, &rb)] {
        if reply.status != StatusCode::OK {
            problems.push(format!("removing {id}: {} {}", reply.status, reply.body));
        }
    }
    let servers = raft_servers(&base, false).await?;
    if servers.contains_key(&a) || servers.contains_key(&b) || servers.len() != 3 {
        problems.push(format!(
            "configuration after removing {a} and {b}: {servers:?}"
        ));
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaving_leader_leaves_two_voters_with_a_new_leader() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut r = TestRegion::start(3, "leave").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    must_register(&r.http(leader), "before-leave").await?;
    let old_id = r.server(leader).service.id;
    r.take(leader).leave_and_shutdown().await?;

    let survivors = r.running();
    let new_leader = r
        .wait_leader_among(&survivors, Duration::from_secs(15))
        .await?;
    ensure!(r.server(new_leader).service.id != old_id);
    let remaining = ids(&r);
    let servers = raft_servers(&r.http(new_leader), false).await?;
    ensure!(
        servers.keys().copied().collect::<BTreeSet<_>>() == remaining,
        "configuration {servers:?}, expected {remaining:?}"
    );
    ensure!(servers.values().all(|v| *v), "not all voters: {servers:?}");
    for i in &survivors {
        must_register(&r.http(*i), &format!("after-leave-{i}")).await?;
        get(&format!("{}/v1/job/before-leave", r.http(*i)))
            .await?
            .expect(StatusCode::OK)?;
    }
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_servers_survive_two_stopped() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut r = TestRegion::start(5, "five").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    must_register(&r.http(leader), "before").await?;
    let follower = r.others(leader)[0];
    r.stop(leader).await;
    r.stop(follower).await;
    let survivors = r.running();
    r.wait_leader_among(&survivors, Duration::from_secs(15))
        .await?;
    for i in &survivors {
        must_register(&r.http(*i), &format!("after-{i}")).await?;
    }
    for i in &survivors {
        for j in &survivors {
            get(&format!("{}/v1/job/after-{j}", r.http(*i)))
                .await?
                .expect(StatusCode::OK)?;
        }
        get(&format!("{}/v1/job/before", r.http(*i)))
            .await?
            .expect(StatusCode::OK)?;
    }
    r.shutdown().await;
    Ok(())
}

/// Await `fut` for at most 12 s (a server without quorum should answer
/// within about 5 s), measuring how long it took.
async fn timed(
    fut: impl Future<Output = anyhow::Result<atoll_tests::Reply>>,
) -> (anyhow::Result<atoll_tests::Reply>, Duration) {
    let started = Instant::now();
    let out = match tokio::time::timeout(Duration::from_secs(12), fut).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("no answer within 12 s")),
    };
    (out, started.elapsed())
}

/// Within about 5 s of asking, a server without a quorum answers writes and
/// linearizable reads with 500 "No cluster leader"; `?stale` reads still
/// work. Every problem is reported, not just the first.
async fn expect_no_leader(base: &str) -> anyhow::Result<()> {
    let read_url = format!("{base}/v1/job/before");
    let stale_url = format!("{base}/v1/job/before?stale");
    let (write, read, stale) = tokio::join!(
        timed(register(base, job_spec("no-quorum"))),
        timed(get(&read_url)),
        timed(get(&stale_url)),
    );
    let mut problems = Vec::new();
    for (what, (reply, took)) in [("write", write), ("linearizable read", read)] {
        match reply {
            Ok(r) => {
                eprintln!(
                    "{what} without quorum: {} after {took:?}: {}",
                    r.status, r.body
                );
                if r.status != StatusCode::INTERNAL_SERVER_ERROR
                    || !r.body.contains("No cluster leader")
                {
                    problems.push(format!(
                        "{what}: {} {:?} after {took:?}, expected 500 \"No cluster leader\"",
                        r.status, r.body
                    ));
                } else if took > Duration::from_secs(8) {
                    problems.push(format!("{what}: answered after {took:?}"));
                }
            }
            Err(e) => problems.push(format!("{what}: no answer after {took:?}: {e:#}")),
        }
    }
    match stale {
        (Ok(r), _) if r.status == StatusCode::OK => {}
        (Ok(r), took) => problems.push(format!(
            "stale read: {} {:?} after {took:?}",
            r.status, r.body
        )),
        (Err(e), took) => problems.push(format!("stale read: no answer after {took:?}: {e:#}")),
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_left_alone_answers_no_cluster_leader() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut r = TestRegion::start(3, "alone-f").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    must_register(&r.http(leader), "before").await?;
    let others = r.others(leader);
    let (gone, alone) = (others[0], others[1]);
    wait_ok(
        &format!("{}/v1/job/before?stale", r.http(alone)),
        DEFAULT_TIMEOUT,
    )
    .await?;
    r.stop(leader).await;
    r.stop(gone).await;
    expect_no_leader(&r.http(alone)).await?;
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_left_alone_answers_no_cluster_leader() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut r = TestRegion::start(3, "alone-l").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    must_register(&r.http(leader), "before").await?;
    for i in r.others(leader) {
        r.stop(i).await;
    }
    expect_no_leader(&r.http(leader)).await?;
    r.shutdown().await;
    Ok(())
}

/// Writes sent to a leader that lost its quorum queue up behind the
/// entries it cannot commit, and their callers get 500 "No cluster
/// leader". Once the quorum is back those queued writes must not be
/// committed after all: their clients were told they failed, and may have
/// sent later writes that a late commit would undo. (At most the two
/// entries already proposed when the quorum went may still commit: they
/// are in the log, and their outcome was reported as unknown.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_queued_on_a_leader_without_quorum_are_not_committed_later() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut r = TestRegion::start(3, "late").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    must_register(&r.http(leader), "before").await?;
    let others = r.others(leader);
    for &i in &others {
        r.stop(i).await;
    }
    // One after another, so the first two take the proposer's two slots
    // and the rest queue behind them (all within the second in which the
    // leader still counts itself one).
    let mut pending = Vec::new();
    for i in 0..6 {
        let base = r.http(leader);
        pending.push(tokio::spawn(async move {
            register(&base, job_spec(&format!("late-{i}"))).await
        }));
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    for (i, p) in pending.into_iter().enumerate() {
        let reply = p.await?;
        if let Ok(reply) = reply {
            ensure!(
                reply.status != StatusCode::OK,
                "late-{i} was acknowledged without a quorum: {}",
                reply.body
            );
        }
    }
    for &i in &others {
        r.start_server(i).await?;
    }
    let now = r.wait_leader(DEFAULT_TIMEOUT).await?;
    must_register(&r.http(now), "after").await?;
    // Let anything still queued anywhere have its chance to commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ids, _) = job_ids(&r.http(now)).await?;
    let late: Vec<&String> = ids
        .iter()
        .filter(|id| id.starts_with("late-") && !["late-0", "late-1"].contains(&id.as_str()))
        .collect();
    ensure!(
        late.is_empty(),
        "writes that were answered 500 and never proposed were committed later: {late:?} (jobs: {ids:?})"
    );
    r.shutdown().await;
    Ok(())
}

/// A leader duty's write (`Service::in_term`) commits only on the server
/// that leads in that term: never forwarded to the leader by a follower,
/// never by a leader of a later term. A plan checked against an old
/// leader's state must not be committed through the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_duty_writes_are_never_forwarded_or_carried_into_another_term() -> anyhow::Result<()>
{
    use region_server::state::Command;
    let _serial = serial().await;
    let r = TestRegion::start(3, "term").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    let service = &r.server(leader).service;
    let term = service
        .leading_term()
        .context("the leader has no leading term")?;
    let stability = |stable: bool| Command::JobStability {
        namespace: "default".into(),
        job_id: "duty".into(),
        version: 0,
        stable,
    };
    must_register(&r.http(leader), "duty").await?;
    // In its term, on the leader: committed.
    service
        .in_term(term)
        .write(stability(true))
        .await
        .context("the leader's own write in its term")?;
    // Another term on the leader, or any term on a follower: refused, and
    // nothing reaches the log (the job stays stable).
    let err = service
        .in_term(term + 1)
        .write(stability(false))
        .await
        .err()
        .context("a write for a term the leader is not in was committed")?;
    ensure!(err.to_string().contains("term"), "unexpected error: {err}");
    let follower = r.others(leader)[0];
    let err = r
        .server(follower)
        .service
        .in_term(term)
        .write(stability(false))
        .await
        .err()
        .context("a follower's leader-duty write was forwarded and committed")?;
    ensure!(err.to_string().contains("term"), "unexpected error: {err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, job) = get_json(&format!("{}/v1/job/duty", r.http(leader))).await?;
    ensure!(
        job["Stable"] == true,
        "a refused leader-duty write still reached the log: {job}"
    );
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_started_together_bootstrap_exactly_one_region() -> anyhow::Result<()> {
    let _serial = serial().await;
    for round in 0..3 {
        let mut r = TestRegion::plan(3, "boot", |_| {})?;
        let (a, b, c) = tokio::join!(
            RegionServer::start(r.config(0)),
            RegionServer::start(r.config(1)),
            RegionServer::start(r.config(2)),
        );
        r.adopt(0, a?);
        r.adopt(1, b?);
        r.adopt(2, c?);
        let all = ids(&r);
        let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
        let leader_id = r.server(leader).service.id;
        // Every server reports the same three voters and the same leader,
        // and keeps doing so.
        poll("one agreed region", DEFAULT_TIMEOUT, || async {
            (0..3)
                .all(|i| {
                    let info = r.server(i).service.cluster_info();
                    info.voters.keys().copied().collect::<BTreeSet<_>>() == all
                        && info.leader.map(|(l, _)| l) == Some(leader_id)
                })
                .then_some(())
        })
        .await
        .with_context(|| format!("round {round}"))?;
        for i in 0..3 {
            let servers = raft_servers(&r.http(i), true).await?;
            ensure!(
                servers.keys().copied().collect::<BTreeSet<_>>() == all
                    && servers.values().all(|v| *v),
                "round {round}, server {i}: {servers:?}"
            );
        }
        must_register(&r.http(round % 3), "one").await?;
        for i in 0..3 {
            get(&format!("{}/v1/job/one", r.http(i)))
                .await?
                .expect(StatusCode::OK)?;
        }
        r.shutdown().await;
    }
    Ok(())
}

/// Fill a single-server region with job history: versions, a stopped job and
/// a purged one. Returns the IDs of the jobs that remain.
async fn fill_with_history(base: &str) -> anyhow::Result<Vec<String>> {
    must_register(base, "web").await?;
    for priority in [60, 70] {
        let mut job = job_spec("web");
        job["Priority"] = json!(priority);
        register(base, job).await?.expect(StatusCode::OK)?;
    }
    must_register(base, "db").await?;
    let mut db = job_spec("db");
    db["Meta"] = json!({ "owner": "ops" });
    register(base, db).await?.expect(StatusCode::OK)?;
    let mut batch = job_spec("batch");
    batch["Type"] = json!("batch");
    register(base, batch).await?.expect(StatusCode::OK)?;
    must_register(base, "stopped").await?;
    delete(&format!("{base}/v1/job/stopped"))
        .await?
        .expect(StatusCode::OK)?;
    must_register(base, "purged").await?;
    delete(&format!("{base}/v1/job/purged?purge=true"))
        .await?
        .expect(StatusCode::OK)?;
    Ok(["batch", "db", "stopped", "web"].map(String::from).to_vec())
}

/// `GET /v1/operator/snapshot` on `base`, checking its `Digest` header.
async fn save_snapshot(base: &str) -> anyhow::Result<Vec<u8>> {
    let (code, headers, body) = get_bytes(&format!("{base}/v1/operator/snapshot")).await?;
    ensure!(code == StatusCode::OK, "snapshot save: {code}");
    let digest = headers
        .get("Digest")
        .and_then(|v| v.to_str().ok())
        .context("no Digest header")?;
    let want = format!(
        "sha-256={}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body))
    );
    ensure!(digest == want, "Digest {digest}, body hashes to {want}");
    Ok(body)
}

async fn restore_snapshot(base: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let digest = format!(
        "sha-256={}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body))
    );
    put_raw(
        &format!("{base}/v1/operator/snapshot"),
        body,
        &[("Digest", digest)],
    )
    .await?
    .expect(StatusCode::OK)?;
    Ok(())
}

/// What the API shows of a region's jobs and evaluations: path -> (status, JSON).
type View = BTreeMap<String, (StatusCode, Value)>;

/// Read every job-related endpoint of `jobs` (plus `extra` paths) and every
/// evaluation on `base`.
async fn capture(base: &str, jobs: &[String], extra: &[&str]) -> anyhow::Result<View> {
    let mut paths: Vec<String> = vec!["/v1/jobs".into(), "/v1/evaluations".into()];
    for id in jobs {
        for tail in ["", "/versions", "/evaluations", "/summary"] {
            paths.push(format!("/v1/job/{id}{tail}"));
        }
    }
    paths.extend(extra.iter().map(|p| p.to_string()));
    let mut view = View::new();
    for path in paths {
        let got = get_json(&format!("{base}{path}")).await?;
        view.insert(path, got);
    }
    let evals = view["/v1/evaluations"].1.clone();
    for e in evals.as_array().context("evaluations")? {
        let path = format!("/v1/evaluation/{}", e["ID"].as_str().context("eval ID")?);
        let got = get_json(&format!("{base}{path}")).await?;
        view.insert(path, got);
    }
    Ok(view)
}

/// Wait until region `r`'s only server has applied nothing new for a
/// second (its leader duties, if any, are done with the history).
async fn wait_quiet(r: &TestRegion) -> anyhow::Result<()> {
    let applied = || r.server(0).service.cluster_info().applied;
    let deadline = Instant::now() + DEFAULT_TIMEOUT;
    loop {
        let before = applied();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if applied() == before {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the region never went quiet");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_restored_into_a_fresh_region_reproduces_the_state() -> anyhow::Result<()> {
    let _serial = serial().await;
    let a = TestRegion::start(1, "dr").await?;
    a.wait_leader(DEFAULT_TIMEOUT).await?;
    let a_base = a.http(0);
    let jobs = fill_with_history(&a_base).await?;
    let extra = ["/v1/job/purged"];

    // A's view exactly as the snapshot holds it: nothing applied between
    // reading the view and saving the snapshot.
    wait_quiet(&a).await?;
    let mut attempt = 0;
    let (a_view, snapshot) = loop {
        attempt += 1;
        let applied = a.server(0).service.cluster_info().applied;
        let view = capture(&a_base, &jobs, &extra).await?;
        let snapshot = save_snapshot(&a_base).await?;
        if a.server(0).service.cluster_info().applied == applied {
            break (view, snapshot);
        }
        ensure!(attempt < 10, "region A keeps changing");
        wait_quiet(&a).await?;
    };
    a.shutdown().await;

    let b = TestRegion::start(1, "dr").await?;
    b.wait_leader(DEFAULT_TIMEOUT).await?;
    let b_base = b.http(0);

    // A snapshot whose digest does not match is refused and changes nothing.
    let (before, index_before) = job_ids(&b_base).await?;
    let mut damaged = snapshot.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    let good_digest = format!(
        "sha-256={}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&snapshot))
    );
    let reply = put_raw(
        &format!("{b_base}/v1/operator/snapshot"),
        damaged,
        &[("Digest", good_digest)],
    )
    .await?;
    ensure!(
        reply.status == StatusCode::BAD_REQUEST,
        "damaged snapshot: {} {}",
        reply.status,
        reply.body
    );
    ensure!(job_ids(&b_base).await? == (before, index_before));

    restore_snapshot(&b_base, snapshot).await?;
    let b_view = capture(&b_base, &jobs, &extra).await?;

    let mut problems = Vec::new();
    for (path, (code_a, json_a)) in &a_view {
        let Some((code_b, json_b)) = b_view.get(path) else {
            problems.push(format!("{path}: missing in B"));
            continue;
        };
        if code_a != code_b {
            problems.push(format!("{path}: status {code_a} in A, {code_b} in B"));
        } else if json_a != json_b {
            problems.push(format!(
                "{path} differs between A and B:\n  {}",
                atoll_tests::json_diff(json_a, json_b, 10).join("\n  ")
            ));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));

    // And the view is the history that was written.
    let listed: Vec<&str> = a_view["/v1/jobs"]
        .1
        .as_array()
        .context("job list")?
        .iter()
        .filter_map(|j| j["ID"].as_str())
        .collect();
    ensure!(listed == jobs, "listed {listed:?}, expected {jobs:?}");
    for id in &jobs {
        let (_, job) = &b_view[&format!("/v1/job/{id}")];
        for field in ["CreateIndex", "ModifyIndex", "JobModifyIndex", "Version"] {
            ensure!(job[field].as_u64().is_some(), "{id}.{field}: {job}");
        }
        let (_, versions) = &b_view[&format!("/v1/job/{id}/versions")];
        ensure!(
            versions["Versions"][0]["Version"] == job["Version"],
            "{id}: newest version first: {versions}"
        );
    }
    let (_, web) = &b_view["/v1/job/web"];
    ensure!(web["Version"] == 2 && web["Priority"] == 70, "web: {web}");
    let (_, versions) = &b_view["/v1/job/web/versions"];
    ensure!(
        versions["Versions"].as_array().map(Vec::len) == Some(3),
        "web versions: {versions}"
    );
    let (_, stopped) = &b_view["/v1/job/stopped"];
    ensure!(stopped["Stop"] == true, "stopped: {stopped}");
    ensure!(b_view["/v1/job/purged"].0 == StatusCode::NOT_FOUND);
    let (_, evals) = &b_view["/v1/evaluations"];
    ensure!(
        evals.as_array().map(Vec::len).unwrap_or(0) >= 8,
        "evaluations: {evals}"
    );
    b.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexes_keep_growing_after_a_snapshot_restore() -> anyhow::Result<()> {
    let _serial = serial().await;
    let a = TestRegion::start(1, "dr2").await?;
    a.wait_leader(DEFAULT_TIMEOUT).await?;
    let a_base = a.http(0);
    // Enough history that the snapshot's indexes are well above anything a
    // fresh region reaches on its own before the restore.
    for k in 0..40 {
        must_register(&a_base, &format!("filler-{k:02}")).await?;
    }
    fill_with_history(&a_base).await?;
    let snapshot = save_snapshot(&a_base).await?;
    let (_, a_index) = job_ids(&a_base).await?;
    let (_, web_a) = get_json(&format!("{a_base}/v1/job/web")).await?;
    let web_modify = web_a["ModifyIndex"].as_u64().context("ModifyIndex")?;
    a.shutdown().await;

    let b = TestRegion::start(1, "dr2").await?;
    b.wait_leader(DEFAULT_TIMEOUT).await?;
    let b_base = b.http(0);
    restore_snapshot(&b_base, snapshot).await?;

    // Blocking queries and clients rely on indexes never going backwards:
    // the restored region continues after the snapshot's indexes.
    let mut problems = Vec::new();
    let (_, b_index) = job_ids(&b_base).await?;
    if b_index < a_index {
        problems.push(format!(
            "X-Nomad-Index of /v1/jobs after restore is {b_index}, below the snapshot's {a_index}"
        ));
    }
    let watcher = tokio::spawn({
        let url = format!("{b_base}/v1/job/web?index={web_modify}&wait=5s");
        async move { timed(get(&url)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut web = job_spec("web");
    web["Priority"] = json!(90);
    let reply = register(&b_base, web).await?.expect(StatusCode::OK)?;
    let jmi = reply.json()["JobModifyIndex"].as_u64().unwrap_or(0);
    if jmi <= web_modify {
        problems.push(format!(
            "an update after the restore got JobModifyIndex {jmi}, not above web's restored ModifyIndex {web_modify}"
        ));
    }
    let (woke, took) = watcher.await?;
    let woke = woke?;
    // Released by the update means: answered soon, past the index it waited on.
    if woke.index() <= web_modify || took > Duration::from_secs(3) {
        problems.push(format!(
            "GET /v1/job/web?index={web_modify}&wait=5s was not released by the update (answered after {took:?}, X-Nomad-Index {}, Priority {})",
            woke.index(),
            woke.json()["Priority"]
        ));
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    b.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_queries_wake_on_change_and_time_out_without() -> anyhow::Result<()> {
    let _serial = serial().await;
    let r = TestRegion::start(3, "block").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    let follower = r.others(leader)[0];
    must_register(&r.http(leader), "first").await?;
    let (_, index) = job_ids(&r.http(follower)).await?;
    ensure!(index > 0);

    let url = format!("{}/v1/jobs?index={index}&wait=10s", r.http(follower));
    let started = Instant::now();
    let blocked = tokio::spawn(async move {
        let reply = get(&url).await;
        (reply, started.elapsed())
    });
    // Give the query time to block, then change the jobs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !blocked.is_finished(),
        "the blocking query returned at once"
    );
    must_register(&r.http(leader), "second").await?;
    let (reply, took) = blocked.await?;
    let reply = reply?.expect(StatusCode::OK)?;
    eprintln!("blocking query released after {took:?}");
    ensure!(
        took < Duration::from_secs(5),
        "released after {took:?}, not by the write"
    );
    ensure!(
        reply.index() > index,
        "index {} after {index}",
        reply.index()
    );
    ensure!(reply.body.contains("\"second\""), "{}", reply.body);

    let new_index = reply.index();
    let started = Instant::now();
    let reply = get(&format!(
        "{}/v1/jobs?index={new_index}&wait=1s",
        r.http(follower)
    ))
    .await?
    .expect(StatusCode::OK)?;
    let took = started.elapsed();
    ensure!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "wait=1s without change answered after {took:?}"
    );
    ensure!(
        reply.index() == new_index,
        "index moved to {}",
        reply.index()
    );
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_rejected_without_writing_and_lists_page() -> anyhow::Result<()> {
    let _serial = serial().await;
    let r = TestRegion::start_with(1, "input", |c| c.max_request_body_bytes = 4096).await?;
    r.wait_leader(DEFAULT_TIMEOUT).await?;
    let base = r.http(0);
    must_register(&base, "keep").await?;
    let state = job_ids(&base).await?;

    let unchanged = || async {
        let now = job_ids(&base).await?;
        ensure!(now == state, "state changed: {now:?}, was {state:?}");
        Ok(())
    };
    let rejected = |reply: atoll_tests::Reply, want: StatusCode, needle: &str, what: &str| {
        ensure!(
            reply.status == want,
            "{what}: expected {want}, got {}: {}",
            reply.status,
            reply.body
        );
        ensure!(
            reply.body.contains(needle),
            "{what}: {:?} does not mention {needle:?}",
            reply.body
        );
        Ok(())
    };

    let jobs = format!("{base}/v1/jobs");
    let reply = put_raw(&jobs, br#"{"Job": {"ID": "x", "#.to_vec(), &[]).await?;
    rejected(reply, StatusCode::BAD_REQUEST, "", "malformed JSON")?;
    unchanged().await?;

    let mut job = job_spec("typed");
    job["Priority"] = json!("x");
    let reply = register(&base, job).await?;
    rejected(reply, StatusCode::BAD_REQUEST, "Job.Priority", "wrong type")?;
    unchanged().await?;

    let mut job = job_spec("nodriver");
    job["TaskGroups"][0]["Tasks"][0]
        .as_object_mut()
        .context("task")?
        .remove("Driver");
    let reply = register(&base, job).await?;
    rejected(
        reply,
        StatusCode::BAD_REQUEST,
        "TaskGroups[0].Tasks[0].Driver",
        "missing driver",
    )?;
    unchanged().await?;

    let reply = put_json(&jobs, &json!({})).await?;
    rejected(reply, StatusCode::BAD_REQUEST, "", "no job")?;
    unchanged().await?;

    let reply = put_json(
        &format!("{base}/v1/job/other"),
        &json!({ "Job": job_spec("keep") }),
    )
    .await?;
    rejected(reply, StatusCode::BAD_REQUEST, "", "ID differs from URL")?;
    unchanged().await?;

    let mut big = job_spec("big");
    big["Meta"] = json!({ "padding": "x".repeat(8192) });
    let reply = register(&base, big).await?;
    rejected(
        reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "",
        "body over the limit",
    )?;
    unchanged().await?;

    let reply = get(&format!("{base}/v1/job/unknown")).await?;
    rejected(reply, StatusCode::NOT_FOUND, "job not found", "unknown job")?;
    let reply = delete(&format!("{base}/v1/job/unknown")).await?;
    rejected(reply, StatusCode::NOT_FOUND, "", "deregister unknown job")?;
    unchanged().await?;

    let reply = get(&format!("{base}/v1/jobs?index=abc")).await?;
    rejected(reply, StatusCode::BAD_REQUEST, "index", "index=abc")?;
    let reply = get(&format!("{base}/v1/jobs?stale=maybe")).await?;
    rejected(reply, StatusCode::BAD_REQUEST, "stale", "stale=maybe")?;
    for stale in ["True", "FALSE", "1", ""] {
        let reply = get(&format!("{base}/v1/jobs?stale={stale}")).await?;
        ensure!(
            reply.status == StatusCode::OK,
            "stale={stale}: {} {}",
            reply.status,
            reply.body
        );
        ensure!(reply.json().as_array().map(Vec::len) == Some(1));
    }
    unchanged().await?;

    // Paging walks every job exactly once.
    for k in 0..6 {
        let (code, body) = register_job(&base, &format!("page-{k}")).await?;
        ensure!(code == StatusCode::OK, "{body}");
    }
    let (all, _) = job_ids(&base).await?;
    ensure!(all.len() == 7);
    let mut walked = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        ensure!(page < 10, "paging does not end");
        let url = match &token {
            Some(t) => format!("{base}/v1/jobs?per_page=2&next_token={t}"),
            None => format!("{base}/v1/jobs?per_page=2"),
        };
        let reply = get(&url).await?.expect(StatusCode::OK)?;
        let items = reply.json();
        let items = items.as_array().context("page")?;
        ensure!(
            !items.is_empty() && items.len() <= 2,
            "page of {}",
            items.len()
        );
        walked.extend(
            items
                .iter()
                .map(|j| j["ID"].as_str().unwrap_or_default().to_string()),
        );
        token = reply.header("X-Nomad-NextToken").map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    ensure!(walked == all, "walked {walked:?}, listed {all:?}");
    r.shutdown().await;
    Ok(())
}
