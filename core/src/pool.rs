//! The process-wide registry of source connection pools.
//!
//! Every process (executor, runner, CLI) keeps one bounded pool per source, shared by all of
//! its tasks and requests. Connections announce the process through `application_name`, so
//! `pg_stat_activity` shows who is connected; idle connections close after a timeout and an
//! unused pool is dropped from the registry. TLS follows each URL's `sslmode` with the
//! certificates the process was configured with ([`crate::tls`]); a source whose sessions fell
//! back to plaintext is logged once.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use thiserror::Error;

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

struct Entry {
    pool: PgPool,
    last_used: Instant,
}

/// One bounded pool per source URL.
pub struct PoolRegistry {
    settings: RwLock<PoolSettings>,
    pools: Mutex<HashMap<String, Entry>>,
}

static GLOBAL: LazyLock<PoolRegistry> = LazyLock::new(|| PoolRegistry::new(PoolSettings::default()));

impl PoolRegistry {
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings: RwLock::new(settings),
            pools: Mutex::new(HashMap::new()),
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

    /// The pool for `connection_url`, created (without connecting) on first use.
    pub fn get(&self, connection_url: &str) -> Result<PgPool, PoolError> {
        let mut pools = self.pools.lock().expect("pool registry lock");
        self.evict_idle(&mut pools);
        if let Some(entry) = pools.get_mut(connection_url) {
            entry.last_used = Instant::now();
            return Ok(entry.pool.clone());
        }
        let pool = self.create(connection_url)?;
        pools.insert(
            connection_url.to_string(),
            Entry {
                pool: pool.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(pool)
    }

    /// Errors unless `connection_url`'s TLS parameters are valid and name only certificates this
    /// process has (so a source is refused when registered, not when first read).
    pub fn check_tls(&self, connection_url: &str) -> Result<(), TlsError> {
        let certificates = self.settings().certificates;
        TlsSettings::of(connection_url)?.check_configured(certificates.as_ref())
    }

    /// Number of pools currently held.
    pub fn stats(&self) -> Vec<PoolStats> {
        let pools = self.pools.lock().expect("pool registry lock");
        pools
            .iter()
            .map(|(url, entry)| PoolStats {
                source: redact_connection_url(url),
                size: entry.pool.size(),
                idle: entry.pool.num_idle(),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.pools.lock().expect("pool registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn create(&self, connection_url: &str) -> Result<PgPool, PoolError> {
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
        let checked_encryption = Arc::new(AtomicBool::new(false));
        let source = redacted();
        let mode = tls.mode();
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

    /// Drops pools that have had no connections checked out for the idle timeout.
    fn evict_idle(&self, pools: &mut HashMap<String, Entry>) {
        let idle_timeout = self.settings().idle_timeout;
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
    }
}

fn tls_error(connection_url: &str, error: TlsError) -> PoolError {
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

fn redact_in(message: &str, connection_url: &str) -> String {
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
        let a1 = registry.get("postgres://u@127.0.0.1:1/a").unwrap();
        let a2 = registry.get("postgres://u@127.0.0.1:1/a").unwrap();
        let b = registry.get("postgres://u@127.0.0.1:1/b").unwrap();
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
        registry.get("postgres://u@127.0.0.1:1/a").unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        registry.get("postgres://u@127.0.0.1:1/b").unwrap();
        assert_eq!(registry.len(), 1);
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
