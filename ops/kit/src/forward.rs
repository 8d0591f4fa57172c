//! HTTP over gRPC: how a `/v1` request travels between regions.
//!
//! A request becomes an [`HttpRequest`] ([`request_to_proto`]); the answering
//! side turns it back into an HTTP request ([`proto_to_request`]), runs it
//! through its own HTTP router and streams the response back as
//! [`HttpChunk`]s ([`response_to_chunks`]: the head first, then body chunks
//! as they are produced, so blocking queries, log streams and snapshots pass
//! through). The caller reads the head and streams the rest
//! ([`read_response`]).
//!
//! A request that arrives through `ForwardService` carries
//! [`FORWARDED_HEADER`]; a server never forwards such a request again, which
//! keeps forwarding and multi-region fan-out free of loops.
//!
//! [`ChannelPool`] keeps lazily connected mTLS channels per peer address
//! and expected certificate name.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use proto::rpc::http_chunk::Part;
use proto::rpc::{HttpChunk, HttpHead, HttpHeader, HttpRequest};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::tls::CertBundle;

/// Set on a request that was forwarded to the server answering it; such a
/// request is answered locally or refused, never forwarded again.
pub const FORWARDED_HEADER: &str = "x-atoll-forwarded";

/// Largest body chunk in one [`HttpChunk`] message.
pub const MAX_CHUNK: usize = 1024 * 1024;

/// Largest gRPC message a forwarding endpoint accepts (a request carries its
/// whole body, e.g. a snapshot being restored).
pub const MAX_REQUEST_MESSAGE: usize = 1024 * 1024 * 1024;

/// A streamed response body.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// The stream of [`HttpChunk`]s a forwarding service answers with.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<HttpChunk, Status>> + Send>>;

/// Headers that describe one connection, not the request: never forwarded.
/// `content-length` is dropped too: the body is re-framed on each hop.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn headers_to_proto(headers: &HeaderMap) -> Vec<HttpHeader> {
    headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name))
        .map(|(name, value)| HttpHeader {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

fn headers_from_proto(headers: Vec<HttpHeader>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| format!("bad header name {:?}: {e}", h.name))?;
        if is_hop_by_hop(&name) {
            continue;
        }
        let value = HeaderValue::from_bytes(&h.value)
            .map_err(|e| format!("bad value of header {name}: {e}"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The wire form of a request (`parts` with its whole `body`).
pub fn request_to_proto(parts: &http::request::Parts, body: Bytes) -> HttpRequest {
    HttpRequest {
        method: parts.method.as_str().to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string()),
        headers: headers_to_proto(&parts.headers),
        body: body.to_vec(),
    }
}

/// Whether `path` registers a job (`/v1/jobs` or `/v1/job/{id}`).
pub fn is_job_register(method: &http::Method, path: &str) -> bool {
    if *method != http::Method::PUT && *method != http::Method::POST {
        return false;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(segments.as_slice(), ["v1", "jobs"] | ["v1", "job", _])
}

/// The job's `Region` and whether it has a `Multiregion` block, from a
/// register body; `None` when the body is not a register request (the
/// handler will say why).
pub fn job_region_of(body: &[u8]) -> Option<(String, bool)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let job = v.get("Job")?;
    let region = job
        .get("Region")
        .and_then(|r| r.as_str())
        .unwrap_or_default()
        .to_string();
    let multi = job
        .get("Multiregion")
        .is_some_and(|m| m.get("Regions").and_then(|r| r.as_array()).is_some());
    Some((region, multi))
}

/// An HTTP request from its wire form, marked with [`FORWARDED_HEADER`]
/// (value `by`). `Err` names what is malformed.
pub fn proto_to_request(req: HttpRequest, by: &str) -> Result<http::Request<Bytes>, String> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|e| format!("bad method {:?}: {e}", req.method))?;
    let uri: http::Uri = req
        .path_and_query
        .parse()
        .map_err(|e| format!("bad path {:?}: {e}", req.path_and_query))?;
    if uri.scheme().is_some() || !req.path_and_query.starts_with('/') {
        return Err(format!(
            "bad path {:?}: expected an absolute path",
            req.path_and_query
        ));
    }
    let mut headers = headers_from_proto(req.headers)?;
    let by = HeaderValue::from_str(by).unwrap_or(HeaderValue::from_static("1"));
    headers.insert(HeaderName::from_static(FORWARDED_HEADER), by);
    let mut out = http::Request::new(Bytes::from(req.body));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    Ok(out)
}

/// A response as a stream of [`HttpChunk`]s: its head, then its body in
/// chunks of at most [`MAX_CHUNK`] bytes as the body produces them.
pub fn response_to_chunks<B>(resp: http::Response<B>) -> ChunkStream
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let (parts, body) = resp.into_parts();
    let mut head = HttpHead {
        status: u32::from(parts.status.as_u16()),
        headers: headers_to_proto(&parts.headers),
        body: Vec::new(),
    };
    // A small body known in full travels inside the head: one message.
    let whole = hyper::body::Body::size_hint(&body)
        .exact()
        .is_some_and(|n| n <= MAX_CHUNK as u64);
    if whole {
        return Box::pin(futures::stream::once(async move {
            let data = body
                .collect()
                .await
                .map_err(|e| Status::internal(format!("response body: {e}")))?
                .to_bytes();
            // No copy when the body owns its buffer alone (the usual case).
            head.body = Vec::from(data);
            Ok(HttpChunk {
                part: Some(Part::Head(head)),
            })
        }));
    }
    let head = HttpChunk {
        part: Some(Part::Head(head)),
    };
    let frames = futures::stream::unfold(Some(body), |state| async move {
        let mut body = state?;
        loop {
            match body.frame().await {
                None => return None,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        return Some((Ok(data), Some(body)));
                    }
                    _ => continue,
                },
                Some(Err(e)) => {
                    return Some((Err(Status::internal(format!("response body: {e}"))), None))
                }
            }
        }
    })
    .flat_map(|item: Result<Bytes, Status>| {
        let chunks: Vec<Result<HttpChunk, Status>> = match item {
            Err(e) => vec![Err(e)],
            Ok(data) => {
                let mut out = Vec::with_capacity(data.len() / MAX_CHUNK + 1);
                let mut rest = data;
                while !rest.is_empty() {
                    let piece = rest.split_to(rest.len().min(MAX_CHUNK));
                    out.push(Ok(HttpChunk {
                        part: Some(Part::Data(piece.to_vec())),
                    }));
                }
                out
            }
        };
        futures::stream::iter(chunks)
    });
    Box::pin(futures::stream::once(async move { Ok(head) }).chain(frames))
}

