//! [`GossipPool`]: the handle servers and gateways hold.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::actor::{resolve, Actor, Cmd, Shared};
use super::config::GossipConfig;
use super::identity::{now_ms, Id, MemberInfo};
use super::keyring::Keyring;
use super::metrics::{GossipMetrics, GossipStats};
use super::view::{Member, RegionInfo, View};
use super::GossipError;

/// A member of the WAN gossip pool. Cheap to clone; every clone drives the
/// same member. The member stops when [`GossipPool::leave`] (graceful) or
/// [`GossipPool::kill`] (abrupt) is called, or when the last clone is dropped
/// (abrupt: the others will see it fail).
#[derive(Clone)]
pub struct GossipPool {
    inner: Arc<Inner>,
}

struct Inner {
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    keyring: Keyring,
    cfg: GossipConfig,
    local_addr: SocketAddr,
    me: MemberInfo,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for GossipPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipPool")
            .field("name", &self.inner.me.name)
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

impl GossipPool {
    /// Bind the gossip socket and start the member's task. `me.gossip_addr`
    /// is filled in from `cfg.advertise_addr` or the bound address unless it
    /// names a specific IP and port. Metrics go to `registry` when given.
    /// Joins `cfg.seeds` in the background (see [`GossipConfig::seeds`]).
    pub async fn start(
        cfg: GossipConfig,
        me: MemberInfo,
        keyring: Keyring,
        registry: Option<&prometheus::Registry>,
    ) -> Result<Self, GossipError> {
        cfg.validate()?;
        if me.name.is_empty() {
            return Err(GossipError::Config("member name is empty".into()));
        }
        let socket = UdpSocket::bind(cfg.bind_addr).await?;
        let local_addr = socket.local_addr()?;
        let mut me = me;
        if me.gossip_addr.ip().is_unspecified() || me.gossip_addr.port() == 0 {
            let mut adv = cfg.advertise_addr.unwrap_or(local_addr);
            if adv.port() == 0 {
                adv.set_port(local_addr.port());
            }
            if adv.ip().is_unspecified() {
                return Err(GossipError::Config(format!(
                    "gossip bound to {local_addr}: set advertise_addr to an address others can reach"
                )));
            }
            me.gossip_addr = adv;
        }
        let id = Id::new(me.clone(), now_ms());
        let (changes, _) = watch::channel(0);
        let (welcomes, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            view: RwLock::new(View::new(&id)),
            changes,
            welcomes,
            metrics: GossipMetrics::new(registry)?,
        });
        shared.metrics.set_members(1, 0, 0);
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = Actor::new(
            cfg.clone(),
            id,
            socket,
            keyring.clone(),
            shared.clone(),
            tx.downgrade(),
        )?;
        let span = tracing::info_span!("gossip", member = %me.name);
        let task = tokio::spawn(actor.run(rx).instrument(span)).abort_handle();
        tracing::info!(member = %me.name, addr = %me.gossip_addr, "gossip pool started");
        Ok(Self {
            inner: Arc::new(Inner {
                cmds: tx,
                shared,
                keyring,
                cfg,
                local_addr,
                me,
                task,
            }),
        })
    }

    fn send(&self, cmd: Cmd) -> Result<(), GossipError> {
        self.inner.cmds.send(cmd).map_err(|_| GossipError::Stopped)
    }

    /// The address the gossip socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This member's identity as the others see it (advertised gossip address).
    pub fn local_member(&self) -> &MemberInfo {
        &self.inner.me
    }

