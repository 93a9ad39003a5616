//! TLS on the real binaries' listeners, with certificates each test makes for
//! itself: the README's TLS session (grpcurl and curl trusting a CA, gRPC-Web over
//! TLS, mutual TLS), certificates rotated without a restart (by replacing the
//! files, and on SIGHUP) while a connection opened before keeps working, and a
//! service with mutual TLS refusing callers without the right certificate.
//!
//! Needs grpcurl, curl and openssl. The README's session runs on free ports,
//! put in place of the README's 50051 and 8080.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use system_tests::pki::{Ca, Issued};
use system_tests::process::{
    Process, ScratchDatabase, free_port, on_ports, readme_example, require_tools, run, run_script,
    terminate_all,
};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A folder of the test's own, removed when it ends.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("agora-tls-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).expect("a temporary folder");
        Self(path)
    }

    /// Writes `contents` to `name`, replacing the file in one step (as a secret
    /// store or `mv` does), so a reader never sees half of it.
    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        let partial = self.0.join(format!(".{name}.partial"));
        std::fs::write(&partial, contents).expect("write a test file");
        std::fs::rename(&partial, &path).expect("replace a test file");
        path.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// The server's certificate and key files, replaced by `issued`.
    fn serve(&self, issued: &Issued) -> [(&'static str, String); 2] {
        [
            ("TLS_CERT_FILE", self.write("cert.pem", &issued.cert)),
            ("TLS_KEY_FILE", self.write("key.pem", &issued.key)),
        ]
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The clients the tests run (openssl too, which has no `--version`; the
/// README's commands say so if it is missing).
fn tools_on_path() {
    require_tools(&["grpcurl", "curl"]);
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// A client that trusts `cas`, offering `h2`.
fn client_config(cas: &[&Ca]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(der(&ca.pem())).expect("a usable CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(config: Arc<ClientConfig>, address: &str) -> std::io::Result<ClientTls> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("localhost").expect("a server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The leaf certificate the server at `address` presents to a new connection.
async fn served_certificate(config: Arc<ClientConfig>, address: &str) -> CertificateDer<'static> {
    let tls = connect(config, address).await.expect("a TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone()
}

/// Waits (at most 10 seconds) until new connections to `address` get `expected`.
async fn wait_for_certificate(config: Arc<ClientConfig>, address: &str, expected: &str, why: &str) {
    let expected = der(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_certificate(config.clone(), address).await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{why}: the new certificate in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gRPC channel over one TLS connection, and how many connections it made.
fn pinned_channel(config: Arc<ClientConfig>, address: String) -> (Channel, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let connector = tower::service_fn(move |_| {
        let (config, address, counted) = (config.clone(), address.clone(), counted.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            connect(config, &address).await.map(TokioIo::new)
        }
    });
    let channel = Endpoint::from_static("http://localhost").connect_with_connector_lazy(connector);
    (channel, connections)
}

async fn serving(channel: &Channel) -> bool {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|answer| answer.into_inner().status() == ServingStatus::Serving)
}

fn script_in(dir: &Path, script: &str) -> String {
    format!("cd '{}'\n{script}", dir.display())
}

#[tokio::test]
async fn a_tls_gateway_serves_the_readme_session_grpc_web_and_mutual_tls() {
    tools_on_path();
    let database = ScratchDatabase::new();
    let dir = Dir::new();
    // The README's session, on free ports rather than its 50051 and 8080.
    let (grpc_port, http_port) = (free_port(), free_port());
    let here = |script: &str| script_in(&dir.0, &on_ports(script, grpc_port, http_port));
    run_script(&here(&readme_example("tls-certs"))).await;
    let files = [
        ("TLS_CERT_FILE", dir.path("cert.pem")),
        ("TLS_KEY_FILE", dir.path("key.pem")),
    ];
    let mut env = vec![
        ("DATABASE_URL", database.url.clone()),
        // For the client addresses below.
        ("TRUSTED_PROXIES", "127.0.0.1,::1".to_owned()),
        ("REGISTRATIONS_PER_ADDRESS_PER_HOUR", "1".to_owned()),
        ("GATEWAY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}")),
        ("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
    ];
    env.extend(files.clone());
    let gateway = Process::start("gateway", &env).await;

    let calls = run_script(&here(&readme_example("tls-calls"))).await;
    for expected in [
        "agora.posts.v1.PostService",
        "grpc.health.v1.Health",
        r#""email":"tls@example.com""#,
    ] {
        assert!(
            calls.contains(expected),
            "{expected:?} in the README's TLS calls:\n{calls}"
        );
    }
    // gRPC-Web over HTTP/1.1 and TLS: an empty health check, answered SERVING.
    let web = run_script(&here(
        "printf '\\0\\0\\0\\0\\0' | curl -s --http1.1 --cacert ca.pem --data-binary @- \
           -H 'content-type: application/grpc-web+proto' -H 'x-grpc-web: 1' \
           https://localhost:50051/grpc.health.v1.Health/Check | tr -c '[:print:]' '.'",
    ))
    .await;
    assert!(
        web.contains("grpc-status:0"),
        "a gRPC-Web answer over TLS: {web}"
    );
    let plaintext = run_script(&here(
        "grpcurl -plaintext -max-time 2 localhost:50051 list >/dev/null 2>&1 && echo answered || echo refused",
    ))
    .await;
    assert_eq!(
        plaintext.trim(),
        "refused",
        "a plaintext caller gets nothing"
    );

    // Both ports still know the peer over TLS: from a trusted proxy, each
    // forwarded address has a registration of its own (without the peer, they
    // would all share one count).
    let registrations = run_script(&here(
        r#"register_grpc() {
             grpcurl -cacert ca.pem -H "x-forwarded-for: $1" -d "{\"email\": \"$2@example.com\", \"password\": \"correct horse battery\"}" \
               localhost:50051 agora.auth.v1.UserService/CreateUser >/dev/null 2>&1 && echo ok || echo refused
           }
           register_http() {
             curl -s -o /dev/null -w '%{http_code}\n' --cacert ca.pem -H "x-forwarded-for: $1" \
               -H 'content-type: application/json' -d "{\"email\": \"$2@example.com\", \"password\": \"correct horse battery\"}" \
               https://localhost:8080/users/
           }
           register_grpc 203.0.113.1 one; register_grpc 203.0.113.2 two; register_grpc 203.0.113.1 three
           register_http 203.0.113.3 four; register_http 203.0.113.4 five; register_http 203.0.113.3 six"#,
    ))
    .await;
    assert_eq!(
        registrations, "ok\nok\nrefused\n201\n201\n429\n",
        "registrations counted per client address over TLS"
    );
    terminate_all([gateway]).await;

    // The same, with mutual TLS: the README's client certificate gets in, a
    // caller without one does not.
    env.push(("TLS_CLIENT_CA_FILE", dir.path("ca.pem")));
    let gateway = Process::start("gateway", &env).await;
    let mutual = run_script(&here(&readme_example("tls-mutual"))).await;
    assert!(
        mutual.contains("agora.auth.v1.AuthService"),
        "with a client certificate:\n{mutual}"
    );
    let without = run_script(&here(
        "grpcurl -cacert ca.pem -max-time 5 localhost:50051 list >/dev/null 2>&1 && echo answered || echo refused
         curl -s --cacert ca.pem https://localhost:8080/posts >/dev/null && echo answered || echo refused",
    ))
    .await;
    assert_eq!(
        without, "refused\nrefused\n",
        "without a client certificate"
    );
    terminate_all([gateway]).await;
    database.drop_now().await;
}

#[tokio::test]
async fn replaced_files_reach_new_connections_while_open_ones_keep_working() {
    let database = ScratchDatabase::new();
    let dir = Dir::new();
    let (first_ca, second_ca) = (Ca::new("first"), Ca::new("second"));
    let first = first_ca.server();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        ("DATABASE_URL", database.url.clone()),
        ("GATEWAY_GRPC_ADDR", grpc.clone()),
        ("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
        ("TLS_RELOAD_SECS", "1".to_owned()),
    ];
    env.extend(dir.serve(&first));
    let gateway = Process::start("gateway", &env).await;
    let trusting_both = client_config(&[&first_ca, &second_ca]);
    let (open, connections) = pinned_channel(trusting_both.clone(), grpc.clone());
    assert!(serving(&open).await, "answers over TLS");
    assert_eq!(
        served_certificate(trusting_both.clone(), &grpc).await,
        der(&first.cert)
    );

    // A key that does not fit is refused and the certificate served stays.
    dir.write("key.pem", &second_ca.server().key);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        served_certificate(trusting_both.clone(), &grpc).await,
        der(&first.cert),
        "a failed reload keeps the previous certificate"
    );

    let second = second_ca.server();
    dir.serve(&second);
    wait_for_certificate(trusting_both.clone(), &grpc, &second.cert, "replaced files").await;
    assert!(
        connect(client_config(&[&first_ca]), &grpc).await.is_err(),
        "a client trusting only the first CA no longer gets in"
    );
    assert!(
        serving(&open).await,
        "the connection opened before still answers"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "on the same connection"
    );
    terminate_all([gateway]).await;
    database.drop_now().await;
}

#[tokio::test]
async fn sighup_reloads_the_files_at_once() {
    let database = ScratchDatabase::new();
    let dir = Dir::new();
    let ca = Ca::new("agora");
    let first = ca.server();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        ("DATABASE_URL", database.url.clone()),
        ("AUTH_LISTEN_ADDR", listen.clone()),
        // Only the signal can make it look again within the test.
        ("TLS_RELOAD_SECS", "3600".to_owned()),
    ];
    env.extend(dir.serve(&first));
    let auth = Process::start("auth-service", &env).await;
    let trusting = client_config(&[&ca]);
    let (open, _) = pinned_channel(trusting.clone(), listen.clone());
    assert!(serving(&open).await, "answers over TLS");

    let second = ca.server();
    dir.serve(&second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served_certificate(trusting.clone(), &listen).await,
        der(&first.cert),
        "nothing changes before the signal"
    );
    run_script(&format!("kill -HUP {}", auth.pid())).await;
    wait_for_certificate(trusting, &listen, &second.cert, "SIGHUP").await;
    assert!(
        serving(&open).await,
        "the connection opened before still answers"
    );
    terminate_all([auth]).await;
    database.drop_now().await;
}

#[tokio::test]
async fn a_service_with_mutual_tls_answers_only_clients_certified_by_its_ca() {
    tools_on_path();
    let database = ScratchDatabase::new();
    let dir = Dir::new();
    let (ca, stranger) = (Ca::new("agora"), Ca::new("stranger"));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        ("DATABASE_URL", database.url.clone()),
        ("AUTH_LISTEN_ADDR", listen.clone()),
        ("TLS_CLIENT_CA_FILE", dir.write("client-ca.pem", &ca.pem())),
    ];
    env.extend(dir.serve(&ca.server()));
    dir.write("ca.pem", &ca.pem());
    for (name, issued) in [("ours", ca.client()), ("theirs", stranger.client())] {
        dir.write(&format!("{name}.pem"), &issued.cert);
        dir.write(&format!("{name}-key.pem"), &issued.key);
    }
    let auth = Process::start_keeping_log("auth-service", &env).await;
    assert_eq!(
        auth.log_lines_containing(&["auth-service listening", &format!("grpc {listen} mtls")]),
        1,
        "the start-up line says the listener is mutual TLS"
    );

    let port = listen.rsplit(':').next().expect("a port");
    let call = |certificate: &str| {
        format!(
            "grpcurl -cacert ca.pem {certificate} -max-time 5 localhost:{port} list 2>&1 || echo refused"
        )
    };
    let cases = [
        ("", "refused", "without a client certificate"),
        (
            "-cert theirs.pem -key theirs-key.pem",
            "refused",
            "with another CA's certificate",
        ),
        (
            "-cert ours.pem -key ours-key.pem",
            "agora.auth.v1.AuthService",
            "with the CA's certificate",
        ),
    ];
    for (certificate, expected, case) in cases {
        let answer = run_script(&script_in(&dir.0, &call(certificate))).await;
        assert!(answer.contains(expected), "{case}: {answer}");
    }

    // `--health-check` (a container's health probe) speaks TLS to a TLS server,
    // trusting UPSTREAM_CA_FILE and presenting UPSTREAM_CERT_FILE, as any
    // caller does.
    let mut probe = env.clone();
    probe.push(("UPSTREAM_CA_FILE", dir.path("ca.pem")));
    let (status, printed) = run("auth-service", &probe, &["--health-check"]).await;
    assert!(
        !status.success(),
        "no client certificate: refused: {printed}"
    );
    probe.push(("UPSTREAM_CERT_FILE", dir.path("ours.pem")));
    probe.push(("UPSTREAM_KEY_FILE", dir.path("ours-key.pem")));
    let (status, printed) = run("auth-service", &probe, &["--health-check"]).await;
    assert!(status.success(), "healthy over mutual TLS: {printed}");
    terminate_all([auth]).await;
    database.drop_now().await;
}
