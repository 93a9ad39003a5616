//! CPU time as Linux counts it (`/proc/<pid>/stat`): the servers', and
//! PostgreSQL's (every process named `postgres`, its backends included), so that
//! a call's cost splits between the services and the database (and PgBouncer's,
//! when the servers reach the database through it). Read before and
//! after a measured window; the difference over the calls made is each call's
//! CPU. Elsewhere than Linux there are no figures.

use std::time::Duration;

use serde::Serialize;

use crate::processes::Servers;

/// CPU time spent so far.
#[derive(Debug, Clone, Copy)]
pub struct CpuTime {
    servers: Duration,
    database: Duration,
}

/// Milliseconds of CPU per call, by the servers and by PostgreSQL.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuPerCall {
    pub servers_ms: f64,
    pub database_ms: f64,
}

impl CpuTime {
    /// The servers' and PostgreSQL's CPU time now; none where `/proc` is not.
    pub fn now(servers: &Servers) -> Option<Self> {
        let tick = ticks_per_second()?;
        let servers = servers
            .processes()
            .into_iter()
            .filter_map(|(_, pid)| ticks(pid))
            .sum::<u64>();
        let time = |ticks: u64| Duration::from_secs_f64(ticks as f64 / tick);
        Some(Self {
            servers: time(servers),
            database: of_processes_named("postgres")?,
        })
    }

    /// Each of `calls` calls' share of the CPU spent since `self`.
    pub fn per_call(self, later: CpuTime, calls: u64) -> Option<CpuPerCall> {
        let calls = calls.max(1) as f64;
        let ms = |before: Duration, after: Duration| {
            after.saturating_sub(before).as_secs_f64() * 1000.0 / calls
        };
        Some(CpuPerCall {
            servers_ms: ms(self.servers, later.servers),
            database_ms: ms(self.database, later.database),
        })
    }
}

/// User and system time of process `pid`, in clock ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields count from its end.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15; the first after the command is 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time so far of every process whose command is `name` (`postgres`,
/// whose backends are processes of their own; `pgbouncer`); none where `/proc`
/// is not.
pub fn of_processes_named(name: &str) -> Option<Duration> {
    let tick = ticks_per_second()?;
    let total = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| is_named(pid, name))
        .filter_map(ticks)
        .sum::<u64>();
    Some(Duration::from_secs_f64(total as f64 / tick))
}

fn is_named(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name)
}

#[cfg(target_os = "linux")]
fn ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as f64)
}

#[cfg(not(target_os = "linux"))]
fn ticks_per_second() -> Option<f64> {
    None
}

/// This process's CPU time so far (the benchmark's own clients); none where
/// `/proc` is not.
pub fn of_this_process() -> Option<Duration> {
    let tick = ticks_per_second()?;
    let ticks = ticks(std::process::id())?;
    Some(Duration::from_secs_f64(ticks as f64 / tick))
}
