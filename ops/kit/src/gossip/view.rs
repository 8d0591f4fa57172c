//! The pool's view of the federation: every member known with its status,
//! metadata, and the region map derived from them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::identity::{Id, MemberInfo, MemberRole};
use super::notes::Note;

/// How the pool sees a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Answering probes (or suspected but not yet declared failed).
    Alive,
    /// Declared down by the pool without having left: crashed, partitioned.
    Failed,
    /// Left gracefully (or was force-left by an operator).
    Left,
}

/// A member of the pool as [`super::GossipPool::members`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Identity; `voter` reflects the member's latest metadata.
    pub info: MemberInfo,
    /// Alive, failed or left.
    pub status: MemberStatus,
    /// Generation of the member's identity (grows on every restart/rejoin).
    pub generation: u64,
    /// The region leader this member last reported (servers only).
    pub leader: Option<String>,
}

/// One region as the pool sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInfo {
    /// The region's alive servers, by name.
    pub servers: Vec<MemberInfo>,
    /// The region's Raft leader (an alive server), when its servers report one.
    pub leader: Option<String>,
}

struct Entry {
    info: MemberInfo,
    gen: u64,
    status: MemberStatus,
    since: Instant,
}

struct Meta {
    gen: u64,
    seq: u64,
    leader: Option<String>,
    voter: bool,
    /// Local order in which metadata arrived (newer reports win ties).
    seen: u64,
}

/// Counts of members by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) alive: usize,
    pub(crate) failed: usize,
    pub(crate) left: usize,
}

pub(crate) struct View {
    me: String,
    entries: BTreeMap<String, Entry>,
    metas: HashMap<String, Meta>,
    /// Highest generation of each member known to have left.
    left: HashMap<String, u64>,
    clock: u64,
}

/// What a change did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    Changed,
    /// A member was declared failed.
    Failed,
}

impl View {
    pub(crate) fn new(me: &Id) -> Self {
        let mut view = Self {
            me: me.name().to_string(),
            entries: BTreeMap::new(),
            metas: HashMap::new(),
            left: HashMap::new(),
            clock: 0,
        };
        view.set_self(me);
        view
    }

    /// Our own (possibly renewed) identity.
    pub(crate) fn set_self(&mut self, me: &Id) {
        self.entries.insert(
            me.name().to_string(),
            Entry {
                info: (*me.info).clone(),
                gen: me.gen,
                status: MemberStatus::Alive,
                since: Instant::now(),
            },
        );
    }

    fn has_left(&self, name: &str, gen: u64) -> bool {
        self.left.get(name).is_some_and(|&g| g >= gen)
    }

    fn set(&mut self, id: &Id, status: MemberStatus) -> Change {
        let status = if status != MemberStatus::Alive || !self.has_left(id.name(), id.gen) {
            status
        } else {
            MemberStatus::Left
        };
        match self.entries.get_mut(id.name()) {
            Some(e) if e.gen > id.gen => Change::None,
            Some(e) if e.gen == id.gen && e.status == status && e.info == *id.info => Change::None,
            Some(e) => {
                e.info = (*id.info).clone();
                e.gen = id.gen;
                e.status = status;
                e.since = Instant::now();
                Change::Changed
            }
            None => {
                self.entries.insert(
                    id.name().to_string(),
                    Entry {
                        info: (*id.info).clone(),
                        gen: id.gen,
                        status,
                        since: Instant::now(),
                    },
                );
                Change::Changed
            }
        }
    }

    /// foca: member up.
    pub(crate) fn up(&mut self, id: &Id) -> Change {
        self.set(id, MemberStatus::Alive)
    }

    /// foca: member down. Left when it said so before, failed otherwise.
    pub(crate) fn down(&mut self, id: &Id) -> Change {
        if self.entries.get(id.name()).is_some_and(|e| e.gen > id.gen) {
            return Change::None;
        }
        if self.has_left(id.name(), id.gen) {
            self.set(id, MemberStatus::Left)
        } else {
            match self.set(id, MemberStatus::Failed) {
                Change::Changed => Change::Failed,
                c => c,
            }
        }
    }

