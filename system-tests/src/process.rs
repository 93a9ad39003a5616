//! Agora's real binaries as separate processes, the way a person or a container
//! runs them, and the split [`Topology`] that wires them to each other, for the
//! end-to-end tests.
//!
//! The binaries are found beside the test executable's own folder
//! (`target/<profile>/`), where `cargo test --workspace` builds them.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::Channel;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of one of Agora's binaries, built by `cargo test --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let test_executable = std::env::current_exe().expect("the test knows its path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = test_executable
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a cargo target folder")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Fails the test with a clear message when a command-line tool is missing.
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is needed on PATH for this test; see the README"
        );
    }
}

/// [`require_tools`] for programs that answer no `--version`, such as the protoc
/// plugins `grpc_java_plugin` and `grpc_python_plugin`: each must be a file in a
/// folder of PATH.
pub fn require_programs(programs: &[&str]) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in programs {
        let found = std::env::split_paths(&path).any(|folder| folder.join(program).is_file());
        assert!(
            found,
            "{program} is needed on PATH for this test; see proto/README.md"
        );
    }
}

/// A database of its own on the test server (`DATABASE_URL`), dropped by
/// [`ScratchDatabase::drop_now`].
pub struct ScratchDatabase {
    pub url: String,
    name: String,
    admin: PgConnectOptions,
}

impl ScratchDatabase {
    /// A name only; the binaries create the database themselves.
    pub fn new() -> Self {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL names the test server, see the README");
        let admin: PgConnectOptions = admin_url.parse().expect("DATABASE_URL is a PostgreSQL URL");
        let name = format!("agora_e2e_{}", uuid::Uuid::now_v7().simple());
        let mut url = url::Url::parse(&admin_url).expect("DATABASE_URL is a URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
            admin,
        }
    }

    pub async fn drop_now(self) {
        let mut conn = PgConnection::connect_with(&self.admin)
            .await
            .expect("the test server answers");
        let drop = format!("drop database if exists {} with (force)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
            .expect("drop the scratch database");
    }
}

impl Default for ScratchDatabase {
    fn default() -> Self {
        Self::new()
    }
}

/// A running binary, killed if the test ends without stopping it.
pub struct Process {
    pub name: String,
    child: Child,
    /// Every line it has logged, when started with [`Process::start_keeping_log`].
    log: Option<Arc<Mutex<Vec<String>>>>,
}

impl Process {
    /// Starts binary `name` with exactly these environment variables (plus PATH),
    /// and waits until its log says `<log_name> listening`.
    pub async fn start(name: &str, env: &[(&str, String)]) -> Self {
        Self::start_with(name, env, false).await
    }

    /// [`Process::start`], keeping every line the binary logs for
    /// [`Process::log_lines_containing`], one `rpc finished` line per call it
    /// serves included (a service logs its successes at debug).
    pub async fn start_keeping_log(name: &str, env: &[(&str, String)]) -> Self {
        let mut env = env.to_vec();
        env.push(("RUST_LOG", "info,service_kit::calls=debug".to_owned()));
        Self::start_with(name, &env, true).await
    }

    /// [`Process::start`], keeping every line the binary logs at the default
    /// level (info), as a person running it reads them.
    pub async fn start_keeping_default_log(name: &str, env: &[(&str, String)]) -> Self {
        Self::start_with(name, env, true).await
    }

    /// [`Process::start_keeping_default_log`] for the binary at `path`, such as
    /// a previous release's, rather than one of this build's.
    pub async fn start_at(path: &Path, env: &[(&str, String)]) -> Self {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("a binary's file name");
        Self::start_program(path, name, env, true).await
    }

    /// Every line logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log
            .as_ref()
            .expect("started keeping its log")
            .lock()
            .expect("the log is readable")
            .clone()
    }

    /// How many lines logged so far contain every one of `needles`.
    pub fn log_lines_containing(&self, needles: &[&str]) -> usize {
        let log = self
            .log
            .as_ref()
            .expect("started with Process::start_keeping_log");
        log.lock()
            .expect("the log is readable")
            .iter()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .count()
    }

    async fn start_with(name: &str, env: &[(&str, String)], keep_log: bool) -> Self {
        Self::start_program(&binary(name), name, env, keep_log).await
    }

