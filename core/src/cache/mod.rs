//! The parquet cache: versioned directories of parquet files, one per scan partition, written by
//! the executors themselves.
//!
//! - [`sink`]: the operator that writes each partition of its input to its own parquet file;
//! - [`write`]: a table whose scan runs a plan on the cluster and writes its rows (a cache
//!   refresh, a job's outputs).

pub mod sink;
pub mod write;

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use thiserror::Error;
use url::Url;

/// A cache version's parquet files as one table; `session` must reach their store.
pub async fn version_table(
    session: &datafusion::prelude::SessionContext,
    url: &str,
) -> datafusion::common::Result<Arc<dyn datafusion::catalog::TableProvider>> {
    crate::files::listing_table(session, url, crate::preview::files::FileFormat::Parquet).await
}

/// A job output's parquet files as one table whose strings and binaries are plain (`Utf8`,
/// `Binary`), not views: decoded straight into the types clients are sent.
pub async fn output_table(
    session: &datafusion::prelude::SessionContext,
    url: &str,
) -> datafusion::common::Result<Arc<dyn datafusion::catalog::TableProvider>> {
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::ListingOptions;
    let format = ParquetFormat::default().with_force_view_types(false);
    let extension = crate::preview::files::FileFormat::Parquet.extension_in(url);
    let options = ListingOptions::new(Arc::new(format)).with_file_extension(extension);
    crate::files::listing_table_with(session, url, options).await
}

/// A directory's parquet files as one table of `schema`, which holds whatever files it has when
/// a scan is planned (none is an empty table); `session` must reach their store when scanning.
pub fn parquet_dir_table(
    url: &str,
    schema: SchemaRef,
) -> datafusion::common::Result<Arc<dyn datafusion::catalog::TableProvider>> {
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(ListingTableUrl::parse(url)?)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("invalid cache location {0:?}: expected file:///path or s3://bucket/prefix")]
    InvalidLocation(String),
    #[error("the refresh wrote an unexpected summary: {0}")]
    BadSummary(String),
    #[error("object store error at {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },
}

/// A directory (prefix) in an object store, as a URL ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    url: Url,
}

impl CacheDir {
    pub fn parse(location: &str) -> Result<Self, CacheError> {
        let invalid = || CacheError::InvalidLocation(location.to_string());
        let mut url = Url::parse(location).map_err(|_| invalid())?;
        match url.scheme() {
            "file" => {}
            "s3" if url.host_str().is_some_and(|h| !h.is_empty()) => {}
            _ => return Err(invalid()),
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(Self { url })
    }

    /// The subdirectory `names` below this one, each name made a [`path_segment`].
    pub fn join(&self, names: &[&str]) -> Self {
        let mut url = self.url.clone();
        {
            let mut path = url.path_segments_mut().expect("file and s3 URLs have paths");
            path.pop_if_empty();
            path.extend(names.iter().map(|name| path_segment(name)));
            path.push("");
        }
        Self { url }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL of the store holding this directory (`file:///` or `s3://bucket/`).
    pub fn store_url(&self) -> String {
        format!(
            "{}://{}/",
            self.url.scheme(),
            self.url.host_str().unwrap_or_default()
        )
    }

    /// The directory's path inside its store.
    pub fn path(&self) -> Result<Path, CacheError> {
        Path::from_url_path(self.url.path()).map_err(|_| CacheError::InvalidLocation(self.url.to_string()))
    }

    /// Deletes every object below this directory except `keep` (paths in the store), such as the
    /// partial files of a task that died and was retried; returns how many were deleted.
    pub async fn retain_only(
        &self,
        store: &Arc<dyn ObjectStore>,
        keep: &[&str],
    ) -> Result<usize, CacheError> {
        let deleted = self.delete_listed(store, keep).await?;
        Ok(deleted + self.remove_local_staging_files(keep))
    }

    /// A local store does not list the staging files of uploads that never completed (a killed
    /// task's); remove those from the directory itself.
    fn remove_local_staging_files(&self, keep: &[&str]) -> usize {
        let (Ok(dir), Ok(prefix)) = (self.url.to_file_path(), self.path()) else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                !keep.contains(&prefix.clone().join(name.as_str()).as_ref())
            })
            .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
            .count()
    }

    /// Deletes every object below this directory; returns how many there were.
    pub async fn delete_all(&self, store: &Arc<dyn ObjectStore>) -> Result<usize, CacheError> {
        let deleted = self.delete_listed(store, &[]).await?;
        // A local directory tree is left behind by object deletes; tidy it when there is one.
        if self.url.scheme() == "file"
            && let Ok(dir) = self.url.to_file_path()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(deleted)
    }

