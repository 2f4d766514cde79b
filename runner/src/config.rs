//! The runner's configuration: flags, then `KALLA_*` environment variables, then an optional TOML
//! file (`--config`), then defaults.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use kalla_core::allow::{Buckets, FileAccess, FileRoots, HostError, HostPolicy};
use kalla_core::cache::CacheDir;
use kalla_core::cluster_tls::{ClientTlsArgs, ClusterTransport};
use kalla_core::process::with_env_fallbacks;
use kalla_core::recon::pairs_table::DEFAULT_PARTITION_BYTES;
use kalla_core::source::{DEFAULT_COUNT_CAP, DEFAULT_GRANT_TTL, PartitionOptions, ScanOptions};
use kalla_core::storage::{S3Args, S3Settings};
use kalla_core::tls::CertificateArgs;
use kalla_core::{ClusterKey, SecretsKey};

/// A setting that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_string()))
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Ballista's codecs for shuffle files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShuffleCompression {
    #[default]
    Lz4,
    Zstd,
    None,
}

impl ShuffleCompression {
    /// The value of Ballista's `ballista.shuffle.compression.codec` setting.
    pub fn codec(self) -> &'static str {
        match self {
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
            Self::None => "none",
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "kalla-runner",
    version,
    about = "The Kalla runner: HTTP API, metadata and job submission"
)]
pub struct RunnerConfig {
    /// TOML file with any of these settings (`bind = "0.0.0.0:8080"`); flags and environment win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address the HTTP API listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Serve the API over HTTPS with this certificate chain (PEM); re-read when the file changes.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Serve Arrow Flight SQL on this address too (off unless set); over TLS when the API is, with
    /// its certificate, and with its tokens.
    #[arg(long)]
    pub flight_bind: Option<SocketAddr>,
    /// Where the runner keeps its SQLite metadata, generated token and key.
    #[arg(long, default_value = crate::cli::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Metadata database: sqlite://… or postgres://… (default: kalla.db in the data dir).
    #[arg(long, hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Ballista scheduler as df://HOST:PORT; unset runs an embedded in-process cluster.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Mutual TLS to a remote scheduler and its executors.
    #[command(flatten)]
    pub cluster_tls: ClientTlsArgs,
    /// Bearer token for the API (default: generated into the data dir on first start).
    #[arg(long, hide_env_values = true)]
    pub api_token: Option<SecretString>,
    /// Secrets key: seals the secrets stored in the metadata DB; 32 random bytes, base64; only the
    /// runner holds it (default in embedded mode: generated into the data dir).
    #[arg(long, hide_env_values = true)]
    pub secret_key: Option<SecretString>,
    /// Cluster key: seals source credentials into the scans the executors run; 32 random bytes,
    /// base64, the executors' KALLA_CLUSTER_KEY (default in embedded mode: a fresh one per start).
    #[arg(long, hide_env_values = true)]
    pub cluster_key: Option<SecretString>,
    /// A file holding the secrets key (instead of --secret-key), read again when it changes: to
    /// rotate, write the new key first and the old one after it (one per line), wait until
    /// `GET /api/keys` reports no secret sealed with older keys, then remove the old one.
    #[arg(long, conflicts_with = "secret_key")]
    pub secret_key_file: Option<PathBuf>,
    /// A file holding the cluster key (instead of --cluster-key), read again when it changes: to
    /// rotate, give executors the new key after the old one, then the runner the new key first,
    /// then (once the jobs planned before have ended) drop the old key everywhere.
    #[arg(long, conflicts_with = "cluster_key")]
    pub cluster_key_file: Option<PathBuf>,
    /// S3 settings for s3:// sources and the cache (default: AWS and the `AWS_*` variables).
    #[command(flatten)]
    pub s3: S3Args,
    /// Named certificates for TLS to source databases.
    #[command(flatten)]
    pub database_tls: CertificateArgs,
    /// Most connections the runner opens to one source.
    #[arg(long, default_value_t = 4)]
    pub source_pool_max_connections: u32,
    /// Idle source connections (then unused pools) close after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub source_pool_idle_timeout_secs: u64,
    /// Seconds a request waits for a source connection (an unreachable source fails after this).
    #[arg(long, default_value_t = 5)]
    pub source_connect_timeout_secs: u64,
    /// Previews count matching rows up to this many; beyond it the total is a lower bound.
    #[arg(long, default_value_t = DEFAULT_COUNT_CAP)]
    pub preview_count_cap: u64,
    /// Postgres and MariaDB tables are scanned (and cached) in partitions of about this many MiB of data.
    #[arg(long, default_value_t = 128)]
    pub scan_partition_mib: u64,
    /// A reconciliation shuffles both sides into partitions of about this many MiB (by their
    /// sources' sizes), so each task pairs a bounded slice; one that is still too large for its
    /// share of the executor's memory pool spills to the executor's work dir.
    #[arg(long, default_value_t = DEFAULT_PARTITION_BYTES / (1024 * 1024))]
    pub pair_partition_mib: u64,
    /// Seconds a planned Postgres scan may read its source: the scan grant sealed into the plan
    /// expires after this (it must outlast the longest job, its task retries and a runner taking
    /// it over).
    #[arg(long, default_value_t = DEFAULT_GRANT_TTL.as_secs())]
    pub scan_grant_ttl_secs: u64,
    /// Where the parquet cache (`cache/`) and job results (`results/`) live: file:///path or
    /// s3://bucket/prefix (default: the data dir). Executors must reach the same place.
    #[arg(long)]
    pub cache_dir: Option<String>,
    /// Seconds a replaced or purged cache version stays readable before its files are deleted.
    #[arg(long, default_value_t = 600)]
    pub cache_grace_period_secs: u64,
    /// Seconds between sweeps that delete cache versions whose grace period is over.
    #[arg(long, default_value_t = 30)]
    pub cache_sweep_interval_secs: u64,
    /// Jobs that run at once; more wait in the queue.
    #[arg(long, default_value_t = 2)]
    pub job_concurrency: usize,
    /// Jobs that may wait; beyond this `POST /api/jobs` answers 429 and `/ready` reports the queue full.
    #[arg(long, default_value_t = 64)]
    pub job_queue_capacity: usize,
    /// After the cluster loses an executor, a job whose tasks make no progress for this many
    /// seconds is cancelled on the cluster and run again (Ballista cannot always recover it).
    #[arg(long, default_value_t = 60)]
    pub job_stall_timeout_secs: u64,
    /// A runner holds each of its jobs under a lease of this many seconds, renewed every quarter
    /// of it; a job of a runner that died is taken over by another runner once its lease passes.
    #[arg(long, default_value_t = 30)]
    pub job_lease_secs: u64,
    /// Days a finished job's result files are kept (fractions allowed), then deleted by a sweep;
    /// the job's row, summary and open items stay. Default: kept until deleted by request.
    #[arg(long)]
    pub results_retention_days: Option<f64>,
    /// How shuffle files between stages are compressed: `lz4`, `zstd` or `none` (spends disk
    /// and network instead of CPU; best where executors share a machine or a fast network).
    #[arg(long, value_enum, default_value_t = ShuffleCompression::default())]
    pub shuffle_compression: ShuffleCompression,
    /// Web origins (`https://app.example.com`, comma-separated) whose pages may call the API from
    /// a browser; none by default, so browsers refuse cross-origin calls.
    #[arg(long, value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Hosts (comma-separated names, `*.domains`, `*` for any name, addresses, CIDR networks,
    /// socket directories) sources, connections and job callbacks may reach, checked against
    /// the addresses they resolve to. Default: any host; with `--scheduler`, any but loopback,
    /// link-local (cloud metadata) and unspecified addresses, which only a network listed here
    /// admits. Unix sockets and `hostaddr` only where listed.
    #[arg(long, value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Directories (comma-separated) file sources may be read from, `..` and links resolved.
    /// Default: the working directory and the data dir; with `--scheduler`, none.
    #[arg(long, value_delimiter = ',')]
    pub file_roots: Vec<PathBuf>,
    /// Buckets (comma-separated names, `*` for any) s3:// file sources may be read from.
    /// Default: any; with `--scheduler`, only the cache's bucket.
    #[arg(long, value_delimiter = ',')]
    pub allowed_buckets: Vec<String>,
    /// Let job callbacks use plain http:// (default: https:// only).
    #[arg(long)]
    pub allow_http_callbacks: bool,
    /// Keys (comma-separated, at least 32 characters each) that sign every callback delivery,
    /// one `v1` signature each: give the new and the old key during a rotation (default: one
    /// generated into the data dir).
    #[arg(long, hide_env_values = true)]
    pub callback_signing_keys: Option<SecretString>,
    /// Check the settings and `KALLA_*` variables without starting, then exit (0: valid; 2:
    /// each problem on stderr). Nothing is connected to or created.
    #[arg(long)]
    pub check_config: bool,
}