    async fn start_program(
        program: &Path,
        name: &str,
        env: &[(&str, String)],
        keep_log: bool,
    ) -> Self {
        if name == "gateway" {
            require_free_default_ports(env);
        }
        let log = keep_log.then(Arc::default);
        let keep = |line: &str, log: &Option<Arc<Mutex<Vec<String>>>>| {
            if let Some(log) = log {
                log.lock()
                    .expect("the log is writable")
                    .push(line.to_owned());
            }
        };
        let mut child = command_at(program, env)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("a piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = format!("{name} listening");
        let listening = async {
            // What it said before it stopped: why it could not start (a port
            // already taken, say).
            let mut said = Vec::new();
            while let Some(line) = lines.next_line().await.expect("read the log") {
                keep(&line, &log);
                if line.contains(&ready) {
                    return;
                }
                said.push(line);
            }
            panic!("{name} exited before listening:\n{}", said.join("\n"));
        };
        tokio::time::timeout(STARTUP_TIMEOUT, listening)
            .await
            .unwrap_or_else(|_| panic!("{name} starts in time"));
        // Keep draining the log so the child never blocks on a full pipe.
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&line, &kept);
            }
        });
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The process id, to send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("a running child")
    }

    /// Sends SIGKILL, as a crash or an OOM kill would end it, and waits for the
    /// process to be gone.
    pub async fn kill(mut self) -> ExitStatus {
        self.child.start_kill().expect("SIGKILL is sent");
        tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} dies in time", self.name))
            .expect("wait for the child")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("a running child").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM to {}", self.name);
        tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} stops in time", self.name))
            .expect("wait for the child")
    }
}

/// Stops each process with SIGTERM, in this order; each must stop cleanly, which
/// also proves it ran all along.
pub async fn terminate_all(processes: impl IntoIterator<Item = Process>) {
    for process in processes {
        let name = process.name.clone();
        assert!(process.terminate().await.success(), "{name} stops cleanly");
    }
}

