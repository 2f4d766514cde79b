//! The runner's API over HTTPS: curl and the `kalla` CLI trusting the test's CA, plain HTTP and
//! untrusted clients refused, and a certificate rotated on disk served without a restart.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kalla_e2e::cluster::bin_path;
use kalla_e2e::runner::Runner;
use kalla_e2e::tls::{Issued, TestCa, Usage};
use reqwest::{Method, StatusCode};
use tempfile::TempDir;

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (apt-get install curl)")
}

/// The serial number of the certificate the server at `port` presents for `localhost`.
fn served_serial(port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null \
         | openssl x509 -noout -serial"
    );
    let output = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn serial_of(cert: &Path) -> String {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Puts `issued` in place of the served files, each replaced whole (as a Secret update does).
fn install(issued: &Issued, cert: &Path, key: &Path) {
    for (from, to) in [(&issued.key, key), (&issued.cert, cert)] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, to).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_https_and_its_certificate_rotates_without_a_restart() {
    let files = TempDir::new().unwrap();
    let ca = TestCa::new(files.path(), "runner-ca");
    let other_ca = TestCa::new(files.path(), "other-ca");
    let names = ["DNS:localhost", "IP:127.0.0.1"];
    let first = ca.issue("first", "localhost", &names, Usage::Server);
    let (cert, key) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    install(&first, &cert, &key);
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let runner = Runner::start_https(TempDir::new().unwrap(), &args, &ca.cert()).await;
    let port = url::Url::parse(&runner.base_url).unwrap().port().unwrap();
    assert!(
        runner
            .logs()
            .contains(&format!("listening on https://127.0.0.1:{port}"))
    );

    let (status, answer) = runner.call(Method::GET, "/api/sources", None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let health = format!("{}/health", runner.base_url);
    let trusted = curl(&["--cacert", ca.cert().to_str().unwrap(), &health]);
    assert!(trusted.status.success(), "curl --cacert: {trusted:?}");
    let untrusted = curl(&["--cacert", other_ca.cert().to_str().unwrap(), &health]);
    assert_eq!(
        untrusted.status.code(),
        Some(60),
        "an unknown CA is refused: {untrusted:?}"
    );
    let plain = curl(&[&format!("http://127.0.0.1:{port}/health")]);
    assert!(!plain.status.success(), "plain HTTP gets no answer: {plain:?}");

    let kalla = |cacert: &Path| {
        Command::new(bin_path("kalla"))
            .args([
                "sources",
                "list",
                "--runner",
                &runner.base_url,
                "--api-token",
                &runner.token,
            ])
            .arg("--cacert")
            .arg(cacert)
            .env_remove("KALLA_API_TOKEN")
            .output()
            .expect("kalla")
    };
    let listed = kalla(&ca.cert());
    assert!(listed.status.success(), "kalla --cacert: {listed:?}");
    let refused = kalla(&other_ca.cert());
    assert!(
        !refused.status.success(),
        "kalla trusts only --cacert: {refused:?}"
    );

    assert_eq!(served_serial(port), serial_of(&first.cert));
    let second = ca.issue("second", "localhost", &names, Usage::Server);
    install(&second, &cert, &key);
    assert_ne!(serial_of(&second.cert), serial_of(&first.cert));
    let rotated = kalla_e2e::wait_for("the rotated certificate", Duration::from_secs(10), || async {
        (served_serial(port) == serial_of(&second.cert)).then_some(())
    });
    rotated.await;

    // A broken replacement is logged, and the last good certificate stays served.
    std::fs::write(&cert, "not a certificate").unwrap();
    let (status, _) = runner.call(Method::GET, "/api/sources", None).await;
    assert_eq!(status, StatusCode::OK, "still served after a broken rotation");
    assert_eq!(served_serial(port), serial_of(&second.cert));
    assert!(
        runner.logs().contains("still serving the previous one"),
        "{}",
        runner.logs()
    );
}
