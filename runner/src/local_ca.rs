//! The throwaway CA of a local cluster: `kalla cluster up` makes one for each start and issues
//! the scheduler's, the executors' and the runner's certificates from it, so the local cluster
//! plane runs with mutual TLS like a deployed one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kalla_core::cluster_tls::EXECUTOR_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files a local cluster's processes are started with.
#[derive(Debug, Clone)]
pub struct LocalCertificates {
    pub ca: PathBuf,
    pub scheduler: Issued,
    pub executor: Issued,
    pub runner: Issued,
}

impl LocalCertificates {
    /// A new CA and its certificates in `dir` (keys readable by their owner only); the CA's own
    /// key is never written.
    pub fn issue(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "kalla local cluster CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_file = dir.join("ca.crt");
        write(&ca_file, ca.pem().as_bytes(), 0o644)?;
        let issue = |name: &str, names: &[&str]| -> anyhow::Result<Issued> {
            let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &ca)?;
            let issued = Issued {
                cert: dir.join(format!("{name}.crt")),
                key: dir.join(format!("{name}.key")),
            };
            write(&issued.cert, cert.pem().as_bytes(), 0o644)?;
            write(&issued.key, key.serialize_pem().as_bytes(), 0o600)?;
            Ok(issued)
        };
        Ok(Self {
            scheduler: issue("kalla-scheduler", &["127.0.0.1", "localhost"])?,
            executor: issue(EXECUTOR_NAME, &[EXECUTOR_NAME])?,
            runner: issue("kalla-runner", &[])?,
            ca: ca_file,
        })
    }

    /// The flags giving the scheduler or an executor its certificate (`--tls-cert`, …).
    pub fn service_flags(&self, issued: &Issued) -> Vec<String> {
        self.flags(issued, ["--tls-cert", "--tls-key", "--tls-ca"])
    }

    /// The flags giving the runner its certificate (`--cluster-tls-cert`, …).
    pub fn runner_flags(&self) -> Vec<String> {
        self.flags(
            &self.runner,
            ["--cluster-tls-cert", "--cluster-tls-key", "--cluster-tls-ca"],
        )
    }

    fn flags(&self, issued: &Issued, [cert, key, ca]: [&str; 3]) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            cert.into(),
            path(&issued.cert),
            key.into(),
            path(&issued.key),
            ca.into(),
            path(&self.ca),
        ]
    }
}

fn write(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let _ = fs::remove_file(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .with_context(|| format!("cannot write {}", path.display()))
}
