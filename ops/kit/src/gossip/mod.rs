//! Membership in the federation: one WAN gossip pool that every server of
//! every region (and every gateway) joins.
//!
//! - **SWIM** by [foca](https://docs.rs/foca) over UDP: probes, indirect
//!   probes, suspicion, dissemination piggybacked on protocol messages,
//!   periodic gossip and announces. Timings default to
//!   [`foca::Config::new_wan`] (retransmissions: memberlist's formula) and
//!   follow the cluster size ([`GossipConfig`]).
//! - **Identity** ([`MemberInfo`]): `<node>.<region>`, region, datacenter,
//!   role, RPC/HTTP/gossip addresses, version, voter flag, plus a generation
//!   (start time in ms, bumped on rejoin) so that a restarted member replaces
//!   its previous life at once.
//! - **Metadata** that changes (the region leader a server sees, its voter
//!   flag) travels as foca custom broadcasts, versioned per member so the
//!   newest wins ([`GossipPool::set_meta`]). A graceful leave is announced
//!   the same way before foca's leave, which is how "left" is told apart from
//!   "failed".
//! - **Full-state exchange** (memberlist's push/pull, in UDP chunks): on join
//!   with the seed, then periodically with a random member, so late joiners
//!   learn every member and every metadata record.
//! - **Encryption**: every datagram is sealed with AES-256-GCM under the
//!   [`Keyring`]'s primary key and opened with any installed key.
//! - **Region map** ([`GossipPool::regions`]) and a change counter
//!   ([`GossipPool::subscribe`]) for servers and gateways to react to.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ops_kit::gossip::GossipError> {
//! use ops_kit::gossip::{GossipConfig, GossipPool, Keyring, MemberInfo};
//! let keyring = Keyring::new(&Keyring::generate_key())?;
//! let mut me = MemberInfo::server("s1", "eu");
//! me.rpc_addr = "10.0.0.1:4647".into();
//! me.http_addr = "10.0.0.1:4646".into();
//! let cfg = GossipConfig {
//!     advertise_addr: Some("10.0.0.1:4648".parse().unwrap()),
//!     seeds: vec!["10.0.0.2:4648".into()],
//!     ..GossipConfig::default()
//! };
//! let pool = GossipPool::start(cfg, me, keyring, None).await?;
//! pool.set_meta(Some("s1.eu".into()), true);
//! let eu = pool.regions().remove("eu");
//! # let _ = eu;
//! pool.leave().await?;
//! # Ok(()) }
//! ```

mod actor;
mod config;
mod identity;
mod keyring;
mod metrics;
mod notes;
mod pool;
mod view;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

pub use config::{suspicion_time, GossipConfig, GossipProfile, DEFAULT_GOSSIP_PORT};
pub use identity::{MemberInfo, MemberRole};
pub use keyring::{Keyring, KeyringError, KeyringList, OpenError, KEY_LEN, SEAL_OVERHEAD};
pub use metrics::GossipStats;
pub use pool::GossipPool;
pub use view::{Member, MemberStatus, RegionInfo};

/// What can go wrong with the gossip pool.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// Invalid configuration.
    #[error("invalid gossip configuration: {0}")]
    Config(String),
    /// The socket could not be bound or used.
    #[error("gossip socket: {0}")]
    Io(#[from] std::io::Error),
    /// A keyring problem.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The metrics could not be registered (e.g. registered twice).
    #[error("registering gossip metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// No seed answered in time.
    #[error("no gossip seed answered after {attempts} attempts in {waited:?}: {seeds:?}")]
    JoinFailed {
        /// The seeds tried.
        seeds: Vec<SocketAddr>,
        /// How many rounds of requests were sent.
        attempts: u32,
        /// How long it tried.
        waited: Duration,
    },
    /// `force_leave` of a name the pool does not know.
    #[error("unknown gossip member {0}")]
    UnknownMember(String),
    /// `force_leave` of this member: use `leave`.
    #[error("cannot force-leave the local member; use leave")]
    ForceLeaveSelf,
    /// The SWIM layer refused an operation.
    #[error("gossip: {0}")]
    Swim(String),
    /// The member stopped (left, killed, or its task ended).
    #[error("the gossip member has stopped")]
    Stopped,
}
