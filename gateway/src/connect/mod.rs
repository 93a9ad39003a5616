//! The Connect protocol (connectrpc.com) on the gRPC port, beside gRPC and
//! gRPC-Web, for `buf curl`'s default protocol, connect-es clients and plain
//! `curl -H 'content-type: application/json'`.
//!
//! A Connect call becomes a gRPC call to the rest of the edge (token check,
//! limits, log line, forwarding), so it is served exactly as a gRPC call is, and
//! its answer is turned back:
//!
//! - unary (`application/json`, `application/proto`): one message in the body,
//!   or, for methods free of side effects, in a GET's query ([`get`]); errors as
//!   HTTP statuses with a JSON body, metadata as headers (trailers as `trailer-`
//!   headers);
//! - streams (`application/connect+json`, `application/connect+proto`): messages
//!   in the same 5-byte envelopes as gRPC's, each way, and the status with the
//!   trailers in a last envelope. Any method is served so: server streams (health's
//!   `Watch`, and any to come) and reflection's bidirectional stream, which
//!   `buf curl --http2-prior-knowledge` asks for.
//!
//! Binary messages pass as they are; JSON is transcoded with the descriptors
//! reflection serves ([`schema`]).

mod errors;
mod get;
mod schema;
mod stream;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf as _, BufMut as _, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header::CONTENT_TYPE};
use http_body_util::{BodyExt as _, Limited};
use prost_reflect::MethodDescriptor;
use prost_types::FileDescriptorSet;
use tonic::{
    Status,
    body::Body,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming},
    metadata::MetadataMap,
};
use tower::{Layer, Service};

