//! auth-service through its real gRPC API, each test on a fresh migrated database.

mod account;
mod hashing;
mod helpers;
mod keys;
mod login;
mod server;
mod sessions;
mod tokens;
mod unicode;
mod users;
