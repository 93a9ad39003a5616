//! The tower layer that makes every gRPC method require a valid access token,
//! except the few that are public by design.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use agora_proto::Rpc;
use http::{Request, Response, header::AUTHORIZATION};
use tower::{Layer, Service};

use crate::{Caller, TokenError, TokenVerifier};

/// gRPC paths that need no token: exact `/package.Service/Method` paths, or whole
/// services when given as `/package.Service/`. Everything else is protected, so a
/// new method is safe until someone decides otherwise.
#[derive(Debug, Clone, Default)]
pub struct PublicMethods(Vec<String>);

impl PublicMethods {
    /// Health checks and reflection, public on every server.
    pub fn infrastructure() -> Self {
        Self(vec![
            "/grpc.health.v1.Health/".to_owned(),
            "/grpc.reflection.v1.ServerReflection/".to_owned(),
            "/grpc.reflection.v1alpha.ServerReflection/".to_owned(),
        ])
    }

    /// The infrastructure and those of `rpcs` that need no token.
    pub fn tokenless<'a>(rpcs: impl IntoIterator<Item = &'a Rpc>) -> Self {
        let mut public = Self::infrastructure();
        public.0.extend(
            rpcs.into_iter()
                .filter(|rpc| !rpc.needs_token)
                .map(Rpc::path),
        );
        public
    }

    fn contains(&self, path: &str) -> bool {
        self.0.iter().any(|public| {
            if public.ends_with('/') {
                path.starts_with(public.as_str())
            } else {
                path == public
            }
        })
    }
}

/// Rejects calls to protected methods that lack a valid `authorization: Bearer`
/// token with `UNAUTHENTICATED`, and gives the handlers the [`Caller`].
#[derive(Clone)]
pub struct RequireTokenLayer {
    verifier: Arc<TokenVerifier>,
    public: Arc<PublicMethods>,
}

impl RequireTokenLayer {
    pub fn new(verifier: Arc<TokenVerifier>, public: PublicMethods) -> Self {
        Self {
            verifier,
            public: Arc::new(public),
        }
    }
}

impl<S> Layer<S> for RequireTokenLayer {
    type Service = RequireTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService {
            inner,
            verifier: self.verifier.clone(),
            public: self.public.clone(),
        }
    }
}

/// The service [`RequireTokenLayer`] makes.
#[derive(Clone)]
pub struct RequireTokenService<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
    public: Arc<PublicMethods>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireTokenService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone is not necessarily ready; keep the one that is (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if self.public.contains(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let verified = match bearer_token(request.headers()) {
                Ok(token) => verifier.verify(token).await,
                Err(error) => Err(error),
            };
            match verified {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(error) => Ok(tonic::Status::from(error).into_http()),
            }
        })
    }
}

/// The token of the one `authorization: Bearer <token>` header or metadata entry
/// (the scheme in any letter case). Two entries are refused, even when one is
/// valid: proxies and libraries disagree on which of them counts.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(TokenError::Missing)?;
    if values.next().is_some() {
        return Err(TokenError::Duplicated);
    }
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Malformed);
    }
    match token.trim() {
        "" => Err(TokenError::Missing),
        token => Ok(token),
    }
}

/// The verified caller of a protected method. Fails closed with `UNAUTHENTICATED`
/// if the server was built without [`RequireTokenLayer`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| TokenError::Missing.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_tokens_are_read_with_any_scheme_case() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Ok("abc"));
        assert_eq!(
            bearer_token(&headers("Basic abc")),
            Err(TokenError::Malformed)
        );
        assert_eq!(bearer_token(&headers("abc")), Err(TokenError::Malformed));
        assert_eq!(bearer_token(&headers("Bearer ")), Err(TokenError::Missing));
        assert_eq!(
            bearer_token(&http::HeaderMap::new()),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn exactly_one_authorization_value_is_allowed() {
        let mut twice = headers("Bearer abc");
        twice.append(AUTHORIZATION, "Bearer garbage".parse().unwrap());
        assert_eq!(bearer_token(&twice), Err(TokenError::Duplicated));

        let mut same_twice = headers("Bearer abc");
        same_twice.append(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(
            bearer_token(&same_twice),
            Err(TokenError::Duplicated),
            "even the same token twice"
        );
    }

    #[test]
    fn public_methods_are_the_tokenless_rpcs_and_the_infrastructure() {
        let public = PublicMethods::tokenless(agora_proto::RPCS);
        assert!(public.contains("/agora.auth.v1.AuthService/Login"));
        assert!(public.contains("/agora.auth.v1.UserService/CreateUser"));
        assert!(public.contains("/grpc.health.v1.Health/Check"));
        assert!(
            !public.contains("/agora.auth.v1.AuthService/LoginAs"),
            "an exact path is not a prefix"
        );
        assert!(!public.contains("/agora.auth.v1.UserService/GetUser"));
        assert!(!public.contains("/agora.posts.v1.PostService/CreatePost"));
        assert!(!public.contains("/agora.posts.v1.PostService/Unknown"));
    }
}
