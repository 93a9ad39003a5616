//! Generates the Rust code and one file descriptor set (for reflection) from the
//! `.proto` files beside this script. Needs `protoc` on PATH or in `PROTOC`.
//!
//! Two passes: messages and clients with tonic-prost's codec, then the servers
//! alone, over the same messages, with [`codec`](../codec.rs)'s, which tells a
//! caller that its request does not decode.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "agora/errors/v1/errors.proto",
    "agora/auth/v1/users.proto",
    "agora/auth/v1/auth.proto",
    "agora/posts/v1/posts.proto",
    "agora/votes/v1/votes.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=agora");
    println!("cargo:rerun-if-changed=google");
    tonic_prost_build::configure()
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("agora_descriptor.bin"))
        .compile_protos(PROTOS, &["."])?;

    let servers = out_dir.join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::codec::RequestCodec")
        .extern_path(".agora.errors.v1", "crate::errors::v1")
        .extern_path(".agora.auth.v1", "crate::auth::v1")
        .extern_path(".agora.posts.v1", "crate::posts::v1")
        .extern_path(".agora.votes.v1", "crate::votes::v1")
        .out_dir(&servers)
        .compile_protos(PROTOS, &["."])?;
    Ok(())
}
