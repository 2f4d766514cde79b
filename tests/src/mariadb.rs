//! A fresh MariaDB database per test, on the server named by `KALLA_TEST_MARIADB_URL` (default:
//! the local server, `mysql://root@127.0.0.1:3306`), dropped when the test ends.

use std::time::Duration;

use rand::Rng;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

pub const URL_ENV: &str = "KALLA_TEST_MARIADB_URL";
const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/";

/// A database created for one test and dropped when this is dropped.
pub struct TestMariaDb {
    pub name: String,
    /// Connection URL of this database.
    pub url: String,
    pub pool: MySqlPool,
    server_url: String,
}

impl TestMariaDb {
    pub async fn create() -> Self {
        let server_url = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string());
        let admin = connect(&server_url).await.unwrap_or_else(|e| {
            panic!(
                "no MariaDB answers at {server_url} ({e}): start one (Debian: apt-get install \
                 mariadb-server; then mariadbd), or set {URL_ENV}"
            )
        });
        let name = format!("kalla_test_{:016x}", rand::thread_rng().r#gen::<u64>());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let mut url = url::Url::parse(&server_url).expect("valid server URL");
        url.set_path(&name);
        let url = url.to_string();
        let pool = connect(&url).await.expect("connect to the test database");
        Self {
            name,
            url,
            pool,
            server_url,
        }
    }

    /// A Kalla source URI for `table` in this database.
    pub fn source_uri(&self, table: &str) -> String {
        format!("{}?table={table}", self.url)
    }

    /// Runs `sql` (several statements allowed).
    pub async fn execute(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first row of `query`, each value as MariaDB prints it.
    pub async fn text_row(&self, query: &str) -> Vec<Option<String>> {
        use sqlx::Row;
        let wrapped = format!("SELECT * FROM ({query}) AS q");
        let row = sqlx::raw_sql(&wrapped)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        (0..row.len())
            .map(|i| {
                row.try_get_unchecked::<Option<&[u8]>, _>(i)
                    .unwrap()
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            })
            .collect()
    }
}

impl Drop for TestMariaDb {
    fn drop(&mut self) {
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        crate::run_detached(async move {
            if let Ok(admin) = connect(&server_url).await {
                let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        });
    }
}

async fn connect(url: &str) -> Result<MySqlPool, sqlx::Error> {
    MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}
