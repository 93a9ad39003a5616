//! A request body that is not the protobuf message its method takes is the
//! caller's mistake: every service answers INVALID_ARGUMENT, directly and
//! through the gateway, not INTERNAL.

use agora_proto::errors::ErrorReason;
use prost::bytes::{Buf, BufMut};
use sqlx::PgPool;
use system_tests::{assert_reason, spawn_system};
use tonic::{
    Code, Request, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::MetadataValue,
    transport::Channel,
};

/// Field 1, length-delimited, said to be 5 bytes long, with 1 byte given.
const TRUNCATED: &[u8] = &[0x0a, 0x05, 0x41];
/// Field number 0, which no message can have.
const FIELD_ZERO: &[u8] = &[0x00, 0x01];

/// Sends bytes as they are and takes answers as bytes.
#[derive(Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

async fn send_raw(channel: Channel, path: &'static str, token: &str, body: &[u8]) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("the channel is ready");
    let mut request = Request::new(body.to_vec());
    let bearer = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
    request.metadata_mut().insert("authorization", bearer);
    grpc.unary(request, PathAndQuery::from_static(path), RawCodec)
        .await
        .expect_err("garbage is refused")
}

const METHODS: &[&str] = &[
    "/agora.auth.v1.UserService/CreateUser",
    "/agora.auth.v1.AuthService/Login",
    "/agora.posts.v1.PostService/CreatePost",
    "/agora.posts.v1.PostService/GetPost",
    "/agora.votes.v1.VoteService/Vote",
];

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn undecodable_requests_are_invalid_arguments_at_every_service_and_the_gateway(pool: PgPool) {
    let system = spawn_system(pool).await;
    let alice = system.sign_up("alice@example.com").await;
    let edge = format!("http://{}", system.spawn_gateway(|_| {}).await.grpc);

    let direct = |path: &str| {
        let service = match path.split('.').nth(1) {
            Some("auth") => &system.auth,
            Some("posts") => &system.posts,
            _ => &system.votes,
        };
        service.url()
    };
    for &path in METHODS {
        for (whom, url) in [("the service", direct(path)), ("the gateway", edge.clone())] {
            let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
            for body in [TRUNCATED, FIELD_ZERO] {
                let status = send_raw(channel.clone(), path, &alice.token, body).await;
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{path} at {whom} with {body:?}: {status:?}"
                );
                assert!(
                    status.message().contains("not a valid protobuf message"),
                    "{path} at {whom}: {}",
                    status.message()
                );
                assert_reason(&status, ErrorReason::MalformedRequest, path);
            }
        }
    }
}
