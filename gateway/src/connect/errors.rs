//! gRPC statuses as Connect errors: `{"code", "message", "details"}`, each detail
//! with its type, its bytes in base64, and (for the types the edge knows, such as
//! `google.rpc.ErrorInfo`) its JSON under `debug`, so that a person reading a curl
//! answer sees the reason without decoding anything.

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use http::StatusCode;
use prost::Message as _;
use serde::Serialize;
use serde_json::Value;
use tonic::{Code, Status};

use super::schema::{Schema, message_to_json_value};

/// A Connect error, as its JSON is written.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectError {
    code: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<Detail>,
}

#[derive(Debug, Serialize)]
struct Detail {
    #[serde(rename = "type")]
    type_name: String,
    /// The detail's bytes, base64 without padding.
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    debug: Option<Value>,
}

/// The error `status` stands for.
pub(crate) fn connect_error(status: &Status, schema: &Schema) -> ConnectError {
    let details = tonic_types::pb::Status::decode(status.details())
        .map(|carried| carried.details)
        .unwrap_or_default();
    let details = details
        .iter()
        .map(|detail| {
            let name = detail
                .type_url
                .rsplit_once('/')
                .map_or(detail.type_url.as_str(), |(_, name)| name);
            Detail {
                type_name: name.to_owned(),
                value: STANDARD_NO_PAD.encode(&detail.value),
                debug: schema
                    .message(name)
                    .and_then(|message| message_to_json_value(&detail.value, &message).ok()),
            }
        })
        .collect();
    ConnectError {
        code: code_name(status.code()),
        message: status.message().to_owned(),
        details,
    }
}

/// Connect's name for a code.
fn code_name(code: Code) -> &'static str {
    match code {
        // Connect spells it the American way.
        Code::Cancelled => "canceled",
        Code::Unknown | Code::Ok => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary call that ended with `code`, as Connect maps it.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a status code"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::errors::ErrorReason;

    #[test]
    fn an_agora_error_shows_its_code_message_and_readable_details() {
        let schema = Schema::new(agora_proto::file_descriptor_set());
        let status = ErrorReason::PostNotFound.status(
            "post not found",
            &[("post_id", "x")],
            Default::default(),
        );
        let json = serde_json::to_value(connect_error(&status, &schema)).unwrap();
        assert_eq!(json["code"], "not_found");
        assert_eq!(json["message"], "post not found");
        let detail = &json["details"][0];
        assert_eq!(detail["type"], "google.rpc.ErrorInfo");
        assert_eq!(detail["debug"]["reason"], "POST_NOT_FOUND");
        assert_eq!(detail["debug"]["domain"], "agora");
        assert_eq!(detail["debug"]["metadata"]["post_id"], "x");
        let value = STANDARD_NO_PAD
            .decode(detail["value"].as_str().expect("base64"))
            .expect("unpadded base64");
        let info = tonic_types::pb::ErrorInfo::decode(value.as_slice()).expect("an ErrorInfo");
        assert_eq!(info.reason, "POST_NOT_FOUND");
        assert_eq!(http_status(status.code()), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_bare_status_has_only_its_code() {
        let schema = Schema::new(agora_proto::file_descriptor_set());
        let json = serde_json::to_value(connect_error(&Status::new(Code::Cancelled, ""), &schema))
            .unwrap();
        assert_eq!(json, serde_json::json!({"code": "canceled"}));
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }
}
