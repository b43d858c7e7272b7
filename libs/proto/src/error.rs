//! The one mapping from Slipway's API errors to `tonic::Status` with `google.rpc` details.
//!
//! Each service keeps its own `thiserror` enum for its domain and converts it into
//! [`ApiError`]; only this module decides codes, messages and details, so every service
//! answers the same situation the same way (see `API-STYLE.md`, "Errors").

use std::collections::HashMap;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt as _};

/// `ErrorInfo.domain` of every error Slipway returns.
pub const ERROR_DOMAIN: &str = "slipway.dev";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `service.ports[0].internal_port`.
    pub field: String,
    /// What is wrong, in a lowercase sentence a person can act on.
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// One unmet precondition (stale etag, wrong state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreconditionViolation {
    /// A stable UPPER_SNAKE kind, e.g. `ETAG_MISMATCH`.
    pub kind: String,
    /// What it is about, e.g. `projects/0190…`.
    pub subject: String,
    pub description: String,
}

/// Why a caller could not be authenticated; the `ErrorInfo.reason` SDKs switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    TokenMissing,
    TokenInvalid,
    TokenExpired,
}

impl AuthFailure {
    fn reason(self) -> &'static str {
        match self {
            Self::TokenMissing => "TOKEN_MISSING",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::TokenExpired => "TOKEN_EXPIRED",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::TokenMissing => "missing credentials: send `authorization: Bearer <token>`",
            Self::TokenInvalid => "the credentials are not valid",
            Self::TokenExpired => "the credentials have expired",
        }
    }
}

