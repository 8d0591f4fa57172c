//! The WAN gossip pool over real UDP on 127.0.0.1, with fast timings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ops_kit::gossip::{
    GossipConfig, GossipError, GossipPool, Keyring, MemberInfo, MemberRole, MemberStatus,
};
use tokio::time::{sleep, Instant};

/// Generous bound for anything the pool should do in a few probe periods:
/// the machine may be busy compiling.
const WITHIN: Duration = Duration::from_secs(20);

fn cfg(seeds: &[SocketAddr]) -> GossipConfig {
    GossipConfig {
        seeds: seeds.iter().map(|s| s.to_string()).collect(),
        ..GossipConfig::local()
    }
}

/// Lenient timings for tests that must never see a false failure.
fn calm(seeds: &[SocketAddr]) -> GossipConfig {
    GossipConfig {
        probe_period_ms: Some(500),
        probe_rtt_ms: Some(250),
        suspicion_mult: Some(6.0),
        ..cfg(seeds)
    }
}

fn info(node: &str, region: &str) -> MemberInfo {
    let mut me = MemberInfo::server(node, region);
    me.rpc_addr = format!("127.0.0.1:{}", 7000 + node.len());
    me.http_addr = "127.0.0.1:4646".into();
    me
}

async fn start(node: &str, region: &str, key: &str, cfg: GossipConfig) -> GossipPool {
    // Each member its own keyring (clones would share keys).
    let keyring = Keyring::new(key).unwrap();
    GossipPool::start(cfg, info(node, region), keyring, None)
        .await
        .unwrap()
}

/// Start `n` members `s<i>.<region>`; all but the first are given the first
/// one's address as their only seed.
async fn cluster(
    n: usize,
    key: &str,
    cfg_of: fn(&[SocketAddr]) -> GossipConfig,
) -> Vec<GossipPool> {
    let regions = ["eu", "us", "ap"];
    let first = start("s0", "eu", key, cfg_of(&[])).await;
    let seed = first.local_addr();
    let mut pools = vec![first];
    for i in 1..n {
        let region = regions[i % 3];
        pools.push(start(&format!("s{i}"), region, key, cfg_of(&[seed])).await);
    }
    pools
}

/// Poll `check` until it passes or `within` elapses (then panic with its
/// last complaint).
async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("{what}: not within {within:?}: {e}"),
            Err(_) => sleep(Duration::from_millis(25)).await,
        }
    }
}

fn alive_count(pool: &GossipPool) -> usize {
    pool.members()
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .count()
}

fn all_see_alive(pools: &[GossipPool], n: usize) -> Result<(), String> {
    for p in pools {
        let alive = alive_count(p);
        if alive != n {
            return Err(format!("{} sees {alive} alive", p.local_member().name));
        }
    }
    Ok(())
}

