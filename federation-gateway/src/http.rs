//! The gateway's HTTP front: the Nomad-compatible `/v1` API, forwarded.
//!
//! Every request goes to one region: `?region=R`, else (for a job
//! register) the job's `Region`, else the gateway's default region. A few
//! routes are the gateway's own: `/v1/regions` (from gossip), the
//! federated job view `GET /v1/job/{id}/regions`, global deregister
//! `DELETE /v1/job/{id}?global=true`, multi-region job registers, and the
//! gateway's metrics (`/metrics`, `/v1/metrics` without `?region`).
//! Everything else, whatever the route, is forwarded as it is, its
//! response streamed back (blocking queries, logs, snapshots).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{HeaderValue, Method, StatusCode};
use ops_kit::forward::{is_job_register, job_region_of, request_to_proto, ForwardedResponse};

use crate::multiregion::Rollouts;
use crate::routes::{RouteError, Routes};

/// What the handlers share.
#[derive(Clone)]
pub struct FrontState {
    /// Forwarding.
    pub routes: Routes,
    /// The default region.
    pub region: String,
    /// Multi-region rollouts in progress on this gateway.
    pub rollouts: Rollouts,
    /// Metrics.
    pub metrics: crate::metrics::Metrics,
    /// Largest accepted body.
    pub max_body: usize,
    /// Multi-region rollouts: how often a region's health is checked.
    pub rollout_poll: Duration,
    /// Multi-region rollouts: a region not healthy within this long failed.
    pub rollout_deadline: Duration,
}

/// The front router.
pub fn router(state: FrontState) -> Result<Router, ops_kit::telemetry::TelemetryError> {
    let layer = state.metrics.telemetry.http_layer()?;
    Ok(Router::new()
        .route("/v1/regions", get(regions))
        .route("/v1/job/{id}/regions", get(job_regions))
        .route("/metrics", get(metrics))
        .fallback(forward_any)
        .layer(layer)
        .with_state(state))
}

/// A plain-text error response, as Nomad answers.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

impl From<RouteError> for Response {
    fn from(e: RouteError) -> Self {
        let status = match e {
            RouteError::NoPath(_) => StatusCode::SERVICE_UNAVAILABLE,
            RouteError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        };
        error(status, e.to_string())
    }
}

/// A forwarded response: a whole body in one piece, a streamed one passed
/// on as it arrives.
pub fn streamed(resp: ForwardedResponse) -> Response {
    resp.into_http()
}

/// The query's pairs.
pub fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(p)| p)
        .unwrap_or_default()
}

/// The value of `key` in the query.
pub fn query_value(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// A boolean query flag (`?global`, `?global=true`, case-insensitive).
pub fn query_flag(pairs: &[(String, String)], key: &str) -> bool {
    query_value(pairs, key)
        .is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1")
}

/// How long a blocking query may wait (`?index=` with `?wait=`), zero
/// otherwise.
pub fn blocking_wait(pairs: &[(String, String)]) -> Duration {
    let blocking = query_value(pairs, "index")
        .and_then(|i| i.parse::<u64>().ok())
        .is_some_and(|i| i > 0);
    if !blocking {
        return Duration::ZERO;
    }
    query_value(pairs, "wait")
        .and_then(|w| parse_go_duration(&w))
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(600))
}

/// A Go duration (`300ms`, `5s`, `1m30s`; a bare number is seconds).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * scale;
    }
    Some(Duration::from_secs_f64(total))
}

async fn regions(State(s): State<FrontState>) -> Response {
    let mut regions = s.routes.known_regions();
    if regions.is_empty() {
        regions.push(s.region.clone());
    }
    axum::Json(regions).into_response()
}

/// `GET /metrics`: the gateway's own metrics, Prometheus text.
async fn metrics(State(s): State<FrontState>) -> Response {
    ops_kit::telemetry::prometheus_response(s.metrics.registry())
}

async fn job_regions(
    State(s): State<FrontState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let pairs = query_pairs(req.uri());
    crate::multiregion::federated_view(&s, &id, &pairs).await
}

/// Everything else: forward to the request's region (multi-region job
/// registers and global deregisters fan out).
async fn forward_any(State(s): State<FrontState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let pairs = query_pairs(&parts.uri);
    let path = parts.uri.path().to_string();
    if parts.method == Method::GET
        && path == "/v1/metrics"
        && query_value(&pairs, "region").is_none()
    {
        // Nomad's JSON by default, `?format=prometheus` for the text.
        return ops_kit::telemetry::metrics_response(s.metrics.registry(), &pairs);
    }
    let body: Bytes = match axum::body::to_bytes(body, s.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body larger than {} bytes", s.max_body),
            )
        }
    };
    let mut region = query_value(&pairs, "region").filter(|r| !r.is_empty());
    if is_job_register(&parts.method, &path) {
        match job_region_of(&body) {
            Some((_, true)) => return crate::multiregion::register(&s, &parts, &pairs, body).await,
            Some((job_region, false)) if region.is_none() && !job_region.is_empty() => {
                region = Some(job_region)
            }
            _ => {}
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if parts.method == Method::DELETE
        && matches!(segments.as_slice(), ["v1", "job", _])
        && query_flag(&pairs, "global")
    {
        let id = segments[2].to_string();
        return crate::multiregion::deregister_global(&s, &id, &pairs).await;
    }
    let region = region.unwrap_or_else(|| s.region.clone());
    let wait = blocking_wait(&pairs);
    let wire = request_to_proto(&parts, body);
    match s.routes.forward(&region, wire, wait).await {
        Ok(resp) => {
            let mut out = streamed(resp);
            if let Ok(v) = HeaderValue::from_str(&region) {
                out.headers_mut().insert("x-atoll-region", v);
            }
            out
        }
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_go_duration("5x"), None);
    }

    #[test]
    fn blocking_waits_only_with_an_index() {
        let q = |s: &str| query_pairs(&s.parse().expect("uri"));
        assert_eq!(blocking_wait(&q("/v1/jobs?wait=5s")), Duration::ZERO);
        assert_eq!(
            blocking_wait(&q("/v1/jobs?index=3&wait=5s")),
            Duration::from_secs(5)
        );
        assert_eq!(
            blocking_wait(&q("/v1/jobs?index=3")),
            Duration::from_secs(300)
        );
        assert!(query_flag(&q("/v1/job/a?global=TRUE"), "global"));
        assert!(!query_flag(&q("/v1/job/a?global=false"), "global"));
    }
}
