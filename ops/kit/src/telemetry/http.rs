//! HTTP request metrics as a tower layer for axum routers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use prometheus::{HistogramVec, IntCounterVec};
use tower::{Layer, Service};

use super::{Metrics, TelemetryError};

/// The route label of requests no route matched (404s of unknown paths):
/// one value, so scanners cannot blow up the label set.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Counts HTTP requests (`atoll_http_requests_total{route,method,status}`)
/// and times them until the response head
/// (`atoll_http_request_duration_seconds{route,method}`).
///
/// `route` is the route template axum matched (`/v1/job/{id}`), so apply
/// the layer with `Router::layer` (which runs it after routing, where
/// [`MatchedPath`] is known), not around the router as a whole.
#[derive(Clone)]
pub struct HttpMetricsLayer {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl std::fmt::Debug for HttpMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetricsLayer").finish_non_exhaustive()
    }
}

impl HttpMetricsLayer {
    /// Registers the two families on `metrics`.
    pub fn new(metrics: &Metrics) -> Result<Self, TelemetryError> {
        Ok(Self {
            requests: metrics.counter_vec(
                "http_requests_total",
                "HTTP requests by matched route, method and status code",
                &["route", "method", "status"],
            )?,
            duration: metrics.latency_histogram(
                "http_request_duration_seconds",
                "HTTP request latency until the response head, by matched route and method",
                &["route", "method"],
            )?,
        })
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetricsService {
            inner,
            metrics: self.clone(),
        }
    }
}

/// The service [`HttpMetricsLayer`] wraps around a route.
#[derive(Clone, Debug)]
pub struct HttpMetricsService<S> {
    inner: S,
    metrics: HttpMetricsLayer,
}

/// A bounded method label: the standard methods, else `other`.
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        _ => "other",
    }
}

impl<S, B, RB> Service<http::Request<B>> for HttpMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // A clone of the matched route is an `Arc`, not a new string.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        let start = Instant::now();
        let fut = self.inner.call(req);
        let m = self.metrics.clone();
        Box::pin(async move {
            let result = fut.await;
            let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            let code = result.as_ref().ok().map(|resp| resp.status());
            let status = code.as_ref().map_or("error", http::StatusCode::as_str);
            m.duration
                .with_label_values(&[route, method])
                .observe(start.elapsed().as_secs_f64());
            m.requests.with_label_values(&[route, method, status]).inc();
            result
        })
    }
}
