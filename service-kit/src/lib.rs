//! What every Agora gRPC server shares, so that each service crate holds only its
//! own rules: command-line configuration, explicit server limits, reflection and
//! health, one tracing span per RPC and traces across services, database start-up with migrations, and
//! graceful shutdown.

pub mod calls;
pub mod client;
pub mod client_address;
pub mod config;
pub mod database;
pub mod deadline;
pub mod error;
pub mod fields;
pub mod health;
pub mod hop;
pub mod metrics;
pub mod outbox;
pub mod pem_files;
pub mod quota;
pub mod request_ids;
pub mod retry;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod tls;
pub mod traces;

pub use calls::RpcLogLayer;
pub use client::{UpstreamTlsArgs, install_tls};
pub use config::{CommonArgs, DatabaseArgs, FeedRetention, LogFormat, ServerLimits, TokenKeysArgs};
pub use error::{ApiError, ConstraintExt};
pub use server::{
    BindError, GrpcServer, Serve, ServedApi, check_health, configured_server, incoming,
    serve_or_check, shutdown_signal, with_grace, with_reflection,
};
pub use service::{ServiceConfig, StartupError};
pub use tls::{TlsAcceptor, TlsArgs, TlsError};
