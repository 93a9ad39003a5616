//! The OpenAPI 3 description of the facade at `GET /openapi.json`, and the
//! interactive documentation page at `GET /docs`.

use std::sync::LazyLock;

use axum::{
    extract::Path,
    http::header::{CACHE_CONTROL, CONTENT_TYPE},
    response::{Html, IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{
    errors::{self, ErrorBody, ValidationErrorBody},
    feed, health, login, posts, sessions, users, votes,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora",
        description = "The course API (users, login, posts, vote) over Agora's gRPC services. \
            Ids are UUID strings. Every path also answers with or without its trailing slash. \
            Errors are `{\"detail\": \"…\"}`, except 422, which answers as FastAPI does: \
            `{\"detail\": [{\"loc\": [\"body\", \"title\"], \"msg\": \"…\", \"type\": \"…\"}]}`.",
    ),
    paths(
        users::create,
        users::get,
        users::me,
        login::login,
        posts::list,
        posts::get,
        posts::create,
        posts::replace,
        posts::patch,
        posts::delete,
        feed::watch,
        votes::vote,
        sessions::refresh,
        sessions::logout,
        sessions::logout_all,
        sessions::list,
        sessions::change_password,
        sessions::delete_me,
        health::livez,
        health::readyz,
    ),
    // The data of `/posts/stream`'s events, which no response body names.
    components(schemas(
        ErrorBody,
        ValidationErrorBody,
        feed::CheckpointOut,
        feed::PostRemovedOut,
        feed::LikeCountOut,
        feed::StreamErrorOut,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "Users", description = "Registration and look-up"),
        (name = "Authentication", description = "Access tokens, refresh tokens and sessions"),
        (name = "Posts", description = "Posts with their owners and like counts"),
        (name = "Vote", description = "Likes"),
        (name = "Health", description = "For load balancers that cannot speak gRPC"),
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

/// The Swagger UI served at `/docs`, vendored from the npm package
/// `swagger-ui-dist` (see `gateway/assets/swagger-ui/README.md`). Part of the
/// assets' URLs, so a new version is never answered from a browser's cache.
const SWAGGER_UI_VERSION: &str = "5.35.0";

/// Cached for a year and never revalidated: the URL changes with the content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The page, naming the assets by version; only same-origin URLs, so it works
/// without network access.
static DOCS_PAGE: LazyLock<String> =
    LazyLock::new(|| include_str!("docs.html").replace("{version}", SWAGGER_UI_VERSION));

/// Swagger UI, as FastAPI serves at `/docs`, from the binary itself.
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE.as_str())
}

/// The page's script and style sheet, by their versioned names.
pub async fn asset(Path(name): Path<String>) -> Response {
    let bundle = format!("swagger-ui-bundle-{SWAGGER_UI_VERSION}.js");
    let css = format!("swagger-ui-{SWAGGER_UI_VERSION}.css");
    let (content_type, body): (&str, &'static [u8]) = if name == bundle {
        (
            "text/javascript; charset=utf-8",
            include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
        )
    } else if name == css {
        (
            "text/css; charset=utf-8",
            include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
        )
    } else {
        return errors::not_found().await.into_response();
    };
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, IMMUTABLE)],
        body,
    )
        .into_response()
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
                "/livez",
                "/login",
                "/logout",
                "/logout/all",
                "/posts/",
                "/posts/stream",
                "/posts/{id}",
                "/readyz",
                "/refresh",
                "/sessions",
                "/users/",
                "/users/me",
                "/users/me/password",
                "/users/{id}",
                "/vote/"
            ]
        );
        assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn every_422_is_documented_as_fastapi_validation_errors() {
        let document: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let mut seen = 0;
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let Some(invalid) = operation["responses"].get("422") else {
                    continue;
                };
                let schema = &invalid["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/ValidationErrorBody",
                    "{method} {path}"
                );
                seen += 1;
            }
        }
        // The course's ten, /refresh, /users/me/password, DELETE /users/me and
        // /posts/stream.
        assert_eq!(seen, 14, "every operation that reads input");
        let entry = &document["components"]["schemas"]["ValidationError"];
        let mut required: Vec<&str> = entry["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["loc", "msg", "type"], "{entry}");
    }

    #[test]
    fn the_stream_is_documented_as_server_sent_events_resumed_by_last_event_id() {
        let document: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let watch = &document["paths"]["/posts/stream"]["get"];
        let ok = &watch["responses"]["200"]["content"]["text/event-stream"];
        assert!(ok.is_object(), "{watch}");
        let parameters = watch["parameters"].as_array().unwrap();
        let named = |name: &str, place: &str| {
            parameters
                .iter()
                .any(|p| p["name"] == name && p["in"] == place)
        };
        assert!(named("Last-Event-ID", "header"), "{parameters:?}");
        for query in ["search", "owner_id", "cursor"] {
            assert!(named(query, "query"), "{query}: {parameters:?}");
        }
        let description = watch["description"].as_str().unwrap();
        for event in [
            "checkpoint",
            "created",
            "updated",
            "deleted",
            "like_count_changed",
            "error",
        ] {
            assert!(description.contains(&format!("`{event}`")), "{event}");
        }
        assert!(watch["responses"]["410"].is_object(), "{watch}");
        let schemas = &document["components"]["schemas"];
        for data in [
            "CheckpointOut",
            "PostRemovedOut",
            "LikeCountOut",
            "StreamErrorOut",
        ] {
            assert!(schemas[data].is_object(), "{data} is described");
            assert!(description.contains(data), "{data} is named");
        }
        assert_eq!(watch["security"], serde_json::json!([{"bearer": []}]));
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
