//! Who a member is: [`MemberInfo`] (public), and the foca identity that
//! carries it in every packet ([`Id`]: the info plus a generation).

use std::cmp::Ordering;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a member of the gossip pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// A region server (may vote in its region's Raft).
    Server,
    /// A federation gateway.
    Gateway,
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberRole::Server => "server",
            MemberRole::Gateway => "gateway",
        })
    }
}

/// A member's identity, sent in every gossip packet: keep the strings short.
///
/// `name` is unique in the pool (`<node>.<region>`): a member that restarts
/// under the same name replaces its previous life.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberInfo {
    /// `<node>.<region>`.
    pub name: String,
    /// The member's region (for a gateway, the region it is deployed in).
    pub region: String,
    /// Datacenter within the region.
    pub datacenter: String,
    /// Server or gateway.
    pub role: MemberRole,
    /// gRPC address, `host:port`.
    pub rpc_addr: String,
    /// HTTP address, `host:port`.
    pub http_addr: String,
    /// Where the member's gossip socket is reached. Filled in by
    /// [`super::GossipPool::start`] when left unspecified.
    pub gossip_addr: SocketAddr,
    /// Build version.
    pub version: String,
    /// Whether the server votes in its region's Raft (as of joining; later
    /// changes travel as metadata and are reflected in listings).
    pub voter: bool,
}

impl MemberInfo {
    /// A member named `<node>.<region>`: datacenter `dc1`, this crate's
    /// version, voter when a server; addresses to be filled in.
    pub fn new(node: &str, region: &str, role: MemberRole) -> Self {
        Self {
            name: format!("{node}.{region}"),
            region: region.to_string(),
            datacenter: "dc1".to_string(),
            role,
            rpc_addr: String::new(),
            http_addr: String::new(),
            gossip_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            version: env!("CARGO_PKG_VERSION").to_string(),
            voter: role == MemberRole::Server,
        }
    }

    /// A region server `<node>.<region>`.
    pub fn server(node: &str, region: &str) -> Self {
        Self::new(node, region, MemberRole::Server)
    }

    /// A gateway `<node>.<region>`.
    pub fn gateway(node: &str, region: &str) -> Self {
        Self::new(node, region, MemberRole::Gateway)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The foca identity: a member's info and its generation.
///
/// The generation starts at the wall clock (ms) when the pool starts, so a
/// restarted member beats its previous life; `renew` (after the pool declared
/// us down) bumps it. Between two identities with the same name, the higher
/// generation wins.
#[derive(Clone)]
pub(crate) struct Id {
    pub(crate) info: Arc<MemberInfo>,
    pub(crate) gen: u64,
}

impl Id {
    pub(crate) fn new(info: MemberInfo, gen: u64) -> Self {
        Self {
            info: Arc::new(info),
            gen,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.info.name
    }

    /// Deterministic order between two identities of the same name and
    /// generation (two processes started with one name in the same ms).
    fn tiebreak(&self) -> impl Ord + '_ {
        let i = &*self.info;
        (
            i.gossip_addr,
            i.rpc_addr.as_str(),
            i.http_addr.as_str(),
            i.datacenter.as_str(),
            i.region.as_str(),
            i.version.as_str(),
            i.role,
            i.voter,
        )
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.gen == other.gen && (Arc::ptr_eq(&self.info, &other.info) || self.info == other.info)
    }
}

impl Eq for Id {}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.info.name, self.gen)
    }
}

// On the wire an identity is compacted, since it travels twice in every
// packet: an RPC/HTTP address on the gossip address's IP is sent as its port
// alone, and a region that is the name's suffix as its length. Compaction only
// applies when decoding gives back the exact same strings, so that a member
// always recognizes its own identity in packets addressed to it.

#[derive(Serialize)]
enum HostPortRef<'a> {
    Port(u16),
    Full(&'a str),
}

#[derive(Deserialize)]
enum HostPort {
    Port(u16),
    Full(String),
}

#[derive(Serialize)]
struct WireRef<'a> {
    name: &'a str,
    /// `Some(len)`: the region is the last `len` bytes of the name.
    region_suffix: Option<u8>,
    region: &'a str,
    datacenter: &'a str,
    role: MemberRole,
    rpc: HostPortRef<'a>,
    http: HostPortRef<'a>,
    gossip: SocketAddr,
    version: &'a str,
    voter: bool,
    gen: u64,
}

#[derive(Deserialize)]
struct Wire {
    name: String,
    region_suffix: Option<u8>,
    region: String,
    datacenter: String,
    role: MemberRole,
    rpc: HostPort,
    http: HostPort,
    gossip: SocketAddr,
    version: String,
    voter: bool,
    gen: u64,
}

fn compact<'a>(addr: &'a str, gossip: SocketAddr) -> HostPortRef<'a> {
    match addr.parse::<SocketAddr>() {
        Ok(a)
            if a.ip() == gossip.ip()
                && SocketAddr::new(gossip.ip(), a.port()).to_string() == addr =>
        {
            HostPortRef::Port(a.port())
        }
        _ => HostPortRef::Full(addr),
    }
}

