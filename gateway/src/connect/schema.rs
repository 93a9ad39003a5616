//! What a Connect call's JSON means: the descriptors of every method the edge
//! serves (the public API, health and reflection, as reflection describes them),
//! and protobuf's JSON mapping between them and the wire format.

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use prost_types::FileDescriptorSet;
use tonic::Status;

use agora_proto::errors::ErrorReason;

/// The methods the edge serves, and the message types their errors carry.
pub(crate) struct Schema {
    pool: DescriptorPool,
}

impl Schema {
    /// From the public API's descriptors, with health, reflection and
    /// `google.rpc`'s error details beside them.
    pub(crate) fn new(public: FileDescriptorSet) -> Self {
        let mut pool = DescriptorPool::new();
        let valid = "the edge's descriptors are valid";
        pool.add_file_descriptor_set(public).expect(valid);
        for encoded in [
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            tonic_types::pb::FILE_DESCRIPTOR_SET,
        ] {
            // A file already there (google/rpc's, vendored by the API too) is kept.
            let set = FileDescriptorSet::decode(encoded).expect(valid);
            pool.add_file_descriptor_set(set).expect(valid);
        }
        Self { pool }
    }

    /// The method a path such as `/agora.posts.v1.PostService/GetPost` names,
    /// answered the way the gRPC edge answers an unknown one.
    pub(crate) fn method(&self, path: &str) -> Result<MethodDescriptor, Status> {
        path.strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .and_then(|(service, method)| {
                let service = self.pool.get_service_by_name(service)?;
                service.methods().find(|m| m.name() == method)
            })
            .ok_or_else(|| {
                ErrorReason::MethodNotFound.status("no such public method", &[], Default::default())
            })
    }

    /// A message type by its full name, for error details.
    pub(crate) fn message(&self, name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(name)
    }
}

/// A request's JSON as the protobuf message it stands for. An empty body is the
/// empty message, as with the binary encoding. Unknown fields are refused: a
/// misspelt name would otherwise be silently dropped.
pub(crate) fn json_to_message(json: &[u8], message: &MessageDescriptor) -> Result<Bytes, Status> {
    let json = if json.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        json
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let decoded = DynamicMessage::deserialize(message.clone(), &mut deserializer)
        .and_then(|decoded| deserializer.end().map(|()| decoded))
        .map_err(|error| {
            ErrorReason::MalformedRequest.status(
                format!("not valid JSON for {}: {error}", message.full_name()),
                &[],
                Default::default(),
            )
        })?;
    Ok(decoded.encode_to_vec().into())
}

/// A message in protobuf's JSON mapping, fields in their declared order:
/// lowerCamelCase names, default values left out, 64-bit integers as strings,
/// enums by name.
pub(crate) fn message_to_json(
    encoded: &[u8],
    message: &MessageDescriptor,
) -> Result<Bytes, Status> {
    let decoded = decode(encoded, message)?;
    serde_json::to_vec(&decoded)
        .map(Bytes::from)
        .map_err(|error| Status::internal(error.to_string()))
}

/// [`message_to_json`] as a JSON value, to be put inside other JSON.
pub(crate) fn message_to_json_value(
    encoded: &[u8],
    message: &MessageDescriptor,
) -> Result<serde_json::Value, Status> {
    serde_json::to_value(decode(encoded, message)?)
        .map_err(|error| Status::internal(error.to_string()))
}

fn decode(encoded: &[u8], message: &MessageDescriptor) -> Result<DynamicMessage, Status> {
    DynamicMessage::decode(message.clone(), encoded).map_err(|error| {
        tracing::warn!(%error, message = message.full_name(), "an answer does not decode");
        Status::internal(format!("the answer is not a valid {}", message.full_name()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(agora_proto::file_descriptor_set())
    }

    #[test]
    fn methods_are_found_by_path_and_unknown_ones_are_method_not_found() {
        let schema = schema();
        let method = schema
            .method("/agora.posts.v1.PostService/GetPost")
            .expect("GetPost");
        assert_eq!(method.input().full_name(), "agora.posts.v1.GetPostRequest");
        assert!(schema.method("/grpc.health.v1.Health/Watch").is_ok());
        assert!(
            schema
                .method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
                .is_ok()
        );
        for path in [
            "/agora.posts.v1.PostService/Nope",
            "/nope.Service/Get",
            "/",
            "",
        ] {
            let status = schema.method(path).expect_err(path);
            assert_eq!(
                agora_proto::errors::reason_of(&status),
                Some(ErrorReason::MethodNotFound)
            );
        }
    }

    #[test]
    fn json_round_trips_through_the_wire_format() {
        let schema = schema();
        let method = schema
            .method("/agora.posts.v1.PostService/ListPosts")
            .expect("ListPosts");
        let encoded = json_to_message(br#"{"pageSize": 3, "search": "rust"}"#, &method.input())
            .expect("valid JSON");
        let json = message_to_json(&encoded, &method.input()).expect("decodes");
        // Fields in their declared order, as protobuf's JSON writers put them.
        assert_eq!(&json[..], br#"{"pageSize":3,"search":"rust"}"#);
        // The proto names are read too.
        let same = json_to_message(br#"{"page_size": 3, "search": "rust"}"#, &method.input());
        assert_eq!(same.expect("proto names"), encoded);
        assert!(
            json_to_message(b" ", &method.input())
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn bad_json_and_unknown_fields_are_malformed_requests_naming_the_problem() {
        let schema = schema();
        let input = schema
            .method("/agora.posts.v1.PostService/GetPost")
            .expect("GetPost")
            .input();
        for (body, says) in [
            (r#"{"id": "#, "EOF"),
            (r#"{"postId": "x"}"#, "postId"),
            (r#"{"id": 7}"#, "string"),
            (r#"{} {}"#, "trailing"),
        ] {
            let status = json_to_message(body.as_bytes(), &input).expect_err(body);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{body}");
            assert_eq!(
                agora_proto::errors::reason_of(&status),
                Some(ErrorReason::MalformedRequest)
            );
            assert!(
                status.message().contains(says),
                "{body}: {}",
                status.message()
            );
        }
    }
}
