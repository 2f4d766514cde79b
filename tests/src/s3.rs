//! A throwaway S3-compatible server (`moto_server`) on a free port, with one bucket.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use object_store::ObjectStoreExt;

use crate::ports::free_port;
use crate::proxy::TcpProxy;

pub const MOTO_ENV: &str = "KALLA_TEST_MOTO_SERVER";

pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    /// Made up per server (moto accepts any), so a test can search for them.
    pub access_key_id: String,
    pub secret_access_key: String,
    child: Child,
    http: reqwest::Client,
    /// Between the clients and moto, when the test takes the server down.
    proxy: Option<TcpProxy>,
}

impl S3Server {
    /// Starts `moto_server` (from `KALLA_TEST_MOTO_SERVER`, else `PATH`) and creates a bucket.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// Like [`S3Server::start`], with an endpoint the test can [`stop`](Self::stop) and
    /// [`resume`](Self::resume). moto keeps its objects in memory, so it is not stopped itself: a
    /// proxy in front of it resets every connection and refuses new ones.
    pub async fn start_stoppable() -> Self {
        Self::launch(true).await
    }

    pub async fn stop(&self) {
        self.proxy.as_ref().expect("a stoppable server").stop().await;
    }

    pub async fn resume(&self) {
        self.proxy.as_ref().expect("a stoppable server").resume().await;
    }

    async fn launch(stoppable: bool) -> Self {
        let binary = std::env::var_os(MOTO_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("moto_server"));
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install an S3-compatible test server with \
                     `pip install 'moto[server]'` or point {MOTO_ENV} at moto_server",
                    binary.display()
                )
            });
        let proxy = match stoppable {
            true => Some(TcpProxy::start(([127, 0, 0, 1], port).into()).await),
            false => None,
        };
        let endpoint = format!(
            "http://127.0.0.1:{}",
            proxy.as_ref().map_or(port, |proxy| proxy.port)
        );
        let http = reqwest::Client::new();
        let server = Self {
            endpoint,
            bucket: "kalla-test".into(),
            access_key_id: format!("AKIA{:016X}", rand::random::<u64>()),
            secret_access_key: format!("s3-secret-{:032x}", rand::random::<u128>()),
            child,
            http,
            proxy,
        };
        crate::wait_for("moto_server", Duration::from_secs(30), || async {
            server.http.get(&server.endpoint).send().await.ok().map(|_| ())
        })
        .await;
        server.put(&format!("/{}", server.bucket), Vec::new()).await;
        server
    }

    /// Uploads `body` as `key`; moto accepts unsigned requests.
    pub async fn put_object(&self, key: &str, body: Vec<u8>) {
        self.put(&format!("/{}/{key}", self.bucket), body).await;
    }

    async fn put(&self, path: &str, body: Vec<u8>) {
        let response = self
            .http
            .put(format!("{}{path}", self.endpoint))
            .body(body)
            .send()
            .await
            .expect("moto answers");
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }

    /// The content of the object `key`, read with the server's keys as Kalla reads it.
    pub async fn get_object(&self, key: &str) -> Vec<u8> {
        let settings = kalla_core::storage::S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(self.access_key_id.clone()),
            secret_access_key: Some(self.secret_access_key.clone()),
            allow_http: true,
            retry_timeout: None,
        };
        let bucket = url::Url::parse(&format!("s3://{}/", self.bucket)).expect("a bucket URL");
        let store = kalla_core::storage::object_store_for(&bucket, &settings).expect("an S3 store");
        let object = store
            .get(&object_store::path::Path::from(key))
            .await
            .unwrap_or_else(|e| panic!("GET {key}: {e}"));
        object.bytes().await.expect("the object's bytes").to_vec()
    }

    /// The keys of the bucket's objects below `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let url = format!("{}/{}?list-type=2&prefix={prefix}", self.endpoint, self.bucket);
        let listing = self
            .http
            .get(url)
            .send()
            .await
            .expect("moto answers")
            .text()
            .await
            .expect("a listing");
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// The runner (and executor) flags that point it at this server.
    pub fn runner_args(&self) -> Vec<String> {
        [
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            "us-east-1",
            "--s3-access-key-id",
            &self.access_key_id,
            "--s3-secret-access-key",
            &self.secret_access_key,
            "--s3-allow-http",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// [`Self::runner_args`] for a scheduler and executors, with the bucket as a data location
    /// besides the temp dir (the flag adds to the ones given before it).
    pub fn cluster_args(&self) -> Vec<String> {
        let mut args = self.runner_args();
        args.extend(["--data-locations".to_string(), format!("s3://{}/", self.bucket)]);
        args
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
