//! All the results of a run: printed as tables, checked against the targets, and
//! written as JSON for comparison across commits.

use std::fmt;

use serde::Serialize;

use crate::{
    cpu::CpuPerCall,
    load::Summary,
    memory::Snapshot,
    processes::Role,
    scenarios::{Call, Path},
    storm::Storm,
};

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub topology: &'static str,
    pub build: &'static str,
    pub git_commit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub seconds: u64,
    pub concurrency: usize,
    pub rate: u32,
    pub storm: usize,
    /// Password hashes auth-service computes at once (split only: all-in-one sets
    /// its own).
    pub hashing_concurrency: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Scenario {
    pub call: Call,
    pub path: Path,
    #[serde(flatten)]
    pub summary: Summary,
    /// calls/s over the SQL ceiling's; none for Login, whose cost is not SQL.
    pub ratio_to_ceiling: Option<f64>,
    /// CPU per call, of the servers and of PostgreSQL (Linux only).
    pub cpu: Option<CpuPerCall>,
}

#[derive(Debug, Serialize)]
pub struct CallRatio {
    pub call: Call,
    pub http_over_grpc: f64,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: f64,
    pub limit: f64,
    /// Whether `measured` must stay at or below `limit` (else at or above).
    pub at_most: bool,
    pub unit: &'static str,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub scenarios: Vec<Scenario>,
    pub http_over_grpc: Vec<CallRatio>,
    pub memory: Vec<Snapshot>,
    pub storm: Storm,
    pub targets: Vec<Target>,
}

impl Results {
    pub fn new(
        machine: Machine,
        settings: Settings,
        measured: Vec<(Call, Path, Summary, Option<CpuPerCall>)>,
        memory: Vec<Snapshot>,
        storm: Storm,
    ) -> Self {
        let per_second = |call, path| {
            measured
                .iter()
                .find(|(c, p, _, _)| (*c, *p) == (call, path))
                .map_or(f64::NAN, |(_, _, summary, _)| summary.per_second)
        };
        let scenarios = measured
            .iter()
            .map(|(call, path, summary, cpu)| Scenario {
                call: *call,
                path: *path,
                summary: summary.clone(),
                ratio_to_ceiling: (*call != Call::Login && *path != Path::Ceiling)
                    .then(|| summary.per_second / per_second(*call, Path::Ceiling)),
                cpu: *cpu,
            })
            .collect();
        let http_over_grpc = Call::ALL
            .into_iter()
            .filter(|&call| measured.iter().any(|(c, _, _, _)| *c == call))
            .map(|call| CallRatio {
                call,
                http_over_grpc: per_second(call, Path::Http) / per_second(call, Path::Grpc),
            })
            .collect();
        let mut results = Self {
            machine,
            settings,
            scenarios,
            http_over_grpc,
            memory,
            storm,
            targets: Vec::new(),
        };
        results.targets = results.targets();
        results
    }

    /// Calls that failed, RESOURCE_EXHAUSTED refusals aside.
    pub fn failures(&self) -> u64 {
        let scenarios: u64 = self.scenarios.iter().map(|s| s.summary.failed).sum();
        scenarios
            + self.storm.get_post_alone.failed
            + self.storm.get_post_beside_busy_core.failed
            + self.storm.get_post_in_storm.failed
            + self.storm.logins_failed
    }

    fn split(&self) -> bool {
        self.machine.topology == "split"
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let ceiling_share = if self.split() { 0.3 } else { 0.5 };
        for scenario in &self.scenarios {
            if let (Path::Grpc, Some(ratio)) = (scenario.path, scenario.ratio_to_ceiling) {
                let what = format!("{}: gRPC / SQL ceiling", scenario.call.name());
                targets.push(Target::at_least(what, ratio, ceiling_share, ""));
            }
        }
        for ratio in &self.http_over_grpc {
            let what = format!("{}: HTTP / gRPC", ratio.call.name());
            targets.push(Target::at_least(what, ratio.http_over_grpc, 0.9, ""));
        }
        let (Some(warm), Some(last)) = (self.memory.first(), self.memory.last()) else {
            return targets;
        };
        // VmHWM only grows: the last snapshot holds each process's peak.
        let peak = |role| last.of(role).map_or(f64::NAN, |usage| usage.peak_rss_mib);
        if self.split() {
            let hashing = self.settings.hashing_concurrency.unwrap_or(1);
            let auth_limit = 40.0 + 19.0 * hashing as f64;
            for (role, limit) in [
                (Role::Gateway, 32.0),
                (Role::Posts, 32.0),
                (Role::Votes, 32.0),
                (Role::Auth, auth_limit),
            ] {
                let what = format!("{} peak RSS", role.name());
                targets.push(Target::at_most(what, peak(role), limit, " MiB"));
            }
        } else {
            let rss = |snapshot: &Snapshot| {
                snapshot
                    .of(Role::Gateway)
                    .map_or(f64::NAN, |usage| usage.rss_mib)
            };
            targets.push(Target::at_most(
                "all-in-one peak RSS".to_owned(),
                peak(Role::Gateway),
                64.0,
                " MiB",
            ));
            targets.push(Target::at_most(
                "all-in-one final RSS / warm RSS".to_owned(),
                rss(last) / rss(warm),
                1.1,
                "",
            ));
        }
        targets.push(Target::at_most(
            "GetPost p99, in the login storm / alone".to_owned(),
            self.storm.p99_ratio(),
            1.5,
            "",
        ));
        // Within noise of what any use of the other cores would cost the reads.
        targets.push(Target::at_most(
            "GetPost p99, in the login storm / beside a busy core".to_owned(),
            self.storm.p99_over_floor(),
            1.2,
            "",
        ));
        targets
    }
}

