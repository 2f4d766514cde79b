//! Object stores for file sources and the cache: local files, or buckets of an S3-compatible server.

use std::fmt;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use object_store::aws::AmazonS3Builder;
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
            .finish()
    }
}

/// Parses a file location and makes sure `ctx` can read it (registering the bucket's store for `s3://`).
pub fn register_location(ctx: &SessionContext, location: &str, s3: &S3Settings) -> Result<Url, StorageError> {
    let url = Url::parse(location).map_err(|_| StorageError::InvalidLocation(location.to_string()))?;
    match url.scheme() {
        "file" => Ok(url),
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
            let store = builder.build().map_err(|e| StorageError::Configuration {
                location: location.to_string(),
                reason: e.to_string(),
            })?;
            let bucket_url = Url::parse(&format!("s3://{bucket}")).expect("a bucket name forms a URL");
            ctx.register_object_store(&bucket_url, Arc::new(store));
            Ok(url)
        }
        other => Err(StorageError::UnknownScheme(other.to_string())),
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