    /// foca: a newer identity replaced `old` (same name); `active` is whether
    /// foca holds the new one as alive (no `MemberUp` follows when liveness
    /// did not change).
    pub(crate) fn rename(&mut self, new: &Id, active: bool) -> Change {
        if active {
            self.up(new)
        } else {
            self.down(new)
        }
    }

    /// A member reported down by a full-state exchange, possibly never seen
    /// alive here: list it unless something newer is known.
    pub(crate) fn learn_down(&mut self, id: &Id) -> Change {
        if id.name() == self.me {
            return Change::None;
        }
        match self.entries.get(id.name()) {
            Some(e) if e.gen >= id.gen => Change::None,
            _ => {
                let status = if self.has_left(id.name(), id.gen) {
                    MemberStatus::Left
                } else {
                    MemberStatus::Failed
                };
                self.set(id, status)
            }
        }
    }

    /// Apply a note (metadata or left).
    pub(crate) fn note(&mut self, note: &Note) -> Change {
        match note {
            Note::Meta {
                name,
                gen,
                seq,
                leader,
                voter,
            } => {
                if self
                    .metas
                    .get(name)
                    .is_some_and(|m| (m.gen, m.seq) >= (*gen, *seq))
                {
                    return Change::None;
                }
                self.clock += 1;
                self.metas.insert(
                    name.clone(),
                    Meta {
                        gen: *gen,
                        seq: *seq,
                        leader: leader.clone(),
                        voter: *voter,
                        seen: self.clock,
                    },
                );
                Change::Changed
            }
            Note::Left { name, gen } => {
                if self.has_left(name, *gen) {
                    return Change::None;
                }
                self.left.insert(name.clone(), *gen);
                match self.entries.get_mut(name) {
                    Some(e) if e.gen <= *gen && e.status != MemberStatus::Left => {
                        e.status = MemberStatus::Left;
                        e.since = Instant::now();
                    }
                    _ => {}
                }
                Change::Changed
            }
        }
    }

    /// Drop failed and left members older than `after`; the names removed.
    pub(crate) fn prune(&mut self, after: Duration) -> Vec<String> {
        let now = Instant::now();
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(name, e)| {
                **name != self.me
                    && e.status != MemberStatus::Alive
                    && now.duration_since(e.since) >= after
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            self.entries.remove(name);
            self.metas.remove(name);
            self.left.remove(name);
        }
        gone
    }

    /// The identity and generation listed for `name`.
    pub(crate) fn lookup(&self, name: &str) -> Option<Id> {
        self.entries
            .get(name)
            .map(|e| Id::new(e.info.clone(), e.gen))
    }

