//! A throwaway PostgreSQL cluster of a test's own, which the test may restart or
//! stop without touching the shared test server.
//!
//! It runs as the `postgres` user from a fresh temporary folder, listens on a free
//! loopback port and a socket in that folder, trusts every local connection, and
//! is stopped and removed when dropped, also when the test fails. Starting it
//! needs root, for `runuser`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::process::free_port;

/// The user the cluster runs as: PostgreSQL refuses to run as root.
const OWNER: &str = "postgres";

/// A running cluster; stopped (immediately) and deleted on drop.
pub struct Cluster {
    pub port: u16,
    /// Holds `data/`, the server's log `server.log` and its socket.
    root: PathBuf,
    bindir: PathBuf,
}

impl Cluster {
    /// Creates a cluster in a new temporary folder and starts it. Fails the test,
    /// saying what is missing, without PostgreSQL's server binaries, a `postgres`
    /// user, or root.
    pub fn start() -> Self {
        require_owner();
        let bindir = server_bindir();
        let root =
            std::env::temp_dir().join(format!("agora-postgres-{}", uuid::Uuid::now_v7().simple()));
        let root_arg = root.to_str().expect("a UTF-8 temporary folder").to_owned();
        // The folder belongs to the cluster's user from the start, so that no
        // one else can read it (initdb insists on that for `data/`).
        succeed(
            Command::new("install").args(["-d", "-m", "700", "-o", OWNER, "-g", OWNER, &root_arg]),
            "create the cluster's folder owned by the postgres user",
        );
        let cluster = Self {
            port: free_port(),
            root,
            bindir,
        };
        // No sync: nothing here has to survive a power cut, only a restart.
        cluster.as_owner(
            "initdb",
            &[
                "-D",
                &cluster.path_arg("data"),
                "-U",
                OWNER,
                "--auth=trust",
                "--no-sync",
            ],
        );
        cluster.pg_ctl(&["-w", "start"]);
        cluster
    }

    /// A URL for `database` on this cluster, as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{OWNER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A fast restart, as an operator or a failover does it: every session is
    /// ended, open transactions roll back, and the server is back up (accepting
    /// connections) when this returns.
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "restart"]);
    }

    /// What the server has logged so far, for a failure message.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn pg_ctl(&self, action: &[&str]) -> Output {
        // Given to a restart too, rather than relying on `postmaster.opts`.
        let options = format!(
            "-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            port = self.port,
            root = self.path_arg(""),
        );
        let (data, log) = (self.path_arg("data"), self.path_arg("server.log"));
        let mut args = vec!["-D", &data, "-l", &log, "-o", &options];
        args.extend_from_slice(action);
        self.as_owner("pg_ctl", &args)
    }

    /// Runs one of the server binaries as the cluster's user; fails the test with
    /// all it printed (and the server's log) unless it succeeds.
    fn as_owner(&self, tool: &str, args: &[&str]) -> Output {
        let output = Command::new("runuser")
            .args(["-u", OWNER, "--"])
            .arg(self.bindir.join(tool))
            .args(args)
            // A working directory the postgres user may enter, as initdb needs.
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|error| panic!("runuser runs {tool}: {error}"));
        assert!(
            output.status.success(),
            "{tool} {} failed ({}):\n{}{}\n--- server.log\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log(),
        );
        output
    }

    fn path_arg(&self, name: &str) -> String {
        self.root
            .join(name)
            .to_str()
            .expect("a UTF-8 temporary folder")
            .trim_end_matches('/')
            .to_owned()
    }
}

impl Drop for Cluster {
    /// Stops the server at once (nothing in it is kept) and removes its folder.
    /// Never panics, since it also runs while a failed test unwinds.
    fn drop(&mut self) {
        let data = self.path_arg("data");
        if Path::new(&data).join("postmaster.pid").exists() {
            let stopped = Command::new("runuser")
                .args(["-u", OWNER, "--"])
                .arg(self.bindir.join("pg_ctl"))
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .current_dir(&self.root)
                .output();
            if !stopped.is_ok_and(|output| output.status.success()) {
                eprintln!("could not stop the PostgreSQL cluster in {data}");
            }
        }
        if let Err(error) = std::fs::remove_dir_all(&self.root) {
            eprintln!("could not remove {}: {error}", self.root.display());
        }
    }
}

/// The folder of `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn server_bindir() -> PathBuf {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin"))
        .collect();
    // Newest version first (by number, so 15 comes before 9.6).
    candidates.sort_by_key(|dir| {
        let version = dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|name| name.to_str())
            .and_then(|name| name.split('.').next()?.parse::<u32>().ok());
        std::cmp::Reverse(version)
    });
    from_pg_config
        .into_iter()
        .chain(candidates)
        .find(|dir| has_tools(dir))
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server binaries (initdb, pg_ctl) are needed for this test: \
                 none in `pg_config --bindir` or /usr/lib/postgresql/*/bin; install the \
                 PostgreSQL server package"
            )
        })
}

/// The cluster runs as the `postgres` user, which only root may switch to.
fn require_owner() {
    succeed(
        Command::new("id").args(["-u", OWNER]),
        "find the postgres user, which the throwaway cluster runs as",
    );
    let me = Command::new("id").arg("-u").output().expect("id runs");
    assert_eq!(
        String::from_utf8_lossy(&me.stdout).trim(),
        "0",
        "the throwaway PostgreSQL cluster is started as root (runuser -u postgres)"
    );
}

fn succeed(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
