//! Requests for other regions, both ways.
//!
//! - [`route`], an HTTP middleware in front of every `/v1` route: a request
//!   naming another region (`?region=R`, or a job register whose job says
//!   `Region: R`) goes to a live federation gateway from the gossip pool,
//!   or, with no gateway alive, straight to a live server of R; requests
//!   only a gateway can answer (multi-region job registers, `DELETE
//!   /v1/job/{id}?global=true`, `GET /v1/job/{id}/regions`) go to a
//!   gateway. With nowhere to go the answer is `503 No path to region "R"`
//!   at once. A request that arrived forwarded ([`FORWARDED_HEADER`]) is
//!   never forwarded again.
//! - [`ForwardGrpc`], the `ForwardService` gateways and servers of other
//!   regions call: it runs the request through this server's own router
//!   in-process, so every route, blocking query and stream answers as it
//!   would over HTTP.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use ops_kit::forward::{
    is_job_register, job_region_of, proto_to_request, read_response, request_to_proto,
    response_to_chunks, ChannelPool, ChunkStream, FORWARDED_HEADER,
};
use ops_kit::gossip::{GossipPool, MemberRole, MemberStatus};
use ops_kit::tls::{identity_name, Role};
use proto::rpc::forward_service_client::ForwardServiceClient;
use proto::rpc::forward_service_server::ForwardService;
use proto::rpc::gateway_service_client::GatewayServiceClient;
use proto::rpc::HttpRequest;
use tower::ServiceExt;

use super::ApiError;

/// How long a forwarded request may take to produce its response head,
/// beyond any blocking-query wait it asks for.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// What the forwarding middleware needs.
#[derive(Clone)]
pub struct Federation {
    region: String,
    gossip: Option<GossipPool>,
    channels: ChannelPool,
    max_body: usize,
}

impl Federation {
    /// Forwarding for a server of `region`, finding gateways and other
    /// regions' servers through `gossip` and dialing them over `channels`.
    pub fn new(
        region: &str,
        gossip: Option<GossipPool>,
        channels: ChannelPool,
        max_body: usize,
    ) -> Self {
        Self {
            region: region.to_string(),
            gossip,
            channels,
            max_body,
        }
    }

    /// RPC addresses of the live gateways, in a random order.
    fn gateways(&self) -> Vec<String> {
        let Some(pool) = &self.gossip else {
            return Vec::new();
        };
        let mut out: Vec<String> = pool
            .members()
            .into_iter()
            .filter(|m| m.info.role == MemberRole::Gateway && m.status == MemberStatus::Alive)
            .map(|m| m.info.rpc_addr)
            .filter(|a| !a.is_empty())
            .collect();
        shuffle(&mut out);
        out
    }

    /// RPC addresses of the live servers of `region`, the leader first.
    fn servers_of(&self, region: &str) -> Vec<String> {
        let Some(pool) = &self.gossip else {
            return Vec::new();
        };
        let Some(info) = pool.regions().remove(region) else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        let leader = info.leader.clone();
        for s in &info.servers {
            if Some(&s.name) == leader.as_ref() {
                out.insert(0, s.rpc_addr.clone());
            } else {
                out.push(s.rpc_addr.clone());
            }
        }
        out
    }
}

fn shuffle(v: &mut [String]) {
    for i in (1..v.len()).rev() {
        let j = rand::random_range(0..=i);
        v.swap(i, j);
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    /// Answer here.
    Local,
    /// Another region.
    Region(String),
    /// Only a gateway can answer (multi-region).
    Gateway,
}

fn query_value(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn is_true(v: Option<String>) -> bool {
    v.is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1")
}

/// The HTTP middleware: answer here, or forward (see the module docs).
pub async fn route(State(f): State<Federation>, req: Request, next: Next) -> Response {
    if req.headers().contains_key(FORWARDED_HEADER) {
        return next.run(req).await;
    }
    let pairs: Vec<(String, String)> = Query::try_from_uri(req.uri())
        .map(|Query(p)| p)
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let mut dest = match query_value(&pairs, "region") {
        Some(r) if !r.is_empty() && r != f.region => Dest::Region(r),
        _ => Dest::Local,
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == Method::DELETE
        && matches!(segments.as_slice(), ["v1", "job", _])
        && is_true(query_value(&pairs, "global"))
    {
        dest = Dest::Gateway;
    }
    if method == Method::GET && matches!(segments.as_slice(), ["v1", "job", _, "regions"]) {
        dest = Dest::Gateway;
    }
    let (parts, body) = req.into_parts();
    if dest == Dest::Local && !is_job_register(&method, &path) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let body = match axum::body::to_bytes(body, f.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("Request body larger than {} bytes", f.max_body),
            }
            .into_response()
        }
    };
    if dest == Dest::Local {
        match job_region_of(&body) {
            Some((_, true)) => dest = Dest::Gateway,
            Some((r, false)) if !r.is_empty() && r != f.region => dest = Dest::Region(r),
            _ => {}
        }
    }
    if dest == Dest::Local {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    }
    let wait = blocking_wait(&pairs);
    let wire = request_to_proto(&parts, body);
    forward(
        &f,
        dest,
        wire,
        method == Method::GET || method == Method::HEAD,
        wait,
    )
    .await
}

/// How long a blocking query may wait (`?index=` with `?wait=`, Nomad's
/// default 5 minutes), zero otherwise.
fn blocking_wait(pairs: &[(String, String)]) -> Duration {
    let blocking = query_value(pairs, "index").is_some_and(|i| i.parse::<u64>().unwrap_or(0) > 0);
    if !blocking {
        return Duration::ZERO;
    }
    query_value(pairs, "wait")
        .and_then(|w| super::query::parse_duration("wait", &w).ok())
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(600))
}

