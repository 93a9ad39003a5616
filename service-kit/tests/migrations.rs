//! The schema history goes all the way up, all the way down, and up again.

use service_kit::database::MIGRATOR;
use sqlx::PgPool;

/// Every schema, table and extension in the database, as one sorted list.
async fn catalogue(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select 'schema ' || nspname from pg_namespace where nspname not like 'pg\\_%' and nspname <> 'information_schema'
         union all
         select 'table ' || schemaname || '.' || tablename from pg_tables
          where schemaname not in ('pg_catalog', 'information_schema') and tablename <> '_sqlx_migrations'
         union all
         select 'extension ' || extname from pg_extension
         order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn migrations_go_up_down_and_up_again(pool: PgPool) {
    let empty = catalogue(&pool).await;

    MIGRATOR.run(&pool).await.expect("up");
    let migrated = catalogue(&pool).await;
    for expected in [
        "schema auth",
        "schema posts",
        "schema votes",
        "table auth.users",
        "table auth.signing_keys",
        "table posts.posts",
        "table votes.votes",
        "extension pg_trgm",
    ] {
        assert!(
            migrated.iter().any(|entry| entry == expected),
            "{expected} missing from {migrated:?}"
        );
    }

    MIGRATOR.undo(&pool, 0).await.expect("down");
    assert_eq!(
        catalogue(&pool).await,
        empty,
        "reverting everything leaves nothing behind"
    );
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, 0);

    MIGRATOR.run(&pool).await.expect("up again");
    assert_eq!(catalogue(&pool).await, migrated);
}

#[test]
fn every_migration_is_reversible() {
    for migration in MIGRATOR.iter() {
        let kind = migration.migration_type;
        assert!(
            kind.is_reversible(),
            "{} {} has no down script",
            migration.version,
            migration.description
        );
    }
}
