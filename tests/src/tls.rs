//! Test certificate authorities, made with the `openssl` command line tool.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy)]
pub enum Usage {
    Server,
    Client,
    /// Both ends of connections, as every process of the cluster plane.
    Peer,
}

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed CA whose files live in a directory of the test's.
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

impl TestCa {
    /// A new CA `name` (also its common name), written to `<dir>/<name>.crt` and `.key`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca = Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &ca.file("key"),
            "-out",
            &ca.file("crt"),
        ]);
        ca
    }

    /// The CA's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        PathBuf::from(self.file("crt"))
    }

    /// Issues `<dir>/<file>.crt` and `.key` for `common_name`, valid for `alt_names` (`DNS:…`,
    /// `IP:…`; a client certificate needs none).
    pub fn issue(&self, file: &str, common_name: &str, alt_names: &[&str], usage: Usage) -> Issued {
        let base = self.dir.join(file);
        let (cert, key, request, extensions) = (
            base.with_extension("crt"),
            base.with_extension("key"),
            base.with_extension("csr"),
            base.with_extension("ext"),
        );
        let mut lines = vec!["basicConstraints=critical,CA:FALSE".to_string()];
        lines.push(match usage {
            Usage::Server => "extendedKeyUsage=serverAuth".into(),
            Usage::Client => "extendedKeyUsage=clientAuth".into(),
            Usage::Peer => "extendedKeyUsage=serverAuth,clientAuth".into(),
        });
        if !alt_names.is_empty() {
            lines.push(format!("subjectAltName={}", alt_names.join(",")));
        }
        std::fs::write(&extensions, lines.join("\n")).expect("write extensions");
        let path = |p: &Path| p.display().to_string();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            &path(&key),
            "-out",
            &path(&request),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path(&request),
            "-CA",
            &self.file("crt"),
            "-CAkey",
            &self.file("key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path(&extensions),
            "-out",
            &path(&cert),
        ]);
        Issued { cert, key }
    }

    fn file(&self, extension: &str) -> String {
        self.dir
            .join(format!("{}.{extension}", self.name))
            .display()
            .to_string()
    }
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command line tool (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