/// The environment of one binary: the variables it reads and their values.
pub type Env = Vec<(&'static str, String)>;

/// The split topology as `docker-compose.yml` wires it: auth-, votes- and
/// `REPLICAS` posts-service replicas and a gateway forwarding to them, each on a
/// free loopback port over one database. The tests that start the binaries by
/// hand take every variable from here, so they cannot drift from each other.
pub struct Topology<const REPLICAS: usize> {
    database_url: String,
    auth_port: u16,
    votes_port: u16,
    posts_ports: [u16; REPLICAS],
    grpc_port: u16,
    http_port: u16,
    /// Settings every binary also gets.
    extra: Env,
}

/// The processes of a [`Topology`], once started.
pub struct Running<const REPLICAS: usize> {
    pub auth: Process,
    pub votes: Process,
    pub posts: [Process; REPLICAS],
    pub gateway: Process,
}

impl<const REPLICAS: usize> Topology<REPLICAS> {
    /// Free ports for every binary, over the database at `database_url`.
    pub fn new(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            auth_port: free_port(),
            votes_port: free_port(),
            posts_ports: [(); REPLICAS].map(|()| free_port()),
            grpc_port: free_port(),
            http_port: free_port(),
            extra: Env::new(),
        }
    }

    /// Every binary also gets `name` set to `value`, a setting a test needs
    /// changed; a binary without such a setting ignores it.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    fn env(&self, own: impl IntoIterator<Item = (&'static str, String)>) -> Env {
        own.into_iter().chain(self.extra.iter().cloned()).collect()
    }

    pub fn auth_env(&self) -> Env {
        self.env([
            self.database(),
            ("AUTH_LISTEN_ADDR", loopback(self.auth_port)),
        ])
    }

    pub fn votes_env(&self) -> Env {
        self.env([
            self.database(),
            ("VOTES_LISTEN_ADDR", loopback(self.votes_port)),
            ("AUTH_SERVICE_URL", url(self.auth_port)),
        ])
    }

    /// The environment of posts-service replica `replica` (from 0).
    pub fn posts_env(&self, replica: usize) -> Env {
        self.env([
            self.database(),
            ("POSTS_LISTEN_ADDR", loopback(self.posts_ports[replica])),
            ("AUTH_SERVICE_URL", url(self.auth_port)),
            ("VOTES_SERVICE_URL", url(self.votes_port)),
        ])
    }

    /// The gateway only forwards: every service URL is set, the replicas'
    /// comma-separated.
    pub fn gateway_env(&self) -> Env {
        let posts: Vec<String> = self.posts_ports.iter().map(|&port| url(port)).collect();
        self.env([
            ("GATEWAY_GRPC_ADDR", self.edge_address()),
            ("GATEWAY_HTTP_ADDR", loopback(self.http_port)),
            ("AUTH_SERVICE_URL", url(self.auth_port)),
            ("POSTS_SERVICE_URL", posts.join(",")),
            ("VOTES_SERVICE_URL", url(self.votes_port)),
        ])
    }

    /// Where the gateway serves gRPC, as `host:port`.
    pub fn edge_address(&self) -> String {
        loopback(self.grpc_port)
    }

    /// The gateway's gRPC edge, which callers go through.
    pub fn edge_url(&self) -> String {
        url(self.grpc_port)
    }

    /// The gateway's HTTP/JSON facade.
    pub fn http_url(&self) -> String {
        url(self.http_port)
    }

    /// A channel straight to a service, bypassing the gateway: `posts-service`
    /// (its first replica), `votes-service` or `auth-service`.
    pub fn service(&self, name: &str) -> Channel {
        let port = match name {
            "auth-service" => self.auth_port,
            "votes-service" => self.votes_port,
            "posts-service" => self.posts_ports[0],
            other => panic!("no service named {other}"),
        };
        Channel::from_shared(url(port))
            .expect("a valid URL")
            .connect_lazy()
    }

    /// A channel to [`Topology::edge_url`], connecting on its first call.
    pub fn edge(&self) -> Channel {
        Channel::from_shared(self.edge_url())
            .expect("a valid URL")
            .connect_lazy()
    }

    /// Starts every binary in dependency order, as docker-compose.yml does, each
    /// once the one before listens. The posts-service replicas keep their logs
    /// ([`Process::log_lines_containing`]), so a test can tell which served a call.
    pub async fn start(&self) -> Running<REPLICAS> {
        let auth = Process::start("auth-service", &self.auth_env()).await;
        let votes = Process::start("votes-service", &self.votes_env()).await;
        let mut posts = Vec::with_capacity(REPLICAS);
        for replica in 0..REPLICAS {
            let env = self.posts_env(replica);
            posts.push(Process::start_keeping_log("posts-service", &env).await);
        }
        let gateway = Process::start("gateway", &self.gateway_env()).await;
        Running {
            auth,
            votes,
            posts: posts
                .try_into()
                .unwrap_or_else(|_| unreachable!("one process per replica")),
            gateway,
        }
    }

    fn database(&self) -> (&'static str, String) {
        ("DATABASE_URL", self.database_url.clone())
    }
}

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn url(port: u16) -> String {
    format!("http://{}", loopback(port))
}

/// Runs binary `name` to completion with these environment variables; its exit
/// status and everything it printed.
pub async fn run(name: &str, env: &[(&str, String)], args: &[&str]) -> (ExitStatus, String) {
    let output = command(name, env)
        .args(args)
        .output()
        .await
        .expect("the binary runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status, printed)
}

fn command(name: &str, env: &[(&str, String)]) -> Command {
    command_at(&binary(name), env)
}

fn command_at(program: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The ports the README's examples name: the gateway's defaults.
pub const README_GRPC_PORT: u16 = 50051;
pub const README_HTTP_PORT: u16 = 8080;

/// A gateway started without its addresses takes the README's fixed ports; when
/// one is taken (a gateway of one's own, started as the README says), the test
/// says so instead of failing later with "exited before listening".
fn require_free_default_ports(env: &[(&str, String)]) {
    for (variable, port) in [
        ("GATEWAY_GRPC_ADDR", README_GRPC_PORT),
        ("GATEWAY_HTTP_ADDR", README_HTTP_PORT),
    ] {
        if env.iter().any(|(name, _)| *name == variable) {
            continue;
        }
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is in use: stop the gateway you are running \
             (this test serves the README's examples on their fixed ports)"
        );
    }
}

/// `script` (a README example) with the README's ports replaced by these, so that
/// it runs against a gateway on free ports.
pub fn on_ports(script: &str, grpc_port: u16, http_port: u16) -> String {
    script
        .replace(&format!(":{README_GRPC_PORT}"), &format!(":{grpc_port}"))
        .replace(&format!(":{README_HTTP_PORT}"), &format!(":{http_port}"))
}

/// The all-in-one gateway on free ports over `database_url`, with `env` besides;
/// its gRPC and HTTP ports.
pub async fn all_in_one_gateway(database_url: &str, env: Env) -> (Process, u16, u16) {
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut all = vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("GATEWAY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}")),
        ("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
    ];
    all.extend(env);
    (Process::start("gateway", &all).await, grpc_port, http_port)
}

/// A free loopback port, for a binary that must be told where to listen.
///
/// Picked at random below Linux's ephemeral range (32768 and up), not by binding
/// port 0: a port from that range, free a moment ago, can be taken as the local
/// port of any outgoing connection (to PostgreSQL, say) before the binary binds
/// it, and tests start many binaries and connections at once. A port is handed
/// out once per test process: tests running side by side would otherwise draw
/// the same one now and then, and the second binary to bind it fails.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        // Each `RandomState` is seeded afresh: a random number without a crate.
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u8(0);
        let port = 20_000 + (random.finish() % 12_000) as u16;
        let mut handed_out = HANDED_OUT.lock().expect("not poisoned");
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
}

