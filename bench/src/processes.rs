//! The real servers, as processes of their own, so that each one's memory can be
//! read. `cargo run -p bench` builds only this binary, so it runs them by starting
//! itself again with `AGORA_BENCH_SERVE=<role>`: the child then runs that role's
//! real `main`, reading its flags and environment as the real binary does.

use std::{
    error::Error,
    net::{SocketAddr, TcpListener},
    process::{Child, Command, ExitCode},
    time::{Duration, Instant},
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const SERVE: &str = "AGORA_BENCH_SERVE";
/// A debug build on a busy machine can take this long to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Auth,
    Posts,
    Votes,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Auth => "auth-service",
            Role::Posts => "posts-service",
            Role::Votes => "votes-service",
        }
    }
}

/// When this process was started as a server, runs it to the end and gives its
/// exit code; `None` for the benchmark itself.
pub fn serve_if_asked() -> Option<ExitCode> {
    let name = std::env::var(SERVE).ok()?;
    let roles = [Role::Gateway, Role::Auth, Role::Posts, Role::Votes];
    let Some(role) = roles.into_iter().find(|role| role.name() == name) else {
        eprintln!("{SERVE}={name}: not one of gateway, auth-service, posts-service, votes-service");
        return Some(ExitCode::FAILURE);
    };
    exit_with_parent();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start a runtime: {error}");
            return Some(ExitCode::FAILURE);
        }
    };
    Some(runtime.block_on(async {
        match role {
            Role::Gateway => gateway::main().await,
            Role::Auth => service_kit::service::main::<auth_service::Config>().await,
            Role::Posts => service_kit::service::main::<posts_service::Config>().await,
            Role::Votes => service_kit::service::main::<votes_service::Config>().await,
        }
    }))
}

/// A benchmark killed outright cannot kill its servers; they notice that they
/// were orphaned and leave too, so no server outlives a run.
fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        while std::os::unix::process::parent_id() == parent {
            std::thread::sleep(Duration::from_millis(500));
        }
        std::process::exit(1);
    });
}

/// The running servers, killed when this is dropped, on every path out (an error
/// or a panic included).
pub struct Servers {
    running: Vec<(Role, Child)>,
    /// The gateway's gRPC and HTTP/JSON addresses.
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Servers {
    /// Starts the all-in-one gateway, or with `split` the three services and a
    /// gateway in front of them, on `database_url`; returns once all answer.
    pub async fn start(
        split: bool,
        database_url: &str,
        verbose: bool,
    ) -> Result<Self, Box<dyn Error>> {
        Self::start_with(split, database_url, verbose, &[]).await
    }

    /// [`Servers::start`], with more environment variables for every server.
    pub async fn start_with(
        split: bool,
        database_url: &str,
        verbose: bool,
        env: &[(&str, String)],
    ) -> Result<Self, Box<dyn Error>> {
        let mut servers = Self {
            running: Vec::new(),
            grpc: free_port()?,
            http: free_port()?,
        };
        let server = |role: Role| {
            let mut command = Command::new(std::env::current_exe()?);
            command
                .env(SERVE, role.name())
                .env("DATABASE_URL", database_url)
                .env("RUST_LOG", if verbose { "info" } else { "warn" })
                // The callers are a few seeded people calling as fast as the
                // servers answer: per-person quotas would measure refusals, not
                // the servers. 0 turns each off.
                .env("QUOTA_POSTS_PER_MINUTE", "0")
                .env("QUOTA_SEARCHES_PER_MINUTE", "0")
                .env("QUOTA_VOTES_PER_MINUTE", "0")
                // Inherited upstream URLs would change the topology.
                .env_remove("AUTH_SERVICE_URL")
                .env_remove("POSTS_SERVICE_URL")
                .env_remove("VOTES_SERVICE_URL")
                .envs(env.iter().map(|(name, value)| (*name, value.as_str())));
            Ok::<_, std::io::Error>(command)
        };
        let mut gateway = server(Role::Gateway)?;
        gateway
            .env("GATEWAY_GRPC_ADDR", servers.grpc.to_string())
            .env("GATEWAY_HTTP_ADDR", servers.http.to_string());
        if split {
            let (auth, posts, votes) = (free_port()?, free_port()?, free_port()?);
            let url = |address: SocketAddr| format!("http://{address}");
            // One at a time, each after those it asks, so none logs its
            // neighbour as down while it starts.
            for (role, listen, address) in [
                (Role::Auth, "AUTH_LISTEN_ADDR", auth),
                (Role::Votes, "VOTES_LISTEN_ADDR", votes),
                (Role::Posts, "POSTS_LISTEN_ADDR", posts),
            ] {
                let mut command = server(role)?;
                command
                    .env(listen, address.to_string())
                    .env("AUTH_SERVICE_URL", url(auth))
                    .env("VOTES_SERVICE_URL", url(votes));
                servers.spawn(role, &mut command)?;
                servers.wait_until_serving(role, address).await?;
            }
            gateway
                .env("AUTH_SERVICE_URL", url(auth))
                .env("POSTS_SERVICE_URL", url(posts))
                .env("VOTES_SERVICE_URL", url(votes));
        }
        servers.spawn(Role::Gateway, &mut gateway)?;
        servers
            .wait_until_serving(Role::Gateway, servers.grpc)
            .await?;
        Ok(servers)
    }

    /// Each server's role and process id.
    pub fn processes(&self) -> Vec<(Role, u32)> {
        self.running
            .iter()
            .map(|(role, child)| (*role, child.id()))
            .collect()
    }

    fn spawn(&mut self, role: Role, command: &mut Command) -> Result<(), Box<dyn Error>> {
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", role.name()))?;
        self.running.push((role, child));
        Ok(())
    }

    /// Waits until the server's gRPC health says SERVING; fails early if it exits.
    async fn wait_until_serving(
        &mut self,
        role: Role,
        address: SocketAddr,
    ) -> Result<(), Box<dyn Error>> {
        let started = Instant::now();
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2));
        loop {
            if let Some((_, child)) = self.running.iter_mut().find(|(r, _)| *r == role)
                && let Some(status) = child.try_wait()?
            {
                return Err(format!("{} exited at start-up ({status})", role.name()).into());
            }
            if let Ok(channel) = endpoint.connect().await {
                let health = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await;
                if health.is_ok_and(|answer| answer.get_ref().status() == ServingStatus::Serving) {
                    return Ok(());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{} did not serve within {} s",
                    role.name(),
                    START_TIMEOUT.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // Callers first, so that no server sees a neighbour vanish.
        for (_, child) in self.running.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port free right now: bound by the system, then let go for the
/// server to take.
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}
