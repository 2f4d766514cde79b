//! A fresh Postgres database per test, on the server named by `KALLA_TEST_PG_URL`
//! (default: the local server), or on a throwaway cluster started with `initdb`/`pg_ctl`
//! when no server answers; and [`PgCluster`], a server of a test's own that it can stop and
//! restart.

use std::os::unix::fs::PermissionsExt;
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
        Self::create_on(&server_url().await).await
    }

    /// A fresh database on the server at `server_url` (e.g. a [`PgCluster`]'s).
    pub async fn create_on(server_url: &str) -> Self {
        let admin_url = server_url.to_string();
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

    /// Postgres's own answer to `SELECT <columns> FROM <rest>`, each column as text.
    pub async fn text_row(&self, query: &str) -> Vec<Option<String>> {
        let (columns, rest) = query.split_once(" FROM ").expect("columns FROM rest");
        let as_text: Vec<String> = columns
            .split(", ")
            .map(|c| format!("CAST({c} AS text)"))
            .collect();
        let sql = format!("SELECT ARRAY[{}] FROM {rest}", as_text.join(", "));
        sqlx::query_scalar(&sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Waits until a `COPY` out of this database runs (an executor's scan or refresh is mid-way).
    pub async fn wait_for_copy(&self) {
        crate::wait_for("an executor's COPY", Duration::from_secs(60), || async {
            self.copying().await.then_some(())
        })
        .await;
    }

    /// Waits until a `COPY` out of this database runs while `task` does: true once one is seen,
    /// false if `task` ended first (a run too quick to be caught mid-way between two looks).
    pub async fn wait_for_copy_during<T>(&self, task: &tokio::task::JoinHandle<T>) -> bool {
        crate::wait_for(
            "an executor's COPY or the task's end",
            Duration::from_secs(60),
            || async {
                if self.copying().await {
                    return Some(true);
                }
                task.is_finished().then_some(false)
            },
        )
        .await
    }

    async fn copying(&self) -> bool {
        let copying: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'COPY%' AND state = 'active'",
        )
        .bind(&self.name)
        .fetch_one(&self.pool)
        .await;
        copying.is_ok_and(|n| n > 0)
    }

    /// Drops the database now, terminating its connections (a source "going away").
    pub async fn drop_now(&self) {
        drop_database(&self.admin_url, &self.name).await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        crate::run_detached(async move { drop_database(&admin_url, &name).await });
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

static THROWAWAY: OnceLock<PgCluster> = OnceLock::new();

fn throwaway_cluster() -> &'static str {
    &THROWAWAY.get_or_init(PgCluster::start).url
}

/// A Postgres cluster of the test's own, made with `initdb` and run with `pg_ctl`, so a test can
/// stop and restart its server; stopped (immediately) when dropped. Postgres refuses to run as
/// root, so under root the cluster belongs to, and runs as, the `postgres` user.
/// A TLS-only server's certificate and key, the CA it trusts for client certificates, and its
/// `pg_hba.conf` lines for TCP (`hostssl …`).
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub hba: Vec<String>,
}

pub struct PgCluster {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub url: String,
    dir: PathBuf,
    port: u16,
}

impl PgCluster {
    pub fn start() -> Self {
        let cluster = Self::init();
        cluster.start_server();
        cluster
    }

    /// A cluster that serves only TLS sessions over TCP (`hostssl` alone in `pg_hba.conf`, the
    /// socket trusted for the test's own set-up), with `tls`'s certificates.
    pub fn start_with_tls(tls: &ServerTls) -> Self {
        let cluster = Self::init();
        cluster.configure_tls(tls);
        cluster.start_server();
        cluster
    }

    /// A cluster whose TCP sessions must give a password (SCRAM), except the `postgres` user's,
    /// which the test sets up with.
    pub fn start_with_passwords() -> Self {
        let cluster = Self::init();
        let hba = "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let data = cluster.dir.join("data");
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        hand_to_postgres(&data);
        cluster.start_server();
        cluster
    }

    fn init() -> Self {
        let installed = Command::new("initdb").arg("--version").output().is_ok();
        assert!(
            installed,
            "`initdb` is not on PATH, and the tests need a Postgres cluster of their own (the fault \
             tests always; the others when no server answers at {DEFAULT_URL} or {URL_ENV}): \
             install PostgreSQL (e.g. `apt-get install postgresql`)"
        );
        let dir = tempfile::Builder::new()
            .prefix("kalla-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        hand_to_postgres(&dir);
        let port = crate::ports::free_port();
        let cluster = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            port,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data_dir(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        );
        cluster
    }

    fn configure_tls(&self, tls: &ServerTls) {
        let data = self.dir.join("data");
        for (from, to) in [
            (&tls.cert, "server.crt"),
            (&tls.key, "server.key"),
            (&tls.client_ca, "root.crt"),
        ] {
            std::fs::copy(from, data.join(to)).expect("copy a certificate file");
        }
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod server.key");
        let conf = "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n";
        let mut settings = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut settings, conf.as_bytes()).expect("write postgresql.conf");
        let hba = format!("local all all trust\n{}\n", tls.hba.join("\n"));
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        hand_to_postgres(&data);
    }

    /// Creates `database` and returns its URL.
    pub async fn create_database(&self, database: &str) -> String {
        let admin = connect(&self.url).await.expect("connect to the test cluster");
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        with_database(&self.url, database)
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    /// Stops the server in pg_ctl's `mode` (`smart`, `fast`: sessions terminated, `immediate`:
    /// no clean shutdown), waiting until it is down.
    pub fn stop_server(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data_dir(), "-m", mode, "-w", "stop"]);
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = postgres_command(program)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = postgres_command("pg_ctl")
            .args(["-D", &self.data_dir(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Gives `path` and everything in it to the `postgres` user when the tests run as root (the
/// server's tools run as that user then).
fn hand_to_postgres(path: &std::path::Path) {
    if !running_as_root() {
        return;
    }
    let owned = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(
        owned.success(),
        "cannot hand {} to the postgres user",
        path.display()
    );
}

/// `program` of the Postgres server's tools, run as the `postgres` user when the tests run as root.
fn postgres_command(program: &str) -> Command {
    if !running_as_root() {
        return Command::new(program);
    }
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--", program]);
    command
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
