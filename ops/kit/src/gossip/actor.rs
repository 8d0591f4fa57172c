//! The task that owns foca and the UDP socket. Everything foca asks for
//! (send, schedule, notify) is collected by [`Outbox`] during a call and acted
//! on right after it ([`Actor::flush`]).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use foca::{Foca, Member, OwnedNotification, PostcardCodec, Runtime, State, Timer};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::config::GossipConfig;
use super::identity::{FocaRng, Id};
use super::keyring::{Keyring, SEAL_OVERHEAD};
use super::metrics::{Drop, GossipMetrics};
use super::notes::{Note, NoteHandler, SharedBook};
use super::view::{Change, View};
use super::{wire, GossipError};

pub(crate) type Swim = Foca<Id, PostcardCodec, FocaRng, NoteHandler>;

/// Requests from [`super::GossipPool`] handles.
pub(crate) enum Cmd {
    /// Ask these addresses who they are (the first step of joining).
    Join(Vec<SocketAddr>),
    SetMeta {
        leader: Option<String>,
        voter: bool,
    },
    ForceLeave {
        name: String,
        reply: oneshot::Sender<Result<(), GossipError>>,
    },
    Leave {
        reply: oneshot::Sender<Result<(), GossipError>>,
    },
}

/// What the task shares with the handles.
pub(crate) struct Shared {
    pub(crate) view: RwLock<View>,
    pub(crate) changes: watch::Sender<u64>,
    /// Addresses that answered a join request.
    pub(crate) welcomes: broadcast::Sender<SocketAddr>,
    pub(crate) metrics: GossipMetrics,
}

impl Shared {
    pub(crate) fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// foca's [`Runtime`]: collects what foca asks for during one call.
#[derive(Default)]
struct Outbox {
    sends: Vec<(Id, Vec<u8>)>,
    timers: Vec<(Duration, Timer<Id>)>,
    notifications: Vec<OwnedNotification<Id>>,
}

impl Runtime<Id> for Outbox {
    fn notify(&mut self, notification: foca::Notification<'_, Id>) {
        self.notifications.push(notification.to_owned());
    }

