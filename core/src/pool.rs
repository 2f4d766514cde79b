//! The process-wide registry of source connection pools.
//!
//! Every process (executor, runner, CLI) keeps one bounded pool per source, shared by all of
//! its tasks and requests. Connections announce the process through `application_name`, so
//! `pg_stat_activity` shows who is connected; idle connections close after a timeout and an
//! unused pool is dropped from the registry. TLS follows each URL's `sslmode` with the
//! certificates the process was configured with ([`crate::tls`]); a source whose sessions fell
//! back to plaintext is logged once. A pool is made only for a host the process's
//! [`HostPolicy`] allows, checked against the addresses it resolves to, which its connections
//! are then pinned to.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode, Postgres};
use sqlx::{Connection, Database, Pool};
use thiserror::Error;

use crate::allow::{HostError, HostPolicy};
use crate::tls::{CertificateDir, SslMode, TlsError, TlsSettings};

/// Postgres truncates `application_name` to this many bytes.
const MAX_APPLICATION_NAME: usize = 63;

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("invalid Postgres connection URL for {redacted}: {reason}")]
    InvalidUrl { redacted: String, reason: String },
    #[error("TLS settings of {redacted}: {source}")]
    Tls {
        redacted: String,
        #[source]
        source: Box<TlsError>,
    },
    #[error("{redacted}: {source}")]
    Host {
        redacted: String,
        #[source]
        source: HostError,
    },
}

impl PoolError {
    /// Whether the source is one this process may not connect to (rather than one it cannot).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Host { source, .. } if source.is_refusal())
    }
}

/// How this process's source pools behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections one process opens to one source.
    pub max_connections: u32,
    /// Idle connections (and then unused pools) are closed after this long.
    pub idle_timeout: Duration,
    /// How long a task waits for a connection before failing.
    pub acquire_timeout: Duration,
    /// Shown in `pg_stat_activity.application_name`.
    pub application_name: String,
    /// A connection idle at least this long is pinged before it is handed out, so one the server
    /// dropped meanwhile (a restart, which takes longer than this) is replaced rather than failing
    /// its next statement. Zero pings every time; the runner's previews, one short statement each,
    /// skip the round trip on connections that are busy anyway. (sqlx also pings every connection
    /// as it returns to the pool, so one broken while in use is never handed out again.)
    pub ping_when_idle_for: Duration,
    /// The operator's named certificates (`--tls-ca-dir`), which URLs refer to by name.
    pub certificates: Option<CertificateDir>,
    /// The hosts sources may be on (`--allowed-hosts`).
    pub hosts: HostPolicy,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 4,
            idle_timeout: Duration::from_secs(60),
            acquire_timeout: Duration::from_secs(30),
            application_name: "kalla".into(),
            ping_when_idle_for: Duration::ZERO,
            certificates: None,
            hosts: HostPolicy::any(),
        }
    }
}

/// One pool's connections, for metrics; `source` is the redacted connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub source: String,
    pub size: u32,
    pub idle: usize,
}

struct Entry<DB: Database> {
    pool: Pool<DB>,
    last_used: Instant,
}

/// One driver's pools, by connection URL.
struct Pools<DB: Database>(Mutex<HashMap<String, Entry<DB>>>);