/// The body of a forwarded response.
pub enum ForwardedBody {
    /// The whole body, which came inside the response head (a small
    /// answer known in full: one message, stream already ended).
    Whole(Bytes),
    /// The body as it arrives (blocking queries, logs, snapshots, large
    /// answers).
    Stream(BodyStream),
}

/// A forwarded response: status and headers, and the body (whole, or still
/// streaming).
pub struct ForwardedResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers (hop-by-hop headers removed).
    pub headers: HeaderMap,
    /// The body.
    pub body: ForwardedBody,
}

impl std::fmt::Debug for ForwardedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardedResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl ForwardedResponse {
    /// Read the whole body (for fan-out and federated views).
    pub async fn collect(self) -> Result<(StatusCode, HeaderMap, Bytes), Status> {
        let body = match self.body {
            ForwardedBody::Whole(b) => b,
            ForwardedBody::Stream(mut body) => {
                let mut buf = Vec::new();
                while let Some(chunk) = body.next().await {
                    buf.extend_from_slice(&chunk?);
                }
                Bytes::from(buf)
            }
        };
        Ok((self.status, self.headers, body))
    }

    /// As an HTTP response to hand on: a whole body goes out in one piece
    /// with its length (one write, no chunked framing), a streamed one as
    /// it arrives.
    pub fn into_http(self) -> http::Response<axum::body::Body> {
        let body = match self.body {
            ForwardedBody::Whole(b) => axum::body::Body::from(b),
            ForwardedBody::Stream(s) => axum::body::Body::from_stream(s),
        };
        let mut out = http::Response::new(body);
        *out.status_mut() = self.status;
        *out.headers_mut() = self.headers;
        out
    }
}

