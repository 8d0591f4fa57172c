//! Routing a request to a region: the region map from gossip, a pool of
//! mTLS gRPC connections per server, a deadline, a retry on another server
//! for idempotent calls, and a fast refusal when the region has no live
//! server.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ops_kit::forward::{read_response, ChannelPool, ForwardedResponse, MAX_REQUEST_MESSAGE};
use ops_kit::gossip::{GossipPool, MemberRole};
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
        let Some(info) = self.inner.gossip.regions().remove(region) else {
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

    /// Keep `atoll_gateway_region_reachable` current with the region map.
    pub fn update_reachability(&self) {
        let alive = self.inner.gossip.regions();
        for region in self.known_regions() {
            let up = alive.get(&region).is_some_and(|r| !r.servers.is_empty());
            self.inner
                .metrics
                .reachable
                .with_label_values(&[region.as_str()])
                .set(i64::from(up));
        }
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
        let result = self.attempt(region, req, idempotent, wait).await;
        let status = match &result {
            Ok(resp) => resp.status.as_u16().to_string(),
            Err(RouteError::NoPath(_)) => "503".to_string(),
            Err(RouteError::Timeout { .. }) => "504".to_string(),
        };
        self.inner
            .metrics
            .forwarded
            .with_label_values(&[region, method.as_str(), status.as_str()])
            .inc();
        result
    }

    async fn attempt(
        &self,
        region: &str,
        req: HttpRequest,
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
            let mut client =
                ForwardServiceClient::new(channel).max_encoding_message_size(MAX_REQUEST_MESSAGE);
            let start = Instant::now();
            let call = async {
                let stream = client.http(req.clone()).await?.into_inner();
                read_response(stream).await
            };
            match tokio::time::timeout(deadline, call).await {
                Ok(Ok(resp)) => {
                    self.inner
                        .metrics
                        .latency
                        .with_label_values(&[region, req.method.as_str()])
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