impl Target {
    fn at_least(what: String, measured: f64, limit: f64, unit: &'static str) -> Self {
        Self {
            what,
            measured,
            limit,
            at_most: false,
            unit,
            met: measured >= limit,
        }
    }

    fn at_most(what: String, measured: f64, limit: f64, unit: &'static str) -> Self {
        Self {
            what,
            measured,
            limit,
            at_most: true,
            unit,
            met: measured <= limit,
        }
    }
}

impl fmt::Display for Results {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (machine, settings) = (&self.machine, &self.settings);
        writeln!(
            f,
            "Agora benchmark, {}: {} s per figure, {} concurrent callers, {} CPU cores, {} build{}",
            machine.topology,
            settings.seconds,
            settings.concurrency,
            machine.cores,
            machine.build,
            machine
                .git_commit
                .as_ref()
                .map_or(String::new(), |commit| format!(", commit {:.12}", commit)),
        )?;

        if !self.scenarios.is_empty() {
            self.fmt_calls(f)?;
        }
        writeln!(f, "\nmemory, MiB (RSS now / peak RSS):")?;
        if let Some(first) = self.memory.first() {
            write!(f, "  {:<34}", "")?;
            for usage in &first.processes {
                write!(f, " {:>17}", usage.process)?;
            }
            writeln!(f)?;
        }
        for snapshot in &self.memory {
            write!(f, "  {:<34}", snapshot.moment)?;
            for usage in &snapshot.processes {
                let cell = format!("{:.1} / {:.1}", usage.rss_mib, usage.peak_rss_mib);
                write!(f, " {cell:>17}")?;
            }
            writeln!(f)?;
        }

        let storm = &self.storm;
        writeln!(
            f,
            "\nlogin storm: GetPost offered at {}/s (latency from each call's scheduled \
             start): alone, beside one core kept busy at the lowest priority (the floor for \
             hashing on all cores but one), and while {} clients log in over and over; {} \
             rounds of the three:",
            storm.rate, storm.logins, storm.rounds
        )?;
        for (what, s) in [
            ("GetPost alone", &storm.get_post_alone),
            ("GetPost, a busy core", &storm.get_post_beside_busy_core),
            ("GetPost in the storm", &storm.get_post_in_storm),
        ] {
            writeln!(
                f,
                "  {what:<22} {:>7.0} calls/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} failed)",
                s.per_second, s.p50_ms, s.p99_ms, s.failed
            )?;
        }
        writeln!(
            f,
            "  p99 in the storm / alone: {:.2}; beside a busy core / alone: {:.2}; in the \
             storm / beside a busy core: {:.2}\n  logins: {} succeeded ({:.0}/s), {} refused \
             with RESOURCE_EXHAUSTED (admission control, expected), {} failed otherwise",
            storm.p99_ratio(),
            storm.busy_core_p99_ratio(),
            storm.p99_over_floor(),
            storm.logins_succeeded,
            storm.logins_per_second,
            storm.logins_refused,
            storm.logins_failed,
        )?;

        writeln!(
            f,
            "\ntargets (a missed one does not fail the run: the figures swing on a shared \
             machine):"
        )?;
        for target in &self.targets {
            let measured = format!("{:.2}{}", target.measured, target.unit);
            let limit = format!(
                "{} {:.2}{}",
                if target.at_most { "≤" } else { "≥" },
                target.limit,
                target.unit
            );
            writeln!(
                f,
                "  {:<52} {measured:>11}  {limit:>13}  {}",
                target.what,
                if target.met { "met" } else { "MISSED" }
            )?;
        }
        Ok(())
    }
}

impl Results {
    /// The calls one by one, and HTTP over gRPC.
    fn fmt_calls(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n{:<28} {:<12} {:>9} {:>8} {:>8} {:>10} {:>7} {:>6} {:>14}",
            "call",
            "path",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "/ ceiling",
            "calls",
            "failed",
            "CPU ms svc/db"
        )?;
        for scenario in &self.scenarios {
            let s = &scenario.summary;
            let call = match scenario.path {
                Path::Ceiling => scenario.call.name(),
                _ => "",
            };
            let ratio = scenario
                .ratio_to_ceiling
                .map_or(String::new(), |ratio| format!("{ratio:.2}"));
            let cpu = scenario.cpu.map_or(String::new(), |cpu| {
                format!("{:.2} / {:.2}", cpu.servers_ms, cpu.database_ms)
            });
            writeln!(
                f,
                "{call:<28} {:<12} {:>9.0} {:>8.2} {:>8.2} {ratio:>10} {:>7} {:>6} {cpu:>14}",
                scenario.path.name(),
                s.per_second,
                s.p50_ms,
                s.p99_ms,
                s.calls,
                s.failed,
            )?;
            if s.refused > 0 {
                writeln!(
                    f,
                    "{:<28} ({} more refused with RESOURCE_EXHAUSTED: admission control)",
                    "", s.refused
                )?;
            }
        }
        writeln!(
            f,
            "Login's ceiling is its SQL only (failure count, look-up): the argon2id hash is \
             the cost of a login, by design, so it has no ratio."
        )?;

        writeln!(f, "\nHTTP/JSON over gRPC, calls/s:")?;
        for ratio in &self.http_over_grpc {
            writeln!(
                f,
                "  {:<28} {:>6.2}",
                ratio.call.name(),
                ratio.http_over_grpc
            )?;
        }

        Ok(())
    }
}