impl RunnerConfig {
    /// Reads the process's arguments and environment; exits with clap's message on a bad flag.
    pub fn load() -> anyhow::Result<Self> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let command = with_env_fallbacks(Self::command());
        let matches = command
            .clone()
            .try_get_matches_from(&args)
            .unwrap_or_else(|e| e.exit());
        let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
            return Ok(Self::from_arg_matches(&matches)?);
        };
        let command = with_file_defaults(command, &matches, &path)?;
        let matches = command.try_get_matches_from(&args).unwrap_or_else(|e| e.exit());
        Ok(Self::from_arg_matches(&matches)?)
    }

    /// Checks what can be checked without connecting anywhere: URLs, the cluster key, the token.
    pub fn validate(&self) -> anyhow::Result<()> {
        let metadata = self.metadata_url();
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| metadata.starts_with(scheme))
        {
            bail!("--database-url / KALLA_DATABASE_URL must start with sqlite: or postgres://");
        }
        if let Some(days) = self.results_retention_days
            && !(days > 0.0 && days <= 36_500.0)
        {
            bail!(
                "--results-retention-days / KALLA_RESULTS_RETENTION_DAYS must be more than 0 and at most 36500, got {days}"
            );
        }
        if self.scan_grant_ttl_secs < 60 {
            bail!(
                "--scan-grant-ttl-secs / KALLA_SCAN_GRANT_TTL_SECS must be at least 60: a planned scan \
                 must outlive its job (the default is a day)"
            );
        }
        if let Some(location) = &self.cache_dir {
            CacheDir::parse(location).context("--cache-dir / KALLA_CACHE_DIR")?;
        }
        self.check_keys()?;
        if let Some(scheduler) = &self.scheduler {
            crate::cluster::scheduler_url(scheduler, false).context("--scheduler / KALLA_SCHEDULER")?;
            if self.secret_key.is_none() && self.secret_key_file.is_none() {
                bail!(
                    "KALLA_SECRET_KEY (or --secret-key) is required with a remote scheduler: the key \
                     that seals stored secrets, kept by every runner of this metadata DB and by no \
                     executor (generate one with `openssl rand -base64 32`)"
                );
            }
            if self.cluster_key.is_none() && self.cluster_key_file.is_none() {
                bail!(
                    "KALLA_CLUSTER_KEY (or --cluster-key) is required with a remote scheduler: set it \
                     to the key the executors use (generate one with `openssl rand -base64 32`)"
                );
            }
            self.cluster_transport()?;
        }
        if self
            .api_token
            .as_ref()
            .is_some_and(|token| token.expose().trim().is_empty())
        {
            bail!("KALLA_API_TOKEN / --api-token is empty");
        }
        self.database_tls
            .open()
            .context("--tls-ca-dir / KALLA_TLS_CA_DIR")?;
        // Checked here, not by clap, so a half given in the TOML file is caught too.
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!(
                "--tls-cert and --tls-key (KALLA_TLS_CERT, KALLA_TLS_KEY) go together: give both or neither"
            );
        }
        if let Some((cert, key)) = self.https() {
            crate::https::check(cert, key)?;
        }
        self.host_policy()
            .context("--allowed-hosts / KALLA_ALLOWED_HOSTS")?;
        FileRoots::under(&self.file_roots).context("--file-roots / KALLA_FILE_ROOTS")?;
        if let Some(keys) = &self.callback_signing_keys
            && keys.expose().split(',').any(|key| key.trim().len() < 32)
        {
            bail!(
                "--callback-signing-keys / KALLA_CALLBACK_SIGNING_KEYS: each key must be at least 32 characters"
            );
        }
        for origin in &self.cors_allowed_origins {
            check_origin(origin).context("--cors-allowed-origins / KALLA_CORS_ALLOWED_ORIGINS")?;
        }
        Ok(())
    }

    /// Where callbacks may go: `--allowed-hosts`, internal addresses refused on a remote cluster.
    pub fn host_policy(&self) -> Result<HostPolicy, HostError> {
        HostPolicy::new(&self.allowed_hosts, self.scheduler.is_some())
    }

    /// Where file sources may be read: `--file-roots` and `--allowed-buckets`, or their defaults.
    pub fn file_access(&self) -> anyhow::Result<FileAccess> {
        let roots = if !self.file_roots.is_empty() {
            FileRoots::under(&self.file_roots)
        } else if self.scheduler.is_none() {
            crate::local_state::prepare_data_dir(&self.data_dir)?;
            FileRoots::under(&[std::env::current_dir()?, self.data_dir.clone()])
        } else {
            Ok(FileRoots::Under(Vec::new()))
        }
        .context("--file-roots / KALLA_FILE_ROOTS")?;
        let buckets = if self.allowed_buckets.iter().any(|bucket| bucket == "*") {
            Buckets::Any
        } else if !self.allowed_buckets.is_empty() {
            Buckets::Only(self.allowed_buckets.clone())
        } else if self.scheduler.is_none() {
            Buckets::Any
        } else {
            Buckets::Only(self.cache_bucket().into_iter().collect())
        };
        Ok(FileAccess { roots, buckets })
    }

    /// The bucket of an `s3://` cache dir.
    fn cache_bucket(&self) -> Option<String> {
        let location = url::Url::parse(self.cache_dir.as_deref()?).ok()?;
        (location.scheme() == "s3").then(|| location.host_str().map(str::to_string))?
    }

    /// Each configured key is well formed, and the two differ: one key for both would hand every
    /// executor what opens the stored secrets.
    fn check_keys(&self) -> anyhow::Result<()> {
        let secrets = key_text(self.secret_key.as_ref(), self.secret_key_file.as_deref())
            .context("KALLA_SECRET_KEY / --secret-key(-file)")?;
        let cluster = key_text(self.cluster_key.as_ref(), self.cluster_key_file.as_deref())
            .context("KALLA_CLUSTER_KEY / --cluster-key(-file)")?;
        if let Some(text) = &secrets {
            SecretsKey::from_base64(text).context("KALLA_SECRET_KEY / --secret-key(-file)")?;
        }
        if let Some(text) = &cluster {
            ClusterKey::from_base64(text).context("KALLA_CLUSTER_KEY / --cluster-key(-file)")?;
        }
        if let (Some(secrets), Some(cluster)) = (&secrets, &cluster)
            && keys_in(secrets).any(|key| keys_in(cluster).any(|other| other == key))
        {
            bail!(
                "KALLA_SECRET_KEY and KALLA_CLUSTER_KEY share a key: give the cluster (runner and \
                 executors) its own, e.g. `openssl rand -base64 32`, and keep the secrets key on the \
                 runner only"
            );
        }
        Ok(())
    }

    /// How the runner reaches a remote cluster; the embedded one is in this process, on loopback.
    pub fn cluster_transport(&self) -> anyhow::Result<ClusterTransport> {
        if self.scheduler.is_none() {
            return Ok(ClusterTransport::Plaintext);
        }
        Ok(self.cluster_tls.transport()?)
    }

    /// The API's certificate and key, when it serves HTTPS.
    pub fn https(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    pub fn s3(&self) -> S3Settings {
        self.s3.settings()
    }

    /// The cache root: the configured one, or `cache/`'s parent in the data dir as a file:// URL.
    pub fn cache_root(&self) -> anyhow::Result<CacheDir> {
        let location = match &self.cache_dir {
            Some(location) => location.clone(),
            None => {
                crate::local_state::prepare_data_dir(&self.data_dir)?;
                let dir = std::fs::canonicalize(&self.data_dir)?;
                url::Url::from_directory_path(&dir)
                    .map_err(|()| anyhow::anyhow!("the data dir {} is not an absolute path", dir.display()))?
                    .to_string()
            }
        };
        CacheDir::parse(&location).context("--cache-dir / KALLA_CACHE_DIR")
    }

    pub fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            partitions: PartitionOptions {
                target_partition_bytes: self.scan_partition_mib.max(1) * 1024 * 1024,
                ..PartitionOptions::default()
            },
            grant_ttl: Duration::from_secs(self.scan_grant_ttl_secs),
        }
    }

    /// The metadata database URL: the configured one, or a SQLite file in the data dir.
    pub fn metadata_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("kalla.db").display()),
        }
    }
}