fn status_at(pool: &GossipPool, name: &str) -> Option<MemberStatus> {
    pool.member(name).map(|m| m.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_members_in_three_regions_form_one_pool() {
    let key = Keyring::generate_key();
    let pools = cluster(9, &key, cfg).await;
    eventually("9 alive everywhere", WITHIN, || all_see_alive(&pools, 9)).await;
    eventually("three regions of three servers", WITHIN, || {
        for p in &pools {
            let regions = p.regions();
            let shape: Vec<(String, usize)> = regions
                .iter()
                .map(|(r, info)| (r.clone(), info.servers.len()))
                .collect();
            let want = vec![("ap".into(), 3), ("eu".into(), 3), ("us".into(), 3)];
            if shape != want {
                return Err(format!("{} sees {shape:?}", p.local_member().name));
            }
        }
        Ok(())
    })
    .await;
    // The identity travels intact.
    let s4 = pools[0].member("s4.us").unwrap();
    assert_eq!(s4.info.region, "us");
    assert_eq!(s4.info.role, MemberRole::Server);
    assert_eq!(s4.info.rpc_addr, "127.0.0.1:7002");
    assert_eq!(s4.info.gossip_addr, pools[4].local_addr());
    let eu = &pools[8].regions()["eu"];
    let names: Vec<&str> = eu.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["s0.eu", "s3.eu", "s6.eu"]);
    assert_eq!(eu.leader, None);
    // Traffic is counted (the first probe goes out one probe period in).
    eventually("probes counted", WITHIN, || {
        let s = pools[0].stats();
        match s.packets_in > 0 && s.bytes_out > 0 && s.probes_sent > 0 {
            true => Ok(()),
            false => Err(format!("{s:?}")),
        }
    })
    .await;
    assert_eq!(pools[0].stats().dropped_decrypt, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_member_is_failed_and_a_leaving_one_is_left() {
    let key = Keyring::generate_key();
    let pools = cluster(5, &key, cfg).await;
    eventually("5 alive", WITHIN, || all_see_alive(&pools, 5)).await;

    // Abrupt stop: no leave.
    let crashed = pools[3].local_member().name.clone();
    pools[3].kill();
    let started = Instant::now();
    let others: Vec<GossipPool> = [0, 1, 2, 4].iter().map(|&i| pools[i].clone()).collect();
    eventually("crashed member marked failed everywhere", WITHIN, || {
        for p in &others {
            let s = status_at(p, &crashed);
            if s != Some(MemberStatus::Failed) {
                return Err(format!("{} sees {crashed} as {s:?}", p.local_member().name));
            }
        }
        Ok(())
    })
    .await;
    // Suspicion is 3 x 200 ms here; detection takes a few probe periods.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "failure detection took {took:?}"
    );
    assert!(others.iter().all(|p| p.stats().failures_seen >= 1));

    // Graceful leave.
    let leaving = pools[4].local_member().name.clone();
    pools[4].clone().leave().await.unwrap();
    eventually("left member stopped", WITHIN, || {
        match pools[4].is_running() {
            false => Ok(()),
            true => Err("still running".into()),
        }
    })
    .await;
    let rest: Vec<GossipPool> = [0, 1, 2].iter().map(|&i| pools[i].clone()).collect();
    eventually("leaving member marked left everywhere", WITHIN, || {
        for p in &rest {
            let s = status_at(p, &leaving);
            if s != Some(MemberStatus::Left) {
                return Err(format!("{} sees {leaving} as {s:?}", p.local_member().name));
            }
        }
        Ok(())
    })
    .await;
    // The crashed one is still failed, not left.
    assert_eq!(status_at(&pools[0], &crashed), Some(MemberStatus::Failed));
    eventually("3 alive", WITHIN, || all_see_alive(&rest, 3)).await;
    // Operations on a stopped member say so.
    assert!(matches!(
        pools[4].force_leave("s0.eu").await,
        Err(GossipError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_leave_and_restart_under_the_same_name() {
    let key = Keyring::generate_key();
    let pools = cluster(4, &key, cfg).await;
    eventually("4 alive", WITHIN, || all_see_alive(&pools, 4)).await;
    let seed = pools[0].local_addr();

    // A failed member force-left by an operator is listed as left everywhere.
    let gone = pools[3].local_member().name.clone();
    pools[3].kill();
    eventually("failed", WITHIN, || match status_at(&pools[1], &gone) {
        Some(MemberStatus::Failed) => Ok(()),
        s => Err(format!("{s:?}")),
    })
    .await;
    assert!(matches!(
        pools[0].force_leave("nobody.eu").await,
        Err(GossipError::UnknownMember(_))
    ));
    assert!(matches!(
        pools[0].force_leave("s0.eu").await,
        Err(GossipError::ForceLeaveSelf)
    ));
    pools[0].force_leave(&gone).await.unwrap();
    eventually("force-left member is left everywhere", WITHIN, || {
        for p in &pools[..3] {
            if status_at(p, &gone) != Some(MemberStatus::Left) {
                return Err(format!(
                    "{} sees {:?}",
                    p.local_member().name,
                    status_at(p, &gone)
                ));
            }
        }
        Ok(())
    })
    .await;

    // A member restarted under the same name (new port, new generation)
    // replaces its previous life at once.
    let old_gen = pools[0].member("s2.ap").unwrap().generation;
    pools[2].kill();
    sleep(Duration::from_millis(5)).await;
    let reborn = start("s2", "ap", &key, cfg(&[seed])).await;
    let all = vec![pools[0].clone(), pools[1].clone(), reborn.clone()];
    eventually("restarted member alive everywhere", WITHIN, || {
        for p in &all {
            match p.member("s2.ap") {
                Some(m) if m.status == MemberStatus::Alive && m.generation > old_gen => {}
                other => return Err(format!("{} sees {other:?}", p.local_member().name)),
            }
            if p.member("s2.ap").unwrap().info.gossip_addr != reborn.local_addr() {
                return Err("old address".into());
            }
        }
        Ok(())
    })
    .await;
    eventually("3 alive", WITHIN, || all_see_alive(&all, 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reaches_every_member_and_late_joiners() {
    let key = Keyring::generate_key();
    let pools = cluster(6, &key, cfg).await; // eu: s0 s3, us: s1 s4, ap: s2 s5
    eventually("6 alive", WITHIN, || all_see_alive(&pools, 6)).await;
    let mut changes = pools[1].subscribe();
    let before = *changes.borrow_and_update();

    pools[3].set_meta(Some("s3.eu".into()), true); // the leader says so
    pools[0].set_meta(Some("s3.eu".into()), false); // a follower agrees, and stops voting
    pools[4].set_meta(Some("s1.us".into()), true);
    eventually("leaders known everywhere", WITHIN, || {
        for p in &pools {
            let regions = p.regions();
            let eu = regions["eu"].leader.as_deref();
            let us = regions["us"].leader.as_deref();
            let ap = regions["ap"].leader.as_deref();
            if (eu, us, ap) != (Some("s3.eu"), Some("s1.us"), None) {
                return Err(format!(
                    "{} sees {eu:?} {us:?} {ap:?}",
                    p.local_member().name
                ));
            }
            if p.member("s0.eu").unwrap().info.voter {
                return Err(format!("{} still sees s0.eu voting", p.local_member().name));
            }
        }
        Ok(())
    })
    .await;
    assert!(
        *changes.borrow_and_update() > before,
        "subscribers are told"
    );

    // Newer metadata replaces older: eu's leader moves to s0.
    pools[0].set_meta(Some("s0.eu".into()), true);
    pools[3].set_meta(Some("s0.eu".into()), true);
    eventually("new leader everywhere", WITHIN, || {
        for p in &pools {
            let leader = p.regions()["eu"].leader.clone();
            if leader.as_deref() != Some("s0.eu") {
                return Err(format!("{} sees {leader:?}", p.local_member().name));
            }
        }
        Ok(())
    })
    .await;

    // A member joining now learns everything from the full-state exchange.
    let late = start("s9", "ap", &key, cfg(&[pools[5].local_addr()])).await;
    eventually("late joiner knows members and leaders", WITHIN, || {
        let regions = late.regions();
        if alive_count(&late) != 7 {
            return Err(format!("{} alive", alive_count(&late)));
        }
        if regions["eu"].leader.as_deref() != Some("s0.eu")
            || regions["us"].leader.as_deref() != Some("s1.us")
        {
            return Err(format!("{regions:?}"));
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_never_splits_the_pool() {
    let key_a = Keyring::generate_key();
    let key_b = Keyring::generate_key();
    let pools = cluster(4, &key_a, calm).await;
    eventually("4 alive", WITHIN, || all_see_alive(&pools, 4)).await;

    // Watch every member's view all along.
    let split = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (pools, split, stop) = (pools.clone(), split.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for p in &pools {
                    if p.members().iter().any(|m| m.status != MemberStatus::Alive) {
                        split.store(true, Ordering::Relaxed);
                    }
                }
                sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Enough traffic under each configuration for probes to cross every pair.
    let settle = Duration::from_millis(1500);
    for p in &pools {
        p.keyring().install(&key_b).unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    sleep(settle).await;
    for p in &pools {
        p.keyring().use_key(&key_b).unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    sleep(settle).await;
    for p in &pools {
        p.keyring().remove(&key_a).unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    sleep(settle * 2).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();

    assert!(
        !split.load(Ordering::Relaxed),
        "a member was seen not alive"
    );
    all_see_alive(&pools, 4).unwrap();
    for p in &pools {
        let s = p.stats();
        assert_eq!(s.failures_seen, 0, "{}: {s:?}", p.local_member().name);
        assert_eq!(s.dropped_decrypt, 0, "{}: {s:?}", p.local_member().name);
        assert_eq!(p.keyring().list().keys, vec![key_b.clone()]);
    }
    // The pool now speaks B only: a member with only A is not heard, a
    // member with only B joins.
    let seed = pools[0].local_addr();
    let dropped_before = pools[0].stats().dropped_decrypt;
    let old = start(
        "old",
        "eu",
        &key_a,
        GossipConfig {
            join_timeout_ms: 1_000,
            ..calm(&[])
        },
    )
    .await;
    assert!(matches!(
        old.join(&[seed]).await,
        Err(GossipError::JoinFailed { .. })
    ));
    assert!(pools[0].stats().dropped_decrypt > dropped_before);
    let new = start("new", "eu", &key_b, calm(&[])).await;
    assert_eq!(new.join(&[seed]).await.unwrap(), 1);
    let mut five = pools.clone();
    five.push(new);
    eventually("5 alive under B", WITHIN, || all_see_alive(&five, 5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_the_wrong_key_cannot_join() {
    let key = Keyring::generate_key();
    let pools = cluster(3, &key, cfg).await;
    eventually("3 alive", WITHIN, || all_see_alive(&pools, 3)).await;
    let seed = pools[0].local_addr();

    let intruder = start(
        "intruder",
        "eu",
        &Keyring::generate_key(),
        GossipConfig {
            join_timeout_ms: 1_500,
            ..cfg(&[seed])
        },
    )
    .await;
    let err = intruder.join(&[seed]).await.unwrap_err();
    assert!(matches!(err, GossipError::JoinFailed { .. }), "{err}");
    // Its background retries keep knocking; nobody ever lists it.
    sleep(Duration::from_secs(1)).await;
    let names: Vec<String> = intruder
        .members()
        .into_iter()
        .map(|m| m.info.name)
        .collect();
    assert_eq!(names, vec!["intruder.eu".to_string()]);
    for p in &pools {
        assert!(p.member("intruder.eu").is_none());
        assert_eq!(alive_count(p), 3);
    }
    assert!(pools[0].stats().dropped_decrypt > 0);
    assert_eq!(intruder.stats().dropped_decrypt, 0, "nobody answered it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_join_retries_until_a_seed_appears() {
    let key = Keyring::generate_key();
    // Reserve an address, start the joiner first, then the seed on it.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed_addr = probe.local_addr().unwrap();
    drop(probe);
    let joiner = start("late", "us", &key, cfg(&[])).await;
    let join = {
        let joiner = joiner.clone();
        tokio::spawn(async move { joiner.join(&[seed_addr]).await })
    };
    sleep(Duration::from_millis(700)).await;
    let seed = start(
        "seed",
        "eu",
        &key,
        GossipConfig {
            bind_addr: seed_addr,
            ..cfg(&[])
        },
    )
    .await;
    assert_eq!(join.await.unwrap().unwrap(), 1);
    let both = [joiner, seed];
    eventually("2 alive", WITHIN, || all_see_alive(&both, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_registered() {
    let registry = prometheus::Registry::new_custom(Some("atoll".into()), None).unwrap();
    let key = Keyring::generate_key();
    let pool = GossipPool::start(
        cfg(&[]),
        info("m", "eu"),
        Keyring::new(&key).unwrap(),
        Some(&registry),
    )
    .await
    .unwrap();
    let text = ops_kit::telemetry::encode_prometheus(&registry);
    for name in [
        "atoll_gossip_members{status=\"alive\"} 1",
        "atoll_gossip_probes_sent_total",
        "atoll_gossip_suspicions_total",
        "atoll_gossip_packets_sent_total",
        "atoll_gossip_bytes_received_total",
        "atoll_gossip_packets_dropped_total{reason=\"decrypt\"} 0",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // A second pool on the same registry is refused, not silently merged.
    let err = GossipPool::start(
        cfg(&[]),
        info("n", "eu"),
        Keyring::new(&key).unwrap(),
        Some(&registry),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GossipError::Metrics(_)), "{err}");
    drop(pool);
}

#[tokio::test]
async fn unspecified_bind_needs_an_advertise_address() {
    let key = Keyring::generate_key();
    let err = GossipPool::start(
        GossipConfig {
            bind_addr: "0.0.0.0:0".parse().unwrap(),
            ..GossipConfig::local()
        },
        info("x", "eu"),
        Keyring::new(&key).unwrap(),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GossipError::Config(_)), "{err}");
    let pool = GossipPool::start(
        GossipConfig {
            bind_addr: "0.0.0.0:0".parse().unwrap(),
            advertise_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..GossipConfig::local()
        },
        info("x", "eu"),
        Keyring::new(&key).unwrap(),
        None,
    )
    .await
    .unwrap();
    let adv = pool.local_member().gossip_addr;
    assert_eq!(adv.port(), pool.local_addr().port());
    assert_eq!(adv.ip().to_string(), "127.0.0.1");
}