impl<DB: Database> Default for Pools<DB> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<DB: Database> Pools<DB> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<DB>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pool of `connection_url` if there is one, after dropping pools that have had no
    /// connection checked out for `idle_timeout`.
    fn existing(&self, connection_url: &str, idle_timeout: Duration) -> Option<Pool<DB>> {
        let mut pools = self.lock();
        pools.retain(|_, entry| {
            let in_use = entry.pool.size() as usize > entry.pool.num_idle();
            let keep = in_use || entry.last_used.elapsed() < idle_timeout;
            if !keep {
                let pool = entry.pool.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { pool.close().await });
                }
            }
            keep
        });
        let entry = pools.get_mut(connection_url)?;
        entry.last_used = Instant::now();
        Some(entry.pool.clone())
    }

    /// Keeps `pool` for `connection_url`, unless another task made one meanwhile: then that
    /// one, so the source keeps one bounded pool.
    fn keep(&self, connection_url: &str, pool: Pool<DB>) -> Pool<DB> {
        let mut pools = self.lock();
        let entry = pools.entry(connection_url.to_string()).or_insert(Entry {
            pool,
            last_used: Instant::now(),
        });
        entry.last_used = Instant::now();
        entry.pool.clone()
    }

    fn stats(&self) -> Vec<PoolStats> {
        self.lock()
            .iter()
            .map(|(url, entry)| PoolStats {
                source: redact_connection_url(url),
                size: entry.pool.size(),
                idle: entry.pool.num_idle(),
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Where a connection goes, as far as the host policy is concerned.
struct Destination<'a> {
    host: &'a str,
    port: u16,
    /// A Unix socket directory.
    socket_dir: Option<PathBuf>,
    /// An address given with the host (Postgres's `hostaddr`).
    address: Option<IpAddr>,
    /// Whether TLS checks the server's certificate against the host name.
    verifies_host_name: bool,
}

/// One bounded pool per source URL, for each database driver.
pub struct PoolRegistry {
    settings: RwLock<PoolSettings>,
    postgres: Pools<Postgres>,
    mariadb: Pools<MySql>,
}

static GLOBAL: LazyLock<PoolRegistry> = LazyLock::new(|| PoolRegistry::new(PoolSettings::default()));

impl PoolRegistry {
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings: RwLock::new(settings),
            postgres: Pools::default(),
            mariadb: Pools::default(),
        }
    }

    /// The registry of this process.
    pub fn global() -> &'static PoolRegistry {
        &GLOBAL
    }

    /// Replaces the settings used for pools created from now on (call at start-up).
    pub fn configure(&self, mut settings: PoolSettings) {
        settings.application_name = truncate_to_boundary(&settings.application_name, MAX_APPLICATION_NAME);
        *self.settings.write().expect("pool settings lock") = settings;
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings.read().expect("pool settings lock").clone()
    }

    /// The Postgres pool for `connection_url`, created (without connecting) on first use, once
    /// its host is allowed.
    pub async fn get(&self, connection_url: &str) -> Result<PgPool, PoolError> {
        let idle_timeout = self.settings().idle_timeout;
        if let Some(pool) = self.postgres.existing(connection_url, idle_timeout) {
            return Ok(pool);
        }
        let pool = self.create(connection_url).await?;
        Ok(self.postgres.keep(connection_url, pool))
    }

    /// The MariaDB (MySQL) pool for `connection_url`, made as [`PoolRegistry::get`] makes
    /// Postgres pools.
    pub async fn get_mariadb(&self, connection_url: &str) -> Result<MySqlPool, PoolError> {
        let settings = self.settings();
        if let Some(pool) = self.mariadb.existing(connection_url, settings.idle_timeout) {
            return Ok(pool);
        }
        let options = crate::mariadb::pool::connect_options(connection_url, &settings)?;
        let options = self.pinned_mariadb(options, connection_url).await?;
        let pool = crate::mariadb::pool::lazy_pool(options, &settings);
        Ok(self.mariadb.keep(connection_url, pool))
    }

    /// Errors unless `connection_url` (Postgres or MariaDB) names a host (or socket) this
    /// process may connect to.
    pub async fn check_host(&self, connection_url: &str) -> Result<(), PoolError> {
        if connection_url.starts_with("mysql:") || connection_url.starts_with("mariadb:") {
            let options = crate::mariadb::pool::connect_options(connection_url, &self.settings())?;
            return self.pinned_mariadb(options, connection_url).await.map(drop);
        }
        let (options, _) = self.options(connection_url)?;
        self.pinned(options, connection_url).await.map(drop)
    }

    /// Errors unless `connection_url`'s TLS parameters are valid and name only certificates this
    /// process has (so a source is refused when registered, not when first read).
    pub fn check_tls(&self, connection_url: &str) -> Result<(), TlsError> {
        let certificates = self.settings().certificates;
        TlsSettings::of(connection_url)?.check_configured(certificates.as_ref())
    }

    /// Every pool currently held.
    pub fn stats(&self) -> Vec<PoolStats> {
        let mut stats = self.postgres.stats();
        stats.extend(self.mariadb.stats());
        stats
    }

    pub fn len(&self) -> usize {
        self.postgres.len() + self.mariadb.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn create(&self, connection_url: &str) -> Result<PgPool, PoolError> {
        let settings = self.settings();
        let (options, mode) = self.options(connection_url)?;
        let options = self.pinned(options, connection_url).await?;
        let checked_encryption = Arc::new(AtomicBool::new(false));
        let source = redact_connection_url(connection_url);
        let ping_when_idle_for = settings.ping_when_idle_for;
        Ok(PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .idle_timeout(settings.idle_timeout)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(ping_when_idle_for.is_zero())
            .after_connect(move |connection, _| {
                let (checked, source) = (checked_encryption.clone(), source.clone());
                Box::pin(async move {
                    warn_once_if_plaintext(connection, &checked, &source, mode).await;
                    Ok(())
                })
            })
            .before_acquire(move |connection, metadata| {
                Box::pin(async move {
                    if ping_when_idle_for.is_zero() || metadata.idle_for < ping_when_idle_for {
                        return Ok(true);
                    }
                    // A connection that fails the ping is closed and another one is used.
                    Ok(connection.ping().await.is_ok())
                })
            })
            .connect_lazy_with(options))
    }

    /// The connection options of `connection_url`, TLS applied, and the `sslmode` it asked for;
    /// its host not yet checked.
    fn options(&self, connection_url: &str) -> Result<(PgConnectOptions, Option<SslMode>), PoolError> {
        let settings = self.settings();
        let redacted = || redact_connection_url(connection_url);
        let mut url = url::Url::parse(connection_url).map_err(|e| PoolError::InvalidUrl {
            redacted: redacted(),
            reason: e.to_string(),
        })?;
        let tls = TlsSettings::take_from(&mut url).map_err(|e| tls_error(connection_url, e))?;
        let options = PgConnectOptions::from_str(url.as_str())
            .map_err(|e| PoolError::InvalidUrl {
                redacted: redacted(),
                reason: redact_in(&e.to_string(), connection_url),
            })?
            .application_name(&settings.application_name)
            // Literals rendered into COPY statements rely on standard string quoting.
            .options([("standard_conforming_strings", "on")]);
        let options = tls
            .apply(options, settings.certificates.as_ref())
            .map_err(|e| tls_error(connection_url, e))?;
        Ok((options, tls.mode()))
    }

    /// `options` once its host is allowed (see [`PoolRegistry::allowed_address`]).
    async fn pinned(
        &self,
        options: PgConnectOptions,
        connection_url: &str,
    ) -> Result<PgConnectOptions, PoolError> {
        let destination = Destination {
            host: options.get_host(),
            port: options.get_port(),
            socket_dir: socket_dir(&options),
            address: host_address(connection_url),
            verifies_host_name: matches!(options.get_ssl_mode(), PgSslMode::VerifyFull),
        };
        Ok(match self.allowed_address(destination, connection_url).await? {
            Some(address) => options.host(&address.to_string()),
            None => options,
        })
    }

    async fn pinned_mariadb(
        &self,
        options: MySqlConnectOptions,
        connection_url: &str,
    ) -> Result<MySqlConnectOptions, PoolError> {
        let destination = Destination {
            host: options.get_host(),
            port: options.get_port(),
            // A MariaDB socket is a file: its directory is what an allow-list names.
            socket_dir: options
                .get_socket()
                .map(|socket| socket.parent().unwrap_or(socket).to_path_buf()),
            address: None,
            verifies_host_name: matches!(options.get_ssl_mode(), MySqlSslMode::VerifyIdentity),
        };
        Ok(match self.allowed_address(destination, connection_url).await? {
            Some(address) => options.host(&address.to_string()),
            None => options,
        })
    }

    /// Errors unless `destination` is allowed: a socket directory or given address only if
    /// listed, a host name only if every address it resolves to is allowed. The address to pin
    /// connections to, so a resolver answering differently later cannot move them; none where
    /// TLS checks the server's certificate against the name (or nothing was resolved).
    async fn allowed_address(
        &self,
        destination: Destination<'_>,
        connection_url: &str,
    ) -> Result<Option<IpAddr>, PoolError> {
        let hosts = self.settings().hosts;
        let refused = |source: HostError| PoolError::Host {
            redacted: redact_connection_url(connection_url),
            source,
        };
        if let Some(dir) = destination.socket_dir {
            hosts.check_socket_dir(&dir).map_err(refused)?;
            return Ok(None);
        }
        if let Some(address) = destination.address {
            hosts.check_host_address(address).map_err(refused)?;
            return Ok(None);
        }
        if hosts.allows_any_host() {
            return Ok(None);
        }
        let addresses = hosts
            .resolve(destination.host, destination.port)
            .await
            .map_err(refused)?;
        if destination.verifies_host_name {
            return Ok(None);
        }
        Ok(Some(addresses[0].ip()))
    }
}