    /// Deletes the objects the store lists below this directory, but `keep`; one already gone
    /// (a concurrent sweep) counts as deleted.
    async fn delete_listed(&self, store: &Arc<dyn ObjectStore>, keep: &[&str]) -> Result<usize, CacheError> {
        let store_error = |source| CacheError::Store {
            location: self.url.to_string(),
            source,
        };
        let doomed: Vec<Path> = store
            .list(Some(&self.path()?))
            .map_ok(|meta| meta.location)
            .try_filter(|path| futures::future::ready(!keep.contains(&path.as_ref())))
            .try_collect()
            .await
            .map_err(store_error)?;
        for object in &doomed {
            match store.delete(object).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(store_error(error)),
            }
        }
        Ok(doomed.len())
    }
}

/// `name` as one directory name that every object store takes literally: itself when it is only
/// ASCII letters, digits, `_` and `-`; otherwise those characters with `_` for the rest and a hash
/// of the original, so different names stay apart.
pub fn path_segment(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.is_empty() && name.chars().all(plain) {
        return name.to_string();
    }
    let readable: String = name.chars().map(|c| if plain(c) { c } else { '_' }).collect();
    // FNV-1a: stable across builds, which a std hasher is not.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{readable}-{hash:016x}")
}

/// One parquet file a write produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrittenFile {
    pub partition: u32,
    /// The object's path in its store.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// The task's execution that wrote it (random: partition numbers repeat across tasks).
    #[serde(default)]
    pub execution: u64,
    /// What that execution spilled to its executor's work dir, in bytes…
    #[serde(default)]
    pub spilled_bytes: u64,
    /// …and the keys that made it spill, with their rows (empty when none did).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hot_keys: String,
}

/// What the sink returns: one row per written file.
pub fn written_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::UInt32, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("execution", DataType::UInt64, false),
        Field::new("spilled_bytes", DataType::UInt64, false),
        Field::new("hot_keys", DataType::Utf8, false),
    ]))
}

/// Reads the sink's summary rows back.
pub fn written_files(batches: &[RecordBatch]) -> Result<Vec<WrittenFile>, CacheError> {
    let mut files = Vec::new();
    for batch in batches {
        let column = |i: usize| batch.column(i).as_ref();
        let bad = || CacheError::BadSummary(format!("{:?}", batch.schema()));
        let partitions = column(0).as_any().downcast_ref::<UInt32Array>().ok_or_else(bad)?;
        let paths = column(1).as_any().downcast_ref::<StringArray>().ok_or_else(bad)?;
        let rows = column(2).as_any().downcast_ref::<UInt64Array>().ok_or_else(bad)?;
        let bytes = column(3).as_any().downcast_ref::<UInt64Array>().ok_or_else(bad)?;
        let executions = column(4).as_any().downcast_ref::<UInt64Array>().ok_or_else(bad)?;
        let spilled = column(5).as_any().downcast_ref::<UInt64Array>().ok_or_else(bad)?;
        let hot_keys = column(6).as_any().downcast_ref::<StringArray>().ok_or_else(bad)?;
        for i in 0..batch.num_rows() {
            files.push(WrittenFile {
                partition: partitions.value(i),
                path: paths.value(i).to_string(),
                rows: rows.value(i),
                bytes: bytes.value(i),
                execution: executions.value(i),
                spilled_bytes: spilled.value(i),
                hot_keys: hot_keys.value(i).to_string(),
            });
        }
    }
    files.sort_by_key(|f| f.partition);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_join_segments_safely() {
        let root = CacheDir::parse("file:///data/kalla").unwrap();
        assert_eq!(root.as_str(), "file:///data/kalla/");
        let version = root.join(&["cache", "conn_x", "my schema", "a/../b", "v1"]);
        let path = version.path().unwrap();
        let parts: Vec<_> = path.parts().map(|p| p.as_ref().to_string()).collect();
        assert_eq!(parts.len(), 7, "{parts:?}");
        assert_eq!(parts[..4], ["data", "kalla", "cache", "conn_x"]);
        assert!(
            parts[4].starts_with("my_schema-") && parts[5].starts_with("a____b-"),
            "{parts:?}"
        );
        assert_ne!(path_segment("a b"), path_segment("a_b"));
        assert_eq!(path_segment("lineitem"), "lineitem");
        let s3 = CacheDir::parse("s3://bucket/prefix").unwrap().join(&["cache"]);
        assert_eq!(s3.store_url(), "s3://bucket/");
        assert_eq!(s3.path().unwrap().as_ref(), "prefix/cache");
        assert!(CacheDir::parse("s3:///nobucket").is_err());
        assert!(CacheDir::parse("http://x/y").is_err());
        assert!(CacheDir::parse("relative/dir").is_err());
    }
}
