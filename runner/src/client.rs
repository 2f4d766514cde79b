//! The `kalla` CLI's HTTP client for a runner, and where it finds the token.

use std::path::Path;

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::local_state::TOKEN_FILE;

pub struct RunnerClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl RunnerClient {
    /// A client for the runner at `base`, with the given token or the one a local runner stored in `data_dir`.
    /// A client of the runner at `base`; `cacert`: the only CA trusted for an https:// runner.
    pub fn new(
        base: &str,
        token: Option<&str>,
        data_dir: &Path,
        cacert: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let token = match token {
            Some(token) => token.to_string(),
            None => {
                let path = data_dir.join(TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no API token: set KALLA_API_TOKEN, or run next to a local runner whose data dir \
                             holds {} (--data-dir)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: http_client(cacert)?,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the runner at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            bail!("runner answered {status}: {message}");
        }
        Ok(serde_json::from_value(body)?)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// Streams the body of `path` into `out`.
    pub async fn download(
        &self,
        path: &str,
        out: &mut (impl std::io::Write + ?Sized),
    ) -> anyhow::Result<u64> {
        let mut response = self
            .request(Method::GET, path)
            .send()
            .await
            .with_context(|| format!("cannot reach the runner at {}", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "runner answered {status}: {}",
                body["error"]["message"].as_str().unwrap_or("no details")
            );
        }
        let mut written = 0;
        while let Some(chunk) = response.chunk().await? {
            out.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    pub async fn add_source(
        &self,
        alias: &str,
        uri: &str,
        source_type: Option<&str>,
    ) -> anyhow::Result<Value> {
        let body = json!({"alias": alias, "uri": uri, "source_type": source_type});
        self.send(self.request(Method::POST, "/api/sources").json(&body))
            .await
    }

    pub async fn list_sources(&self) -> anyhow::Result<Vec<Value>> {
        self.send(self.request(Method::GET, "/api/sources")).await
    }

    pub async fn remove_source(&self, alias: &str) -> anyhow::Result<()> {
        let response = self
            .request(Method::DELETE, &format!("/api/sources/{}", path_segment(alias)))
            .send()
            .await
            .with_context(|| format!("cannot reach the runner at {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "runner answered {status}: {}",
                body["error"]["message"].as_str().unwrap_or("no details")
            );
        }
        Ok(())
    }

    pub async fn preview(
        &self,
        alias: &str,
        conditions: Vec<Value>,
        limit: Option<usize>,
    ) -> anyhow::Result<Value> {
        let body = json!({"conditions": conditions, "limit": limit});
        let path = format!("/api/sources/{}/load-scoped", path_segment(alias));
        self.send(self.request(Method::POST, &path).json(&body)).await
    }
}

/// `text` percent-encoded as one URL path segment.
pub fn path_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A CLI condition: `COLUMN OP [VALUE]`, lists comma-separated (`status in open,late`,
/// `day between 2024-01-01,2024-01-31`, `note is_null`).
pub fn parse_condition(text: &str) -> anyhow::Result<Value> {
    let mut parts = text.trim().splitn(3, ' ');
    let (Some(column), Some(op)) = (parts.next(), parts.next()) else {
        bail!("condition {text:?} must look like `COLUMN OP [VALUE]`, e.g. `amount gte 100`");
    };
    let value = parts.next().map(str::trim);
    let value = match (op, value) {
        ("is_null" | "is_not_null", None) => Value::Null,
        ("in" | "between", Some(list)) => Value::Array(list.split(',').map(|v| json!(v.trim())).collect()),
        (_, Some(value)) => json!(value),
        (_, None) => bail!("condition {text:?} needs a value after {op:?}"),
    };
    Ok(json!({"column": column, "op": op, "value": value}))
}

/// An HTTP client trusting only `cacert` for HTTPS when one is given (as `curl --cacert`).
fn http_client(cacert: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let Some(path) = cacert else {
        return Ok(reqwest::Client::new());
    };
    let pem = std::fs::read(path).with_context(|| format!("--cacert {}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("--cacert {}: not a PEM certificate bundle", path.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "--cacert {} holds no certificate",
        path.display()
    );
    let builder = certificates.into_iter().fold(
        reqwest::Client::builder().tls_built_in_root_certs(false),
        |builder, certificate| builder.add_root_certificate(certificate),
    );
    builder.build().context("HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_conditions() {
        assert_eq!(
            parse_condition("amount gte 10.5").unwrap(),
            json!({"column": "amount", "op": "gte", "value": "10.5"})
        );
        assert_eq!(
            parse_condition("status in open, late").unwrap(),
            json!({"column": "status", "op": "in", "value": ["open", "late"]})
        );
        assert_eq!(
            parse_condition("note is_null").unwrap(),
            json!({"column": "note", "op": "is_null", "value": null})
        );
        assert_eq!(
            parse_condition("name like Acme %").unwrap(),
            json!({"column": "name", "op": "like", "value": "Acme %"})
        );
        assert!(parse_condition("amount").is_err());
        assert!(parse_condition("amount eq").is_err());
    }
}
