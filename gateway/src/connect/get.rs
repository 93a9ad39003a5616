//! Connect's GET for unary methods free of side effects (`idempotency_level =
//! NO_SIDE_EFFECTS` in the contract; a streaming one is refused like a write):
//! the message travels in the query, `?connect=v1&encoding=json&message=…`
//! (`base64=1` for binary), so that browsers and caches can treat the call as
//! the read it is.

use base64::{
    Engine as _,
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use bytes::Bytes;
use http::{StatusCode, Uri};
use prost_reflect::MethodDescriptor;
use tonic::{Status, body::Body};

use super::{Encoding, plain_refusal, schema::Schema};
use agora_proto::errors::ErrorReason;

/// URL-safe base64, padded or not, as the protocol allows both.
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether a GET is a Connect call: its query names an encoding.
pub(super) fn is_connect(uri: &Uri) -> bool {
    pairs(uri).any(|(name, _)| name == "encoding")
}

/// The answer to a GET of a method that is not free of side effects, or that
/// streams: 405, as Connect says, pointing at POST. `None` when the GET may go
/// on (an unknown method is answered as a POST of it would be).
pub(super) fn refusal(
    request: &http::Request<Body>,
    schema: &Schema,
) -> Option<http::Response<Body>> {
    let method = schema.method(request.uri().path()).ok()?;
    let path = request.uri().path();
    // Connect defines GET for unary calls only: a stream (WatchPosts is free
    // of side effects too) has no one answer a GET could carry or a cache
    // keep, and its messages need the envelopes of a streaming POST.
    let (why, text) = if method.is_client_streaming() || method.is_server_streaming() {
        (
            "refused: a GET of a streaming method",
            format!(
                "{path} streams: POST it with content-type application/connect+json \
                 or application/connect+proto\n"
            ),
        )
    } else if free_of_side_effects(&method) {
        return None;
    } else {
        (
            "refused: a GET of a method with side effects",
            format!("{path} may change something: POST it\n"),
        )
    };
    let response = plain_refusal(
        request,
        why,
        StatusCode::METHOD_NOT_ALLOWED,
        ("allow", "POST"),
        text,
    );
    Some(response)
}

fn free_of_side_effects(method: &MethodDescriptor) -> bool {
    use prost_types::method_options::IdempotencyLevel;
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .is_some_and(|options| options.idempotency_level() == IdempotencyLevel::NoSideEffects)
}

/// The encoding and message a GET's query carries, refused past
/// `max_message_bytes` as a body would be.
pub(super) fn message(uri: &Uri, max_message_bytes: usize) -> Result<(Encoding, Bytes), Status> {
    let malformed =
        |message: String| ErrorReason::MalformedRequest.status(message, &[], Default::default());
    let (mut encoding, mut message, mut base64) = (None, None, false);
    for (name, value) in pairs(uri) {
        match &*name {
            "encoding" => encoding = Some(value),
            "message" => message = Some(value),
            "base64" => base64 = value == "1",
            "compression" if value != "identity" => {
                return Err(malformed(format!(
                    "compression {value:?} is not supported here: send the message uncompressed"
                )));
            }
            "connect" if value != "v1" => {
                return Err(malformed(format!(
                    "connect={value} is not a protocol version this server speaks (v1)"
                )));
            }
            _ => {}
        }
    }
    let encoding = match encoding.as_deref() {
        Some("json") => Encoding::Json,
        Some("proto") => Encoding::Proto,
        other => {
            return Err(malformed(format!(
                "encoding={} is not one this server takes: json or proto",
                other.unwrap_or_default()
            )));
        }
    };
    let message = message.unwrap_or_default();
    let message: Bytes = if base64 {
        URL_SAFE_ANY_PADDING
            .decode(message.as_bytes())
            .map_err(|error| malformed(format!("message is not URL-safe base64: {error}")))?
            .into()
    } else {
        Bytes::from(message.into_owned())
    };
    if message.len() > max_message_bytes {
        return Err(Status::resource_exhausted(format!(
            "the request is larger than {max_message_bytes} bytes"
        )));
    }
    Ok((encoding, message))
}

fn pairs(uri: &Uri) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(query: &str) -> Uri {
        format!("/agora.posts.v1.PostService/GetPost?{query}")
            .parse()
            .expect("a URI")
    }

    #[test]
    fn the_message_comes_from_the_query_in_json_or_base64() {
        let (encoding, carried) = message(
            &uri("connect=v1&encoding=json&message=%7B%22id%22%3A%22x%22%7D"),
            100,
        )
        .expect("JSON");
        assert_eq!(
            (encoding, &carried[..]),
            (Encoding::Json, &br#"{"id":"x"}"#[..])
        );
        for padded in ["CgJ4eQ", "CgJ4eQ=="] {
            let (encoding, carried) = message(
                &uri(&format!("encoding=proto&base64=1&message={padded}")),
                100,
            )
            .expect("base64");
            assert_eq!(
                (encoding, &carried[..]),
                (Encoding::Proto, &b"\n\x02xy"[..])
            );
        }
        assert!(is_connect(&uri("encoding=json")));
        assert!(!is_connect(&uri("message=x")));
    }

    #[test]
    fn only_a_unary_read_may_be_a_get_and_a_stream_is_told_to_post() {
        let schema = Schema::new(agora_proto::file_descriptor_set());
        let get = |path: &str| {
            http::Request::get(format!("{path}?encoding=json&message=%7B%7D"))
                .body(Body::empty())
                .expect("a request")
        };
        for (path, refused) in [
            ("/agora.posts.v1.PostService/GetPost", false),
            ("/agora.posts.v1.PostService/DeletePost", true),
            ("/agora.posts.v1.PostService/WatchPosts", true),
            ("/grpc.health.v1.Health/Watch", true),
        ] {
            let answer = refusal(&get(path), &schema);
            assert_eq!(
                answer.as_ref().map(|answer| answer.status()),
                refused.then_some(StatusCode::METHOD_NOT_ALLOWED),
                "{path}"
            );
            if let Some(answer) = answer {
                assert_eq!(answer.headers()["allow"], "POST", "{path}");
            }
        }
    }

    #[test]
    fn what_the_server_cannot_read_is_a_malformed_request() {
        for query in [
            "encoding=xml&message=x",
            "message=x",
            "encoding=json&compression=gzip&message=x",
            "encoding=json&connect=v2&message=x",
            "encoding=proto&base64=1&message=%21%21",
        ] {
            let status = message(&uri(query), 100).expect_err(query);
            assert_eq!(
                agora_proto::errors::reason_of(&status),
                Some(ErrorReason::MalformedRequest),
                "{query}"
            );
        }
        let status = message(&uri("encoding=json&message=%7B%7D"), 1).expect_err("too large");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }
}