/// The shell commands of the README block `<!-- readme-example:NAME -->`.
pub fn readme_example(name: &str) -> String {
    example_in(include_str!("../../README.md"), name)
}

/// [`readme_example`] from `proto/README.md`, whose commands run from the
/// repository's root, or from `proto/` where it says so (see [`in_proto_copy`]).
pub fn proto_readme_example(name: &str) -> String {
    example_in(include_str!("../../proto/README.md"), name)
}

/// A script that copies the `proto/` module (its `.proto` files and buf
/// configuration, nothing generated) to `root/proto`, then runs `commands` there,
/// so that what they generate in `proto/gen/` stays out of the working tree.
pub fn in_proto_copy(root: &std::path::Path, commands: &str) -> String {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    format!(
        "mkdir -p '{root}/proto'\n\
         cp -R '{proto}/agora' '{proto}/google' '{proto}/buf.yaml' '{proto}/buf.gen.yaml' \
         '{root}/proto/'\n\
         cd '{root}/proto'\n{commands}",
        root = root.display(),
    )
}

fn example_in(readme: &str, name: &str) -> String {
    let start = readme
        .find(&format!("<!-- readme-example:{name} -->"))
        .expect("the example is in the README");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").expect("a sh block") + 6..];
    block[..block.find("```").expect("a closed block")].to_owned()
}

/// Runs a shell script with `bash -euo pipefail`; fails the test, with all it
/// printed, unless it succeeds. Returns its standard output.
pub async fn run_script(script: &str) -> String {
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the script failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// `<binary> --health-check`, as a container healthcheck runs it, fails and says
/// why when nothing listens at the binary's address (`listen_variable`).
pub async fn assert_health_check_fails_when_nothing_listens(binary: &str, listen_variable: &str) {
    let address = format!("127.0.0.1:{}", free_port());
    let (status, printed) = run(
        binary,
        &[(listen_variable, address.clone())],
        &["--health-check"],
    )
    .await;
    assert!(
        !status.success(),
        "{binary} --health-check with nothing listening: {printed}"
    );
    assert!(
        printed.contains(&address),
        "{binary} names the address it asked: {printed}"
    );
}

/// A binary told to listen on a port that is taken exits at once, failing, and
/// says which address and why, instead of serving somewhere else or hanging.
pub async fn assert_a_busy_port_is_reported(binary: &str, listen_variable: &str) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let address = taken.local_addr().expect("a bound address").to_string();
    let database = ScratchDatabase::new();
    let (status, printed) = run(
        binary,
        &[
            (listen_variable, address.clone()),
            ("DATABASE_URL", database.url.clone()),
        ],
        &[],
    )
    .await;
    database.drop_now().await;
    assert!(!status.success(), "{binary} on a taken port: {printed}");
    assert!(
        printed.contains(&format!("cannot listen on {address}")) && printed.contains("in use"),
        "{binary} names the taken address and why: {printed}"
    );
}