/// Read the head of a forwarded response and hand back the body as a
/// stream. `Err` when the stream ends or fails before its head.
pub async fn read_response(
    mut stream: tonic::Streaming<HttpChunk>,
) -> Result<ForwardedResponse, Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("forwarded response ended before its head"))?;
    let Some(Part::Head(head)) = first.part else {
        return Err(Status::internal(
            "forwarded response did not start with its head",
        ));
    };
    let status = u16::try_from(head.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| Status::internal(format!("bad forwarded status {}", head.status)))?;
    let headers = headers_from_proto(head.headers).map_err(Status::internal)?;
    if head.body.is_empty() {
        // The body streams (or is empty): hand on what comes.
        return Ok(ForwardedResponse {
            status,
            headers,
            body: ForwardedBody::Stream(Box::pin(data_of(stream))),
        });
    }
    // A body inside the head is the whole body ([`response_to_chunks`]):
    // the stream ends right behind it (its trailers normally arrive in the
    // same read). Should more follow, it streams on behind the first part.
    let first = Bytes::from(head.body);
    let body = match stream.message().await {
        Ok(None) => ForwardedBody::Whole(first),
        Ok(Some(next)) => {
            let next = data_of(futures::stream::iter([Ok(next)]));
            ForwardedBody::Stream(Box::pin(
                futures::stream::iter([Ok(first)])
                    .chain(next)
                    .chain(data_of(stream)),
            ))
        }
        Err(e) => ForwardedBody::Stream(Box::pin(futures::stream::iter([Ok(first), Err(e)]))),
    };
    Ok(ForwardedResponse {
        status,
        headers,
        body,
    })
}

