//! CPU time of a process from `/proc/<pid>/stat`, to show what an agent costs while traffic
//! flows past it.

use std::time::Duration;

/// `USER_HZ`: the unit of the stat file's times, 100 on every Linux architecture we build for.
const TICKS_PER_SECOND: u64 = 100;

/// User plus system time in a `/proc/<pid>/stat` line.
pub fn cpu_time_in_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parentheses: count from its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_millis(
        ticks.saturating_mul(1000 / TICKS_PER_SECOND),
    ))
}

/// CPU time so far of process `pid`, if it is still there.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    cpu_time_in_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_system_time() {
        let stat = "4242 (meshg) (ate)) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    150 25 0 0 20 0 9 0 100 1000 200";
        assert_eq!(cpu_time_in_stat(stat), Some(Duration::from_millis(1750)));
        assert_eq!(cpu_time_in_stat("4242 (x) S 1"), None);
        assert_eq!(cpu_time_in_stat(""), None);
    }

    #[test]
    fn own_process_has_a_cpu_time() {
        assert!(cpu_time(std::process::id()).is_some());
    }
}
