//! The OpenAPI 3 description of the facade at `GET /openapi.json`, and the
//! interactive documentation page at `GET /docs`.

use std::sync::LazyLock;

use axum::{
    http::header::CONTENT_TYPE,
    response::{Html, IntoResponse},
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{errors::ErrorBody, login, posts, users, votes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora",
        description = "The course API (users, login, posts, vote) over Agora's gRPC services. \
            Ids are UUID strings. Every path also answers with or without its trailing slash. \
            Errors are `{\"detail\": \"…\"}`.",
    ),
    paths(
        users::create,
        users::get,
        login::login,
        posts::list,
        posts::get,
        posts::create,
        posts::replace,
        posts::patch,
        posts::delete,
        votes::vote,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "Users", description = "Registration and look-up"),
        (name = "Authentication", description = "Access tokens"),
        (name = "Posts", description = "Posts with their owners and like counts"),
        (name = "Vote", description = "Likes"),
    ),
)]
struct ApiDoc;

/// The `bearer` scheme the operations name: the `access_token` from `POST /login`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The `access_token` from `POST /login`"))
                    .build(),
            ),
        );
    }
}

/// Built once: the document never changes while the process runs.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

pub async fn document() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// Swagger UI, as FastAPI serves at `/docs`, loaded from a CDN so that nothing is
/// downloaded at build time.
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_route() {
        let document: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let paths = document["paths"].as_object().unwrap();
        let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "/login",
                "/posts/",
                "/posts/{id}",
                "/users/",
                "/users/{id}",
                "/vote/"
            ]
        );
        assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn the_document_says_what_can_be_unknown() {
        let document: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let schemas = &document["components"]["schemas"];
        let votes = &schemas["PostWithVotes"]["properties"]["votes"];
        let owner = &schemas["PostOut"]["properties"]["owner"];
        assert!(votes.to_string().contains("null"), "{votes}");
        assert!(owner.to_string().contains("null"), "{owner}");
        assert!(
            votes["description"].as_str().unwrap().contains("unknown"),
            "{votes}"
        );
    }
}
