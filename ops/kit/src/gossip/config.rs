//! [`GossipConfig`]: where the pool listens, whom it joins, its keys and its
//! SWIM timings.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keyring::SEAL_OVERHEAD;
use super::GossipError;

/// Default UDP port of the gossip pool.
pub const DEFAULT_GOSSIP_PORT: u16 = 4648;

/// The gossip pool's configuration, as a TOML `[gossip]` table spells it.
///
/// Every timing left unset (`None`) takes the value of
/// [`foca::Config::new_wan`] for the current cluster size (derived from
/// memberlist's WAN profile): probe every 5 s, 3 s to answer, suspicion
/// `6 x max(1, log10(n)) x probe period`, gossip every 500 ms to 4 members,
/// announce every 60 s to 2 members; members believed down are contacted
/// every 30 s (Serf's `reconnect_interval`; foca's WAN default of 125 s left
/// a healed partition split for two minutes).
/// [`GossipConfig::local`] is a fast profile for tests and `atoll dev`.
/// Durations are milliseconds; an interval of 0 turns the periodic task off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipConfig {
    /// UDP address to bind (default `0.0.0.0:4648`; port 0 picks one).
    pub bind_addr: SocketAddr,
    /// Address the other members use to reach this one. Default: the bound
    /// address, which must then name a specific IP (not `0.0.0.0`).
    pub advertise_addr: Option<SocketAddr>,
    /// Members to join (`host:port`), tried at start with exponential backoff
    /// until one answers, and again whenever this member finds itself alone.
    pub seeds: Vec<String>,
    /// Gossip keys, base64 of 32 bytes each; the first is the primary (seals
    /// packets), all open packets. See [`super::Keyring::from_config`].
    pub keys: Vec<String>,
    /// Cluster size the derived timings (suspicion time, retransmissions) are
    /// computed for. `None`: follow the number of members currently alive.
    pub expected_members: Option<u32>,
    /// How often a random member is probed.
    pub probe_period_ms: Option<u64>,
    /// How long a direct probe waits for its answer before asking others to
    /// probe indirectly. Must be below `probe_period_ms`.
    pub probe_rtt_ms: Option<u64>,
    /// How many members are asked to probe indirectly.
    pub num_indirect_probes: Option<usize>,
    /// Suspicion multiplier: a suspect is declared failed after
    /// `suspicion_mult x max(1, log10(n)) x probe period` (WAN: 6).
    pub suspicion_mult: Option<f64>,
    /// Fixed suspicion time, overriding `suspicion_mult`.
    pub suspect_to_down_ms: Option<u64>,
    /// How many times each update is piggybacked (default: memberlist's
    /// `4 x ceil(log10(n + 1))`).
    pub max_transmissions: Option<u8>,
    /// How long failed and left members stay listed (default 24 h).
    pub remove_down_after_ms: Option<u64>,
    /// Largest UDP payload sent or accepted, encryption included (default 1400).
    pub max_packet_size: usize,
    /// How often pending updates are gossiped.
    pub gossip_interval_ms: Option<u64>,
    /// To how many members each gossip round goes.
    pub gossip_fanout: Option<usize>,
    /// How often a few members are asked for their member list (SWIM announce).
    pub announce_interval_ms: Option<u64>,
    /// How many members each announce round asks.
    pub announce_fanout: Option<usize>,
    /// How often members believed down are contacted, to heal partitions.
    pub announce_down_interval_ms: Option<u64>,
    /// How often the full state (every member and every metadata record) is
    /// exchanged with one random member (default 60 s, memberlist's WAN
    /// push/pull). Joining always does one such exchange with the seed.
    pub push_pull_interval_ms: Option<u64>,
    /// First delay between join attempts (doubles up to `join_retry_max_ms`).
    pub join_retry_initial_ms: u64,
    /// Largest delay between join attempts.
    pub join_retry_max_ms: u64,
    /// How long one [`super::GossipPool::join`] call keeps trying.
    pub join_timeout_ms: u64,
}

/// A named set of gossip timings, for the `--gossip-profile` flag of the
/// binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GossipProfile {
    /// memberlist's WAN timings ([`GossipConfig::default`]): for servers
    /// spread over regions.
    #[default]
    Wan,
    /// The fast loopback profile ([`GossipConfig::local`]): for tests and
    /// `atoll dev`, where every member is on one machine.
    Local,
}

