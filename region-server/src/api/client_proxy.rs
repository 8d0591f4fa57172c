//! `/v1/client/...` on servers: the request is passed to the HTTP API of the
//! client agent running the allocation (or the node named by `?node_id`),
//! and its answer streamed back, so `alloc logs -f` works through any server.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};

use super::http::ApiState;
use super::ApiError;

/// Find the node running `alloc_id` and pass the request to its agent.
pub async fn by_alloc(
    State(s): State<ApiState>,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Result<Response, ApiError> {
    let alloc_id = params
        .iter()
        .find(|(k, _)| k == "alloc" || k == "id")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| ApiError::bad_request("missing allocation id"))?;
    let t = s.service().store.snapshot();
    let alloc = t
        .allocs
        .get(&alloc_id)
        .ok_or_else(|| ApiError::not_found("Unknown allocation"))?;
    let node = t
        .nodes
        .get(&alloc.node_id)
        .ok_or_else(|| ApiError::not_found("Unknown node"))?;
    forward(&node.http_addr, req).await
}

/// `/v1/client/stats?node_id=`: pass to that node's agent.
pub async fn by_node(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let node_id = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("node_id=")))
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("Missing node_id"))?;
    let t = s.service().store.snapshot();
    let node = t
        .nodes
        .get(&node_id)
        .ok_or_else(|| ApiError::not_found("Unknown node"))?;
    forward(&node.http_addr, req).await
}

async fn forward(http_addr: &str, req: Request) -> Result<Response, ApiError> {
    if http_addr.is_empty() {
        return Err(ApiError::internal("the node has no HTTP address"));
    }
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let url = if http_addr.starts_with("http") {
        format!("{http_addr}{path_q}")
    } else {
        format!("http://{http_addr}{path_q}")
    };
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|e| ApiError::bad_request(format!("method: {e}")))?;
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let resp = reqwest::Client::new()
        .request(method, &url)
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| ApiError::internal(format!("client agent at {http_addr} unreachable: {e}")))?;
    let status =
        http::StatusCode::from_u16(resp.status().as_u16()).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let stream = resp.bytes_stream();
    Ok((
        status,
        [(http::header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response())
}