fn no_path(region: &str) -> Response {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("No path to region \"{region}\""),
    }
    .into_response()
}

async fn forward(
    f: &Federation,
    dest: Dest,
    wire: HttpRequest,
    idempotent: bool,
    wait: Duration,
) -> Response {
    let deadline = FORWARD_TIMEOUT + wait;
    let gateway_name = identity_name(Role::Gateway, "");
    let mut last_error = None;
    for addr in f.gateways() {
        let channel = match f.channels.channel(&addr, &gateway_name) {
            Ok(c) => c,
            Err(e) => {
                last_error = Some(e.to_string());
                continue;
            }
        };
        let mut client = GatewayServiceClient::new(channel)
            .max_encoding_message_size(ops_kit::forward::MAX_REQUEST_MESSAGE);
        let call = async {
            let stream = client.http(wire.clone()).await?.into_inner();
            read_response(stream).await
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(resp)) => return into_response(resp),
            Ok(Err(status)) => {
                tracing::debug!(gateway = %addr, %status, "forwarding through a gateway failed");
                last_error = Some(status.message().to_string());
                if !idempotent {
                    break;
                }
            }
            Err(_) => {
                last_error = Some(format!("gateway {addr} gave no answer within {deadline:?}"));
                break;
            }
        }
    }
    let region = match dest {
        Dest::Region(r) => r,
        Dest::Gateway => {
            return ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "No federation gateway reachable for a multi-region request{}",
                    last_error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            }
            .into_response()
        }
        Dest::Local => return no_path(&f.region),
    };
    if last_error.is_some() && !idempotent {
        return no_path(&region);
    }
    // No gateway: straight to a server of the region.
    let server_name = identity_name(Role::Server, &region);
    for addr in f.servers_of(&region) {
        let Ok(channel) = f.channels.channel(&addr, &server_name) else {
            continue;
        };
        let mut client = ForwardServiceClient::new(channel)
            .max_encoding_message_size(ops_kit::forward::MAX_REQUEST_MESSAGE);
        let call = async {
            let stream = client.http(wire.clone()).await?.into_inner();
            read_response(stream).await
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(resp)) => return into_response(resp),
            Ok(Err(status)) => {
                tracing::debug!(server = %addr, %status, "forwarding to a server failed");
                if !idempotent {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    no_path(&region)
}

fn into_response(resp: ops_kit::forward::ForwardedResponse) -> Response {
    resp.into_http()
}

/// `ForwardService`: answers a forwarded request with this server's own
/// HTTP router.
pub struct ForwardGrpc {
    router: axum::Router,
    name: String,
}

impl ForwardGrpc {
    /// Serve requests with `router`; `name` marks them as forwarded to it.
    pub fn new(router: axum::Router, name: &str) -> Self {
        Self {
            router,
            name: name.to_string(),
        }
    }
}

/// Run a wire request through `router` and stream its answer.
pub async fn answer(
    router: &axum::Router,
    req: HttpRequest,
    by: &str,
) -> Result<ChunkStream, tonic::Status> {
    let req = proto_to_request(req, by)
        .map_err(|e| tonic::Status::invalid_argument(format!("forwarded request: {e}")))?
        .map(Body::from);
    let resp = match router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    Ok(response_to_chunks(resp))
}

#[tonic::async_trait]
impl ForwardService for ForwardGrpc {
    type HttpStream = ChunkStream;

    async fn http(
        &self,
        req: tonic::Request<HttpRequest>,
    ) -> Result<tonic::Response<ChunkStream>, tonic::Status> {
        let stream = answer(&self.router, req.into_inner(), &self.name).await?;
        Ok(tonic::Response::new(stream))
    }
}
