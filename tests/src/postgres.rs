//! A fresh Postgres database per test, on the server named by `KALLA_TEST_PG_URL`
//! (default: the local server), or on a throwaway cluster started with `initdb`/`pg_ctl`
//! when no server answers.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use rand::Rng;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub const URL_ENV: &str = "KALLA_TEST_PG_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test and dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    pub name: String,
    /// Connection URL of this database.
    pub url: String,
    pub pool: PgPool,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin_url = server_url().await;
        let admin = connect(&admin_url).await.expect("connect to the Postgres server");
        let name = format!("kalla_test_{:016x}", rand::thread_rng().r#gen::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(&admin_url, &name);
        let pool = connect(&url).await.expect("connect to the test database");
        Self {
            name,
            url,
            pool,
            admin_url,
        }
    }

    /// A Kalla source URI for `table` in this database.
    pub fn source_uri(&self, table: &str) -> String {
        format!("{}?table={table}", self.url)
    }

    pub async fn execute(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Drops the database now, terminating its connections (a source "going away").
    pub async fn drop_now(&self) {
        drop_database(&self.admin_url, &self.name).await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime that is shutting down: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(drop_database(&admin_url, &name));
        })
        .join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(admin) = connect(admin_url).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
        admin.close().await;
    }
}

async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

fn with_database(server_url: &str, database: &str) -> String {
    let mut url = url::Url::parse(server_url).expect("valid server URL");
    url.set_path(database);
    url.to_string()
}

/// The server URL: the configured or local server if it answers, else a throwaway cluster.
pub async fn server_url() -> String {
    let configured = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string());
    if connect(&configured).await.is_ok() {
        return configured;
    }
    if std::env::var(URL_ENV).is_ok() {
        panic!("{URL_ENV}={configured} does not answer");
    }
    throwaway_cluster().to_string()
}

static THROWAWAY: OnceLock<ThrowawayCluster> = OnceLock::new();

struct ThrowawayCluster {
    url: String,
    data_dir: PathBuf,
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "stop"])
            .status();
    }
}

fn throwaway_cluster() -> &'static str {
    &THROWAWAY.get_or_init(start_throwaway_cluster).url
}

fn start_throwaway_cluster() -> ThrowawayCluster {
    let installed = Command::new("initdb").arg("--version").output().is_ok();
    assert!(
        installed,
        "no Postgres server answers at {DEFAULT_URL} and `initdb` is not on PATH: \
         install PostgreSQL (e.g. `apt-get install postgresql`) or set {URL_ENV}"
    );
    let dir = tempfile::Builder::new()
        .prefix("kalla-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let data_dir = dir.join("data");
    let port = crate::ports::free_port();
    let status = Command::new("initdb")
        .arg("-D")
        .arg(&data_dir)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"])
        .status()
        .expect("run initdb");
    assert!(status.success(), "initdb failed");
    let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", dir.display());
    let status = Command::new("pg_ctl")
        .arg("-D")
        .arg(&data_dir)
        .args(["-o", &options, "-l"])
        .arg(dir.join("postgres.log"))
        .args(["-w", "start"])
        .status()
        .expect("run pg_ctl");
    assert!(
        status.success(),
        "pg_ctl start failed; see {}",
        dir.join("postgres.log").display()
    );
    ThrowawayCluster {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        data_dir,
    }
}
