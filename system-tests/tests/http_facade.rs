//! The gateway's HTTP/JSON facade, driven as the FastAPI course's clients drive the
//! course app: same paths, bodies, JSON shapes and status codes, with UUID ids.

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode, header};
use serde_json::{Value, json};
use sqlx::PgPool;
use system_tests::{PASSWORD, System, spawn_system, telemetry::cost_of};
use uuid::Uuid;

/// The keys of a post object, as the course shows it.
const POST_KEYS: [&str; 7] = [
    "content",
    "created_at",
    "id",
    "owner",
    "owner_id",
    "published",
    "title",
];
const USER_KEYS: [&str; 3] = ["created_at", "email", "id"];

/// Sending a request whose transport must not fail: only the answer matters.
trait Answer {
    async fn answer(self) -> Response;
}

impl Answer for RequestBuilder {
    async fn answer(self) -> Response {
        self.send().await.expect("the facade answers")
    }
}

/// A client of the facade, which runs on a free port in front of a [`System`].
struct Facade {
    base: String,
    client: Client,
}

/// A person registered and logged in through the facade.
struct Person {
    id: String,
    token: String,
}

/// Serves the facade (`gateway::http::router` with a verifier fetching keys from
/// auth-service, under `axum::serve`) in front of a fresh system, through the
/// gateway's own start-up with upstream URLs, showing every email as the course
/// does (the default).
async fn spawn_facade(pool: PgPool) -> (System, Facade) {
    spawn_facade_showing_emails(pool, true).await
}

/// [`spawn_facade`] with `HTTP_SHOW_EMAILS` set to `show_emails`.
async fn spawn_facade_showing_emails(pool: PgPool, show_emails: bool) -> (System, Facade) {
    let system = spawn_system(pool).await;
    let gateway = system
        .spawn_gateway(|config| config.http_show_emails = show_emails)
        .await;
    let base = format!("http://{}", gateway.http);
    let facade = Facade {
        base,
        client: Client::new(),
    };
    (system, facade)
}

impl Facade {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    fn as_person(&self, person: &Person, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&person.token)
    }

    async fn register(&self, email: &str) -> Value {
        let response = self
            .request(Method::POST, "/users/")
            .json(&json!({"email": email, "password": PASSWORD}))
            .answer()
            .await;
        expect(response, StatusCode::CREATED).await
    }

    async fn sign_up(&self, email: &str) -> Person {
        let user = self.register(email).await;
        let response = self
            .request(Method::POST, "/login")
            .form(&[("username", email), ("password", PASSWORD)])
            .answer()
            .await;
        let token = expect(response, StatusCode::OK).await;
        Person {
            id: user["id"].as_str().unwrap().to_owned(),
            token: token["access_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn create_post(&self, person: &Person, body: Value) -> Value {
        let response = self
            .as_person(person, Method::POST, "/posts/")
            .json(&body)
            .answer()
            .await;
        expect(response, StatusCode::CREATED).await
    }
}

/// The JSON body of a response with status `status`.
async fn expect(response: Response, status: StatusCode) -> Value {
    let (actual, url) = (response.status(), response.url().clone());
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "{url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{url}: not JSON ({error}): {text}"))
}

/// Asserts an error answer: `status` and `{"detail": <a string>}`, or for a 422
/// FastAPI's `{"detail": [{"loc", "msg", "type"}, …]}`; the detail, or the first
/// `msg` (what course front ends show).
async fn expect_error(response: Response, status: StatusCode) -> String {
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
    let body = expect(response, status).await;
    assert_eq!(keys(&body), ["detail"], "{body}");
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        return validation_errors(&body)[0].2.clone();
    }
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            challenge.unwrap(),
            "Bearer",
            "a 401 challenges for a bearer token"
        );
    }
    body["detail"]
        .as_str()
        .expect("the detail is a string")
        .to_owned()
}

/// The entries of a 422's `detail`, at least one, each as (`loc` in JSON,
/// `type`, `msg`), after checking their shape.
fn validation_errors(body: &Value) -> Vec<(String, String, String)> {
    let entries = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("a 422's detail is a list: {body}"));
    assert!(!entries.is_empty(), "{body}");
    entries
        .iter()
        .map(|entry| {
            assert_eq!(keys(entry), ["loc", "msg", "type"], "{body}");
            let loc = entry["loc"].as_array().expect("loc is a list");
            assert!(
                matches!(
                    loc.first().and_then(Value::as_str),
                    Some("body" | "query" | "path")
                ),
                "{body}"
            );
            let text = |key: &str| {
                let text = entry[key].as_str().expect("a string").to_owned();
                assert!(!text.is_empty(), "{key} in {body}");
                text
            };
            (entry["loc"].to_string(), text("type"), text("msg"))
        })
        .collect()
}