impl GossipProfile {
    /// The configuration of this profile (bind address and seeds still to
    /// be set).
    pub fn config(self) -> GossipConfig {
        match self {
            Self::Wan => GossipConfig::default(),
            Self::Local => GossipConfig::local(),
        }
    }
}

impl std::str::FromStr for GossipProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wan" => Ok(Self::Wan),
            "local" => Ok(Self::Local),
            other => Err(format!(
                "unknown gossip profile {other:?}: expected \"wan\" or \"local\""
            )),
        }
    }
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            bind_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_GOSSIP_PORT)),
            advertise_addr: None,
            seeds: Vec::new(),
            keys: Vec::new(),
            expected_members: None,
            probe_period_ms: None,
            probe_rtt_ms: None,
            num_indirect_probes: None,
            suspicion_mult: None,
            suspect_to_down_ms: None,
            max_transmissions: None,
            remove_down_after_ms: None,
            max_packet_size: 1400,
            gossip_interval_ms: None,
            gossip_fanout: None,
            announce_interval_ms: None,
            announce_fanout: None,
            announce_down_interval_ms: None,
            push_pull_interval_ms: None,
            join_retry_initial_ms: 500,
            join_retry_max_ms: 30_000,
            join_timeout_ms: 60_000,
        }
    }
}

/// How often members believed down are contacted by default (Serf's
/// `reconnect_interval`).
const WAN_RECONNECT: Duration = Duration::from_secs(30);
/// WAN suspicion multiplier of [`foca::Config::new_wan`].
const WAN_SUSPICION_MULT: f64 = 6.0;
/// memberlist's WAN push/pull interval.
const WAN_PUSH_PULL: Duration = Duration::from_secs(60);
/// Smallest `max_packet_size` accepted: room for two identities and a few updates.
const MIN_PACKET_SIZE: usize = 512;
/// Largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;

impl GossipConfig {
    /// A fast profile for loopback clusters (tests, `atoll dev`): bound to
    /// `127.0.0.1:0`, probe every 200 ms (100 ms to answer), suspicion
    /// `3 x max(1, log10(n)) x 200 ms`, gossip every 50 ms to 3 members,
    /// announce and push/pull every 2 s, join retries from 100 ms to 1 s.
    pub fn local() -> Self {
        Self {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            probe_period_ms: Some(200),
            probe_rtt_ms: Some(100),
            suspicion_mult: Some(3.0),
            gossip_interval_ms: Some(50),
            gossip_fanout: Some(3),
            announce_interval_ms: Some(2_000),
            announce_fanout: Some(2),
            announce_down_interval_ms: Some(4_000),
            push_pull_interval_ms: Some(2_000),
            join_retry_initial_ms: 100,
            join_retry_max_ms: 1_000,
            join_timeout_ms: 10_000,
            ..Self::default()
        }
    }

    /// Checks the settings that [`foca::Config`] would reject or that make no
    /// sense together.
    pub fn validate(&self) -> Result<(), GossipError> {
        let bad = |msg: String| Err(GossipError::Config(msg));
        if self.max_packet_size < MIN_PACKET_SIZE || self.max_packet_size > MAX_UDP_PAYLOAD {
            return bad(format!(
                "max_packet_size {} is outside {MIN_PACKET_SIZE}..={MAX_UDP_PAYLOAD}",
                self.max_packet_size
            ));
        }
        let c = self.foca_config(1)?;
        if c.probe_rtt >= c.probe_period {
            return bad(format!(
                "probe_rtt ({:?}) must be shorter than probe_period ({:?})",
                c.probe_rtt, c.probe_period
            ));
        }
        if let Some(m) = self.suspicion_mult {
            if !(m.is_finite() && m > 0.0) {
                return bad(format!("suspicion_mult {m} must be a positive number"));
            }
        }
        if self.join_retry_initial_ms == 0 || self.join_retry_max_ms < self.join_retry_initial_ms {
            return bad("join_retry_initial_ms must be > 0 and <= join_retry_max_ms".into());
        }
        Ok(())
    }

