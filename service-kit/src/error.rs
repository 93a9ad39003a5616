//! The outcomes every Agora RPC can end in, and how each reaches the client.
//!
//! Services return [`ApiError`]; the conversion to [`tonic::Status`] gives every
//! error a `google.rpc.ErrorInfo` reason (the reason decides the status code), logs
//! internal causes with their full chain and sends the client only a short message.

use std::time::Duration;

use agora_proto::errors::ErrorReason;
use tonic::Status;
use tonic_types::{ErrorDetails, FieldViolation};

/// When a client may try again after UNAVAILABLE, as `google.rpc.RetryInfo`
/// says: long enough for a restarting database or service to be back.
pub const RETRY_UNAVAILABLE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad fields, each named by its path with what is wrong; sent as
    /// `google.rpc.BadRequest` with the reason `INVALID_FIELDS`.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// A refusal the caller can act on (not found, already exists, not allowed,
    /// stale etag…); the reason decides the status code.
    #[error("{message}")]
    Refused {
        reason: ErrorReason,
        message: &'static str,
    },
    /// Too many attempts; the caller may try again after `retry_after`, which
    /// travels as `google.rpc.RetryInfo`.
    #[error("{message}")]
    Throttled {
        reason: ErrorReason,
        message: String,
        retry_after: Duration,
    },
    /// A per-person quota used up (see `crate::quota`): QUOTA_EXCEEDED, with
    /// `quota` as `ErrorInfo.metadata["quota"]` and `retry_after` as
    /// `google.rpc.RetryInfo`.
    #[error("quota {quota} exceeded")]
    QuotaExceeded {
        quota: &'static str,
        retry_after: Duration,
    },
    /// A dependency (the database, another service) cannot be reached right now.
    #[error("{what} unavailable")]
    Unavailable {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// One bad field.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn refused(reason: ErrorReason, message: &'static str) -> Self {
        Self::Refused { reason, message }
    }

    /// A genuine token whose user has been deleted since it was issued: what a
    /// write by it meets (a foreign key to the user) answers.
    pub fn account_deleted() -> Self {
        Self::refused(ErrorReason::AccountDeleted, "your account no longer exists")
    }

    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }
}

/// Both values, or every field violation of either, so a caller learns of all bad
/// fields at once. Any other error wins over field violations.
pub fn both<A, B>(a: Result<A, ApiError>, b: Result<B, ApiError>) -> Result<(A, B), ApiError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => {
            let mut violations = Vec::new();
            for error in [a.err(), b.err()].into_iter().flatten() {
                match error {
                    ApiError::InvalidArgument(more) => violations.extend(more),
                    other => return Err(other),
                }
            }
            Err(ApiError::InvalidArgument(violations))
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|violation| format!("{}: {}", violation.field, violation.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_outage(&error) {
            crate::metrics::record_database_outage(&error);
            return Self::Unavailable {
                what: "database",
                source: error.into(),
            };
        }
        Self::Internal(error.into())
    }
}

/// Whether the database is unreachable, shutting down or restarting, as opposed
/// to refusing this statement.
fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // 08xxx connection exceptions; 57P01 admin_shutdown, 57P02
            // crash_shutdown, 57P03 cannot_connect_now; 57014 a statement
            // cancelled (by statement_timeout) and 55P03 a lock not granted (by
            // lock_timeout): a database too busy to answer in time.
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "57014" | "55P03")
        }),
        _ => false,
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(violations) => {
                let message = describe(&violations);
                ErrorReason::InvalidFields.status(
                    message,
                    &[],
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ApiError::Refused { reason, message } => {
                reason.status(message, &[], ErrorDetails::new())
            }
            ApiError::Throttled {
                reason,
                message,
                retry_after,
            } => reason.status(
                message,
                &[],
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ApiError::QuotaExceeded { quota, retry_after } => ErrorReason::QuotaExceeded.status(
                format!(
                    "quota {quota} exceeded, try again in {} s",
                    retry_after.as_secs_f64().ceil()
                ),
                &[("quota", quota)],
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ApiError::Unavailable { what, source } => {
                tracing::warn!(error = %error_chain(&*source), what, "dependency unavailable");
                ErrorReason::DependencyUnavailable.status(
                    format!("{what} unavailable, try again"),
                    &[("dependency", what)],
                    ErrorDetails::with_retry_info(Some(RETRY_UNAVAILABLE_AFTER)),
                )
            }
            ApiError::Internal(source) => {
                tracing::error!(error = %error_chain(&*source), "internal error");
                ErrorReason::Internal.status("internal error", &[], ErrorDetails::new())
            }
        }
    }
}

/// `error: cause: cause`, the whole chain on one line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// For repository code: turns the violation of a named constraint into an outcome,
/// so races are settled by the database instead of a check-first query.
pub trait ConstraintExt<T> {
    /// `outcome` names the outcome for a violated constraint, or `None` for an
    /// unexpected one, which stays an internal error.
    fn on_constraint(self, outcome: impl FnOnce(&str) -> Option<ApiError>) -> Result<T, ApiError>;
}

impl<T> ConstraintExt<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, outcome: impl FnOnce(&str) -> Option<ApiError>) -> Result<T, ApiError> {
        self.map_err(|error| {
            let constraint = error.as_database_error().and_then(|e| e.constraint());
            constraint.and_then(outcome).unwrap_or_else(|| error.into())
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn an_unreachable_dependency_is_unavailable_named_and_retried_later() {
        let error = ApiError::from(sqlx::Error::PoolTimedOut);
        let status = Status::from(error);

        assert_eq!(status.code(), Code::Unavailable);
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "DEPENDENCY_UNAVAILABLE");
        assert_eq!(info.metadata["dependency"], "database");
        let retry = status.get_details_retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(RETRY_UNAVAILABLE_AFTER));
    }

    #[test]
    fn a_bug_is_internal_and_says_nothing_of_its_cause() {
        let status = Status::from(ApiError::from(sqlx::Error::RowNotFound));

        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "INTERNAL");
    }
}
