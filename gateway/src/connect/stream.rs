//! Connect's streams: the request's envelopes become the gRPC call's messages,
//! and its answer's messages envelopes again, then one last envelope with the
//! status and trailers as JSON. Any method shape is served so.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, header::CONTENT_TYPE};
use http_body_util::StreamBody;
use prost_reflect::MessageDescriptor;
use tonic::{Status, body::Body, client::Grpc, codec::Streaming, metadata::MetadataMap};

use super::{
    ConnectLayer, Edge, Encoding, Raw, call, copy_metadata, errors, grpc_request, log_refusal,
    refuse_compression,
    schema::{Schema, json_to_message, message_to_json},
};

/// A streaming call: enveloped messages each way, then an end-of-stream
/// envelope with the status and trailers. Always HTTP 200: the outcome is in
/// that last envelope.
pub(super) async fn stream<S: Edge>(
    encoding: Encoding,
    request: http::Request<Body>,
    grpc: Grpc<S>,
    layer: ConnectLayer,
) -> http::Response<Body> {
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let schema = layer.schema.clone();
    // A request message that cannot be read ends the request stream; the call
    // then ends with this error, whatever the service said.
    let broken_request = Arc::new(Mutex::new(None));
    let prepared = async {
        refuse_compression(&parts.headers, "connect-content-encoding")?;
        let method = schema.method(&path)?;
        let requests = RequestMessages {
            messages: Streaming::new_request(Raw, body, None, Some(layer.max_message_bytes)),
            input: (encoding == Encoding::Json).then(|| method.input()),
            broken: broken_request.clone(),
        }
        .into_stream();
        Ok((grpc_request(&parts, requests)?, method))
    }
    .await
    .inspect_err(|status| log_refusal(&path, status));
    let started = match prepared {
        Ok((request, method)) => call(grpc, &method, request)
            .await
            .map(|response| (response, method)),
        Err(status) => Err(status),
    };

    let mut response_headers = HeaderMap::new();
    let answers = match started {
        Ok((response, method)) => {
            let (metadata, messages, _) = response.into_parts();
            copy_metadata(metadata, &mut response_headers, "");
            Answers {
                messages: Some(messages),
                output: (encoding == Encoding::Json).then(|| method.output()),
                end: None,
                broken_request,
                schema,
            }
        }
        Err(status) => Answers {
            messages: None,
            output: None,
            end: Some(Err(status)),
            broken_request,
            schema,
        },
    };
    let mut response = http::Response::new(Body::new(StreamBody::new(answers.into_stream())));
    *response.headers_mut() = response_headers;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, encoding.stream_content_type());
    response
}

/// The request stream's messages for the gRPC call, transcoded from JSON when
/// `input` is set.
struct RequestMessages {
    messages: Streaming<Bytes>,
    input: Option<MessageDescriptor>,
    broken: Arc<Mutex<Option<Status>>>,
}

impl RequestMessages {
    fn into_stream(self) -> impl tokio_stream::Stream<Item = Bytes> + Send + 'static {
        futures_util::stream::unfold(self, |mut this| async move {
            let next = match this.messages.message().await {
                Ok(Some(message)) => match &this.input {
                    None => Ok(message),
                    Some(input) => json_to_message(&message, input),
                },
                Ok(None) => return None,
                Err(status) => Err(status),
            };
            match next {
                Ok(message) => Some((message, this)),
                Err(status) => {
                    *this.broken.lock().expect("not poisoned") = Some(status);
                    None
                }
            }
        })
    }
}

/// A streaming call's answer: its messages as envelopes, then the end.
struct Answers {
    messages: Option<Streaming<Bytes>>,
    output: Option<MessageDescriptor>,
    /// How the call ended, once known.
    end: Option<Result<MetadataMap, Status>>,
    broken_request: Arc<Mutex<Option<Status>>>,
    schema: Arc<Schema>,
}

/// The last envelope of a stream.
#[derive(serde::Serialize)]
struct EndOfStream {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<errors::ConnectError>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metadata: std::collections::BTreeMap<String, Vec<String>>,
}

/// Envelope flags.
const END_STREAM: u8 = 0b10;

impl Answers {
    fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> + Send + 'static
    {
        futures_util::stream::unfold(Some(self), |this| async move {
            let mut this = this?;
            if let Some(messages) = &mut this.messages {
                let output = &this.output;
                let next = messages.message().await.and_then(|message| {
                    message
                        .map(|message| match output {
                            None => Ok(message),
                            Some(output) => message_to_json(&message, output),
                        })
                        .transpose()
                });
                match next {
                    Ok(Some(message)) => {
                        let frame = http_body::Frame::data(envelope(0, &message));
                        return Some((Ok(frame), Some(this)));
                    }
                    Ok(None) => {
                        let trailers = messages.trailers().await;
                        this.end = Some(trailers.map(Option::unwrap_or_default));
                    }
                    Err(status) => this.end = Some(Err(status)),
                }
                this.messages = None;
            }
            let end = this.end_of_stream();
            Some((Ok(http_body::Frame::data(envelope(END_STREAM, &end))), None))
        })
    }

    /// The last envelope's JSON: `{"error": …, "metadata": …}`.
    fn end_of_stream(&mut self) -> Bytes {
        let broken = self.broken_request.lock().expect("not poisoned").take();
        let end = match broken {
            Some(status) => Err(status),
            None => self.end.take().unwrap_or_else(|| Ok(MetadataMap::new())),
        };
        let (error, metadata) = match end {
            Ok(trailers) => (None, trailers),
            Err(status) => (
                Some(errors::connect_error(&status, &self.schema)),
                status.metadata().clone(),
            ),
        };
        let mut headers = HeaderMap::new();
        copy_metadata(metadata, &mut headers, "");
        let metadata = headers
            .keys()
            .map(|name| {
                let values = headers
                    .get_all(name)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .map(str::to_owned)
                    .collect();
                (name.as_str().to_owned(), values)
            })
            .collect();
        let end = EndOfStream { error, metadata };
        serde_json::to_vec(&end).expect("the end serializes").into()
    }
}

/// One message in Connect's (and gRPC's) envelope: flags, big-endian length,
/// message.
fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(flags);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}