/// An origin is `scheme://host[:port]`, exactly as a browser sends it: no path, no trailing `/`.
fn check_origin(origin: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(origin).with_context(|| format!("{origin:?} is not an origin"))?;
    if !matches!(url.scheme(), "http" | "https") || url.origin().ascii_serialization() != origin {
        bail!("{origin:?} is not an origin like https://app.example.com (no path, no trailing /)");
    }
    Ok(())
}

/// Makes each setting in the TOML file the default of its flag, unless a flag or variable set it.
fn with_file_defaults(mut command: Command, matches: &ArgMatches, path: &PathBuf) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    for (key, value) in table {
        let id = key.replace('-', "_");
        if id == "config" || !command.get_arguments().any(|a| a.get_id() == id.as_str()) {
            bail!("unknown setting {key:?} in {}", path.display());
        }
        let value = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            other => bail!(
                "setting {key:?} in {} must be a string, number or boolean, not {other}",
                path.display()
            ),
        };
        if matches!(matches.value_source(&id), Some(ValueSource::DefaultValue) | None) {
            command = command.mut_arg(id, |arg| arg.default_value(value));
        }
    }
    Ok(command)
}

/// A key ring's text, given inline or in a file.
fn key_text(inline: Option<&SecretString>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(Some)
            .with_context(|| format!("cannot read {}", path.display())),
        None => Ok(inline.map(|key| key.expose().to_string())),
    }
}

