//! Live resource usage of a VM's unit: what systemd accounts
//! (`MemoryCurrent`, `CPUUsageNSec`, `TasksCurrent`), or — where the user
//! manager has no cgroup controllers to account with (cgroup v1 / hybrid
//! hierarchies without delegation) — the sum over the unit's processes read
//! from `/proc`, labelled as such.
//!
//! The `/proc` figures are not the cgroup's: memory is resident set size
//! (no page cache), CPU time counts only processes alive now. For one runner
//! and one QEMU that is close, and better than showing nothing.

use serde::Serialize;

use super::UnitStatus;

/// Where usage figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// systemd's cgroup accounting.
    Systemd,
    /// Sum over the unit's processes in `/proc` (systemd reports nothing).
    Proc,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    pub tasks: Option<u64>,
    pub source: Option<UsageSource>,
}

impl Usage {
    /// systemd's counters; empty when it reports none of them.
    pub fn from_systemd(st: &UnitStatus) -> Usage {
        let u = Usage {
            memory_bytes: st.memory_current,
            cpu_nsec: st.cpu_usage_nsec,
            tasks: st.tasks_current,
            source: Some(UsageSource::Systemd),
        };
        if u.memory_bytes.is_none() && u.cpu_nsec.is_none() && u.tasks.is_none() {
            Usage::default()
        } else {
            u
        }
    }

    /// The sum over `pids` from `/proc`; empty when none could be read
    /// (processes gone, or another user's).
    pub fn from_proc(pids: &[u32]) -> Usage {
        let page = page_size();
        let tick_ns = 1_000_000_000 / clock_ticks();
        let mut total = ProcStat::default();
        let mut any = false;
        for &pid in pids {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(s) = ProcStat::parse(&text) {
                total.cpu_ticks += s.cpu_ticks;
                total.threads += s.threads;
                total.rss_pages += s.rss_pages;
                any = true;
            }
        }
        if !any {
            return Usage::default();
        }
        Usage {
            memory_bytes: Some(total.rss_pages * page),
            cpu_nsec: Some(total.cpu_ticks * tick_ns),
            tasks: Some(total.threads),
            source: Some(UsageSource::Proc),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_none()
    }
}

/// The fields of `/proc/PID/stat` maqet uses (proc(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    pub rss_pages: u64,
}

impl ProcStat {
    /// Parses one `/proc/PID/stat` line. The command name (field 2) may
    /// hold spaces and parentheses, so fields are counted from its last `)`.
    pub fn parse(text: &str) -> Option<ProcStat> {
        let (_, rest) = text.rsplit_once(") ")?;
        // rest starts at field 3 (state); field N is rest[N - 3].
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        Some(ProcStat {
            cpu_ticks: num(14)? + num(15)?,
            threads: num(20)?,
            rss_pages: num(24)?,
        })
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let line = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 300000000 2048 18446744073709551615";
        let s = ProcStat::parse(line).unwrap();
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.threads, 7);
        assert_eq!(s.rss_pages, 2048);
        assert_eq!(ProcStat::parse("garbage"), None);
        assert_eq!(ProcStat::parse("1 (x) S 1 2"), None);
    }

    #[test]
    fn reads_this_process() {
        let u = Usage::from_proc(&[std::process::id()]);
        assert_eq!(u.source, Some(UsageSource::Proc));
        assert!(u.memory_bytes.unwrap() > 0);
        assert!(u.tasks.unwrap() >= 1);
        assert!(Usage::from_proc(&[]).is_empty());
    }

    #[test]
    fn systemd_counters_or_nothing() {
        let mut st = UnitStatus::default();
        assert!(Usage::from_systemd(&st).is_empty());
        st.memory_current = Some(1 << 20);
        let u = Usage::from_systemd(&st);
        assert_eq!(u.memory_bytes, Some(1 << 20));
        assert_eq!(u.cpu_nsec, None);
        assert_eq!(u.source, Some(UsageSource::Systemd));
    }
}
