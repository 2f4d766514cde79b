//! The metadata catalog on both backends: SQLite files and Postgres databases.

use kalla_core::ClusterKey;
use kalla_e2e::postgres::TestDatabase;
use kalla_runner::metadata::{MetadataDb, MetadataError, NewSource};

/// Runs `check` with a freshly migrated SQLite database, then a Postgres one, and their URLs.
async fn each_backend(check: impl AsyncFn(MetadataDb, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.path().join("kalla.db").display());
    check(
        MetadataDb::open(&sqlite_url).await.expect("sqlite metadata"),
        &sqlite_url,
    )
    .await;
    let database = TestDatabase::create().await;
    check(
        MetadataDb::open(&database.url).await.expect("postgres metadata"),
        &database.url,
    )
    .await;
}

#[tokio::test]
async fn sources_and_their_secrets_live_and_die_together() {
    each_backend(async |db: MetadataDb, _: &str| {
        let key = ClusterKey::from_base64(&ClusterKey::generate_base64()).unwrap();
        let secret_id = MetadataDb::new_secret_id();
        let sealed = key.seal(&secret_id, "pw");
        let created = db
            .insert_source(NewSource {
                alias: "invoices",
                uri: "postgres://app@h/db?table=t",
                source_type: "postgres",
                secret: Some((secret_id.clone(), sealed.clone())),
            })
            .await
            .unwrap();
        assert!(
            created.id.starts_with("src_") && created.id.len() == 25,
            "{}",
            created.id
        );
        assert_eq!(db.source("invoices").await.unwrap(), created);
        assert_eq!(db.secret(&secret_id).await.unwrap(), sealed);
        db.insert_source(NewSource {
            alias: "payments",
            uri: "file:///x.csv",
            source_type: "csv",
            secret: None,
        })
        .await
        .unwrap();
        let aliases: Vec<String> = db
            .list_sources()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.alias)
            .collect();
        assert_eq!(aliases, ["invoices", "payments"]);

        let duplicate = db
            .insert_source(NewSource {
                alias: "invoices",
                uri: "file:///y.csv",
                source_type: "csv",
                secret: Some((MetadataDb::new_secret_id(), sealed.clone())),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(duplicate, MetadataError::Duplicate { .. }),
            "{duplicate}"
        );

        db.delete_source("invoices").await.unwrap();
        assert!(matches!(
            db.source("invoices").await,
            Err(MetadataError::NotFound { .. })
        ));
        assert!(matches!(
            db.secret(&secret_id).await,
            Err(MetadataError::NotFound { .. })
        ));
        assert!(matches!(
            db.delete_source("invoices").await,
            Err(MetadataError::NotFound { .. })
        ));
        let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM secrets")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            secrets, 0,
            "neither the deleted source's nor the rejected duplicate's secret remains"
        );
    })
    .await;
}

#[tokio::test]
async fn an_edited_migration_is_refused_by_name() {
    each_backend(async |db: MetadataDb, url: &str| {
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1")
            .bind(vec![0u8; 48])
            .execute(db.pool())
            .await
            .unwrap();
        let reopened = MetadataDb::open(url).await.unwrap_err().to_string();
        assert!(
            reopened.contains("migration 1 (sources and secrets) was edited"),
            "{reopened}"
        );
    })
    .await;
}
