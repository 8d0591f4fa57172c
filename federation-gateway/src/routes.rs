//! Routing a request to a region: the region map from gossip, a pool of
//! mTLS gRPC connections per server, a deadline, a retry on another server
//! for idempotent calls, and a fast refusal when the region has no live
//! server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ops_kit::forward::{read_response, ChannelPool, ForwardedResponse, MAX_REQUEST_MESSAGE};
use ops_kit::gossip::{GossipPool, MemberRole, RegionInfo};
use ops_kit::tls::{identity_name, Role};
use proto::rpc::forward_service_client::ForwardServiceClient;
use proto::rpc::HttpRequest;

use crate::metrics::Metrics;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Gossip knows no live server of the region, or none answered.
    #[error("No path to region \"{0}\"")]
    NoPath(String),
    /// The region's server took longer than the deadline to answer.
    #[error("region \"{region}\" did not answer within {after:?}")]
    Timeout {
        /// The region.
        region: String,
        /// The deadline.
        after: Duration,
    },
}

/// Forwarding to regions. Cheap to clone.
#[derive(Clone)]
pub struct Routes {
    inner: Arc<Inner>,
}

struct Inner {
    gossip: GossipPool,
    /// The region map as of the last gossip change ([`Routes::refresh`]).
    map: RwLock<Arc<BTreeMap<String, RegionInfo>>>,
    channels: ChannelPool,
    metrics: Metrics,
    timeout: Duration,
    next: AtomicUsize,
}

impl Routes {
    /// Routes over the region map of `gossip`, dialing with `channels`;
    /// `timeout` bounds the wait for a response head (a blocking query's
    /// wait comes on top).
    pub fn new(
        gossip: GossipPool,
        channels: ChannelPool,
        metrics: Metrics,
        timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                map: RwLock::new(Arc::new(gossip.regions())),
                gossip,
                channels,
                metrics,
                timeout,
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// The gossip pool.
    pub fn gossip(&self) -> &GossipPool {
        &self.inner.gossip
    }

    /// Take the region map from gossip again (called on every gossip
    /// change; requests read the map taken last).
    pub fn refresh(&self) -> Arc<BTreeMap<String, RegionInfo>> {
        let map = Arc::new(self.inner.gossip.regions());
        *self.inner.map.write().unwrap_or_else(|p| p.into_inner()) = map.clone();
        map
    }

    fn map(&self) -> Arc<BTreeMap<String, RegionInfo>> {
        self.inner
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every region gossip has seen a server of (alive or not), sorted.
    pub fn known_regions(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .inner
            .gossip
            .members()
            .into_iter()
            .filter(|m| m.info.role == MemberRole::Server)
            .map(|m| m.info.region)
            .collect();
        set.into_iter().collect()
    }

    /// RPC addresses of the live servers of `region`. With `leader_first`
    /// the leader leads (writes go there anyway); otherwise the list is
    /// rotated per call, spreading reads over the region.
    pub fn servers(&self, region: &str, leader_first: bool) -> Vec<String> {
        let map = self.map();
        let Some(info) = map.get(region) else {
            return Vec::new();
        };
        let mut out: Vec<String> = info.servers.iter().map(|s| s.rpc_addr.clone()).collect();
        if out.is_empty() {
            return out;
        }
        if leader_first {
            if let Some(pos) = info
                .servers
                .iter()
                .position(|s| Some(&s.name) == info.leader.as_ref())
            {
                out.swap(0, pos);
            }
        } else {
            let n = self.inner.next.fetch_add(1, Ordering::Relaxed) % out.len();
            out.rotate_left(n);
        }
        out
    }

    /// Refresh the region map and keep `atoll_gateway_region_reachable`
    /// current with it; the new map.
    pub fn update_reachability(&self) -> Arc<BTreeMap<String, RegionInfo>> {
        let alive = self.refresh();
        for region in self.known_regions() {
            let up = alive.get(&region).is_some_and(|r| !r.servers.is_empty());
            self.inner
                .metrics
                .reachable
                .with_label_values(&[region.as_str()])
                .set(i64::from(up));
        }
        alive
    }

    /// Forward `req` to a live server of `region`. Idempotent requests
    /// (GET, HEAD) move on to the next server when one fails; others are
    /// tried once, on the leader when known. `wait` is the blocking-query
    /// wait the request asks for, added to the deadline. The response head
    /// has arrived when this returns; its body streams on.
    pub async fn forward(
        &self,
        region: &str,
        req: HttpRequest,
        wait: Duration,
    ) -> Result<ForwardedResponse, RouteError> {
        let method = req.method.clone();
        let idempotent = method == "GET" || method == "HEAD";
        let result = self.attempt(region, req, &method, idempotent, wait).await;
        let status = match &result {
            Ok(resp) => resp.status.as_str(),
            Err(RouteError::NoPath(_)) => "503",
            Err(RouteError::Timeout { .. }) => "504",
        };
        self.inner
            .metrics
            .forwarded
            .with_label_values(&[region, method.as_str(), status])
            .inc();
        result
    }

    async fn attempt(
        &self,
        region: &str,
        req: HttpRequest,
        method: &str,
        idempotent: bool,
        wait: Duration,
    ) -> Result<ForwardedResponse, RouteError> {
        let servers = self.servers(region, !idempotent);
        if servers.is_empty() {
            return Err(RouteError::NoPath(region.to_string()));
        }
        let server_name = identity_name(Role::Server, region);
        let deadline = self.inner.timeout + wait;
        let attempts = if idempotent { servers.len().min(3) } else { 1 };
        let mut req = Some(req);
        for (i, addr) in servers.iter().take(attempts).enumerate() {
            if i > 0 {
                self.inner
                    .metrics
                    .retries
                    .with_label_values(&[region])
                    .inc();
            }
            let channel = match self.inner.channels.channel(addr, &server_name) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "bad server address in the region map");
                    continue;
                }
            };
            // A copy only while another attempt may need the request.
            let this = if i + 1 < attempts {
                req.clone()
            } else {
                req.take()
            };
            let Some(this) = this else { break };
            let mut client =
                ForwardServiceClient::new(channel).max_encoding_message_size(MAX_REQUEST_MESSAGE);
            let start = Instant::now();
            let call = async {
                let stream = client.http(this).await?.into_inner();
                read_response(stream).await
            };
            match tokio::time::timeout(deadline, call).await {
                Ok(Ok(resp)) => {
                    self.inner
                        .metrics
                        .latency
                        .with_label_values(&[region, method])
                        .observe(start.elapsed().as_secs_f64());
                    return Ok(resp);
                }
                Ok(Err(status)) => {
                    tracing::debug!(server = %addr, %region, %status, "forwarding failed");
                }
                Err(_) => {
                    return Err(RouteError::Timeout {
                        region: region.to_string(),
                        after: deadline,
                    })
                }
            }
        }
        Err(RouteError::NoPath(region.to_string()))
    }
}
