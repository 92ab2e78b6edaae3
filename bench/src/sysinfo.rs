//! What machine a run was on, from /proc (no extra crates): kernel, CPUs, load, date.

use serde::Serialize;

/// The machine facts every report carries.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub load_average: String,
}

impl Machine {
    pub fn read() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let mem_total_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpus: cpus(),
            cpu_model,
            mem_total_mib,
            load_average: load_average(),
        }
    }
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The 1, 5 and 15 minute load averages: what else competed for the CPUs.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Whole seconds: tailcfg's `Time` prints RFC 3339 with a fraction only when there is one.
fn utc(secs: u64) -> String {
    meshgate_tailcfg::Time::from_unix(i64::try_from(secs).unwrap_or(i64::MAX), 0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_345_407), "2026-11-22T11:03:27Z");
    }

    #[test]
    fn reads_this_machine() {
        let m = Machine::read();
        assert!(!m.kernel.is_empty() && m.cpus >= 1);
    }
}