    /// The largest datagram foca may produce: `max_packet_size` minus the
    /// encryption envelope and the packet-kind byte.
    pub(crate) fn foca_packet_size(&self) -> usize {
        self.max_packet_size - SEAL_OVERHEAD - 1
    }

    /// foca's configuration for a cluster of `cluster_size` members:
    /// [`foca::Config::new_wan`] with every explicit setting applied.
    pub fn foca_config(&self, cluster_size: u32) -> Result<foca::Config, GossipError> {
        let n = self.expected_members.unwrap_or(cluster_size).max(1);
        let n = NonZeroU32::new(n).expect("max(1)");
        let mut c = foca::Config::new_wan(n);
        let nz = |v: usize, what: &str| {
            NonZeroUsize::new(v).ok_or_else(|| GossipError::Config(format!("{what} must be > 0")))
        };
        let ms = |v: u64, what: &str| {
            if v == 0 {
                Err(GossipError::Config(format!("{what} must be > 0")))
            } else {
                Ok(Duration::from_millis(v))
            }
        };
        if let Some(v) = self.probe_period_ms {
            c.probe_period = ms(v, "probe_period_ms")?;
        }
        if let Some(v) = self.probe_rtt_ms {
            c.probe_rtt = ms(v, "probe_rtt_ms")?;
        }
        if let Some(v) = self.num_indirect_probes {
            c.num_indirect_probes = nz(v, "num_indirect_probes")?;
        }
        c.suspect_to_down_after = match self.suspect_to_down_ms {
            Some(v) => ms(v, "suspect_to_down_ms")?,
            None => suspicion_time(
                n.get(),
                c.probe_period,
                self.suspicion_mult.unwrap_or(WAN_SUSPICION_MULT),
            ),
        };
        c.max_transmissions = match self.max_transmissions {
            Some(v) => NonZeroU8::new(v)
                .ok_or_else(|| GossipError::Config("max_transmissions must be > 0".into()))?,
            None => max_transmissions(n.get()),
        };
        if let Some(v) = self.remove_down_after_ms {
            c.remove_down_after = Some(ms(v, "remove_down_after_ms")?);
        }
        c.max_packet_size = nz(self.foca_packet_size(), "max_packet_size")?;
        periodic(
            &mut c.periodic_gossip,
            self.gossip_interval_ms,
            self.gossip_fanout,
        )?;
        periodic(
            &mut c.periodic_announce,
            self.announce_interval_ms,
            self.announce_fanout,
        )?;
        periodic(
            &mut c.periodic_announce_to_down_members,
            Some(
                self.announce_down_interval_ms
                    .unwrap_or(WAN_RECONNECT.as_millis() as u64),
            ),
            None,
        )?;
        Ok(c)
    }

    /// How long failed and left members stay listed.
    pub(crate) fn remove_down_after(&self) -> Duration {
        self.remove_down_after_ms
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(24 * 3600))
    }

    /// The full-state exchange interval, `None` when turned off.
    pub(crate) fn push_pull_interval(&self) -> Option<Duration> {
        match self.push_pull_interval_ms {
            None => Some(WAN_PUSH_PULL),
            Some(0) => None,
            Some(v) => Some(Duration::from_millis(v)),
        }
    }
}

/// memberlist's retransmission limit, `4 x ceil(log10(n + 1))` (4 up to 9
/// members, 8 up to 99, 12 up to 999). foca's own `new_wan` rounds down
/// instead (`4 x log10(n + 1)`), which leaves a fresh member (n = 1) sending
/// each update once and measurably slows convergence of mass joins.
fn max_transmissions(cluster_size: u32) -> NonZeroU8 {
    let scale = f64::from(cluster_size.saturating_add(1)).log10().ceil();
    let tx = (4.0 * scale).clamp(1.0, 255.0);
    NonZeroU8::new(tx as u8).unwrap_or(NonZeroU8::MIN)
}

/// memberlist's (and foca's) suspicion time: `mult x max(1, log10(n)) x period`.
pub fn suspicion_time(cluster_size: u32, probe_period: Duration, mult: f64) -> Duration {
    let scale = f64::max(1.0, f64::from(cluster_size.max(1)).log10());
    Duration::from_secs_f64(scale * mult * probe_period.as_secs_f64())
}

