//! The server's error type and how each error becomes an HTTP answer: a JSON body
//! `{"error": {"code", "reason", "message"}}`. Errors from the apiserver keep their status
//! (401, 403, 404, 409, 422…), so RBAC's answer reaches the caller unchanged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything a request can fail on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header, or one that cannot be a token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The request is malformed (bad name, bad filter, bad JSON).
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not do this (decided by RBAC, through the caller's own token).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The apiserver refused the request; its status and message are passed on.
    #[error("{message}")]
    Kube {
        code: u16,
        reason: String,
        message: String,
    },
    /// The apiserver could not be reached or answered something unexpected.
    #[error("kubernetes API unavailable: {0}")]
    KubeUnavailable(String),
    #[error("archive: {0}")]
    Archive(#[from] crane_archive::ArchiveError),
    /// The run archive is not configured on this server.
    #[error("this server has no run archive (--archive-url)")]
    NoArchive,
    #[error("engine: {0}")]
    Engine(#[from] crane_engine::EngineError),
    /// A limit of this server was reached (e.g. concurrent event streams).
    #[error("{0}")]
    Busy(String),
    #[error("{status}: {message}")]
    Rejected { status: StatusCode, message: String },
}

impl ApiError {
    /// Stable, bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::BadRequest(_) | Self::Rejected { .. } => "bad_request",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Kube { .. } => "kube",
            Self::KubeUnavailable(_) => "kube_unavailable",
            Self::Archive(e) if !e.is_transient() => "archive_request",
            Self::Archive(_) => "archive",
            Self::NoArchive => "no_archive",
            Self::Engine(_) => "engine",
            Self::Busy(_) => "busy",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::NoArchive => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Kube { code, .. } => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Self::KubeUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::Archive(crane_archive::ArchiveError::InvalidQuery(_)) => StatusCode::BAD_REQUEST,
            Self::Archive(_) | Self::Engine(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Rejected { status, .. } => *status,
        }
    }

    /// The apiserver's answer, passed on.
    pub fn kube(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Self::Kube {
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => Self::KubeUnavailable(other.to_string()),
        }
    }

    /// Whether this is the apiserver's 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Kube { code: 404, .. })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let reason = match &self {
            Self::Kube { reason, .. } if !reason.is_empty() => reason.clone(),
            _ => status
                .canonical_reason()
                .unwrap_or("Error")
                .replace(' ', ""),
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, label = self.metric_label(), "request failed");
        }
        let body = json!({"error": {"code": status.as_u16(), "reason": reason, "message": self.to_string()}});
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"crane\""),
            );
        }
        response
    }
}
