//! Object stores for file sources and the cache: local files, or buckets of an S3-compatible server.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::DataFusionError;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::prelude::SessionContext;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, RetryConfig};
use thiserror::Error;
use url::Url;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("not a valid location {0:?}: expected file:///path or s3://bucket/path")]
    InvalidLocation(String),
    #[error("unsupported location scheme {0:?}: expected file:// or s3://")]
    UnknownScheme(String),
    #[error("cannot configure the object store for {location}: {reason}")]
    Configuration { location: String, reason: String },
}

/// How to reach S3-compatible storage. Unset fields fall back to the standard `AWS_*` variables.
#[derive(Clone, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (local S3-compatible servers).
    pub allow_http: bool,
    /// How long one request is retried while the server fails or cannot be reached (default:
    /// `object_store`'s three minutes).
    pub retry_timeout: Option<Duration>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "***"))
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("allow_http", &self.allow_http)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

/// [`S3Settings`] as command-line flags (each also a `KALLA_S3_*` variable where the binary
/// enables environment fallbacks).
#[derive(Clone, Default, clap::Args)]
pub struct S3Args {
    /// S3-compatible endpoint for s3:// locations (default: AWS).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: `AWS_REGION`, else us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,
    /// S3 access key id (default: `AWS_ACCESS_KEY_ID` and the other standard AWS sources).
    #[arg(long, hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (default: `AWS_SECRET_ACCESS_KEY`).
    #[arg(long, hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-HTTP S3 endpoints (local servers).
    #[arg(long)]
    pub s3_allow_http: bool,
    /// Seconds one S3 request is retried while the server fails or cannot be reached, before the
    /// write or read fails (default: 180).
    #[arg(long)]
    pub s3_retry_timeout_secs: Option<u64>,
}

impl S3Args {
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            allow_http: self.s3_allow_http,
            retry_timeout: self.s3_retry_timeout_secs.map(Duration::from_secs),
        }
    }
}

impl fmt::Debug for S3Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings().fmt(f)
    }
}

/// Parses a file location and makes sure `ctx` can read it (registering the bucket's store for `s3://`).
pub fn register_location(ctx: &SessionContext, location: &str, s3: &S3Settings) -> Result<Url, StorageError> {
    let url = Url::parse(location).map_err(|_| StorageError::InvalidLocation(location.to_string()))?;
    if url.scheme() == "s3" {
        let store = object_store_for(&url, s3)?;
        let bucket_url = Url::parse(&url[..url::Position::BeforePath]).expect("a bucket URL is a URL");
        ctx.register_object_store(&bucket_url, store);
    } else {
        object_store_for(&url, s3)?;
    }
    Ok(url)
}

/// The store holding `url`: the local file system for `file://`, the bucket for `s3://`.
pub fn object_store_for(url: &Url, s3: &S3Settings) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let location = url.as_str();
    match url.scheme() {
        "file" => Ok(Arc::new(LocalFileSystem::new())),
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| StorageError::InvalidLocation(location.to_string()))?;
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(s3.allow_http);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(retry_timeout) = s3.retry_timeout {
                builder = builder.with_retry(RetryConfig {
                    retry_timeout,
                    ..RetryConfig::default()
                });
            }
            let store = builder.build().map_err(|e| StorageError::Configuration {
                location: location.to_string(),
                reason: e.to_string(),
            })?;
            Ok(Arc::new(store))
        }
        other => Err(StorageError::UnknownScheme(other.to_string())),
    }
}

/// Object stores for a process: `file://` and anything registered explicitly, plus every `s3://`
/// bucket opened on first use with this process's [`S3Settings`]. Executors use it so they can
/// write and read whatever cache location a plan names.
#[derive(Debug)]
pub struct ObjectStores {
    registered: DefaultObjectStoreRegistry,
    s3: S3Settings,
}

impl ObjectStores {
    pub fn new(s3: S3Settings) -> Self {
        Self {
            registered: DefaultObjectStoreRegistry::new(),
            s3,
        }
    }
}

impl ObjectStoreRegistry for ObjectStores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.registered.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::common::Result<Arc<dyn ObjectStore>> {
        if url.scheme() != "s3" {
            return self.registered.get_store(url);
        }
        if let Ok(store) = self.registered.get_store(url) {
            return Ok(store);
        }
        let store = object_store_for(url, &self.s3).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let bucket = Url::parse(&url[..url::Position::BeforePath]).expect("a bucket URL is a URL");
        self.registered.register_store(&bucket, store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked_and_secrets_never_printed() {
        let ctx = SessionContext::new();
        let s3 = S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("AKIAEXAMPLE".into()),
            secret_access_key: Some("very-secret".into()),
            allow_http: true,
            retry_timeout: None,
        };
        assert!(register_location(&ctx, "file:///tmp/x.csv", &s3).is_ok());
        assert!(register_location(&ctx, "s3://bucket/x.csv", &s3).is_ok());
        assert!(matches!(
            register_location(&ctx, "ftp://h/x.csv", &s3),
            Err(StorageError::UnknownScheme(_))
        ));
        assert!(register_location(&ctx, "not a url", &s3).is_err());
        let shown = format!("{s3:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("AKIAEXAMPLE"),
            "{shown}"
        );
    }
}