fn periodic(
    slot: &mut Option<foca::PeriodicParams>,
    interval_ms: Option<u64>,
    fanout: Option<usize>,
) -> Result<(), GossipError> {
    match interval_ms {
        Some(0) => *slot = None,
        Some(v) => {
            let num_members = slot
                .as_ref()
                .map(|p| p.num_members)
                .unwrap_or(NonZeroUsize::MIN);
            *slot = Some(foca::PeriodicParams {
                frequency: Duration::from_millis(v),
                num_members,
            });
        }
        None => {}
    }
    if let (Some(p), Some(f)) = (slot.as_mut(), fanout) {
        p.num_members =
            NonZeroUsize::new(f).ok_or_else(|| GossipError::Config("fanout must be > 0".into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_foca_wan() {
        let cfg = GossipConfig::default();
        cfg.validate().unwrap();
        let ours = cfg.foca_config(10).unwrap();
        let wan = foca::Config::new_wan(NonZeroU32::new(10).unwrap());
        assert_eq!(ours.probe_period, wan.probe_period);
        assert_eq!(ours.probe_rtt, wan.probe_rtt);
        assert_eq!(ours.suspect_to_down_after, wan.suspect_to_down_after);
        // Retransmissions follow memberlist (foca rounds the log down).
        assert_eq!(ours.max_transmissions.get(), 8);
        assert_eq!(cfg.foca_config(1).unwrap().max_transmissions.get(), 4);
        assert_eq!(cfg.foca_config(9).unwrap().max_transmissions.get(), 4);
        // Members believed down are retried every 30 s (Serf), so a healed
        // partition rejoins without waiting foca's 125 s.
        let reconnect = ours.periodic_announce_to_down_members.unwrap();
        assert_eq!(reconnect.frequency, Duration::from_secs(30));
        assert_eq!(cfg.foca_config(50).unwrap().max_transmissions.get(), 8);
        assert_eq!(cfg.foca_config(100).unwrap().max_transmissions.get(), 12);
        assert_eq!(
            ours.periodic_gossip.unwrap().frequency,
            Duration::from_millis(500)
        );
        // The envelope's room is taken off foca's packet size.
        assert_eq!(ours.max_packet_size.get(), 1400 - SEAL_OVERHEAD - 1);
    }

    #[test]
    fn bad_timings_are_rejected() {
        let cfg = GossipConfig {
            probe_period_ms: Some(100),
            probe_rtt_ms: Some(100),
            ..GossipConfig::local()
        };
        assert!(cfg.validate().is_err());
        let cfg = GossipConfig {
            max_packet_size: 100,
            ..GossipConfig::local()
        };
        assert!(cfg.validate().is_err());
        GossipConfig::local().validate().unwrap();
    }

    #[test]
    fn profiles_by_name() {
        assert_eq!("wan".parse(), Ok(GossipProfile::Wan));
        assert_eq!("local".parse(), Ok(GossipProfile::Local));
        assert!("lan"
            .parse::<GossipProfile>()
            .unwrap_err()
            .contains("\"wan\""));
        assert_eq!(GossipProfile::Local.config(), GossipConfig::local());
        assert_eq!(GossipProfile::default().config(), GossipConfig::default());
    }

    #[test]
    fn zero_interval_turns_off() {
        let cfg = GossipConfig {
            announce_interval_ms: Some(0),
            push_pull_interval_ms: Some(0),
            ..GossipConfig::default()
        };
        assert!(cfg.foca_config(3).unwrap().periodic_announce.is_none());
        assert!(cfg.push_pull_interval().is_none());
    }

    #[test]
    fn toml_round_trip() {
        let text = r#"
            bind_addr = "10.0.0.1:4648"
            seeds = ["10.0.0.2:4648"]
            probe_period_ms = 1000
            suspicion_mult = 4.0
        "#;
        let cfg: GossipConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.probe_period_ms, Some(1000));
        assert_eq!(cfg.seeds, vec!["10.0.0.2:4648".to_string()]);
        assert!(toml::from_str::<GossipConfig>("bogus = 1").is_err());
    }
}