/// The Unix socket directory `options` connect through, if any (a `host` that is a path, given
/// in the URL or taken from the defaults).
fn socket_dir(options: &PgConnectOptions) -> Option<std::path::PathBuf> {
    if let Some(socket) = options.get_socket() {
        return Some(socket.clone());
    }
    options
        .get_host()
        .starts_with('/')
        .then(|| options.get_host().into())
}

/// A `hostaddr` parameter's address: where connections go whatever the host says.
fn host_address(connection_url: &str) -> Option<IpAddr> {
    let url = url::Url::parse(connection_url).ok()?;
    let (_, value) = url.query_pairs().find(|(key, _)| key == "hostaddr")?;
    value.parse().ok()
}

pub(crate) fn tls_error(connection_url: &str, error: TlsError) -> PoolError {
    PoolError::Tls {
        redacted: redact_connection_url(connection_url),
        source: Box::new(error),
    }
}

/// Whether this session is encrypted, as the server sees it (`pg_stat_ssl`).
pub async fn session_is_encrypted(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(connection)
        .await
}

/// Sources (redacted) whose sessions were found plaintext: each is logged once per process.
static LOGGED_PLAINTEXT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Under a mode that may fall back to plaintext unasked (none given, `allow`, `prefer`), looks at
/// sessions until one answers and says, once per source, when they are plaintext: an operator
/// sees what `sslmode` left unprotected. An explicit `disable` is the user's choice, not logged.
async fn warn_once_if_plaintext(
    connection: &mut PgConnection,
    checked: &AtomicBool,
    source: &str,
    mode: Option<SslMode>,
) {
    let may_fall_back = matches!(mode, None | Some(SslMode::Allow | SslMode::Prefer));
    if !may_fall_back || checked.load(Ordering::Relaxed) {
        return;
    }
    let Ok(encrypted) = session_is_encrypted(connection).await else {
        return;
    };
    checked.store(true, Ordering::Relaxed);
    let first = !encrypted
        && LOGGED_PLAINTEXT
            .lock()
            .expect("plaintext log lock")
            .insert(source.to_string());
    if first {
        tracing::warn!(
            %source,
            "sessions to this source are plaintext: its server offers no TLS; set \
             sslmode=verify-full (or require) to refuse plaintext, or sslmode=disable to say so"
        );
    }
}

