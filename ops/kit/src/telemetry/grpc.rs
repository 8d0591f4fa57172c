//! gRPC request metrics as a tower layer for tonic servers.
//!
//! A gRPC call's status travels in the `grpc-status` trailer (or, for calls
//! that fail before any message, in the response head). The layer reads the
//! head, and otherwise wraps the response body to read the trailers when the
//! stream ends; a stream dropped before its trailers (the client went away)
//! counts as `Cancelled`. Durations run from the request to the end of the
//! response stream, so long-lived streams (allocation watches) show up with
//! their whole lifetime.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus::{HistogramVec, IntCounterVec};
use tower::{Layer, Service};

use super::{Metrics, TelemetryError};

/// Counts gRPC calls (`atoll_grpc_requests_total{service,method,status}`)
/// and times them (`atoll_grpc_request_duration_seconds{service,method}`).
/// `status` is the gRPC code's name (`OK`, `Unavailable`, ...).
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl std::fmt::Debug for GrpcMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetricsLayer").finish_non_exhaustive()
    }
}

impl GrpcMetricsLayer {
    /// Registers the two families on `metrics`.
    pub fn new(metrics: &Metrics) -> Result<Self, TelemetryError> {
        Ok(Self {
            requests: metrics.counter_vec(
                "grpc_requests_total",
                "gRPC calls served, by service, method and gRPC status",
                &["service", "method", "status"],
            )?,
            duration: metrics.latency_histogram(
                "grpc_request_duration_seconds",
                "gRPC call duration until the end of the response stream, by service and method",
                &["service", "method"],
            )?,
        })
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a tonic server's routes.
#[derive(Clone, Debug)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetricsLayer,
}

/// One call being measured; recorded exactly once.
struct Call {
    metrics: GrpcMetricsLayer,
    service: String,
    method: String,
    start: Instant,
}

impl Call {
    fn finish(self, status: &str) {
        self.metrics
            .duration
            .with_label_values(&[self.service.as_str(), self.method.as_str()])
            .observe(self.start.elapsed().as_secs_f64());
        self.metrics
            .requests
            .with_label_values(&[self.service.as_str(), self.method.as_str(), status])
            .inc();
    }
}

/// `/pkg.Service/Method` -> (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((s, m)) if !s.is_empty() && !m.is_empty() && !m.contains('/') => {
            (s.to_string(), m.to_string())
        }
        _ => ("unknown".to_string(), "unknown".to_string()),
    }
}

/// The name of a gRPC status code given as its decimal number.
fn status_name(code: &[u8]) -> String {
    let n = std::str::from_utf8(code)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    match n {
        Some(0) => "OK".to_string(),
        Some(n) if (1..=16).contains(&n) => format!("{:?}", tonic::Code::from_i32(n)),
        _ => "Unknown".to_string(),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .map(|v| status_name(v.as_bytes()))
}

impl<S, B, RB> Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Body,
{
    type Response = http::Response<GrpcMetricsBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(req.uri().path());
        let call = Call {
            metrics: self.metrics.clone(),
            service,
            method,
            start: Instant::now(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    let pending = match grpc_status(resp.headers()) {
                        // Trailers-only response: the call is over.
                        Some(status) => {
                            call.finish(&status);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(resp.map(|inner| GrpcMetricsBody {
                        inner: Box::pin(inner),
                        pending,
                    }))
                }
                Err(e) => {
                    call.finish("Internal");
                    Err(e)
                }
            }
        })
    }
}

/// A response body that records its call when the trailers pass by, when
/// it ends without them (`Unknown`), or when it is dropped early
/// (`Cancelled`).
pub struct GrpcMetricsBody<B> {
    inner: Pin<Box<B>>,
    pending: Option<Call>,
}

impl<B> std::fmt::Debug for GrpcMetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetricsBody").finish_non_exhaustive()
    }
}

impl<B> GrpcMetricsBody<B> {
    fn finish(&mut self, status: &str) {
        if let Some(call) = self.pending.take() {
            call.finish(status);
        }
    }
}

impl<B: Body> Body for GrpcMetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let status = grpc_status(trailers).unwrap_or_else(|| "Unknown".into());
                    this.finish(&status);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish("Internal"),
            Poll::Ready(None) => this.finish("Unknown"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for GrpcMetricsBody<B> {
    fn drop(&mut self) {
        self.finish("Cancelled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_codes() {
        assert_eq!(
            split_path("/atoll.RaftService/AppendEntries"),
            ("atoll.RaftService".into(), "AppendEntries".into())
        );
        assert_eq!(split_path("/"), ("unknown".into(), "unknown".into()));
        assert_eq!(split_path("/a/b/c"), ("unknown".into(), "unknown".into()));
        assert_eq!(status_name(b"0"), "OK");
        assert_eq!(status_name(b"14"), "Unavailable");
        assert_eq!(status_name(b"5"), "NotFound");
        assert_eq!(status_name(b"99"), "Unknown");
        assert_eq!(status_name(b"x"), "Unknown");
    }
}