/// The keys of a ring's text (comma- or line-separated).
fn keys_in(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|key| !key.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults() {
        let config = RunnerConfig::load_from(["kalla-runner"]).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./.kalla"));
        assert!(config.metadata_url().starts_with("sqlite://./.kalla/kalla.db"));
        assert!(config.scheduler.is_none());
    }

    #[test]
    fn file_settings_apply_unless_a_flag_sets_them() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "bind = \"0.0.0.0:9000\"\ndata-dir = \"/var/lib/kalla\"\ns3_allow_http = true"
        )
        .unwrap();
        let path = file.path().to_str().unwrap();
        let config =
            RunnerConfig::load_from(["kalla-runner", "--config", path, "--bind", "127.0.0.1:1"]).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:1");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/kalla"));
        assert!(config.s3.s3_allow_http);
    }

    #[test]
    fn the_https_pair_is_checked_wherever_its_halves_come_from() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "tls-cert = \"/etc/kalla/https/tls.crt\"").unwrap();
        let path = file.path().to_str().unwrap();
        let config = RunnerConfig::load_from(["kalla-runner", "--config", path]).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("go together"), "{error}");
        let config =
            RunnerConfig::load_from(["kalla-runner", "--config", path, "--tls-key", "/nowhere/tls.key"])
                .unwrap();
        let error = format!("{:#}", config.validate().unwrap_err());
        assert!(error.contains("--tls-cert /etc/kalla/https/tls.crt"), "{error}");
    }

    #[test]
    fn shuffle_compression_is_lz4_unless_set() {
        let config = RunnerConfig::load_from(["kalla-runner"]).unwrap();
        assert_eq!(config.shuffle_compression.codec(), "lz4");
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "shuffle-compression = \"none\"").unwrap();
        let config =
            RunnerConfig::load_from(["kalla-runner", "--config", file.path().to_str().unwrap()]).unwrap();
        assert_eq!(config.shuffle_compression, ShuffleCompression::None);
        let config = RunnerConfig::load_from(["kalla-runner", "--shuffle-compression", "zstd"]).unwrap();
        assert_eq!(config.shuffle_compression.codec(), "zstd");
    }

    #[test]
    fn unknown_file_settings_are_named() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "bnid = \"0.0.0.0:9000\"").unwrap();
        let error = RunnerConfig::load_from(["kalla-runner", "--config", file.path().to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("bnid"), "{error}");
    }

    #[test]
    fn cors_origins_must_be_bare_origins() {
        let config = |origins: &str| {
            RunnerConfig::load_from(["kalla-runner", "--cors-allowed-origins", origins]).unwrap()
        };
        let both = config("https://app.example.com,http://localhost:3000");
        assert_eq!(both.cors_allowed_origins.len(), 2);
        both.validate().unwrap();
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/ui",
            "app.example.com",
            "*",
        ] {
            let error = config(bad).validate().unwrap_err();
            assert!(format!("{error:#}").contains("origin"), "{bad}: {error:#}");
        }
    }

    #[test]
    fn a_remote_cluster_needs_two_different_keys() {
        let secrets = SecretsKey::generate_base64();
        let cluster = ClusterKey::generate_base64();
        let remote = |keys: &[(&str, &str)]| {
            let mut args = vec![
                "kalla-runner",
                "--scheduler",
                "df://127.0.0.1:50050",
                "--cluster-plaintext",
            ];
            for (flag, value) in keys {
                args.extend([*flag, *value]);
            }
            RunnerConfig::load_from(args).unwrap().validate()
        };
        let error = |result: anyhow::Result<()>| format!("{:#}", result.unwrap_err());
        assert!(error(remote(&[("--cluster-key", &cluster)])).contains("KALLA_SECRET_KEY"));
        assert!(error(remote(&[("--secret-key", &secrets)])).contains("KALLA_CLUSTER_KEY"));
        let same = error(remote(&[("--secret-key", &secrets), ("--cluster-key", &secrets)]));
        assert!(same.contains("share a key"), "{same}");
        remote(&[("--secret-key", &secrets), ("--cluster-key", &cluster)]).unwrap();
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = RunnerConfig::load_from([
            "kalla-runner",
            "--api-token",
            "tok-123",
            "--secret-key",
            "key-456",
            "--cluster-key",
            "key-789",
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("tok-123") && !shown.contains("key-456") && !shown.contains("key-789"),
            "{shown}"
        );
    }
}
