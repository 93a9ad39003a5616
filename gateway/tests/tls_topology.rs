//! The split topology entirely on TLS: every listener serves TLS with
//! certificates this test makes, the services ask for client certificates
//! (mutual TLS), and every upstream URL is `https://`, verified against the
//! test's CA (`UPSTREAM_CA_FILE`) with a client certificate of its own
//! (`UPSTREAM_CERT_FILE`, `UPSTREAM_KEY_FILE`). A person registers, logs in,
//! writes, likes and lists through the gateway's TLS edge, which takes every hop
//! there is; and a caller without a client certificate gets nothing from a
//! service.

use std::path::{Path, PathBuf};

use agora_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    posts::v1::{
        CreatePostRequest, ListPostsRequest, Post, post_service_client::PostServiceClient,
    },
    votes::v1::{VoteDirection, VoteRequest, vote_service_client::VoteServiceClient},
};
use system_tests::{
    bearer,
    pki::Ca,
    process::{Env, Process, ScratchDatabase, Topology, terminate_all},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A CA of the test's own and the PEM files of what it issues, in a folder
/// removed at the end.
struct Pki {
    ca: Ca,
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let ca = Ca::new("agora test ca");
        let dir = std::env::temp_dir().join(format!("agora-tls-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Self { ca, dir }
    }

    /// `<name>.pem` and `<name>-key.pem`: a certificate for `names` (DNS names or
    /// IP addresses), usable by a server and a client.
    fn issue(&self, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let issued = self.ca.issue(
            names,
            &[
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (cert_path, key_path) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, issued.cert).unwrap();
        std::fs::write(&key_path, issued.key).unwrap();
        (cert_path, key_path)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn var(env: &Env, name: &str) -> String {
    env.iter()
        .rev()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("{name} is set"))
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// A port of `host:port`.
fn port(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// A channel to `https://{host}:{port}` that trusts the test's CA, with
/// `identity` as its client certificate if given.
fn tls_channel(pki: &Pki, host: &str, port: u16, identity: Option<&(PathBuf, PathBuf)>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(pki.ca_file()).unwrap()));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://{host}:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

#[tokio::test]
async fn the_split_topology_works_on_mutual_tls_and_refuses_callers_without_a_certificate() {
    let pki = Pki::new();
    // One server certificate for every listener, one client certificate per
    // service that calls others.
    let server = pki.issue("server", &["localhost", "127.0.0.1"]);
    let clients = ["votes", "posts", "gateway"].map(|name| pki.issue(name, &[name]));
    let database = ScratchDatabase::new();
    let topology = Topology::<1>::new(&database.url);

    let serving = |env: &mut Env, mutual: bool| {
        env.push(("TLS_CERT_FILE", path(&server.0)));
        env.push(("TLS_KEY_FILE", path(&server.1)));
        if mutual {
            env.push(("TLS_CLIENT_CA_FILE", path(&pki.ca_file())));
        }
    };
    let calling = |env: &mut Env, (cert, key): &(PathBuf, PathBuf)| {
        env.push(("UPSTREAM_CA_FILE", path(&pki.ca_file())));
        env.push(("UPSTREAM_CERT_FILE", path(cert)));
        env.push(("UPSTREAM_KEY_FILE", path(key)));
    };
    let mut auth_env = topology.auth_env();
    serving(&mut auth_env, true);
    let auth_port = port(&var(&auth_env, "AUTH_LISTEN_ADDR"));
    let mut votes_env = topology.votes_env();
    serving(&mut votes_env, true);
    calling(&mut votes_env, &clients[0]);
    // By address: the certificate is checked for 127.0.0.1.
    votes_env.push(("AUTH_SERVICE_URL", format!("https://127.0.0.1:{auth_port}")));
    let votes_port = port(&var(&votes_env, "VOTES_LISTEN_ADDR"));
    let mut posts_env = topology.posts_env(0);
    serving(&mut posts_env, true);
    calling(&mut posts_env, &clients[1]);
    posts_env.push(("AUTH_SERVICE_URL", format!("https://127.0.0.1:{auth_port}")));
    posts_env.push((
        "VOTES_SERVICE_URL",
        format!("https://127.0.0.1:{votes_port}"),
    ));
    let posts_port = port(&var(&posts_env, "POSTS_LISTEN_ADDR"));
    // The edge takes anyone (no client CA); its upstreams are named by DNS name,
    // so certificates are checked for `localhost` whichever address answers.
    let mut gateway_env = topology.gateway_env();
    serving(&mut gateway_env, false);
    calling(&mut gateway_env, &clients[2]);
    gateway_env.push(("AUTH_SERVICE_URL", format!("https://localhost:{auth_port}")));
    gateway_env.push((
        "POSTS_SERVICE_URL",
        format!("https://localhost:{posts_port}"),
    ));
    gateway_env.push((
        "VOTES_SERVICE_URL",
        format!("https://localhost:{votes_port}"),
    ));
    let edge_port = port(&topology.edge_address());

    let auth = Process::start("auth-service", &auth_env).await;
    let votes = Process::start("votes-service", &votes_env).await;
    let posts = Process::start("posts-service", &posts_env).await;
    let gateway = Process::start("gateway", &gateway_env).await;

    // Through the edge, over TLS: every hop behind it is mutual TLS.
    let edge = tls_channel(&pki, "localhost", edge_port, None);
    let (email, password) = ("tls@example.com", "correct horse battery");
    UserServiceClient::new(edge.clone())
        .create_user(CreateUserRequest {
            email: email.into(),
            password: password.into(),
            request_id: String::new(),
        })
        .await
        .expect("registered through the gateway");
    let token = AuthServiceClient::new(edge.clone())
        .login(LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .expect("logged in through the gateway")
        .into_inner()
        .access_token;
    let created = PostServiceClient::new(edge.clone())
        .create_post(bearer(
            &token,
            CreatePostRequest {
                post: Some(Post {
                    title: "Encrypted".into(),
                    content: "Every hop on TLS.".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("a post written through the gateway")
        .into_inner()
        .post
        .expect("the post written");
    VoteServiceClient::new(edge.clone())
        .vote(bearer(
            &token,
            VoteRequest {
                post_id: created.id.clone(),
                direction: VoteDirection::Add.into(),
            },
        ))
        .await
        .expect("a like through the gateway");
    let listed = PostServiceClient::new(edge.clone())
        .list_posts(bearer(&token, ListPostsRequest::default()))
        .await
        .expect("posts listed through the gateway")
        .into_inner();
    let post = listed
        .posts
        .iter()
        .find(|post| post.id == created.id)
        .expect("the new post is listed");
    // posts-service asked votes- and auth-service, over mutual TLS.
    assert_eq!(post.like_count, Some(1), "{post:?}");
    assert!(post.owner.is_some(), "the owner is known: {post:?}");

    // A caller that trusts the CA but has no client certificate is refused by
    // every service; with one, it is answered.
    for (service, port) in [
        ("auth-service", auth_port),
        ("posts-service", posts_port),
        ("votes-service", votes_port),
    ] {
        let pki = &pki;
        let check = |identity| async move {
            HealthClient::new(tls_channel(pki, "localhost", port, identity))
                .check(HealthCheckRequest::default())
                .await
        };
        let refused = check(None)
            .await
            .expect_err(&format!("{service} refuses a caller without a certificate"));
        // No gRPC answer at all: the connection is refused. (Under TLS 1.3 the
        // client has finished its handshake when the server refuses the
        // certificate, so the refusal comes as an alert or a closed connection
        // under the first call, and its code depends on which comes first.)
        let from_transport = std::error::Error::source(&refused)
            .is_some_and(|cause| cause.is::<tonic::transport::Error>());
        assert!(
            from_transport,
            "{service} refuses the connection, before any RPC: {refused:?}"
        );
        check(Some(&clients[2]))
            .await
            .unwrap_or_else(|status| panic!("{service} answers a certified caller: {status:?}"));
    }

    terminate_all([gateway, posts, votes, auth]).await;
    database.drop_now().await;
}
