//! A fresh MariaDB database per test, on the server named by `KALLA_TEST_MARIADB_URL` (default:
//! the local server, `mysql://root@127.0.0.1:3306`), dropped when the test ends.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use rand::Rng;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use tempfile::TempDir;

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

/// A MariaDB server of the test's own (`mariadb-install-db`, then `mariadbd`), for what the
/// shared server cannot show: it serves TCP clients over TLS only (`require_secure_transport`),
/// with the certificate the test gives; the test sets it up as root over its socket. Killed when
/// dropped.
pub struct TlsMariaDb {
    pub port: u16,
    dir: TempDir,
    server: Child,
}

impl TlsMariaDb {
    pub fn start(cert: &Path, key: &Path, ca: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kalla-mariadb-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let installed = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=root", "--skip-test-db", "--auth-root-authentication-method=socket"])
            .output()
            .unwrap_or_else(|e| {
                panic!("mariadb-install-db ({e}): the TLS tests start a MariaDB server of their own; install mariadb-server")
            });
        assert!(
            installed.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
        let port = crate::ports::free_port();
        let path = |file: &Path| {
            file.canonicalize()
                .expect("a certificate file")
                .display()
                .to_string()
        };
        let server = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("mariadb.sock").display()))
            .arg(format!("--log-error={}", dir.path().join("error.log").display()))
            .arg(format!("--pid-file={}", dir.path().join("mariadb.pid").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--ssl-cert={}", path(cert)))
            .arg(format!("--ssl-key={}", path(key)))
            .arg(format!("--ssl-ca={}", path(ca)))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--require-secure-transport=ON",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
            ])
            .spawn()
            .expect("start mariadbd");
        let server = Self { port, dir, server };
        for _ in 0..150 {
            if server.try_admin("SELECT 1").is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mariadbd did not start: {}", server.log());
    }

    /// Runs `sql` as root over the server's socket.
    pub fn admin(&self, sql: &str) {
        self.try_admin(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", self.log()));
    }

    fn try_admin(&self, sql: &str) -> Result<(), String> {
        let output = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mariadb.sock").display()
            ))
            .args(["-uroot", "-e", sql])
            .output()
            .map_err(|e| format!("the mariadb client ({e})"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