/// The body data of a stream of [`HttpChunk`]s (after its head).
fn data_of<S>(stream: S) -> impl Stream<Item = Result<Bytes, Status>> + Send
where
    S: Stream<Item = Result<HttpChunk, Status>> + Send,
{
    stream.filter_map(|msg| async move {
        match msg {
            Ok(HttpChunk {
                part: Some(Part::Data(d)),
            }) => Some(Ok(Bytes::from(d))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    })
}

/// Errors making a channel.
#[derive(Debug, thiserror::Error)]
#[error("peer {addr}: {source}")]
pub struct ChannelError {
    /// The peer address.
    pub addr: String,
    /// What tonic reported.
    #[source]
    pub source: tonic::transport::Error,
}

/// mTLS channels to peers, `per_peer` lazily connected channels per
/// (address, expected certificate name), used in turn. Cheap to clone.
#[derive(Clone)]
pub struct ChannelPool {
    tls: Arc<CertBundle>,
    per_peer: usize,
    connect_timeout: Duration,
    /// address -> expected certificate name -> channels (two levels, so a
    /// lookup needs no owned key).
    channels: Arc<Mutex<HashMap<String, SlotsByName>>>,
}

/// The channels to one address, by the certificate name they expect.
type SlotsByName = HashMap<String, Arc<Slot>>;

struct Slot {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl std::fmt::Debug for ChannelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPool")
            .field("per_peer", &self.per_peer)
            .finish_non_exhaustive()
    }
}

impl ChannelPool {
    /// A pool presenting `tls`'s certificate, with `per_peer` connections
    /// to each peer (at least one), each dial giving up after
    /// `connect_timeout`.
    pub fn new(tls: Arc<CertBundle>, per_peer: usize, connect_timeout: Duration) -> Self {
        Self {
            tls,
            per_peer: per_peer.max(1),
            connect_timeout,
            channels: Arc::default(),
        }
    }

    /// A channel to `addr` whose certificate must name `server_name`
    /// (`server.eu.atoll`, `gateway.atoll`).
    pub fn channel(&self, addr: &str, server_name: &str) -> Result<Channel, ChannelError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = map.get(addr).and_then(|names| names.get(server_name)) {
            let i = slot.next.fetch_add(1, Ordering::Relaxed) % slot.channels.len();
            return Ok(slot.channels[i].clone());
        }
        let err = |source| ChannelError {
            addr: addr.to_string(),
            source,
        };
        let mut channels = Vec::with_capacity(self.per_peer);
        for _ in 0..self.per_peer {
            let endpoint = Endpoint::from_shared(format!("https://{addr}"))
                .map_err(err)?
                .tls_config(self.tls.client_tls_config(server_name))
                .map_err(err)?
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                // A PING every second, the connection dropped after 2 s
                // without an answer: requests in flight to a server that
                // was cut off fail within ~3 s (and an idempotent one is
                // retried on another server) instead of hanging until their
                // deadline, and a healed link gets a fresh connection.
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true);
            channels.push(endpoint.connect_lazy());
        }
        let first = channels[0].clone();
        map.entry(addr.to_string()).or_default().insert(
            server_name.to_string(),
            Arc::new(Slot {
                channels,
                next: AtomicUsize::new(1),
            }),
        );
        Ok(first)
    }

    /// Forget the channels to `addr` (a peer that went away), so a new one
    /// at the same address starts with fresh connections.
    pub fn forget(&self, addr: &str) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_marks_forwarded_and_drops_hop_headers() {
        let req = http::Request::builder()
            .method("PUT")
            .uri("/v1/jobs?region=eu")
            .header("content-type", "application/json")
            .header("connection", "keep-alive")
            .header("content-length", "2")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        let wire = request_to_proto(&parts, Bytes::from_static(b"{}"));
        assert_eq!(wire.path_and_query, "/v1/jobs?region=eu");
        assert_eq!(wire.headers.len(), 1);
        let back = proto_to_request(wire, "gateway").expect("back");
        assert_eq!(back.method(), http::Method::PUT);
        assert_eq!(back.uri().query(), Some("region=eu"));
        assert_eq!(
            back.headers()
                .get(FORWARDED_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("gateway")
        );
        assert_eq!(back.body().as_ref(), b"{}");
    }

    #[test]
    fn job_registers_are_recognised() {
        assert!(is_job_register(&http::Method::PUT, "/v1/jobs"));
        assert!(is_job_register(&http::Method::POST, "/v1/job/web"));
        assert!(!is_job_register(&http::Method::GET, "/v1/jobs"));
        assert!(!is_job_register(&http::Method::PUT, "/v1/job/web/plan"));
    }

    #[test]
    fn job_region_and_multiregion_from_a_body() {
        let body = br#"{"Job":{"ID":"a","Region":"us","Multiregion":{"Regions":[{"Name":"us"}]}}}"#;
        assert_eq!(job_region_of(body), Some(("us".to_string(), true)));
        let body = br#"{"Job":{"ID":"a","Multiregion":null}}"#;
        assert_eq!(job_region_of(body), Some((String::new(), false)));
        assert_eq!(job_region_of(b"not json"), None);
    }

    #[test]
    fn absolute_urls_are_refused() {
        let wire = HttpRequest {
            method: "GET".into(),
            path_and_query: "http://elsewhere/v1/jobs".into(),
            headers: vec![],
            body: vec![],
        };
        assert!(proto_to_request(wire, "x").is_err());
    }

    #[tokio::test]
    async fn small_known_bodies_travel_inside_the_head() {
        let body = http_body_util::Full::new(Bytes::from_static(b"hello"));
        let resp = http::Response::builder()
            .status(200)
            .body(body)
            .expect("response");
        let chunks: Vec<HttpChunk> = response_to_chunks(resp)
            .map(|c| c.expect("chunk"))
            .collect()
            .await;
        assert_eq!(chunks.len(), 1);
        match &chunks[0].part {
            Some(Part::Head(h)) => assert_eq!(h.body, b"hello"),
            other => panic!("not a head: {other:?}"),
        }
    }

    #[tokio::test]
    async fn response_chunks_start_with_the_head_and_split_large_bodies() {
        let body = http_body_util::Full::new(Bytes::from(vec![7u8; MAX_CHUNK + 10]));
        let resp = http::Response::builder()
            .status(201)
            .header("x-nomad-index", "5")
            .body(body)
            .expect("response");
        let chunks: Vec<HttpChunk> = response_to_chunks(resp)
            .map(|c| c.expect("chunk"))
            .collect()
            .await;
        assert_eq!(chunks.len(), 3);
        match &chunks[0].part {
            Some(Part::Head(h)) => {
                assert_eq!(h.status, 201);
                assert_eq!(h.headers.len(), 1);
            }
            other => panic!("first chunk is not the head: {other:?}"),
        }
        let sizes: Vec<usize> = chunks[1..]
            .iter()
            .map(|c| match &c.part {
                Some(Part::Data(d)) => d.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![MAX_CHUNK, 10]);
    }
}
