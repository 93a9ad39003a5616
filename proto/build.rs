//! Generates the Rust code and one file descriptor set (for reflection) from the
//! `.proto` files beside this script. Needs `protoc` on PATH or in `PROTOC`.

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
        .file_descriptor_set_path(out_dir.join("agora_descriptor.bin"))
        .compile_protos(PROTOS, &["."])?;
    Ok(())
}
