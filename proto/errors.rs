//! Error reasons (`agora.errors.v1`, AIP-193): every Agora error carries a
//! `google.rpc.ErrorInfo` with [`DOMAIN`] and a reason from [`ErrorReason`], and
//! each reason has exactly one gRPC status code, decided here.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub mod v1 {
    // Proto comments wrap list items the way every language's docs read them.
    #![allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items)]
    tonic::include_proto!("agora.errors.v1");
}

pub use v1::ErrorReason;

/// The `ErrorInfo.domain` of every Agora error.
pub const DOMAIN: &str = "agora";

const PREFIX: &str = "ERROR_REASON_";

impl ErrorReason {
    /// The `ErrorInfo.reason`: the value's name without its prefix, such as
    /// `POST_NOT_FOUND`.
    pub fn reason(self) -> &'static str {
        let name = self.as_str_name();
        name.strip_prefix(PREFIX).unwrap_or(name)
    }

    /// The reason named by an `ErrorInfo.reason`.
    pub fn from_reason(reason: &str) -> Option<Self> {
        Self::from_str_name(&format!("{PREFIX}{reason}"))
    }

    /// The status code that goes with the reason.
    pub fn code(self) -> Code {
        use ErrorReason as R;
        match self {
            R::InvalidFields | R::RequestIdReused | R::MalformedRequest => Code::InvalidArgument,
            R::TokenMissing
            | R::TokenMalformed
            | R::TokenExpired
            | R::TokenNotYetValid
            | R::TokenKeyUnknown
            | R::TokenInvalid
            | R::InvalidCredentials
            | R::AccountDeleted
            | R::TokenRevoked
            | R::RefreshTokenInvalid
            | R::RefreshTokenExpired
            | R::RefreshTokenReused => Code::Unauthenticated,
            R::TokenKeysUnavailable | R::DependencyUnavailable | R::StreamInterrupted => {
                Code::Unavailable
            }
            R::EmailAlreadyRegistered | R::AlreadyLiked => Code::AlreadyExists,
            R::UserNotFound | R::PostNotFound | R::NotLiked => Code::NotFound,
            R::LoginThrottled
            | R::PasswordHashingBusy
            | R::RegistrationThrottled
            | R::QuotaExceeded
            | R::WatcherTooSlow => Code::ResourceExhausted,
            R::CursorExpired => Code::OutOfRange,
            R::NotPostOwner | R::NotAccountOwner => Code::PermissionDenied,
            R::EtagMismatch => Code::Aborted,
            R::DependencyTimeout => Code::DeadlineExceeded,
            R::MethodNotFound => Code::Unimplemented,
            R::Unspecified | R::Internal => Code::Internal,
        }
    }

    /// A status for this reason: its code, `message`, an `ErrorInfo` with
    /// `metadata`, and whatever else `details` holds.
    pub fn status(
        self,
        message: impl Into<String>,
        metadata: &[(&str, &str)],
        mut details: ErrorDetails,
    ) -> Status {
        let metadata: std::collections::HashMap<String, String> = metadata
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        details.set_error_info(self.reason(), DOMAIN, metadata);
        Status::with_error_details(self.code(), message, details)
    }
}

/// The Agora reason a status carries, if it carries one.
pub fn reason_of(status: &Status) -> Option<ErrorReason> {
    let info = status.get_details_error_info()?;
    (info.domain == DOMAIN)
        .then(|| ErrorReason::from_reason(&info.reason))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_travel_as_their_names_without_the_prefix() {
        let status = ErrorReason::PostNotFound.status(
            "post not found",
            &[("post_id", "x")],
            ErrorDetails::new(),
        );
        assert_eq!(status.code(), Code::NotFound);
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("POST_NOT_FOUND", "agora")
        );
        assert_eq!(info.metadata["post_id"], "x");
        assert_eq!(reason_of(&status), Some(ErrorReason::PostNotFound));
    }

    #[test]
    fn every_reason_but_the_placeholder_round_trips_and_has_a_real_code() {
        for value in 1.. {
            let Ok(reason) = ErrorReason::try_from(value) else {
                break;
            };
            assert_eq!(ErrorReason::from_reason(reason.reason()), Some(reason));
            assert!(!reason.reason().starts_with(PREFIX), "{reason:?}");
            assert_ne!(reason.code(), Code::Ok, "{reason:?}");
            assert_ne!(reason.code(), Code::Unknown, "{reason:?}");
        }
    }
}