/// Asserts a 422 whose first entry is at `loc` (as JSON) with pydantic's `kind`.
async fn expect_invalid(response: Response, loc: &str, kind: &str) {
    let url = response.url().clone();
    let body = expect(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let first = validation_errors(&body).remove(0);
    assert_eq!(
        (first.0.as_str(), first.1.as_str()),
        (loc, kind),
        "{url}: {body}"
    );
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Asserts the course's post shape, owned by `owner`.
fn assert_post(post: &Value, owner: &Person, email: &str) {
    assert_eq!(keys(post), POST_KEYS, "{post}");
    assert_eq!(keys(&post["owner"]), USER_KEYS, "{post}");
    assert_eq!(post["owner_id"], owner.id.as_str());
    assert_eq!(post["owner"]["id"], owner.id.as_str());
    assert_eq!(post["owner"]["email"], email);
    Uuid::parse_str(post["id"].as_str().unwrap()).expect("the id is a UUID");
    assert_rfc3339(&post["created_at"]);
    assert_rfc3339(&post["owner"]["created_at"]);
}

fn assert_rfc3339(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    let shaped = text.len() >= 20
        && text.as_bytes()[4] == b'-'
        && text.as_bytes()[10] == b'T'
        && (text.ends_with('Z') || text[19..].contains(['+', '-']));
    assert!(shaped, "not RFC 3339: {text}");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn users_register_and_are_looked_up_with_a_token(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;

    let alice = facade.register("alice@example.com").await;
    assert_eq!(keys(&alice), USER_KEYS);
    assert_eq!(alice["email"], "alice@example.com");
    assert_rfc3339(&alice["created_at"]);
    let alice_id = alice["id"].as_str().unwrap();
    Uuid::parse_str(alice_id).expect("the id is a UUID");

    // Without the trailing slash too; unknown fields are ignored.
    let response = facade
        .request(Method::POST, "/users")
        .json(&json!({"email": "bob@example.com", "password": PASSWORD, "id": alice_id}))
        .answer()
        .await;
    let bob = expect(response, StatusCode::CREATED).await;
    assert_ne!(bob["id"], alice["id"], "a body cannot choose the id");

    let duplicate = facade
        .request(Method::POST, "/users/")
        .json(&json!({"email": "ALICE@example.com", "password": PASSWORD}))
        .answer()
        .await;
    expect_error(duplicate, StatusCode::CONFLICT).await;

    let invalid_bodies = [
        (
            "invalid email",
            json!({"email": "nope", "password": PASSWORD}),
        ),
        (
            "short password",
            json!({"email": "carol@example.com", "password": "short"}),
        ),
        ("missing password", json!({"email": "carol@example.com"})),
        ("wrong type", json!({"email": 7, "password": PASSWORD})),
        ("not an object", json!(["carol@example.com", PASSWORD])),
    ];
    for (case, body) in invalid_bodies {
        let response = facade
            .request(Method::POST, "/users/")
            .json(&body)
            .answer()
            .await;
        let detail = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(!detail.is_empty(), "{case}");
    }
    let malformed = facade
        .request(Method::POST, "/users/")
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"email\": ")
        .answer()
        .await;
    expect_error(malformed, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Looking a user up needs a token, unlike in the course.
    let path = format!("/users/{alice_id}");
    let anonymous = facade.request(Method::GET, &path).answer().await;
    expect_error(anonymous, StatusCode::UNAUTHORIZED).await;

    let carol = facade.sign_up("carol@example.com").await;
    for path in [format!("/users/{alice_id}"), format!("/users/{alice_id}/")] {
        let response = facade.as_person(&carol, Method::GET, &path).answer().await;
        assert_eq!(expect(response, StatusCode::OK).await, alice, "{path}");
    }
    let unknown = facade
        .as_person(&carol, Method::GET, &format!("/users/{}", Uuid::now_v7()))
        .answer()
        .await;
    expect_error(unknown, StatusCode::NOT_FOUND).await;
    let malformed_id = facade
        .as_person(&carol, Method::GET, "/users/42")
        .answer()
        .await;
    expect_error(malformed_id, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn without_http_show_emails_an_email_is_shown_only_to_its_owner(pool: PgPool) {
    let (_system, facade) = spawn_facade_showing_emails(pool, false).await;
    let alice = facade.sign_up("alice@example.com").await;
    let bob = facade.sign_up("bob@example.com").await;
    // Registering shows the new user their own email.
    let carol = facade.register("carol@example.com").await;
    assert_eq!(keys(&carol), USER_KEYS);
    assert_eq!(carol["email"], "carol@example.com");

    // A post's owner has no `email` key, for anyone, the owner included.
    let owner_keys = ["created_at", "id"];
    let assert_owner_without_email = |post: &Value, case: &str| {
        assert_eq!(keys(post), POST_KEYS, "{case}: {post}");
        assert_eq!(keys(&post["owner"]), owner_keys, "{case}: {post}");
        assert_eq!(post["owner"]["id"], alice.id.as_str(), "{case}");
        assert_eq!(post["owner_id"], alice.id.as_str(), "{case}");
        assert_rfc3339(&post["owner"]["created_at"]);
    };
    let post = facade
        .create_post(&alice, json!({"title": "Hello", "content": "First post"}))
        .await;
    assert_owner_without_email(&post, "POST /posts/");
    let path = format!("/posts/{}", post["id"].as_str().unwrap());
    for person in [&alice, &bob] {
        let response = facade.as_person(person, Method::GET, &path).answer().await;
        let shown = expect(response, StatusCode::OK).await;
        assert_owner_without_email(&shown["Post"], "GET /posts/{id}");
        let response = facade
            .as_person(person, Method::GET, "/posts/")
            .answer()
            .await;
        let page = expect(response, StatusCode::OK).await;
        let entries = page.as_array().expect("a list");
        assert_eq!(entries.len(), 1, "{page}");
        assert_owner_without_email(&entries[0]["Post"], "GET /posts/");
    }
    let response = facade
        .as_person(&alice, Method::PATCH, &path)
        .json(&json!({"title": "Hello again"}))
        .answer()
        .await;
    assert_owner_without_email(&expect(response, StatusCode::OK).await, "PATCH");

    // Another user has no `email` key; the user themself sees theirs.
    let alice_path = format!("/users/{}", alice.id);
    let response = facade
        .as_person(&bob, Method::GET, &alice_path)
        .answer()
        .await;
    let seen_by_bob = expect(response, StatusCode::OK).await;
    assert_eq!(keys(&seen_by_bob), ["created_at", "id"], "{seen_by_bob}");
    assert_eq!(seen_by_bob["id"], alice.id.as_str());
    let response = facade
        .as_person(&alice, Method::GET, &alice_path)
        .answer()
        .await;
    let seen_by_alice = expect(response, StatusCode::OK).await;
    assert_eq!(keys(&seen_by_alice), USER_KEYS, "{seen_by_alice}");
    assert_eq!(seen_by_alice["email"], "alice@example.com");
    assert_eq!(seen_by_alice["created_at"], seen_by_bob["created_at"]);

    // An unknown user is still 404.
    let response = facade
        .as_person(&bob, Method::GET, &format!("/users/{}", Uuid::now_v7()))
        .answer()
        .await;
    expect_error(response, StatusCode::NOT_FOUND).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn login_takes_an_oauth2_password_form(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.register("alice@example.com").await;

    for path in ["/login", "/login/"] {
        let response = facade
            .request(Method::POST, path)
            // Case does not matter; the form's other OAuth2 fields are ignored.
            .form(&[
                ("grant_type", "password"),
                ("username", "Alice@Example.com"),
                ("password", PASSWORD),
                ("scope", ""),
            ])
            .answer()
            .await;
        let token = expect(response, StatusCode::OK).await;
        // The course's two fields, and the session's.
        assert_eq!(
            keys(&token),
            ["access_token", "expires_in", "refresh_token", "token_type"]
        );
        assert_eq!(token["token_type"], "bearer");
        assert!(token["expires_in"].as_i64().unwrap() > 0, "{token}");

        // The token works.
        let me = facade
            .request(
                Method::GET,
                &format!("/users/{}", alice["id"].as_str().unwrap()),
            )
            .bearer_auth(token["access_token"].as_str().unwrap())
            .answer()
            .await;
        expect(me, StatusCode::OK).await;
    }

    for (username, password) in [
        ("alice@example.com", "wrong password"),
        ("nobody@example.com", PASSWORD),
    ] {
        let response = facade
            .request(Method::POST, "/login")
            .form(&[("username", username), ("password", password)])
            .answer()
            .await;
        let detail = expect_error(response, StatusCode::FORBIDDEN).await;
        assert_eq!(detail, "Invalid Credentials");
    }

    let missing_password = facade
        .request(Method::POST, "/login")
        .form(&[("username", "alice@example.com")])
        .answer()
        .await;
    expect_error(missing_password, StatusCode::UNPROCESSABLE_ENTITY).await;
    let empty_password = facade
        .request(Method::POST, "/login")
        .form(&[("username", "alice@example.com"), ("password", "")])
        .answer()
        .await;
    expect_error(empty_password, StatusCode::UNPROCESSABLE_ENTITY).await;
    // JSON is not a form, as in FastAPI.
    let json_body = facade
        .request(Method::POST, "/login")
        .json(&json!({"username": "alice@example.com", "password": PASSWORD}))
        .answer()
        .await;
    expect_error(json_body, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn posts_are_created_and_read_in_the_course_shapes(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let bob = facade.sign_up("bob@example.com").await;

    let post = facade
        .create_post(
            &alice,
            json!({"title": "Hello", "content": "First post", "owner_id": bob.id, "id": "x"}),
        )
        .await;
    assert_post(&post, &alice, "alice@example.com");
    assert_eq!(
        (&post["title"], &post["content"], &post["published"]),
        (&json!("Hello"), &json!("First post"), &json!(true)),
        "published unless told otherwise"
    );
    let id = post["id"].as_str().unwrap();
    assert_ne!(id, "x", "a body cannot choose the id");

    // Without the trailing slash too.
    let response = facade
        .as_person(&alice, Method::POST, "/posts")
        .json(&json!({"title": "Draft", "content": "Not yet", "published": false}))
        .answer()
        .await;
    let draft = expect(response, StatusCode::CREATED).await;
    assert_post(&draft, &alice, "alice@example.com");
    assert_eq!(draft["published"], false);

    for path in [format!("/posts/{id}"), format!("/posts/{id}/")] {
        let response = facade.as_person(&bob, Method::GET, &path).answer().await;
        let shown = expect(response, StatusCode::OK).await;
        assert_eq!(keys(&shown), ["Post", "votes"], "{path}");
        assert_eq!(shown["Post"], post, "{path}");
        assert_eq!(shown["votes"], 0, "{path}");
    }
    // Another person's draft does not exist for Bob; neither does an unknown post.
    for id in [
        draft["id"].as_str().unwrap().to_owned(),
        Uuid::now_v7().to_string(),
    ] {
        let response = facade
            .as_person(&bob, Method::GET, &format!("/posts/{id}"))
            .answer()
            .await;
        expect_error(response, StatusCode::NOT_FOUND).await;
    }
    let malformed = facade
        .as_person(&bob, Method::GET, "/posts/1")
        .answer()
        .await;
    expect_error(malformed, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Bob sees the published post, Alice also her draft, newest first.
    for (person, expected) in [(&bob, vec!["Hello"]), (&alice, vec!["Draft", "Hello"])] {
        for path in ["/posts/", "/posts"] {
            let response = facade.as_person(person, Method::GET, path).answer().await;
            let page = expect(response, StatusCode::OK).await;
            let entries = page.as_array().expect("a list");
            for entry in entries {
                assert_eq!(keys(entry), ["Post", "votes"]);
                assert_post(&entry["Post"], &alice, "alice@example.com");
            }
            let titles: Vec<&str> = entries
                .iter()
                .map(|entry| entry["Post"]["title"].as_str().unwrap())
                .collect();
            assert_eq!(titles, expected, "{path}");
        }
    }

    // FastAPI reads a body without a content type as JSON, and refuses other types.
    let untyped = facade
        .as_person(&alice, Method::POST, "/posts/")
        .body(r#"{"title": "Untyped", "content": "JSON all the same"}"#)
        .answer()
        .await;
    expect(untyped, StatusCode::CREATED).await;
    let text = facade
        .as_person(&alice, Method::POST, "/posts/")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(r#"{"title": "Text", "content": "Not JSON by its type"}"#)
        .answer()
        .await;
    expect_error(text, StatusCode::UNPROCESSABLE_ENTITY).await;

    let bad_bodies = [
        json!({"title": "No content"}),
        json!({"title": "", "content": "Empty title"}),
        json!({"title": "\u{200B}\u{2060}", "content": "Invisible title"}),
        json!({"title": "Null", "content": "x", "published": null}),
        json!({"title": "Typed", "content": "x", "published": "yes"}),
    ];
    for body in bad_bodies {
        let response = facade
            .as_person(&alice, Method::POST, "/posts/")
            .json(&body)
            .answer()
            .await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn listing_pages_with_limit_and_skip_and_searches(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    for title in ["Rust one", "Python two", "Rust three", "Go four"] {
        facade
            .create_post(&alice, json!({"title": title, "content": "text"}))
            .await;
    }
    let titles = |page: Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["Post"]["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let cases = [
        (
            "/posts/",
            vec!["Go four", "Rust three", "Python two", "Rust one"],
        ),
        ("/posts/?limit=2", vec!["Go four", "Rust three"]),
        ("/posts/?limit=2&skip=1", vec!["Rust three", "Python two"]),
        ("/posts?skip=3", vec!["Rust one"]),
        ("/posts/?search=rust", vec!["Rust three", "Rust one"]),
        ("/posts/?search=rust&limit=1&skip=1", vec!["Rust one"]),
        ("/posts/?search=java", vec![]),
    ];
    for (path, expected) in cases {
        let response = facade.as_person(&alice, Method::GET, path).answer().await;
        assert_eq!(
            titles(expect(response, StatusCode::OK).await),
            expected,
            "{path}"
        );
    }
    let invalid = [
        "/posts/?limit=abc",
        "/posts/?limit=-1",
        "/posts/?skip=-1",
        "/posts/?search=a%00b",
    ];
    for path in invalid {
        let response = facade.as_person(&alice, Method::GET, path).answer().await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn put_replaces_a_post_and_ignores_ids_in_the_body(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let bob = facade.sign_up("bob@example.com").await;
    let draft = facade
        .create_post(
            &alice,
            json!({"title": "Draft", "content": "Old", "published": false}),
        )
        .await;
    let other = facade
        .create_post(&alice, json!({"title": "Other", "content": "Stays"}))
        .await;
    let id = draft["id"].as_str().unwrap();

    // The course's clients send the whole post back, `id` included.
    for path in [format!("/posts/{id}"), format!("/posts/{id}/")] {
        let response = facade
            .as_person(&alice, Method::PUT, &path)
            .json(&json!({
                "id": other["id"],
                "owner_id": bob.id,
                "owner": {"id": bob.id},
                "title": "New",
                "content": "Replaced",
            }))
            .answer()
            .await;
        let replaced = expect(response, StatusCode::OK).await;
        assert_post(&replaced, &alice, "alice@example.com");
        assert_eq!(replaced["id"], id, "the id comes from the path");
        assert_eq!(
            (
                &replaced["title"],
                &replaced["content"],
                &replaced["published"]
            ),
            (&json!("New"), &json!("Replaced"), &json!(true)),
            "a replace without `published` publishes"
        );
        assert_eq!(replaced["created_at"], draft["created_at"]);
    }
    let response = facade
        .as_person(
            &alice,
            Method::GET,
            &format!("/posts/{}", other["id"].as_str().unwrap()),
        )
        .answer()
        .await;
    assert_eq!(
        expect(response, StatusCode::OK).await["Post"],
        other,
        "the other post is untouched"
    );

    let response = facade
        .as_person(&alice, Method::PUT, &format!("/posts/{id}"))
        .json(&json!({"title": "Hidden", "content": "Again", "published": false}))
        .answer()
        .await;
    assert_eq!(expect(response, StatusCode::OK).await["published"], false);

    let missing_content = facade
        .as_person(&alice, Method::PUT, &format!("/posts/{id}"))
        .json(&json!({"title": "Only a title"}))
        .answer()
        .await;
    expect_error(missing_content, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn patch_changes_only_the_fields_given(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let post = facade
        .create_post(&alice, json!({"title": "Title", "content": "Content"}))
        .await;
    let path = format!("/posts/{}", post["id"].as_str().unwrap());

    let patch = |body: Value| {
        facade
            .as_person(&alice, Method::PATCH, &path)
            .json(&body)
            .send()
    };
    let changed = expect(
        patch(json!({"title": "New title"})).await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_post(&changed, &alice, "alice@example.com");
    assert_eq!(
        (
            &changed["title"],
            &changed["content"],
            &changed["published"]
        ),
        (&json!("New title"), &json!("Content"), &json!(true))
    );
    let changed = expect(
        patch(json!({"published": false, "id": "ignored"}))
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            &changed["title"],
            &changed["content"],
            &changed["published"],
            &changed["id"]
        ),
        (
            &json!("New title"),
            &json!("Content"),
            &json!(false),
            &post["id"]
        )
    );
    let response = facade
        .as_person(&alice, Method::PATCH, &format!("{path}/"))
        .json(&json!({"content": "New content", "published": true}))
        .answer()
        .await;
    let changed = expect(response, StatusCode::OK).await;
    assert_eq!(
        (
            &changed["title"],
            &changed["content"],
            &changed["published"]
        ),
        (&json!("New title"), &json!("New content"), &json!(true))
    );

    for body in [
        json!({}),
        json!({"id": "only unknown fields"}),
        json!({"title": null}),
        json!({"title": ""}),
        json!({"published": "no"}),
    ] {
        let response = patch(body.clone()).await.unwrap();
        let detail = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(!detail.is_empty(), "{body}");
    }
    let response = facade.as_person(&alice, Method::GET, &path).answer().await;
    assert_eq!(
        expect(response, StatusCode::OK).await["Post"],
        changed,
        "refused patches change nothing"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn only_the_owner_changes_or_deletes_a_post(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let bob = facade.sign_up("bob@example.com").await;
    let post = facade
        .create_post(&alice, json!({"title": "Mine", "content": "Hands off"}))
        .await;
    let path = format!("/posts/{}", post["id"].as_str().unwrap());
    let body = json!({"title": "Bob's now", "content": "Taken"});

    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let response = facade
            .as_person(&bob, method.clone(), &path)
            .json(&body)
            .answer()
            .await;
        expect_error(response, StatusCode::FORBIDDEN).await;

        let unknown = format!("/posts/{}", Uuid::now_v7());
        let response = facade
            .as_person(&alice, method.clone(), &unknown)
            .json(&body)
            .answer()
            .await;
        expect_error(response, StatusCode::NOT_FOUND).await;

        let response = facade
            .as_person(&alice, method.clone(), "/posts/not-a-uuid")
            .json(&body)
            .answer()
            .await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }

    let response = facade.as_person(&alice, Method::GET, &path).answer().await;
    assert_eq!(
        expect(response, StatusCode::OK).await["Post"],
        post,
        "unchanged"
    );

    let deleted = facade
        .as_person(&alice, Method::DELETE, &format!("{path}/"))
        .answer()
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        deleted.bytes().await.unwrap().len(),
        0,
        "204 has an empty body"
    );

    let response = facade.as_person(&alice, Method::GET, &path).answer().await;
    expect_error(response, StatusCode::NOT_FOUND).await;
    let response = facade
        .as_person(&alice, Method::DELETE, &path)
        .answer()
        .await;
    expect_error(response, StatusCode::NOT_FOUND).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn the_token_is_checked_before_the_body(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let post = facade
        .create_post(&alice, json!({"title": "Title", "content": "Content"}))
        .await;
    let post_path = format!("/posts/{}", post["id"].as_str().unwrap());
    let routes = [
        (Method::GET, "/posts/".to_owned()),
        (Method::POST, "/posts/".to_owned()),
        (Method::GET, post_path.clone()),
        (Method::PUT, post_path.clone()),
        (Method::PATCH, post_path.clone()),
        (Method::DELETE, post_path.clone()),
        (Method::POST, "/vote/".to_owned()),
        (Method::GET, format!("/users/{}", alice.id)),
    ];
    for (method, path) in routes {
        // Neither token nor body: 401, not 422.
        let response = facade.request(method.clone(), &path).answer().await;
        let detail = expect_error(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(detail, "missing access token", "{method} {path}");

        // A malformed body does not matter without a valid token either.
        for authorization in ["Bearer not-a-jwt", "Basic YWxpY2U6c2VjcmV0", "Bearer "] {
            let response = facade
                .request(method.clone(), &path)
                .header(header::AUTHORIZATION, authorization)
                .header(header::CONTENT_TYPE, "application/json")
                .body("{not json")
                .answer()
                .await;
            expect_error(response, StatusCode::UNAUTHORIZED).await;
        }
    }

    // A token the services did not sign.
    let mut forged = alice.token.clone().into_bytes();
    let inside_signature = alice.token.rfind('.').unwrap() + 5;
    forged[inside_signature] = if forged[inside_signature] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let forged = String::from_utf8(forged).unwrap();
    let response = facade
        .request(Method::GET, "/posts/")
        .bearer_auth(&forged)
        .answer()
        .await;
    expect_error(response, StatusCode::UNAUTHORIZED).await;

    // With a valid token, the malformed body is what is wrong.
    let response = facade
        .as_person(&alice, Method::POST, "/posts/")
        .header(header::CONTENT_TYPE, "application/json")
        .body("{not json")
        .answer()
        .await;
    expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn votes_like_and_unlike(pool: PgPool) {
    let (system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let bob = facade.sign_up("bob@example.com").await;
    let post = facade
        .create_post(&alice, json!({"title": "Like me", "content": "Please"}))
        .await;
    let post_id = post["id"].as_str().unwrap();
    let vote = |person: &Person, path: &str, body: Value| {
        facade
            .as_person(person, Method::POST, path)
            .json(&body)
            .send()
    };
    let votes_of_post = || async {
        let response = facade
            .as_person(&alice, Method::GET, &format!("/posts/{post_id}"))
            .answer()
            .await;
        expect(response, StatusCode::OK).await["votes"].clone()
    };

    let response = vote(&bob, "/vote/", json!({"post_id": post_id, "dir": 1}))
        .await
        .unwrap();
    assert_eq!(
        expect(response, StatusCode::CREATED).await,
        json!({"message": "successfully added vote"})
    );
    // JSON does not tell 1 from 1.0.
    let response = vote(&alice, "/vote", json!({"post_id": post_id, "dir": 1.0}))
        .await
        .unwrap();
    expect(response, StatusCode::CREATED).await;
    assert_eq!(votes_of_post().await, 2);
    assert_eq!(system.stored_likes(post_id).await, 2);

    let response = vote(&bob, "/vote/", json!({"post_id": post_id, "dir": 1}))
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT).await;

    let response = vote(&bob, "/vote/", json!({"post_id": post_id, "dir": 0}))
        .await
        .unwrap();
    assert_eq!(
        expect(response, StatusCode::CREATED).await,
        json!({"message": "successfully deleted vote"})
    );
    assert_eq!(votes_of_post().await, 1);
    let response = vote(&bob, "/vote/", json!({"post_id": post_id, "dir": 0}))
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND).await;

    let unknown = Uuid::now_v7().to_string();
    let response = vote(&bob, "/vote/", json!({"post_id": unknown, "dir": 1}))
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND).await;

    for body in [
        json!({"post_id": post_id, "dir": 2}),
        json!({"post_id": post_id, "dir": -1}),
        json!({"post_id": post_id, "dir": "x"}),
        json!({"post_id": post_id, "dir": 1.5}),
        json!({"post_id": post_id}),
        json!({"dir": 1}),
        json!({"post_id": "42", "dir": 1}),
        json!({"post_id": 42, "dir": 1}),
    ] {
        let response = vote(&bob, "/vote/", body.clone()).await.unwrap();
        let detail = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(!detail.is_empty(), "{body}");
    }
    assert_eq!(
        system.stored_likes(post_id).await,
        1,
        "refused votes change nothing"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn openapi_document_and_docs_page(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;

    let response = facade.request(Method::GET, "/openapi.json").answer().await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let document = expect(response, StatusCode::OK).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &document["paths"];
    let operations = [
        ("/users/", "post"),
        ("/users/{id}", "get"),
        ("/login", "post"),
        ("/posts/", "get"),
        ("/posts/", "post"),
        ("/posts/{id}", "get"),
        ("/posts/{id}", "put"),
        ("/posts/{id}", "patch"),
        ("/posts/{id}", "delete"),
        ("/posts/stream", "get"),
        ("/vote/", "post"),
        ("/refresh", "post"),
        ("/logout", "post"),
        ("/logout/all", "post"),
        ("/sessions", "get"),
        ("/users/me", "get"),
        ("/users/me", "delete"),
        ("/users/me/password", "post"),
        ("/livez", "get"),
        ("/readyz", "get"),
    ];
    for (path, method) in operations {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is described");
        assert!(
            operation["responses"].is_object(),
            "{method} {path} responses"
        );
        let protected = !matches!(
            path,
            "/users/" | "/login" | "/refresh" | "/livez" | "/readyz"
        );
        assert_eq!(
            operation["security"] == json!([{"bearer": []}]),
            protected,
            "{method} {path} security"
        );
        let bodiless = matches!(path, "/logout" | "/logout/all");
        if matches!(method, "post" | "put" | "patch") && !bodiless {
            assert!(
                operation["requestBody"]["content"].is_object(),
                "{method} {path} body"
            );
        }
    }
    let mut operation_ids: Vec<&str> = paths
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    assert_eq!(operation_ids.len(), operations.len(), "no other operations");
    operation_ids.sort_unstable();
    operation_ids.dedup();
    assert_eq!(
        operation_ids.len(),
        operations.len(),
        "operation ids are unique"
    );
    assert!(
        paths["/login"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
            .is_object()
    );
    assert_eq!(
        paths["/posts/"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/PostOut"
    );
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "The `access_token` from `POST /login`"})
    );

    let response = facade.request(Method::GET, "/docs").answer().await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("SwaggerUIBundle") && page.contains("/openapi.json"));

    // Everything the page loads comes from the gateway itself, cached for long.
    assert!(!page.contains("://"), "only same-origin URLs: {page}");
    let assets: Vec<&str> = page
        .split(['"', '\''])
        .filter(|part| part.starts_with("/docs/"))
        .collect();
    assert_eq!(assets.len(), 2, "a script and a style sheet: {page}");
    for asset in assets {
        let response = facade.request(Method::GET, asset).answer().await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let header = |name| response.headers()[name].to_str().unwrap().to_owned();
        let expected = if asset.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(
            header(header::CONTENT_TYPE).starts_with(expected),
            "{asset}"
        );
        assert!(
            header(header::CACHE_CONTROL).contains("immutable"),
            "{asset}"
        );
        assert!(response.bytes().await.unwrap().len() > 10_000, "{asset}");
    }
    let unknown = facade
        .request(Method::GET, "/docs/swagger-ui-0.0.0.css")
        .answer()
        .await;
    expect_error(unknown, StatusCode::NOT_FOUND).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn unknown_routes_and_oversized_bodies(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;

    let response = facade.request(Method::GET, "/nothing-here").answer().await;
    assert_eq!(
        expect_error(response, StatusCode::NOT_FOUND).await,
        "Not Found"
    );
    let response = facade.request(Method::DELETE, "/users/").answer().await;
    assert_eq!(
        expect_error(response, StatusCode::METHOD_NOT_ALLOWED).await,
        "Method Not Allowed"
    );

    let huge = "x".repeat(100 * 1024);
    let response = facade
        .as_person(&alice, Method::POST, "/posts/")
        .json(&json!({"title": "Huge", "content": huge}))
        .answer()
        .await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    let response = facade
        .request(Method::POST, "/login")
        .form(&[
            ("username", "alice@example.com"),
            ("password", huge.as_str()),
        ])
        .answer()
        .await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn a_service_that_is_down_costs_only_what_needs_it(pool: PgPool) {
    let (system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let post = facade
        .create_post(&alice, json!({"title": "Title", "content": "Content"}))
        .await;
    let post_id = post["id"].as_str().unwrap();

    // votes-service down: posts are answered, their like counts null, not zero.
    system.votes.stop().await;
    let response = facade
        .as_person(&alice, Method::GET, "/posts/")
        .answer()
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page[0]["votes"], Value::Null, "{page}");
    assert_eq!(page[0]["Post"]["owner"]["email"], "alice@example.com");
    // Liking needs votes-service itself.
    let response = facade
        .as_person(&alice, Method::POST, "/vote/")
        .json(&json!({"post_id": post_id, "dir": 1}))
        .answer()
        .await;
    let detail = expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(detail, "votes-service unavailable, try again");

    // auth-service down too: the owner is the one posts-service remembers, and
    // the email the one the facade remembers (an email never changes).
    system.auth.stop().await;
    let response = facade
        .as_person(&alice, Method::GET, &format!("/posts/{post_id}"))
        .answer()
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let read: Value = response.json().await.unwrap();
    assert_eq!(read["Post"]["owner"]["id"], alice.id.as_str(), "{read}");
    assert_eq!(
        read["Post"]["owner"]["email"], "alice@example.com",
        "{read}"
    );
    assert_eq!(read["votes"], Value::Null);

    system.posts.stop().await;
    let response = facade
        .as_person(&alice, Method::GET, &format!("/posts/{post_id}"))
        .answer()
        .await;
    let detail = expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(detail, "posts-service unavailable, try again");
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn repeated_failed_logins_get_429(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    facade.register("alice@example.com").await;
    let login = |password: &'static str| {
        facade
            .request(Method::POST, "/login")
            .form(&[("username", "alice@example.com"), ("password", password)])
            .answer()
    };

    // auth-service's default allowance for one email, from an address that
    // fails too; then each further login must wait a second or more.
    let free = auth_service::AuthSettings::default().login_free_failures_per_account;
    for _ in 0..free {
        expect_error(login("a wrong guess").await, StatusCode::FORBIDDEN).await;
    }
    let refused = login(PASSWORD).await;
    let retry_after = refused
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let detail = expect_error(refused, StatusCode::TOO_MANY_REQUESTS).await;

    assert!(detail.contains("try again"), "{detail}");
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "the first delay, a second"
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn owner_emails_are_asked_of_auth_service_once_and_remembered(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let post = facade
        .create_post(&alice, json!({"title": "Title", "content": "Content"}))
        .await;
    let path = format!("/posts/{}", post["id"].as_str().unwrap());
    let batch_lookups = |cost: &system_tests::telemetry::Cost| {
        cost.rpcs
            .get("/agora.auth.v1.UserService/BatchGetUsers")
            .copied()
            .unwrap_or(0)
    };

    let (read, cost) = cost_of(async {
        let response = facade.as_person(&alice, Method::GET, &path).answer().await;
        response.json::<Value>().await.unwrap()
    })
    .await;

    assert_eq!(read["Post"]["owner"]["email"], "alice@example.com");
    assert_eq!(
        batch_lookups(&cost),
        1,
        "posts-service's own owner look-up only: the facade remembered the owner's \
         email when the post was created: {cost:?}"
    );
    assert_eq!(
        cost.rpcs.get("/agora.posts.v1.PostService/GetPost"),
        Some(&1)
    );
}

#[sqlx::test(migrator = "service_kit::database::MIGRATOR")]
async fn invalid_requests_answer_422_as_fastapi_does(pool: PgPool) {
    let (_system, facade) = spawn_facade(pool).await;
    let alice = facade.sign_up("alice@example.com").await;
    let post = facade
        .create_post(&alice, json!({"title": "Hello", "content": "World"}))
        .await;
    let path = format!("/posts/{}", post["id"].as_str().unwrap());
    let long_title = "x".repeat(201);

    // What the facade finds itself, and what the services find (a
    // google.rpc.BadRequest field violation), alike.
    let bodies = [
        (
            "/posts/",
            json!({"title": "No content"}),
            r#"["body","content"]"#,
            "missing",
        ),
        (
            "/posts/",
            json!({"title": 7, "content": "x"}),
            r#"["body","title"]"#,
            "string_type",
        ),
        (
            "/posts/",
            json!({"title": "x", "content": "x", "published": "yes"}),
            r#"["body","published"]"#,
            "bool_type",
        ),
        (
            "/posts/",
            json!({"title": null, "content": "x"}),
            r#"["body","title"]"#,
            "string_type",
        ),
        (
            "/posts/",
            json!({"title": long_title, "content": "x"}),
            r#"["body","title"]"#,
            "string_too_long",
        ),
        (
            "/posts/",
            json!(["a list"]),
            r#"["body"]"#,
            "model_attributes_type",
        ),
        (
            "/vote/",
            json!({"post_id": post["id"], "dir": 2}),
            r#"["body","dir"]"#,
            "value_error",
        ),
        (
            "/vote/",
            json!({"post_id": "42", "dir": 1}),
            r#"["body","post_id"]"#,
            "uuid_parsing",
        ),
        (
            "/vote/",
            json!({"dir": 1}),
            r#"["body","post_id"]"#,
            "missing",
        ),
    ];
    for (path, body, loc, kind) in bodies {
        let response = facade
            .as_person(&alice, Method::POST, path)
            .json(&body)
            .answer()
            .await;
        expect_invalid(response, loc, kind).await;
    }
    let put_long = facade
        .as_person(&alice, Method::PUT, &path)
        .json(&json!({"title": "x".repeat(201), "content": "x"}))
        .answer()
        .await;
    expect_invalid(put_long, r#"["body","title"]"#, "string_too_long").await;

    let malformed = facade
        .as_person(&alice, Method::POST, "/posts/")
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"title\": ")
        .answer()
        .await;
    expect_invalid(malformed, r#"["body",10]"#, "json_invalid").await;

    for (path, loc, kind) in [
        ("/posts/?limit=abc", r#"["query","limit"]"#, "int_parsing"),
        (
            "/posts/?limit=-1",
            r#"["query","limit"]"#,
            "greater_than_equal",
        ),
        (
            "/posts/?skip=-1",
            r#"["query","skip"]"#,
            "greater_than_equal",
        ),
        (
            "/posts/?search=a%00b",
            r#"["query","search"]"#,
            "value_error",
        ),
        ("/posts/1", r#"["path","id"]"#, "uuid_parsing"),
    ] {
        let response = facade.as_person(&alice, Method::GET, path).answer().await;
        expect_invalid(response, loc, kind).await;
    }

    // The login form, as OAuth2PasswordRequestForm reads it.
    let missing_password = facade
        .request(Method::POST, "/login")
        .form(&[("username", "alice@example.com")])
        .answer()
        .await;
    expect_invalid(missing_password, r#"["body","password"]"#, "missing").await;
    let not_a_form = facade
        .request(Method::POST, "/login")
        .json(&json!({"username": "alice@example.com", "password": PASSWORD}))
        .answer()
        .await;
    expect_invalid(not_a_form, r#"["body","username"]"#, "missing").await;
    let no_email = facade
        .request(Method::POST, "/login")
        .form(&[("username", ""), ("password", PASSWORD)])
        .answer()
        .await;
    expect_invalid(no_email, r#"["body","username"]"#, "missing").await;

    // Registration: every bad field at once, as pydantic lists them.
    let response = facade
        .request(Method::POST, "/users/")
        .json(&json!({"email": "nope", "password": "short"}))
        .answer()
        .await;
    let body = expect(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let entries: Vec<(String, String)> = validation_errors(&body)
        .into_iter()
        .map(|(loc, kind, _)| (loc, kind))
        .collect();
    assert_eq!(
        entries,
        [
            (r#"["body","email"]"#.to_owned(), "value_error".to_owned()),
            (
                r#"["body","password"]"#.to_owned(),
                "string_too_short".to_owned()
            ),
        ],
        "{body}"
    );

    // Other errors keep FastAPI's plain detail.
    let missing = facade
        .as_person(&alice, Method::GET, &format!("/posts/{}", Uuid::now_v7()))
        .answer()
        .await;
    let body = expect(missing, StatusCode::NOT_FOUND).await;
    assert!(body["detail"].is_string(), "{body}");
}
