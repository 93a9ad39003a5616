//! The course API's HTTP/JSON facade: the FastAPI course app's routes, bodies and
//! status codes, translated onto the gRPC services through [`Upstreams`].
//!
//! Nothing here decides anything the services decide (validation, ownership,
//! visibility): the facade only reads the request, checks the access token so a
//! request without one gets 401 before its body is read, calls the service with the
//! token as `authorization` metadata, and writes the answer in the course's shape.
//! `errors.rs` holds the status mapping.

mod access;
pub(crate) mod cors;
mod errors;
mod extract;
mod feed;
mod health;
mod login;
mod openapi;
mod posts;
mod sessions;
mod users;
mod votes;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use access_token::TokenVerifier;
use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts},
    http::request::Parts,
    routing::{MethodRouter, get, post},
};
use tokio::sync::watch;
use tonic_health::server::HealthReporter;

use crate::{
    clients::{Clients, forward_client},
    upstreams::Upstreams,
};

/// The largest request body read; larger ones get 413. A post is at most 10,000
/// characters, so this leaves room for any valid request.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler needs.
#[derive(Clone)]
pub(crate) struct Facade {
    upstreams: Upstreams,
    verifier: Arc<TokenVerifier>,
    /// Whether answers show every user's email, as the course API does
    /// (`HTTP_SHOW_EMAILS`).
    show_emails: bool,
    /// Emails of post owners seen lately, by user id. An email never changes
    /// (`User.email` is immutable) and a deleted user's posts go with them, so a
    /// remembered owner email is never wrong on a post; it saves a call to
    /// auth-service per request. Bounded by [`MAX_REMEMBERED_EMAILS`].
    owner_emails: Arc<Mutex<HashMap<String, String>>>,
    /// Who calls: the client address of logins and registrations.
    clients: Clients,
    /// Becomes true when the gateway shuts down, so that open streams end with
    /// an event saying where to resume instead of being cut.
    stopping: watch::Receiver<bool>,
}

/// The client address of a request (see [`crate::clients`]), when known: the
/// peer, or what a trusted proxy's `x-forwarded-for` says.
pub(crate) struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<Facade> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        facade: &Facade,
    ) -> Result<Self, Self::Rejection> {
        // Served without connect info (a router called directly), nobody's
        // header is believed.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        Ok(Self(facade.clients.client(peer, &parts.headers)))
    }
}

impl ClientAddress {
    /// `message` as a call on behalf of this client: its `x-forwarded-for`.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        forward_client(request.metadata_mut().as_mut(), self.0);
        request
    }
}

/// Owner emails remembered at most: every author a busy facade shows, at about a
/// hundred bytes each.
const MAX_REMEMBERED_EMAILS: usize = 10_000;

/// The facade's routes, each with and without its trailing slash, plus
/// `/openapi.json`, `/docs` (and its assets), and `/livez` and `/readyz` for load
/// balancers. With `show_emails`, users and post owners carry their email, as in
/// the course API; without, an email is shown only to its owner, as the gRPC API
/// does. Browsers may call it from `cors_allowed_origins`; `/readyz` answers what
/// `health` (the gRPC port's `grpc.health.v1`) says. Streams (`/posts/stream`)
/// end, saying where to resume, once `stopping` says true. Serve it with
/// connect info (`SocketAddr`), so it knows its clients' addresses.
pub fn router(
    upstreams: Upstreams,
    verifier: Arc<TokenVerifier>,
    show_emails: bool,
    clients: Clients,
    cors_allowed_origins: &[String],
    health: HealthReporter,
    stopping: watch::Receiver<bool>,
) -> Router {
    let routes = [
        ("/users", post(users::create)),
        ("/users/{id}", get(users::get)),
        ("/login", post(login::login)),
        ("/posts", get(posts::list).post(posts::create)),
        // Never taken for an `{id}` below: a literal segment wins.
        ("/posts/stream", get(feed::watch)),
        (
            "/posts/{id}",
            get(posts::get)
                .put(posts::replace)
                .patch(posts::patch)
                .delete(posts::delete),
        ),
        ("/vote", post(votes::vote)),
        ("/refresh", post(sessions::refresh)),
        ("/logout", post(sessions::logout)),
        ("/logout/all", post(sessions::logout_all)),
        ("/sessions", get(sessions::list)),
        ("/users/me/password", post(sessions::change_password)),
        ("/users/me", get(users::me).delete(sessions::delete_me)),
    ];
    routes
        .into_iter()
        .fold(Router::new(), with_and_without_slash)
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::docs))
        .route("/docs/{asset}", get(openapi::asset))
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(access::observe))
        .with_state(Facade {
            upstreams,
            verifier,
            show_emails,
            owner_emails: Arc::default(),
            clients,
            stopping,
        })
        // Health answers whatever the state of the services.
        .merge(health::router(health))
        // Outermost, so that preflights and error answers carry it too.
        .layer(cors::facade(cors_allowed_origins))
        .layer(axum::middleware::map_response(
            cors::only_for_allowed_origins,
        ))
}

/// FastAPI redirects between `/posts` and `/posts/`; a redirect loses the body of a
/// POST in some clients, so both forms are served directly instead.
fn with_and_without_slash(
    router: Router<Facade>,
    (path, methods): (&str, MethodRouter<Facade>),
) -> Router<Facade> {
    router
        .route(path, methods.clone())
        .route(&format!("{path}/"), methods)
}
