//! Each server's memory as Linux counts it: resident now (VmRSS) and the most it
//! has ever been resident (VmHWM), from `/proc/<pid>/status`.

use serde::Serialize;

use crate::processes::{Role, Servers};

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub moment: String,
    pub processes: Vec<Usage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub process: &'static str,
    pub pid: u32,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

impl Snapshot {
    pub fn take(moment: impl Into<String>, servers: &Servers) -> std::io::Result<Self> {
        let processes = servers
            .processes()
            .into_iter()
            .map(|(role, pid)| usage(role, pid))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            moment: moment.into(),
            processes,
        })
    }

    pub fn of(&self, role: Role) -> Option<&Usage> {
        self.processes
            .iter()
            .find(|usage| usage.process == role.name())
    }
}

fn usage(role: Role, pid: u32) -> std::io::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|kib| kib / 1024.0)
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "no {field} in /proc/{pid}/status ({})",
                    role.name()
                ))
            })
    };
    Ok(Usage {
        process: role.name(),
        pid,
        rss_mib: mib("VmRSS:")?,
        peak_rss_mib: mib("VmHWM:")?,
    })
}
