//! `GatewayService`: servers (and other gateways) hand the gateway a request
//! for another region; it runs through the same HTTP front as a request
//! made to the gateway over HTTP, and the answer streams back.

use axum::body::Body;
use ops_kit::forward::{proto_to_request, response_to_chunks, ChunkStream};
use proto::rpc::gateway_service_server::GatewayService;
use proto::rpc::HttpRequest;
use tower::ServiceExt;

/// The gRPC face of the gateway's HTTP front.
pub struct GatewayGrpc {
    front: axum::Router,
    name: String,
}

impl GatewayGrpc {
    /// Answer with `front`; `name` marks requests as forwarded by us.
    pub fn new(front: axum::Router, name: &str) -> Self {
        Self {
            front,
            name: name.to_string(),
        }
    }
}

#[tonic::async_trait]
impl GatewayService for GatewayGrpc {
    type HttpStream = ChunkStream;

    async fn http(
        &self,
        req: tonic::Request<HttpRequest>,
    ) -> Result<tonic::Response<ChunkStream>, tonic::Status> {
        let req = proto_to_request(req.into_inner(), &self.name)
            .map_err(|e| tonic::Status::invalid_argument(format!("forwarded request: {e}")))?
            .map(Body::from);
        let resp = match self.front.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        Ok(tonic::Response::new(response_to_chunks(resp)))
    }
}