    pub(crate) fn is_known(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn meta_of(&self, name: &str, gen: u64) -> Option<&Meta> {
        self.metas.get(name).filter(|m| m.gen == gen)
    }

    fn member(&self, e: &Entry) -> Member {
        let meta = self.meta_of(&e.info.name, e.gen);
        let mut info = e.info.clone();
        if let Some(m) = meta {
            info.voter = m.voter;
        }
        Member {
            info,
            status: e.status,
            generation: e.gen,
            leader: meta.and_then(|m| m.leader.clone()),
        }
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        self.entries.values().map(|e| self.member(e)).collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<Member> {
        self.entries.get(name).map(|e| self.member(e))
    }

    pub(crate) fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in self.entries.values() {
            match e.status {
                MemberStatus::Alive => c.alive += 1,
                MemberStatus::Failed => c.failed += 1,
                MemberStatus::Left => c.left += 1,
            }
        }
        c
    }

    /// Region -> alive servers and leader. A region is listed while any of its
    /// servers is known and has not left.
    pub(crate) fn regions(&self) -> BTreeMap<String, RegionInfo> {
        let mut out: BTreeMap<String, RegionInfo> = BTreeMap::new();
        for e in self.entries.values() {
            if e.info.role != MemberRole::Server || e.status == MemberStatus::Left {
                continue;
            }
            let region = out.entry(e.info.region.clone()).or_default();
            if e.status == MemberStatus::Alive {
                region.servers.push(self.member(e).info);
            }
        }
        for (name, region) in out.iter_mut() {
            region.leader = self.leader_of(name, &region.servers);
        }
        out
    }

    /// The leader alive servers report: a server claiming to lead itself wins
    /// over reports by others; among equals the latest report wins. Only an
    /// alive server of the region can be the leader.
    fn leader_of(&self, region: &str, servers: &[MemberInfo]) -> Option<String> {
        let alive = |n: &str| servers.iter().any(|s| s.name == n);
        servers
            .iter()
            .filter_map(|s| {
                let e = self.entries.get(&s.name)?;
                let m = self.meta_of(&s.name, e.gen)?;
                let leader = m.leader.as_deref()?;
                (alive(leader) && e.info.region == region).then_some((
                    leader == s.name,
                    m.seen,
                    leader,
                ))
            })
            .max()
            .map(|(_, _, l)| l.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node: &str, region: &str, gen: u64) -> Id {
        Id::new(MemberInfo::server(node, region), gen)
    }

    fn meta(name: &str, gen: u64, seq: u64, leader: Option<&str>) -> Note {
        Note::Meta {
            name: name.into(),
            gen,
            seq,
            leader: leader.map(String::from),
            voter: true,
        }
    }

    #[test]
    fn failed_and_left_are_told_apart() {
        let mut v = View::new(&id("s1", "eu", 1));
        v.up(&id("s2", "eu", 1));
        v.up(&id("s3", "eu", 1));
        assert_eq!(v.down(&id("s2", "eu", 1)), Change::Failed);
        v.note(&Note::Left {
            name: "s3.eu".into(),
            gen: 1,
        });
        // Already listed as left by the note: the down that follows is no news.
        assert_eq!(v.down(&id("s3", "eu", 1)), Change::None);
        let status: Vec<_> = v.members().into_iter().map(|m| m.status).collect();
        assert_eq!(
            status,
            vec![
                MemberStatus::Alive,
                MemberStatus::Failed,
                MemberStatus::Left
            ]
        );
        // A later life of a member that left is alive again.
        v.rename(&id("s3", "eu", 2), false);
        assert_eq!(v.get("s3.eu").unwrap().status, MemberStatus::Failed);
        v.up(&id("s3", "eu", 2));
        assert_eq!(v.get("s3.eu").unwrap().status, MemberStatus::Alive);
        // Stale news about an older life changes nothing.
        assert_eq!(v.down(&id("s3", "eu", 1)), Change::None);
    }

    #[test]
    fn region_leader_comes_from_alive_servers() {
        let mut v = View::new(&id("s1", "eu", 1));
        v.up(&id("s2", "eu", 1));
        v.up(&id("s1", "us", 1));
        v.note(&meta("s1.eu", 1, 1, Some("s2.eu")));
        assert_eq!(v.regions()["eu"].leader.as_deref(), Some("s2.eu"));
        assert_eq!(v.regions()["eu"].servers.len(), 2);
        assert_eq!(v.regions()["us"].leader, None);
        // The leader's own claim wins over an older report by a follower.
        v.note(&meta("s2.eu", 1, 1, Some("s2.eu")));
        v.note(&meta("s1.eu", 1, 2, Some("s1.eu")));
        assert_eq!(v.regions()["eu"].leader.as_deref(), Some("s1.eu"));
        // A failed leader is not reported.
        v.down(&id("s2", "eu", 1));
        v.note(&meta("s1.eu", 1, 3, Some("s2.eu")));
        assert_eq!(v.regions()["eu"].leader, None);
        assert_eq!(v.regions()["eu"].servers.len(), 1);
    }

    #[test]
    fn prune_forgets_old_failures_only() {
        let mut v = View::new(&id("s1", "eu", 1));
        v.up(&id("s2", "eu", 1));
        v.up(&id("s3", "eu", 1));
        v.down(&id("s2", "eu", 1));
        assert_eq!(v.prune(Duration::ZERO), vec!["s2.eu".to_string()]);
        assert_eq!(v.counts().alive, 2);
    }
}
