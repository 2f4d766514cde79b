//! MariaDB connect options and pools, as the process-wide [`PoolRegistry`] keeps them.
//!
//! Sessions run with `time_zone = '+00:00'` (sqlx's default, which `TIMESTAMP` values rely on),
//! `utf8mb4`, and no statement cache: scans send each partition's statement once, as text.
//!
//! [`PoolRegistry`]: crate::pool::PoolRegistry

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::pool::{PoolError, PoolSettings, redact_connection_url, redact_in, tls_error};
use crate::tls::TlsSettings;

/// The options of `connection_url` (`mysql://` or `mariadb://`), TLS applied from Kalla's
/// `sslmode`/`sslrootcert`/`sslcert` parameters; its host not yet checked.
pub fn connect_options(
    connection_url: &str,
    settings: &PoolSettings,
) -> Result<MySqlConnectOptions, PoolError> {
    let invalid = |reason: String| PoolError::InvalidUrl {
        redacted: redact_connection_url(connection_url),
        reason,
    };
    let mut url = url::Url::parse(connection_url).map_err(|e| invalid(e.to_string()))?;
    let tls = TlsSettings::take_from(&mut url).map_err(|e| tls_error(connection_url, e))?;
    let options = MySqlConnectOptions::from_str(url.as_str())
        .map_err(|e| invalid(redact_in(&e.to_string(), connection_url)))?
        .statement_cache_capacity(0)
        .timezone(Some("+00:00".to_string()));
    tls.apply(options, settings.certificates.as_ref())
        .map_err(|e| tls_error(connection_url, e))
}

/// A bounded pool on `options` that connects on first use.
pub fn lazy_pool(options: MySqlConnectOptions, settings: &PoolSettings) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .idle_timeout(settings.idle_timeout)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(settings.ping_when_idle_for.is_zero())
        .connect_lazy_with(options)
}

#[cfg(test)]
mod tests {
    use sqlx::mysql::MySqlSslMode;

    use super::*;
    use crate::allow::HostPolicy;
    use crate::pool::PoolRegistry;

    #[test]
    fn kalla_tls_parameters_become_mariadb_modes() {
        let settings = PoolSettings::default();
        let options = connect_options("mysql://u:pw@db:3307/shop?sslmode=require", &settings).unwrap();
        assert!(matches!(options.get_ssl_mode(), MySqlSslMode::Required));
        assert_eq!((options.get_host(), options.get_port()), ("db", 3307));
        let error = connect_options("mysql://u@db/shop?ssl-key=/etc/shadow", &settings).unwrap_err();
        assert!(error.to_string().contains("ssl-key"), "{error}");
    }

    #[tokio::test]
    async fn sockets_and_internal_hosts_get_no_pool_unless_listed() {
        let strict = PoolRegistry::new(PoolSettings {
            hosts: HostPolicy::new(&[], true).unwrap(),
            ..PoolSettings::default()
        });
        let open = PoolRegistry::new(PoolSettings::default());
        let socket = "mysql://u@localhost/x?socket=/run/mysqld/mysqld.sock";
        for registry in [&strict, &open] {
            let error = registry.get_mariadb(socket).await.unwrap_err();
            assert!(error.is_refusal(), "{error}");
        }
        let error = strict.get_mariadb("mysql://u@127.0.0.1:1/x").await.unwrap_err();
        assert!(error.to_string().contains("--allowed-hosts"), "{error}");
        let listed = PoolRegistry::new(PoolSettings {
            hosts: HostPolicy::new(&["/run/mysqld".into()], true).unwrap(),
            ..PoolSettings::default()
        });
        listed.get_mariadb(socket).await.unwrap();
        open.get_mariadb("mysql://u@127.0.0.1:1/x").await.unwrap();
        open.get_mariadb("mysql://u@127.0.0.1:1/x").await.unwrap();
        assert_eq!(open.len() + listed.len(), 2);
    }
}
