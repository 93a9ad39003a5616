//! auth-service through its real gRPC API, each test on a fresh migrated database.

mod hashing;
mod helpers;
mod keys;
mod login;
mod server;
mod tokens;
mod unicode;
mod users;
