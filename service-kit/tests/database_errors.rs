//! Start-up says what is wrong with the database, in words that point at the fix:
//! a URL of the wrong shape, a server that does not answer, a login refused, a
//! database missing that the role may not create, migrations that fail.
//!
//! Runs against the test server (`DATABASE_URL`), creating roles of its own and
//! dropping them after.

use service_kit::{
    DatabaseArgs,
    database::{self, DatabaseError, URL_FORM},
};
use sqlx::{Connection, PgConnection};

fn admin_url() -> url::Url {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names the test server");
    url::Url::parse(&url).expect("DATABASE_URL is a URL")
}

/// The test server's URL, as `role` and for `database`.
fn url_as(role: &str, database: &str) -> String {
    let mut url = admin_url();
    url.set_username(role).expect("a URL with a user");
    let _ = url.set_password(None);
    url.set_path(database);
    url.to_string()
}

async fn admin(sql: &str) {
    let mut conn = PgConnection::connect(admin_url().as_str())
        .await
        .expect("the test server answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// What `connect` answers for `url`: it must fail.
async fn failure(url: &str) -> (DatabaseError, String) {
    let error = database::connect(&DatabaseArgs::new(url))
        .await
        .expect_err("the start fails");
    let message = error.to_string();
    (error, message)
}

/// A role made for one test, with `attributes`; dropped (with anything it owns)
/// by [`Role::drop_now`].
struct Role(String);

impl Role {
    async fn create(attributes: &str) -> Self {
        let name = unique("agora_role");
        admin(&format!("create role {name} {attributes}")).await;
        Self(name)
    }

    async fn drop_now(self) {
        admin(&format!("drop role if exists {}", self.0)).await;
    }
}

#[tokio::test]
async fn a_url_without_a_scheme_says_what_form_it_must_have() {
    for url in [
        "localhost:5432",
        "localhost:5432/agora",
        "mysql://root@db/agora",
    ] {
        let (error, message) = failure(url).await;
        assert!(
            matches!(error, DatabaseError::BadUrl { .. }),
            "{url}: {message}"
        );
        assert!(message.contains(URL_FORM), "{url}: {message}");
        assert!(!message.contains("anonymous"), "{url}: {message}");
    }
}

#[tokio::test]
async fn nothing_listening_is_unreachable_and_names_the_url() {
    let (error, message) = failure("postgres://agora:s3cret@127.0.0.1:1/agora").await;
    assert!(
        matches!(error, DatabaseError::Unreachable { .. }),
        "{message}"
    );
    assert!(
        message.contains("cannot reach PostgreSQL at postgres://agora:***@127.0.0.1:1/agora"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn a_refused_login_is_not_called_unreachable() {
    let nologin = Role::create("nologin").await;
    let (refused, refused_message) = failure(&url_as(&nologin.0, "postgres")).await;
    nologin.drop_now().await;
    let (unknown, unknown_message) = failure(&url_as(&unique("nobody"), "postgres")).await;

    for (error, message) in [(refused, refused_message), (unknown, unknown_message)] {
        assert!(
            matches!(error, DatabaseError::Authentication { .. }),
            "{message}"
        );
        assert!(message.contains("refused the login"), "{message}");
        assert!(!message.contains("cannot reach"), "{message}");
    }
}

#[tokio::test]
async fn a_missing_database_the_role_may_not_create_says_how_to_fix_it() {
    let role = Role::create("login nocreatedb").await;
    let database = unique("agora_missing");
    let name = role.0.clone();
    let (error, message) = failure(&url_as(&name, &database)).await;
    role.drop_now().await;

    assert!(
        matches!(error, DatabaseError::CannotCreate { .. }),
        "{message}"
    );
    for expected in [
        format!("the database \"{database}\" does not exist"),
        format!("create database {database} owner {name}"),
        format!("alter role {name} createdb"),
        "permission denied".to_owned(),
    ] {
        assert!(message.contains(&expected), "{expected:?} in: {message}");
    }
    assert!(!message.contains("cannot reach"), "{message}");
}

#[tokio::test]
async fn migrations_that_fail_say_so() {
    // The role may connect to a database it does not own, but not create
    // anything in it (PostgreSQL 15 and later deny CREATE on `public`).
    let role = Role::create("login").await;
    let database = unique("agora_foreign");
    admin(&format!("create database {database}")).await;
    admin(&format!(
        "revoke create on database {database} from public; \
         grant connect on database {database} to {}",
        role.0
    ))
    .await;
    let mut scoped = admin_url();
    scoped.set_path(&database);
    {
        let mut conn = PgConnection::connect(scoped.as_str()).await.unwrap();
        sqlx::raw_sql("revoke create on schema public from public")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let (error, message) = failure(&url_as(&role.0, &database)).await;
    admin(&format!("drop database {database} with (force)")).await;
    role.drop_now().await;

    assert!(
        matches!(error, DatabaseError::Migration { .. }),
        "{message}"
    );
    assert!(message.contains("cannot apply migrations"), "{message}");
    assert!(message.contains("permission denied"), "{message}");
}