fn truncate_to_boundary(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

/// `postgres://user:***@host/db` for a connection URL that may hold a password.
/// The URL with its password (user-info or a `password=` parameter) replaced by `***`.
pub fn redact_connection_url(connection_url: &str) -> String {
    let Ok(mut url) = url::Url::parse(connection_url) else {
        return "<unparseable URL>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(key, _)| key == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if key == "password" {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

pub(crate) fn redact_in(message: &str, connection_url: &str) -> String {
    match url::Url::parse(connection_url)
        .ok()
        .and_then(|u| u.password().map(str::to_string))
    {
        Some(password) if !password.is_empty() => message.replace(&password, "***"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_pool_per_source_reused_across_calls() {
        let registry = PoolRegistry::new(PoolSettings::default());
        let a1 = registry.get("postgres://u@127.0.0.1:1/a").await.unwrap();
        let a2 = registry.get("postgres://u@127.0.0.1:1/a").await.unwrap();
        let b = registry.get("postgres://u@127.0.0.1:1/b").await.unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(a1.options().get_max_connections(), 4);
        // A pool's options live in its shared state: one address means one pool, whose
        // connection cap then holds across every caller.
        let same_pool = |x: &PgPool, y: &PgPool| std::ptr::eq(x.options(), y.options());
        assert!(same_pool(&a1, &a2), "two pools for one source");
        assert!(!same_pool(&a1, &b), "one pool for two sources");
    }

    #[tokio::test]
    async fn unused_pools_are_evicted_after_the_idle_timeout() {
        let registry = PoolRegistry::new(PoolSettings {
            idle_timeout: Duration::from_millis(10),
            ..PoolSettings::default()
        });
        registry.get("postgres://u@127.0.0.1:1/a").await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        registry.get("postgres://u@127.0.0.1:1/b").await.unwrap();
        assert_eq!(registry.len(), 1);
    }

    #[tokio::test]
    async fn sockets_hostaddr_and_internal_hosts_get_no_pool() {
        let strict = PoolRegistry::new(PoolSettings {
            hosts: HostPolicy::new(&[], true).unwrap(),
            ..PoolSettings::default()
        });
        let open = PoolRegistry::new(PoolSettings::default());
        for url in [
            "postgres://u@db.example/x?host=/var/run/postgresql",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/x",
            "postgres://u@db.example/x?hostaddr=10.0.0.1",
        ] {
            for registry in [&strict, &open] {
                let error = registry.get(url).await.unwrap_err();
                assert!(error.is_refusal(), "{url}: {error}");
            }
        }
        // 2852039166 is 169.254.169.254 to the resolver: a name that is a link-local address.
        for url in ["postgres://u@127.0.0.1:1/x", "postgres://u@2852039166:1/x"] {
            let error = strict.get(url).await.unwrap_err();
            assert!(error.is_refusal(), "{url}: {error}");
            assert!(error.to_string().contains("--allowed-hosts"), "{error}");
            assert!(open.get(url).await.is_ok());
        }
        let listed = PoolRegistry::new(PoolSettings {
            hosts: HostPolicy::new(&["/var/run/postgresql/".into(), "127.0.0.0/8".into()], true).unwrap(),
            ..PoolSettings::default()
        });
        listed
            .get("postgres://u@h/x?host=/var/run/postgresql")
            .await
            .unwrap();
        listed.get("postgres://u@localhost:1/x").await.unwrap();
        assert_eq!(strict.len() + listed.len(), 2);
    }

    #[test]
    fn settings_truncate_long_application_names_on_a_char_boundary() {
        let registry = PoolRegistry::new(PoolSettings::default());
        registry.configure(PoolSettings {
            application_name: "é".repeat(40),
            ..PoolSettings::default()
        });
        let name = registry.settings().application_name;
        assert!(name.len() <= MAX_APPLICATION_NAME);
        assert_eq!(name, "é".repeat(31));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_connection_url("postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_in("bad thing near pw", "postgres://u:pw@h/db"),
            "bad thing near ***"
        );
    }
}
