//! The cluster plane's mutual TLS, against the real `kalla-scheduler` and `kalla-executor`
//! processes: a peer without a certificate of the cluster's CA can do nothing, and certificates
//! rotated on disk are served to new connections while running jobs finish.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::Ticket;
use arrow_flight::flight_service_client::FlightServiceClient;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{
    CancelJobParams, ExecuteQueryParams, GetJobStatusParams, RegisterExecutorParams, execute_query_params,
};
use kalla_core::cluster_tls::EXECUTOR_NAME;
use kalla_core::postgres::ScanOptions;
use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::tls::{TestCa, Usage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

async fn one_executor() -> Cluster {
    Cluster::start(ClusterOptions {
        executors: 1,
        ..ClusterOptions::default()
    })
    .await
}

/// How a would-be peer connects.
enum Peer<'a> {
    /// Plain HTTP/2, no TLS at all.
    Plaintext,
    /// TLS trusting the cluster's CA, with this certificate (`None`: no client certificate).
    Tls(Option<(&'a Path, &'a Path)>),
}

async fn channel(
    cluster: &Cluster,
    port: u16,
    server_name: &str,
    peer: &Peer<'_>,
) -> Result<Channel, String> {
    let certificates = cluster.certificates.as_ref().unwrap();
    let endpoint = match peer {
        Peer::Plaintext => Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap(),
        Peer::Tls(identity) => {
            let mut config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(
                    std::fs::read(certificates.ca.cert()).unwrap(),
                ))
                .domain_name(server_name);
            if let Some((cert, key)) = identity {
                config = config.identity(Identity::from_pem(
                    std::fs::read(cert).unwrap(),
                    std::fs::read(key).unwrap(),
                ));
            }
            Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
                .unwrap()
                .tls_config(config)
                .unwrap()
        }
    };
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Every scheduler call a cluster peer makes, and whether each one got an answer.
async fn scheduler_calls(cluster: &Cluster, peer: &Peer<'_>) -> Vec<(&'static str, Result<(), String>)> {
    let channel = match channel(cluster, cluster.scheduler_port, "127.0.0.1", peer).await {
        Ok(channel) => channel,
        Err(error) => return vec![("connect", Err(error))],
    };
    let mut scheduler = SchedulerGrpcClient::new(channel);
    let answered = |result: Result<(), tonic::Status>| match result {
        Ok(()) => Ok(()),
        Err(status) if answered_by_ballista(&status) => Ok(()),
        Err(status) => Err(format!("{status:?}")),
    };
    let mut request = tonic::Request::new(ExecuteQueryParams {
        query: Some(execute_query_params::Query::LogicalPlan(Vec::new())),
        ..ExecuteQueryParams::default()
    });
    ballista_core::version::insert_version_header(request.metadata_mut());
    vec![
        (
            "register an executor",
            answered(
                scheduler
                    .register_executor(RegisterExecutorParams::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "submit a job",
            answered(scheduler.execute_query(request).await.map(drop)),
        ),
        (
            "ask for a job",
            answered(
                scheduler
                    .get_job_status(GetJobStatusParams {
                        job_id: "job-x".into(),
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "cancel a job",
            answered(
                scheduler
                    .cancel_job(CancelJobParams {
                        job_id: "job-x".into(),
                    })
                    .await
                    .map(drop),
            ),
        ),
    ]
}

/// A Flight fetch from an executor: whether the executor answered (any answer, even an error
/// about the ticket) rather than the connection failing.
async fn flight_fetch(cluster: &Cluster, port: u16, peer: &Peer<'_>) -> Result<(), String> {
    let channel = channel(cluster, port, EXECUTOR_NAME, peer).await?;
    let mut flight = FlightServiceClient::new(channel);
    match flight
        .do_get(Ticket {
            ticket: b"not a ticket".to_vec().into(),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.source().is_none() && status.code() != tonic::Code::Unavailable => Ok(()),
        Err(status) => Err(format!("{status:?}")),
    }
}

/// An error status the scheduler itself sent (its responses name it as their server), as opposed
/// to a failed connection.
fn answered_by_ballista(status: &tonic::Status) -> bool {
    status
        .metadata()
        .get("server")
        .and_then(|server| server.to_str().ok())
        .is_some_and(|server| server.starts_with("ballista/"))
}

/// The REST API's job list, fetched with `client`.
async fn list_jobs(cluster: &Cluster, client: reqwest::Client) -> Result<String, String> {
    let response = client
        .get(cluster.rest_url("/api/jobs"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    response.text().await.map_err(|e| e.to_string())
}

fn rest_client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
    if let Some((cert, key)) = identity {
        let pem = [std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()].concat();
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// The executor's Flight port, as the scheduler knows it.
async fn executor_port(cluster: &Cluster) -> u16 {
    let executors: serde_json::Value =
        serde_json::from_str(&cluster.rest_get("/api/executors").await).unwrap();
    executors[0]["port"].as_u64().expect("an executor's port") as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_certificate_of_the_cluster_ca_nothing_is_reachable() {
    let cluster = one_executor().await;
    let certificates = cluster.certificates.as_ref().unwrap();
    let flight_port = executor_port(&cluster).await;
    let elsewhere = TempDir::new().unwrap();
    let other_ca = TestCa::new(elsewhere.path(), "other-ca");
    let stranger = other_ca.issue("stranger", "kalla-runner", &[], Usage::Client);
    let member = (
        certificates.client.cert.as_path(),
        certificates.client.key.as_path(),
    );

    // The cluster's own client certificate gets answers: the refusals below are the TLS's doing.
    for (call, answer) in scheduler_calls(&cluster, &Peer::Tls(Some(member))).await {
        assert!(
            answer.is_ok(),
            "{call} with the cluster's certificate: {answer:?}"
        );
    }
    flight_fetch(&cluster, flight_port, &Peer::Tls(Some(member)))
        .await
        .expect("a Flight fetch with the cluster's certificate");
    list_jobs(&cluster, rest_client(&certificates.ca.cert(), Some(member)))
        .await
        .expect("the job list with the cluster's certificate");

    let outsiders = [
        ("no TLS", Peer::Plaintext),
        ("no client certificate", Peer::Tls(None)),
        (
            "a certificate of another CA",
            Peer::Tls(Some((&stranger.cert, &stranger.key))),
        ),
    ];
    for (who, peer) in &outsiders {
        for (call, answer) in scheduler_calls(&cluster, peer).await {
            assert!(answer.is_err(), "{who} could {call}: {answer:?}");
        }
        assert!(
            flight_fetch(&cluster, flight_port, peer).await.is_err(),
            "{who} could fetch from an executor's Flight service"
        );
    }
    let no_certificate = rest_client(&certificates.ca.cert(), None);
    assert!(
        list_jobs(&cluster, no_certificate).await.is_err(),
        "listed jobs without a certificate"
    );
    let foreign = rest_client(&certificates.ca.cert(), Some((&stranger.cert, &stranger.key)));
    assert!(
        list_jobs(&cluster, foreign).await.is_err(),
        "listed jobs with another CA's certificate"
    );
    let plain = reqwest::get(format!("http://127.0.0.1:{}/api/jobs", cluster.scheduler_port)).await;
    assert!(
        !plain.is_ok_and(|r| r.status().is_success()),
        "listed jobs over plain HTTP"
    );

    // The probes stay reachable without a certificate, and answer nothing else.
    let probe = |path: &str| format!("http://127.0.0.1:{}{path}", cluster.health_port);
    assert!(
        reqwest::get(probe("/readyz"))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert_eq!(reqwest::get(probe("/api/jobs")).await.unwrap().status(), 404);

    let log = cluster.log("scheduler");
    assert!(
        log.contains("refused a connection: TLS handshake failed"),
        "{log}"
    );
}

/// The certificate a server presents to a new connection now.
async fn served_certificate(port: u16, server_name: &str, cluster: &Cluster) -> CertificateDer<'static> {
    let certificates = cluster.certificates.as_ref().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(certificates.ca.cert()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certificates.client.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&certificates.client.key).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let tls = connector.connect(name, tcp).await.expect("a TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn first_certificate(file: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_certificates_serve_new_connections_while_a_running_job_finishes() {
    let db = TestDatabase::create().await;
    // A view that trickles rows out, so the job is still running when the certificates change.
    db.execute("CREATE VIEW slow AS SELECT g AS id FROM generate_series(1, 3000) g, LATERAL (SELECT pg_sleep(0.002) WHERE g > 0) s").await;
    let cluster = one_executor().await;
    let certificates = cluster.certificates.as_ref().unwrap();
    let flight_port = executor_port(&cluster).await;
    let before = served_certificate(cluster.scheduler_port, "127.0.0.1", &cluster).await;
    assert_eq!(before, first_certificate(&certificates.scheduler.cert));

    let ctx = cluster
        .session_with_table("slow", &db.source_uri("slow"), &ScanOptions::default())
        .await;
    let job = tokio::spawn(async move {
        ctx.sql("SELECT count(*), sum(id) FROM slow")
            .await?
            .collect()
            .await
    });
    db.wait_for_copy().await;

    // cert-manager renews a certificate by writing new files in place.
    let renewed_scheduler = certificates.ca.issue(
        "scheduler",
        "kalla-scheduler",
        &["IP:127.0.0.1", "DNS:localhost"],
        Usage::Peer,
    );
    let executor_name = format!("DNS:{EXECUTOR_NAME}");
    let renewed_executor = certificates
        .ca
        .issue("executor", EXECUTOR_NAME, &[&executor_name], Usage::Peer);
    certificates
        .ca
        .issue("client", "kalla-runner", &[], Usage::Client);

    let answer = job
        .await
        .unwrap()
        .expect("the job running across the rotation finishes");
    let printed = datafusion::arrow::util::pretty::pretty_format_batches(&answer)
        .unwrap()
        .to_string();
    assert!(
        printed.contains("3000") && printed.contains("4501500"),
        "{printed}"
    );

    let after = served_certificate(cluster.scheduler_port, "127.0.0.1", &cluster).await;
    assert_ne!(after, before, "the scheduler still serves the old certificate");
    assert_eq!(after, first_certificate(&renewed_scheduler.cert));
    let executor_after = served_certificate(flight_port, EXECUTOR_NAME, &cluster).await;
    assert_eq!(executor_after, first_certificate(&renewed_executor.cert));

    // New connections of clients and executors, with the renewed certificates, run a new job.
    let again = cluster
        .session_with_table("slow", &db.source_uri("slow"), &ScanOptions::default())
        .await;
    let rows = again
        .sql("SELECT count(*) FROM slow")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows[0].num_rows(), 1);
}