/// Everything a Slipway RPC can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{}", .0.message())]
    Unauthenticated(AuthFailure),
    #[error("permission denied: {permission}")]
    PermissionDenied { permission: String },
    #[error("{resource_type} not found")]
    NotFound {
        resource_type: String,
        resource_name: String,
    },
    #[error("{resource_type} already exists")]
    AlreadyExists {
        resource_type: String,
        resource_name: String,
    },
    #[error("{message}")]
    FailedPrecondition {
        message: String,
        violations: Vec<PreconditionViolation>,
    },
    /// A feature the code cannot do yet; the sentence says what is missing.
    #[error("{0}")]
    Unimplemented(String),
    /// A limit of the installation is reached (a `google.rpc.QuotaFailure` names it):
    /// `subject` is what the limit counts against, the message says what to do.
    #[error("{message}")]
    ResourceExhausted { subject: String, message: String },
    /// The call did not finish within the server's time limit.
    #[error("the call took longer than the server allows")]
    DeadlineExceeded,
    /// A dependency (database, NATS, another service) is not answering; retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure. The source is logged, never sent to the caller.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A single invalid field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(resource_type: impl Into<String>, resource_name: impl Into<String>) -> Self {
        Self::NotFound {
            resource_type: resource_type.into(),
            resource_name: resource_name.into(),
        }
    }

    pub fn already_exists(
        resource_type: impl Into<String>,
        resource_name: impl Into<String>,
    ) -> Self {
        Self::AlreadyExists {
            resource_type: resource_type.into(),
            resource_name: resource_name.into(),
        }
    }

    /// The answer to an update or delete that carried an etag older than the resource's.
    pub fn stale_etag(subject: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            message: "the resource changed since it was read: get it again and retry".to_owned(),
            violations: vec![PreconditionViolation {
                kind: "ETAG_MISMATCH".to_owned(),
                subject: subject.into(),
                description: "the etag sent does not match the current one".to_owned(),
            }],
        }
    }

    pub fn internal(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(source))
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        let message = error.to_string();
        let mut details = ErrorDetails::new();
        match error {
            ApiError::InvalidArgument(violations) => {
                for violation in violations {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                let message = details
                    .bad_request()
                    .and_then(|request| request.field_violations.first())
                    .map(|first| format!("invalid {}: {}", first.field, first.description))
                    .unwrap_or(message);
                return tonic::Status::with_error_details(code, message, details);
            }
            ApiError::Unauthenticated(failure) => {
                details.set_error_info(failure.reason(), ERROR_DOMAIN, HashMap::new());
            }
            ApiError::PermissionDenied { permission } => {
                details.set_error_info(
                    "PERMISSION_DENIED",
                    ERROR_DOMAIN,
                    HashMap::from([("permission".to_owned(), permission)]),
                );
            }
            ApiError::NotFound {
                resource_type,
                resource_name,
            } => {
                details.set_resource_info(resource_type, resource_name, "", "not found");
            }
            ApiError::AlreadyExists {
                resource_type,
                resource_name,
            } => {
                details.set_resource_info(resource_type, resource_name, "", "already exists");
            }
            ApiError::FailedPrecondition { violations, .. } => {
                for violation in violations {
                    details.add_precondition_failure_violation(
                        violation.kind,
                        violation.subject,
                        violation.description,
                    );
                }
            }
            ApiError::Unimplemented(_) => {
                details.set_error_info("NOT_IMPLEMENTED", ERROR_DOMAIN, HashMap::new());
            }
            ApiError::ResourceExhausted { subject, message } => {
                details.add_quota_failure_violation(subject, message);
                details.set_error_info("QUOTA_EXCEEDED", ERROR_DOMAIN, HashMap::new());
            }
            ApiError::DeadlineExceeded => {
                details.set_error_info("DEADLINE_EXCEEDED", ERROR_DOMAIN, HashMap::new());
            }
            ApiError::Unavailable(_) => {
                details.set_error_info("UNAVAILABLE", ERROR_DOMAIN, HashMap::new());
            }
            ApiError::Internal(source) => {
                tracing::error!(error = %source, "internal error answered to a caller");
            }
        }
        tonic::Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt as _;

    use super::*;

    #[test]
    fn invalid_argument_carries_one_violation_per_field() {
        let status: tonic::Status = ApiError::InvalidArgument(vec![
            FieldViolation::new("project.name", "must be a DNS label"),
            FieldViolation::new("page_size", "must not be negative"),
        ])
        .into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid project.name: must be a DNS label"
        );
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[1].field, "page_size");
    }

    #[test]
    fn resource_exhausted_names_the_quota() {
        let status: tonic::Status = ApiError::ResourceExhausted {
            subject: "organization:acme".into(),
            message: "too many live tails".into(),
        }
        .into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "too many live tails");
        let details = status.get_error_details();
        let violation = &details.quota_failure().unwrap().violations[0];
        assert_eq!(violation.subject, "organization:acme");
        assert_eq!(details.error_info().unwrap().reason, "QUOTA_EXCEEDED");
    }

    #[test]
    fn unauthenticated_names_a_stable_reason() {
        let status: tonic::Status = ApiError::Unauthenticated(AuthFailure::TokenExpired).into();
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "TOKEN_EXPIRED");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn permission_denied_names_the_permission() {
        let status: tonic::Status = ApiError::PermissionDenied {
            permission: "catalog.projects.create".to_owned(),
        }
        .into();
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "PERMISSION_DENIED");
        assert_eq!(info.metadata["permission"], "catalog.projects.create");
    }

    #[test]
    fn not_found_and_already_exists_carry_resource_info() {
        let status: tonic::Status = ApiError::not_found("project", "p1").into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "project not found");
        let info = status.get_error_details().resource_info().cloned().unwrap();
        assert_eq!(info.resource_name, "p1");

        let status: tonic::Status = ApiError::already_exists("project", "web").into();
        assert_eq!(status.code(), Code::AlreadyExists);
    }

    #[test]
    fn stale_etag_is_a_failed_precondition() {
        let status: tonic::Status = ApiError::stale_etag("projects/p1").into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        let failure = status
            .get_error_details()
            .precondition_failure()
            .cloned()
            .unwrap();
        assert_eq!(failure.violations[0].r#type, "ETAG_MISMATCH");
    }

    #[test]
    fn internal_errors_leak_nothing() {
        let source = std::io::Error::other("connection to 10.0.0.1:5432 refused: SELECT secret");
        let status: tonic::Status = ApiError::internal(source).into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