    fn send_to(&mut self, to: Id, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Id>, after: Duration) {
        self.timers.push((after, event));
    }
}

struct Scheduled {
    at: Instant,
    seq: u64,
    timer: Timer<Id>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// foca's timers, delivered in deadline order; timers due together are
/// delivered in submission order, then sorted by foca's own [`Timer`] order
/// (an indirect probe before the next probe), as foca asks of a runtime that
/// may lag.
#[derive(Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
}

impl TimerQueue {
    pub(crate) fn push(&mut self, at: Instant, timer: Timer<Id>) {
        self.seq += 1;
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            timer,
        }));
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(s)| s.at)
    }

    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<Timer<Id>> {
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|Reverse(s)| s.at <= now) {
            if let Some(Reverse(s)) = self.heap.pop() {
                due.push(s.timer);
            }
        }
        // Stable: equal kinds keep their deadline/submission order.
        due.sort();
        due
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolve `host:port` seeds (IP literals without DNS).
pub(crate) async fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in seeds {
        if let Ok(a) = s.parse::<SocketAddr>() {
            out.push(a);
            continue;
        }
        match tokio::net::lookup_host(s.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::debug!(seed = %s, error = %e, "cannot resolve gossip seed"),
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) struct Actor {
    swim: Swim,
    out: Outbox,
    socket: UdpSocket,
    local_addr: SocketAddr,
    keyring: Keyring,
    shared: Arc<Shared>,
    book: SharedBook,
    cfg: GossipConfig,
    timers: TimerQueue,
    me: Id,
    /// Our metadata, once set: (sequence, leader, voter).
    meta: Option<(u64, Option<String>, bool)>,
    rng: rand::rngs::SmallRng,
    /// Our own command channel, to post join requests after resolving seeds.
    cmds: mpsc::WeakUnboundedSender<Cmd>,
    /// Whether the view changed since the last published version.
    dirty: bool,
    leaving: bool,
    /// The cluster size foca's derived timings were last computed for.
    sized_for: usize,
    next_push_pull: Instant,
    idle_join_at: Instant,
    idle_backoff: Duration,
    max_body: usize,
}

impl Actor {
    pub(crate) fn new(
        cfg: GossipConfig,
        me: Id,
        socket: UdpSocket,
        keyring: Keyring,
        shared: Arc<Shared>,
        cmds: mpsc::WeakUnboundedSender<Cmd>,
    ) -> Result<Self, GossipError> {
        let book = SharedBook::default();
        let swim = Foca::with_custom_broadcast(
            me.clone(),
            cfg.foca_config(1)?,
            FocaRng::new(),
            PostcardCodec,
            NoteHandler { book: book.clone() },
        );
        let local_addr = socket.local_addr()?;
        let now = Instant::now();
        Ok(Self {
            swim,
            out: Outbox::default(),
            socket,
            local_addr,
            keyring,
            shared,
            book,
            timers: TimerQueue::default(),
            me,
            meta: None,
            rng: rand::rngs::SmallRng::from_rng(&mut rand::rng()),
            cmds,
            dirty: false,
            leaving: false,
            sized_for: 1,
            next_push_pull: now + cfg.push_pull_interval().unwrap_or(Duration::ZERO),
            idle_join_at: now,
            idle_backoff: Duration::from_millis(cfg.join_retry_initial_ms),
            max_body: cfg.max_packet_size - SEAL_OVERHEAD - 1,
            cfg,
        })
    }

    fn tick_period(&self) -> Duration {
        let probe = Duration::from_millis(self.cfg.probe_period_ms.unwrap_or(5_000));
        (probe / 4).clamp(Duration::from_millis(20), Duration::from_millis(500))
    }

    pub(crate) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut buf = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(self.tick_period());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.next_deadline();
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => {
                        tracing::debug!("every gossip pool handle dropped; stopping");
                        break;
                    }
                    Some(Cmd::Leave { reply }) => {
                        let result = self.leave().await;
                        let _ = reply.send(result);
                        break;
                    }
                    Some(cmd) => self.command(cmd).await,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.packet(&buf[..n], from).await,
                    // ICMP errors surface here on some systems; keep going.
                    Err(e) => tracing::debug!(error = %e, "gossip socket receive error"),
                },
                _ = sleep_until(next_timer) => self.fire_timers().await,
                _ = tick.tick() => self.housekeeping().await,
            }
        }
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(addrs) => {
                for addr in addrs {
                    if addr != self.local_addr && addr != self.me.info.gossip_addr {
                        self.send_to(addr, wire::JOIN, &[]).await;
                    }
                }
            }
            Cmd::SetMeta { leader, voter } => {
                let seq = self.meta.as_ref().map(|m| m.0).unwrap_or(0) + 1;
                self.meta = Some((seq, leader, voter));
                self.author_meta();
            }
            Cmd::ForceLeave { name, reply } => {
                let result = self.force_leave(&name);
                let _ = reply.send(result);
            }
            Cmd::Leave { reply } => {
                // Handled by `run`, which stops afterwards.
                let _ = reply.send(Err(GossipError::Stopped));
            }
        }
        self.flush().await;
    }

    /// Record a note we author, apply it to our view and disseminate it.
    fn author(&mut self, note: Note) {
        self.book.lock().offer(&note);
        if self.shared.view_mut().note(&note) != Change::None {
            self.dirty = true;
        }
        match postcard::to_allocvec(&note) {
            Ok(data) => {
                if let Err(e) = self.swim.add_broadcast(&data) {
                    tracing::warn!(error = %e, "cannot broadcast gossip metadata");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode gossip metadata"),
        }
    }

    fn author_meta(&mut self) {
        if let Some((seq, leader, voter)) = self.meta.clone() {
            self.author(Note::Meta {
                name: self.me.name().to_string(),
                gen: self.me.gen,
                seq,
                leader,
                voter,
            });
        }
    }

    fn force_leave(&mut self, name: &str) -> Result<(), GossipError> {
        if name == self.me.name() {
            return Err(GossipError::ForceLeaveSelf);
        }
        let id = self
            .swim
            .iter_membership_state()
            .find(|m| m.id().name() == name)
            .map(|m| m.id().clone())
            .or_else(|| self.shared.view().lookup(name))
            .ok_or_else(|| GossipError::UnknownMember(name.to_string()))?;
        // Record the leave first, so the `MemberDown` this causes reads "left".
        self.author(Note::Left {
            name: name.to_string(),
            gen: id.gen,
        });
        self.swim
            .apply_many(std::iter::once(Member::down(id)), true, &mut self.out)
            .map_err(|e| GossipError::Swim(e.to_string()))
    }

    async fn leave(&mut self) -> Result<(), GossipError> {
        self.leaving = true;
        // Tell a few members we are leaving while we are still alive, so
        // that the "down" that follows reads as "left" everywhere.
        self.author(Note::Left {
            name: self.me.name().to_string(),
            gen: self.me.gen,
        });
        if let Err(e) = self.swim.broadcast(&mut self.out) {
            tracing::debug!(error = %e, "leave broadcast");
        }
        self.flush().await;
        let left = self.swim.leave_cluster(&mut self.out);
        self.flush().await;
        // A second round to more members makes a lost datagram harmless.
        if let Err(e) = self.swim.gossip(&mut self.out) {
            tracing::debug!(error = %e, "leave gossip");
        }
        self.flush().await;
        tracing::info!(member = %self.me.name(), "left the gossip pool");
        left.map_err(|e| GossipError::Swim(e.to_string()))
    }

    async fn send_to(&mut self, addr: SocketAddr, kind: u8, body: &[u8]) {
        let mut plain = Vec::with_capacity(1 + body.len());
        plain.push(kind);
        plain.extend_from_slice(body);
        let sealed = self.keyring.seal(&plain);
        match self.socket.send_to(&sealed, addr).await {
            Ok(n) => {
                let m = &self.shared.metrics;
                m.packets_out.inc();
                m.bytes_out.inc_by(n as u64);
            }
            Err(e) => tracing::debug!(to = %addr, error = %e, "gossip send failed"),
        }
    }

    async fn packet(&mut self, data: &[u8], from: SocketAddr) {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        metrics.packets_in.inc();
        metrics.bytes_in.inc_by(data.len() as u64);
        if data.len() > self.cfg.max_packet_size {
            metrics.dropped(Drop::TooLarge);
            return;
        }
        let plain = match self.keyring.open(data) {
            Ok(p) => p,
            Err(e) => {
                metrics.dropped(Drop::Decrypt);
                tracing::trace!(%from, error = %e, "dropped gossip packet");
                return;
            }
        };
        let Some((&kind, body)) = plain.split_first() else {
            metrics.dropped(Drop::Decode);
            return;
        };
        match kind {
            wire::SWIM => {
                if let Err(e) = self.swim.handle_data(body, &mut self.out) {
                    self.swim_error(&e, from);
                }
            }
            wire::JOIN => match postcard::to_allocvec(&self.me) {
                Ok(me) => self.send_to(from, wire::WELCOME, &me).await,
                Err(e) => tracing::warn!(error = %e, "cannot encode own identity"),
            },
            wire::WELCOME => match postcard::from_bytes::<Id>(body) {
                Ok(seed) if seed.name() != self.me.name() => {
                    tracing::debug!(seed = ?seed, %from, "seed answered");
                    if let Err(e) = self.swim.announce(seed, &mut self.out) {
                        tracing::debug!(error = %e, "announce to seed");
                    }
                    self.send_sync(from, true).await;
                    let _ = self.shared.welcomes.send(from);
                }
                Ok(_) => tracing::debug!(%from, "seed address is this member"),
                Err(_) => metrics.dropped(Drop::Decode),
            },
            wire::SYNC => match postcard::from_bytes::<wire::Sync>(body) {
                Ok(sync) => self.apply_sync(sync, from).await,
                Err(_) => metrics.dropped(Drop::Decode),
            },
            _ => metrics.dropped(Drop::Decode),
        }
        self.flush().await;
    }

    fn swim_error(&self, e: &foca::Error, from: SocketAddr) {
        match e {
            foca::Error::Decode(_)
            | foca::Error::MalformedPacket
            | foca::Error::DataTooBig
            | foca::Error::CustomBroadcast(_) => {
                self.shared.metrics.dropped(Drop::Decode);
                tracing::debug!(%from, error = %e, "undecodable gossip data");
            }
            _ => tracing::trace!(%from, error = %e, "gossip data not handled"),
        }
    }

    /// Our full state: ourselves, every member foca knows (down ones too),
    /// and the newest note about each member.
    async fn send_sync(&mut self, to: SocketAddr, reply: bool) {
        let mut members = vec![Member::alive(self.me.clone())];
        members.extend(self.swim.iter_membership_state().cloned());
        let notes: Vec<Note> = self.book.lock().all().cloned().collect();
        for chunk in wire::sync_chunks(reply, members, notes, self.max_body) {
            self.send_to(to, wire::SYNC, &chunk).await;
        }
    }

    async fn apply_sync(&mut self, sync: wire::Sync, from: SocketAddr) {
        let downs: Vec<Id> = sync
            .members
            .iter()
            .filter(|m| m.state() == State::Down)
            .map(|m| m.id().clone())
            .collect();
        // foca probes members round-robin in the order it learned them (and
        // shuffles after each round): learn them in random order, so that
        // members which joined together do not probe in lockstep.
        let mut members = sync.members;
        members.shuffle(&mut self.rng);
        // What is news to us is disseminated, as memberlist does after a
        // push/pull.
        if let Err(e) = self
            .swim
            .apply_many(members.into_iter(), true, &mut self.out)
        {
            tracing::debug!(%from, error = %e, "applying gossip state");
        }
        let learned = self
            .out
            .notifications
            .iter()
            .any(|n| matches!(n, OwnedNotification::MemberUp(_)));
        if learned {
            // Spread the news now rather than at the next gossip tick; the
            // first time (a join) this also introduces us to a few random
            // members, as memberlist's joiner broadcasts its own alive.
            if let Err(e) = self.swim.gossip(&mut self.out) {
                tracing::debug!(error = %e, "gossip after state exchange");
            }
        }
        {
            let mut view = self.shared.view_mut();
            for id in &downs {
                if view.learn_down(id) != Change::None {
                    self.dirty = true;
                }
            }
        }
        {
            let mut book = self.book.lock();
            for note in sync.notes {
                if book.offer(&note) {
                    book.accepted.push(note);
                }
            }
        }
        if sync.reply {
            self.send_sync(from, false).await;
        }
    }

    async fn fire_timers(&mut self) {
        for timer in self.timers.pop_due(Instant::now()) {
            if let Err(e) = self.swim.handle_timer(timer, &mut self.out) {
                tracing::debug!(error = %e, "gossip timer");
            }
        }
        self.flush().await;
    }

    async fn housekeeping(&mut self) {
        let now = Instant::now();
        if self.swim.num_members() == 0 {
            if !self.leaving && !self.cfg.seeds.is_empty() && now >= self.idle_join_at {
                self.request_join();
                self.idle_join_at = now + self.idle_backoff;
                self.idle_backoff =
                    (self.idle_backoff * 2).min(Duration::from_millis(self.cfg.join_retry_max_ms));
            }
        } else {
            self.idle_join_at = now;
            self.idle_backoff = Duration::from_millis(self.cfg.join_retry_initial_ms);
        }
        if let Some(every) = self.cfg.push_pull_interval() {
            if now >= self.next_push_pull {
                self.next_push_pull = now + every;
                let peer = {
                    let members: Vec<&Member<Id>> = self.swim.iter_members().collect();
                    members
                        .choose(&mut self.rng)
                        .map(|m| m.id().info.gossip_addr)
                };
                if let Some(peer) = peer {
                    self.send_sync(peer, true).await;
                }
            }
        }
        let gone = self.shared.view_mut().prune(self.cfg.remove_down_after());
        if !gone.is_empty() {
            let view = self.shared.view();
            self.book.lock().retain(|name| view.is_known(name));
            drop(view);
            self.dirty = true;
        }
        self.flush().await;
    }

    /// Follow the cluster size with foca's derived timings (suspicion time,
    /// retransmissions), as memberlist does, unless a size is configured.
    fn resize(&mut self) {
        if self.cfg.expected_members.is_some() {
            return;
        }
        let n = self.swim.num_members() + 1;
        if n == self.sized_for {
            return;
        }
        match self.cfg.foca_config(n as u32) {
            Ok(c) => match self.swim.set_config(c) {
                Ok(()) => self.sized_for = n,
                Err(e) => tracing::debug!(error = %e, "resizing gossip timings"),
            },
            Err(e) => tracing::debug!(error = %e, "resizing gossip timings"),
        }
    }

    /// Resolve the configured seeds off the task, then post a join request.
    fn request_join(&self) {
        let seeds = self.cfg.seeds.clone();
        let cmds = self.cmds.clone();
        tokio::spawn(async move {
            let addrs = resolve(&seeds).await;
            if let Some(tx) = cmds.upgrade() {
                let _ = tx.send(Cmd::Join(addrs));
            }
        });
    }

    /// Act on everything foca asked for, apply notifications and accepted
    /// notes to the view, and publish a change.
    async fn flush(&mut self) {
        let sends = std::mem::take(&mut self.out.sends);
        for (to, data) in sends {
            self.send_to(to.info.gossip_addr, wire::SWIM, &data).await;
        }
        let now = Instant::now();
        for (after, timer) in std::mem::take(&mut self.out.timers) {
            match timer {
                Timer::SendIndirectProbe { .. } => self.shared.metrics.probes.inc(),
                Timer::ChangeSuspectToDown { .. } => self.shared.metrics.suspicions.inc(),
                _ => {}
            }
            self.timers.push(now + after, timer);
        }
        let notifications = std::mem::take(&mut self.out.notifications);
        let accepted = std::mem::take(&mut self.book.lock().accepted);
        let mut renewed = None;
        if !notifications.is_empty() || !accepted.is_empty() {
            let mut view = self.shared.view_mut();
            for n in notifications {
                let change = match n {
                    OwnedNotification::MemberUp(id) => view.up(&id),
                    OwnedNotification::MemberDown(id) => {
                        let change = view.down(&id);
                        if change == Change::Failed {
                            self.shared.metrics.failures.inc();
                            tracing::info!(member = ?id, "gossip member failed");
                        }
                        change
                    }
                    OwnedNotification::Rename(_, new) => {
                        let active = self.swim.iter_members().any(|m| m.id() == &new);
                        match view.rename(&new, active) {
                            Change::Failed => Change::Changed,
                            c => c,
                        }
                    }
                    OwnedNotification::Rejoin(new) => {
                        tracing::info!(member = ?new, "declared down by the pool; rejoined");
                        view.set_self(&new);
                        renewed = Some(new);
                        Change::Changed
                    }
                    OwnedNotification::Active => {
                        tracing::debug!("in touch with the gossip pool");
                        Change::None
                    }
                    OwnedNotification::Idle => {
                        tracing::info!("no other gossip member alive");
                        Change::None
                    }
                    OwnedNotification::Defunct if self.leaving => Change::None,
                    OwnedNotification::Defunct => {
                        tracing::warn!("declared down by the gossip pool and cannot rejoin");
                        Change::None
                    }
                    #[allow(unreachable_patterns)]
                    _ => Change::None,
                };
                if change != Change::None {
                    self.dirty = true;
                }
            }
            for note in &accepted {
                if view.note(note) != Change::None {
                    self.dirty = true;
                }
            }
        }
        if let Some(new) = renewed {
            self.me = new;
            self.author_meta();
        }
        self.resize();
        let m = &self.shared.metrics;
        m.updates_backlog.set(self.swim.updates_backlog() as i64);
        m.broadcast_backlog
            .set(self.swim.custom_broadcast_backlog() as i64);
        if self.dirty {
            self.dirty = false;
            let counts = self.shared.view().counts();
            m.set_members(counts.alive, counts.failed, counts.left);
            self.shared.changes.send_modify(|v| *v += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::identity::MemberInfo;

    #[test]
    fn timers_come_out_in_deadline_then_foca_order() {
        let mut q = TimerQueue::default();
        let t0 = Instant::now();
        let probed = Id::new(MemberInfo::server("s2", "eu"), 1);
        q.push(t0 + Duration::from_millis(30), Timer::PeriodicGossip(0));
        q.push(t0 + Duration::from_millis(10), Timer::ProbeRandomMember(0));
        q.push(
            t0 + Duration::from_millis(10),
            Timer::SendIndirectProbe {
                probed_id: probed.clone(),
                token: 0,
            },
        );
        q.push(t0 + Duration::from_millis(20), Timer::PeriodicAnnounce(0));
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        let due = q.pop_due(t0 + Duration::from_millis(20));
        assert_eq!(
            due,
            vec![
                Timer::SendIndirectProbe {
                    probed_id: probed,
                    token: 0
                },
                Timer::ProbeRandomMember(0),
                Timer::PeriodicAnnounce(0),
            ]
        );
        assert_eq!(q.len(), 1);
        assert!(q.pop_due(t0).is_empty());
    }
}