fn expand(addr: HostPort, gossip: SocketAddr) -> String {
    match addr {
        HostPort::Port(p) => SocketAddr::new(gossip.ip(), p).to_string(),
        HostPort::Full(s) => s,
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = &*self.info;
        let suffix = (i.region.len() < 256
            && i.name.len() > i.region.len()
            && i.name.ends_with(i.region.as_str())
            && i.name.as_bytes()[i.name.len() - i.region.len() - 1] == b'.')
            .then_some(i.region.len() as u8);
        WireRef {
            name: &i.name,
            region_suffix: suffix,
            region: if suffix.is_some() { "" } else { &i.region },
            datacenter: &i.datacenter,
            role: i.role,
            rpc: compact(&i.rpc_addr, i.gossip_addr),
            http: compact(&i.http_addr, i.gossip_addr),
            gossip: i.gossip_addr,
            version: &i.version,
            voter: i.voter,
            gen: self.gen,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let region = match w.region_suffix {
            Some(len) => w
                .name
                .get(w.name.len().saturating_sub(len as usize)..)
                .map(str::to_string)
                .ok_or_else(|| serde::de::Error::custom("bad region suffix"))?,
            None => w.region,
        };
        let info = MemberInfo {
            rpc_addr: expand(w.rpc, w.gossip),
            http_addr: expand(w.http, w.gossip),
            name: w.name,
            region,
            datacenter: w.datacenter,
            role: w.role,
            gossip_addr: w.gossip,
            version: w.version,
            voter: w.voter,
        };
        Ok(Self::new(info, w.gen))
    }
}

/// foca's "address" of an identity: the member name.
#[derive(Clone)]
pub(crate) struct NameAddr(Arc<MemberInfo>);

impl PartialEq for NameAddr {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl foca::Identity for Id {
    type Addr = NameAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            info: self.info.clone(),
            gen: (self.gen + 1).max(now_ms()),
        })
    }

    fn addr(&self) -> NameAddr {
        NameAddr(self.info.clone())
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        match self.gen.cmp(&adversary.gen) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.tiebreak() > adversary.tiebreak(),
        }
    }
}

/// foca 2 takes a `rand` 0.10 generator; this adapts the workspace's rand 0.9
/// `SmallRng` (member selection needs speed, not secrecy).
pub(crate) struct FocaRng(rand::rngs::SmallRng);

impl FocaRng {
    pub(crate) fn new() -> Self {
        use rand::SeedableRng;
        Self(rand::rngs::SmallRng::from_rng(&mut rand::rng()))
    }
}

impl rand_core_010::TryRng for FocaRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(rand::RngCore::next_u32(&mut self.0))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(rand::RngCore::next_u64(&mut self.0))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand::RngCore::fill_bytes(&mut self.0, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(gen: u64) -> Id {
        let mut info = MemberInfo::server("s1", "eu");
        info.rpc_addr = "10.0.0.1:4647".into();
        info.http_addr = "10.0.0.1:4646".into();
        info.gossip_addr = "10.0.0.1:4648".parse().unwrap();
        Id::new(info, gen)
    }

    #[test]
    fn renew_wins_and_keeps_the_name() {
        let old = id(5);
        let new = old.renew().unwrap();
        assert!(new.gen > old.gen);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert!(new.addr() == old.addr());
        assert_ne!(new, old);
    }

    #[test]
    fn identity_is_compact_and_round_trips_exactly() {
        let me = id(now_ms());
        let bytes = postcard::to_allocvec(&me).unwrap();
        assert!(bytes.len() < 48, "identity is {} bytes", bytes.len());
        let back: Id = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, me);
        // What cannot be compacted travels in full, and still round-trips.
        let mut odd = (*me.info).clone();
        odd.name = "s1".into();
        odd.region = "eu.west".into();
        odd.rpc_addr = "rpc.example:4647".into();
        odd.http_addr = "[::1]:4646".into();
        odd.gossip_addr = "[::1]:4648".parse().unwrap();
        let odd = Id::new(odd, 3);
        let back: Id = postcard::from_bytes(&postcard::to_allocvec(&odd).unwrap()).unwrap();
        assert_eq!(back, odd);
        let mut v6 = (*odd.info).clone();
        v6.http_addr = "[0:0::1]:4646".into(); // not canonical: sent in full
        v6.name = "s1.eu.west".into();
        let v6 = Id::new(v6, 4);
        let back: Id = postcard::from_bytes(&postcard::to_allocvec(&v6).unwrap()).unwrap();
        assert_eq!(back, v6);
        assert_eq!(back.info.region, "eu.west");
    }

    #[test]
    fn equal_generation_conflicts_are_decided_one_way() {
        let a = id(7);
        let mut other = (*a.info).clone();
        other.gossip_addr = "10.0.0.2:4648".parse().unwrap();
        let b = Id::new(other, 7);
        assert_ne!(a.win_addr_conflict(&b), b.win_addr_conflict(&a));
    }
}