    /// Join the pool through `seeds`: ask each who it is, retrying with
    /// exponential backoff (`join_retry_initial_ms` .. `join_retry_max_ms`)
    /// until at least one answers or `join_timeout_ms` passes. Returns how many
    /// seeds answered. Each answering seed then exchanges full state with us.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<usize, GossipError> {
        let me = self.inner.me.gossip_addr;
        let seeds: Vec<SocketAddr> = seeds
            .iter()
            .copied()
            .filter(|a| *a != self.inner.local_addr && *a != me)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if seeds.is_empty() {
            return Err(GossipError::Config(
                "no seed address other than this member's".into(),
            ));
        }
        let cfg = &self.inner.cfg;
        let mut welcomes = self.inner.shared.welcomes.subscribe();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(cfg.join_timeout_ms);
        let max_backoff = Duration::from_millis(cfg.join_retry_max_ms);
        let mut backoff = Duration::from_millis(cfg.join_retry_initial_ms);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            self.send(Cmd::Join(seeds.clone()))?;
            let window_end = (Instant::now() + backoff).min(deadline);
            let mut answered = HashSet::new();
            let mut until = window_end;
            loop {
                match tokio::time::timeout_at(until, welcomes.recv()).await {
                    Ok(Ok(addr)) => {
                        if seeds.contains(&addr) && answered.insert(addr) {
                            if answered.len() == seeds.len() {
                                break;
                            }
                            // Give the other seeds a moment to answer too.
                            let grace = backoff.min(Duration::from_millis(250));
                            until = until.min(Instant::now() + grace);
                        }
                    }
                    Ok(Err(RecvError::Lagged(_))) => {}
                    Ok(Err(RecvError::Closed)) => return Err(GossipError::Stopped),
                    Err(_elapsed) => break,
                }
            }
            if !answered.is_empty() {
                tracing::info!(
                    member = %self.inner.me.name,
                    answered = answered.len(),
                    attempts,
                    "joined the gossip pool"
                );
                return Ok(answered.len());
            }
            if self.inner.task.is_finished() {
                return Err(GossipError::Stopped);
            }
            if Instant::now() >= deadline {
                return Err(GossipError::JoinFailed {
                    seeds,
                    attempts,
                    waited: started.elapsed(),
                });
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    /// [`GossipPool::join`] with `host:port` seeds, resolved (DNS) once.
    pub async fn join_hosts(&self, seeds: &[String]) -> Result<usize, GossipError> {
        let addrs = resolve(seeds).await;
        if addrs.is_empty() {
            return Err(GossipError::Config(format!(
                "no gossip seed resolves: {seeds:?}"
            )));
        }
        self.join(&addrs).await
    }

    /// Every member known, this one included, by name.
    pub fn members(&self) -> Vec<Member> {
        self.inner.shared.view().members()
    }

    /// One member by name.
    pub fn member(&self, name: &str) -> Option<Member> {
        self.inner.shared.view().get(name)
    }

    /// Region -> alive servers and leader.
    pub fn regions(&self) -> BTreeMap<String, RegionInfo> {
        self.inner.shared.view().regions()
    }

    /// A counter bumped on every change of membership or metadata.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.changes.subscribe()
    }

    /// Publish this member's metadata: the leader of its region as it sees it
    /// (`None` when unknown) and whether it votes. Newer calls replace older
    /// ones everywhere. No effect once the member stopped.
    pub fn set_meta(&self, leader_of_region: Option<String>, voter: bool) {
        let _ = self.send(Cmd::SetMeta {
            leader: leader_of_region,
            voter,
        });
    }

    /// The keyring sealing and opening this member's packets (shared: changes
    /// apply at once). Rotate with install / use / remove on every member.
    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    /// Packet, probe and drop counters.
    pub fn stats(&self) -> GossipStats {
        self.inner.shared.metrics.stats()
    }

    /// Mark `name` as left everywhere (an operator's `force-leave` of a failed
    /// member). A member that is in fact alive rejoins under a new generation.
    pub async fn force_leave(&self, name: &str) -> Result<(), GossipError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::ForceLeave {
            name: name.to_string(),
            reply,
        })?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }

    /// Leave gracefully: tell the pool we are leaving (others list us as
    /// left, not failed), send the SWIM leave, and stop.
    pub async fn leave(self) -> Result<(), GossipError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Leave { reply })?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }

    /// Stop at once without telling anyone, as a crash would (tests and
    /// benchmarks of failure detection).
    pub fn kill(&self) {
        self.inner.task.abort();
    }

    /// Whether the member's task still runs.
    pub fn is_running(&self) -> bool {
        !self.inner.task.is_finished()
    }
}
