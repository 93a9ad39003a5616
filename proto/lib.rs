//! Agora's gRPC contracts: the code generated from `agora/**/*.proto` for clients and
//! servers, and the encoded file descriptor set that reflection serves.

/// Users and login (`agora.auth.v1`).
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("agora.auth.v1");
    }
}

/// Posts (`agora.posts.v1`).
pub mod posts {
    pub mod v1 {
        tonic::include_proto!("agora.posts.v1");
    }
}

/// Likes (`agora.votes.v1`).
pub mod votes {
    pub mod v1 {
        tonic::include_proto!("agora.votes.v1");
    }
}

/// Every Agora message and service, encoded as a `FileDescriptorSet`, for
/// `grpc.reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agora_descriptor");

/// [`FILE_DESCRIPTOR_SET`], decoded.
pub fn file_descriptor_set() -> prost_types::FileDescriptorSet {
    prost::Message::decode(FILE_DESCRIPTOR_SET).expect("the embedded descriptor set decodes")
}