use agora_proto::errors::ErrorReason;
use schema::{Schema, json_to_message, message_to_json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The rest of the edge, which a Connect call is sent through as gRPC.
trait Edge:
    tonic::client::GrpcService<
        Body,
        ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
    >
{
}

impl<S> Edge for S where
    S: tonic::client::GrpcService<
            Body,
            ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
        >
{
}

/// Serves Connect calls through the service it wraps; passes everything else on.
#[derive(Clone)]
pub(crate) struct ConnectLayer {
    schema: Arc<Schema>,
    max_message_bytes: usize,
}

impl ConnectLayer {
    /// `public` is what reflection describes; requests larger than
    /// `max_message_bytes` are refused, as gRPC ones are.
    pub(crate) fn new(public: FileDescriptorSet, max_message_bytes: usize) -> Self {
        Self {
            schema: Arc::new(Schema::new(public)),
            max_message_bytes,
        }
    }
}

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;

    fn layer(&self, inner: S) -> Connect<S> {
        Connect {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ConnectLayer`] makes.
#[derive(Clone)]
pub(crate) struct Connect<S> {
    inner: S,
    layer: ConnectLayer,
}

impl<S, B> Service<http::Request<Body>> for Connect<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(kind) = Kind::of(&request) else {
            let answer = self.inner.call(request);
            return Box::pin(async move { answer.await.map(|answer| answer.map(Body::new)) });
        };
        // The service made ready by `poll_ready` takes the call; a clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            Ok(match kind {
                Kind::Unary(encoding) => {
                    unary(Some(encoding), request, Grpc::new(inner), &layer).await
                }
                Kind::Get => match get::refusal(&request, &layer.schema) {
                    Some(refused) => refused,
                    None => unary(None, request, Grpc::new(inner), &layer).await,
                },
                Kind::Stream(encoding) => {
                    stream::stream(encoding, request, Grpc::new(inner), layer).await
                }
                Kind::Unsupported => unsupported_media_type(&request),
            })
        })
    }
}

/// How a Connect message is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
}

/// What a request to the gRPC port is, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary(Encoding),
    /// A unary call as a GET, its message in the query.
    Get,
    Stream(Encoding),
    /// A POST that is neither gRPC, gRPC-Web nor Connect.
    Unsupported,
}

impl Kind {
    /// `None` for gRPC and gRPC-Web, and for anything but a POST or a Connect
    /// GET.
    fn of(request: &http::Request<Body>) -> Option<Kind> {
        if request.method() == http::Method::GET {
            return get::is_connect(request.uri()).then_some(Kind::Get);
        }
        if request.method() != http::Method::POST {
            return None;
        }
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        // Compared without allocating: every gRPC call comes this way.
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let is = |expected: &str| essence.eq_ignore_ascii_case(expected);
        let is_grpc = essence
            .get(.."application/grpc".len())
            .is_some_and(|start| start.eq_ignore_ascii_case("application/grpc"));
        if is_grpc {
            None
        } else if is("application/json") {
            Some(Kind::Unary(Encoding::Json))
        } else if is("application/proto") {
            Some(Kind::Unary(Encoding::Proto))
        } else if is("application/connect+json") {
            Some(Kind::Stream(Encoding::Json))
        } else if is("application/connect+proto") {
            Some(Kind::Stream(Encoding::Proto))
        } else {
            Some(Kind::Unsupported)
        }
    }
}

/// The content types this port takes, for a 415's `accept-post`.
const ACCEPTED: &str = "application/json, application/proto, application/connect+json, \
     application/connect+proto, application/grpc, application/grpc-web";

fn unsupported_media_type(request: &http::Request<Body>) -> http::Response<Body> {
    let content_type = request.headers().get(CONTENT_TYPE);
    plain_refusal(
        request,
        &format!("refused: not gRPC, gRPC-Web nor Connect ({content_type:?})"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ("accept-post", ACCEPTED),
        format!("this port takes gRPC, gRPC-Web and Connect: send content-type {ACCEPTED}\n"),
    )
}

/// A refusal made before any call, in plain text: logged as the call's one
/// line, with `header` telling the client what would be taken.
fn plain_refusal(
    request: &http::Request<Body>,
    why: &str,
    status: StatusCode,
    (name, value): (&'static str, &'static str),
    text: String,
) -> http::Response<Body> {
    tracing::info_span!("rpc", method = %request.uri().path()).in_scope(|| tracing::info!("{why}"));
    let mut response = http::Response::new(full(text.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(name, HeaderValue::from_static(value));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A unary call: one message in, one out, errors as HTTP statuses. The message
/// is the body, in `encoding`, or for a GET (`encoding` `None`) in the query.
async fn unary<S: Edge>(
    encoding: Option<Encoding>,
    request: http::Request<Body>,
    grpc: Grpc<S>,
    layer: &ConnectLayer,
) -> http::Response<Body> {
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let schema = &layer.schema;
    let prepared = async {
        refuse_compression(&parts.headers, "content-encoding")?;
        let method = schema.method(&path)?;
        if method.is_client_streaming() || method.is_server_streaming() {
            return Err(ErrorReason::MalformedRequest.status(
                format!(
                    "{path} streams: call it with content-type application/connect+json \
                     or application/connect+proto"
                ),
                &[],
                Default::default(),
            ));
        }
        let (encoding, body) = match encoding {
            Some(encoding) => (encoding, read_body(body, layer.max_message_bytes).await?),
            None => get::message(&parts.uri, layer.max_message_bytes)?,
        };
        let message = match encoding {
            Encoding::Proto => body,
            Encoding::Json => json_to_message(&body, &method.input())?,
        };
        let request = grpc_request(&parts, tokio_stream::once(message))?;
        Ok((request, method, encoding))
    }
    .await
    .inspect_err(|status| log_refusal(&path, status));
    let answer = match prepared {
        Ok((request, method, encoding)) => {
            async {
                let (metadata, mut messages, _) = call(grpc, &method, request).await?.into_parts();
                let message = messages
                    .message()
                    .await?
                    .ok_or_else(|| Status::internal("the service answered without a message"))?;
                let trailers = messages.trailers().await?.unwrap_or_default();
                let body = match encoding {
                    Encoding::Proto => message,
                    Encoding::Json => message_to_json(&message, &method.output())?,
                };
                Ok((metadata, trailers, body, encoding))
            }
            .await
        }
        Err(status) => Err(status),
    };

    match answer {
        Ok((metadata, trailers, body, encoding)) => {
            let mut response = http::Response::new(full(body));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, encoding.unary_content_type());
            copy_metadata(metadata, headers, "");
            copy_metadata(trailers, headers, "trailer-");
            response
        }
        Err(status) => {
            let error = errors::connect_error(&status, schema);
            let json = serde_json::to_vec(&error).expect("an error serializes");
            let mut response = http::Response::new(full(json.into()));
            *response.status_mut() = errors::http_status(status.code());
            let headers = response.headers_mut();
            copy_metadata(status.metadata().clone(), headers, "");
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
    }
}

impl Encoding {
    fn unary_content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Json => "application/json",
            Encoding::Proto => "application/proto",
        })
    }

    fn stream_content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Json => "application/connect+json",
            Encoding::Proto => "application/connect+proto",
        })
    }
}

/// Logs a call refused before it reached the rest of the edge, whose log line
/// it then never gets.
fn log_refusal(path: &str, status: &Status) {
    tracing::info_span!("rpc", method = %path).in_scope(|| {
        tracing::info!(
            code = status.code() as i32,
            why = status.message(),
            "connect call refused"
        );
    });
}

/// Sends `request` as a gRPC call to `method` through the rest of the edge.
async fn call<S: Edge, M>(
    mut grpc: Grpc<S>,
    method: &MethodDescriptor,
    request: tonic::Request<M>,
) -> Result<tonic::Response<Streaming<Bytes>>, Status>
where
    M: tokio_stream::Stream<Item = Bytes> + Send + 'static,
{
    grpc.ready().await.map_err(|error| {
        Status::unavailable(format!("the gateway is not ready: {}", error.into()))
    })?;
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = path
        .parse()
        .map_err(|_| Status::internal("a method path"))?;
    grpc.streaming(request, path, Raw).await
}

/// A gRPC request with the Connect request's metadata, deadline and
/// connection facts (the peer's address, for the client address).
fn grpc_request<M>(parts: &http::request::Parts, messages: M) -> Result<tonic::Request<M>, Status> {
    let timeout = connect_timeout(&parts.headers)?;
    let mut headers = parts.headers.clone();
    let protocol: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_protocol_header(name.as_str()))
        .cloned()
        .collect();
    for name in protocol {
        headers.remove(name);
    }
    let mut request = tonic::Request::from_parts(
        MetadataMap::from_headers(headers),
        parts.extensions.clone(),
        messages,
    );
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    Ok(request)
}

/// Headers that belong to a protocol (HTTP, gRPC, Connect), not to the call's
/// metadata. HTTP/1.1's connection headers must not reach an HTTP/2 upstream.
fn is_protocol_header(name: &str) -> bool {
    name.starts_with("grpc-")
        || name.starts_with("connect-")
        || matches!(
            name,
            "content-type"
                | "content-length"
                | "content-encoding"
                | "accept-encoding"
                | "accept"
                | "host"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "upgrade"
                | "date"
        )
}

/// Adds the call metadata in `metadata` to `headers`, each name prefixed.
fn copy_metadata(metadata: MetadataMap, headers: &mut HeaderMap, prefix: &str) {
    let metadata = metadata.into_headers();
    for (name, value) in &metadata {
        if is_protocol_header(name.as_str()) {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(format!("{prefix}{name}").as_bytes()) {
            headers.append(name, value.clone());
        }
    }
}

/// `connect-timeout-ms`: at most ten digits, as the protocol says.
fn connect_timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|digits| {
            (1..=10).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|digits| digits.parse().ok())
        .map(|millis| Some(Duration::from_millis(millis)))
        .ok_or_else(|| {
            ErrorReason::MalformedRequest.status(
                "connect-timeout-ms must be a whole number of milliseconds, at most 10 digits",
                &[],
                Default::default(),
            )
        })
}

/// Bodies come uncompressed: a compressed one is refused, naming the header.
fn refuse_compression(headers: &HeaderMap, header: &str) -> Result<(), Status> {
    match headers.get(header) {
        Some(value) if value != "identity" => Err(ErrorReason::MalformedRequest.status(
            format!("{header} {value:?} is not supported here: send the body uncompressed"),
            &[],
            Default::default(),
        )),
        _ => Ok(()),
    }
}

/// A unary request's body, refused past the gRPC port's message limit.
async fn read_body(body: Body, max_message_bytes: usize) -> Result<Bytes, Status> {
    match Limited::new(body, max_message_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Status::resource_exhausted(format!(
                "the request is larger than {max_message_bytes} bytes"
            )))
        }
        Err(error) => Err(Status::cancelled(format!(
            "the request was cut off: {error}"
        ))),
    }
}

fn full(bytes: Bytes) -> Body {
    Body::new(http_body_util::Full::new(bytes))
}

/// Messages as they are on the wire: the edge's gRPC stack has the types.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, message: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(message);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
