//! The server's APIs. `http` is the Nomad-compatible `/v1` API; the gRPC
//! services live beside Raft (`raft::network`) and the service layer
//! (`service::RegionGrpc`). Both call [`crate::service::Service`].

use ::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::service::ServiceError;

pub mod client_proxy;
mod deployments;
pub mod forward;
pub mod http;
pub mod jobs_children;
pub mod operator;
pub mod parse;
pub mod query;

/// An API error: a status and a plain-text message, as Nomad answers.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Plain-text message.
    pub message: String,
}

impl ApiError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 500 with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match &e {
            ServiceError::NoLeader => StatusCode::INTERNAL_SERVER_ERROR,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
}
