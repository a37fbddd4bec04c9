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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// systemd's cgroup accounting.
    Systemd,
    /// Sum over the unit's processes in `/proc` (systemd reports nothing).
    Proc,
    /// The unit's cgroup files, read directly (`maqet ls`): the counters
    /// systemd's accounting reports, without a D-Bus round trip per VM.
    Cgroup,
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
        Usage::sum(pids.iter().filter_map(|&pid| read_stat(pid)))
    }

    fn sum(stats: impl Iterator<Item = ProcStat>) -> Usage {
        let page = page_size();
        let tick_ns = 1_000_000_000 / clock_ticks();
        let mut total = ProcStat::default();
        let mut any = false;
        for s in stats {
            total.cpu_ticks += s.cpu_ticks;
            total.threads += s.threads;
            total.rss_pages += s.rss_pages;
            any = true;
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

    /// Usage of the cgroup v2 group `pid` is in (a unit's main process:
    /// the whole unit), without asking systemd (see [`Group::usage`]).
    /// Empty without a cgroup v2 hierarchy or once the process is gone.
    pub fn from_cgroup_of(pid: u32) -> Usage {
        cgroup_dir(pid)
            .and_then(|d| Group::read(&d))
            .map_or_else(Usage::default, |g| g.usage())
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_none()
    }
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    ProcStat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A unit's cgroup v2 group as files show it: what systemd's accounting
/// would report, read without a D-Bus round trip.
#[derive(Debug)]
pub struct Group {
    dir: std::path::PathBuf,
    /// The group's processes and their `/proc/PID/stat`.
    procs: Vec<(u32, ProcStat)>,
}

impl Group {
    /// The group at `dir`; `None` when it does not exist (the unit has
    /// no processes, or the hierarchy is elsewhere).
    pub fn read(dir: &std::path::Path) -> Option<Group> {
        let text = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
        let procs = text
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter_map(|pid| Some((pid, read_stat(pid)?)))
            .collect();
        Some(Group {
            dir: dir.to_path_buf(),
            procs,
        })
    }

    /// The process systemd started: the one whose parent is outside the
    /// group (the runner; QEMU is its child). `None` unless exactly one.
    pub fn main_pid(&self) -> Option<u32> {
        main_of(&self.procs)
    }

    /// The group's counters where it has the memory controller (what
    /// systemd's `MemoryCurrent`, `CPUUsageNSec`, `TasksCurrent` read),
    /// else the sum over its processes from /proc.
    pub fn usage(&self) -> Usage {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).ok();
        match read("memory.current").and_then(|t| t.trim().parse().ok()) {
            Some(memory) => Usage {
                memory_bytes: Some(memory),
                cpu_nsec: read("cpu.stat")
                    .as_deref()
                    .and_then(cpu_usage_usec)
                    .map(|us| us * 1000),
                tasks: read("pids.current").and_then(|t| t.trim().parse().ok()),
                source: Some(UsageSource::Cgroup),
            },
            None => Usage::sum(self.procs.iter().map(|(_, s)| s.clone())),
        }
    }
}

fn main_of(procs: &[(u32, ProcStat)]) -> Option<u32> {
    let mut outside = procs
        .iter()
        .filter(|(_, s)| !procs.iter().any(|(p, _)| *p == s.ppid))
        .map(|(p, _)| *p);
    match (outside.next(), outside.next()) {
        (Some(p), None) => Some(p),
        _ => None,
    }
}

/// Where a user manager's units of `slice` live in the cgroup v2
/// hierarchy, given the manager's own `ControlGroup`.
pub fn slice_dir(manager_cgroup: &str, slice: &str) -> Option<std::path::PathBuf> {
    Some(
        cgroup2_root()?
            .join(manager_cgroup.trim_start_matches('/'))
            .join(slice),
    )
}

/// The cgroup v2 directory of the group `pid` is in.
fn cgroup_dir(pid: u32) -> Option<std::path::PathBuf> {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let group = unified_group(&membership)?;
    Some(cgroup2_root()?.join(group.trim_start_matches('/')))
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified
/// systems, `/sys/fs/cgroup/unified` on hybrid ones), read once.
fn cgroup2_root() -> Option<&'static std::path::Path> {
    static ROOT: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroup2_mount(&m))
    })
    .as_deref()
}

/// The mount point of the first `cgroup2` file system in a mountinfo
/// text (proc(5): fields up to ` - `, then the file system type).
fn cgroup2_mount(mountinfo: &str) -> Option<std::path::PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })
}

/// The unified-hierarchy group of a `/proc/PID/cgroup` text (`0::PATH`).
fn unified_group(membership: &str) -> Option<&str> {
    membership.lines().find_map(|l| l.strip_prefix("0::"))
}

/// `usage_usec` of a `cpu.stat` text.
fn cpu_usage_usec(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// The fields of `/proc/PID/stat` maqet uses (proc(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
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
            ppid: u32::try_from(num(4)?).ok()?,
            cpu_ticks: num(14)? + num(15)?,
            threads: num(20)?,
            rss_pages: num(24)?,
        })
    }
}

/// The kernel's page size (from the auxiliary vector, as sysconf has it).
fn page_size() -> u64 {
    match rustix::param::page_size() {
        0 => 4096,
        v => v as u64,
    }
}

/// The unit of /proc/PID/stat's CPU times (`_SC_CLK_TCK`).
fn clock_ticks() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_process_is_the_one_whose_parent_is_outside_the_group() {
        let st = |ppid| ProcStat {
            ppid,
            ..Default::default()
        };
        // runner 10 (forked by the manager, 5), QEMU 11 its child.
        assert_eq!(main_of(&[(11, st(10)), (10, st(5))]), Some(10));
        // Two processes with outside parents: not settled here.
        assert_eq!(main_of(&[(11, st(4)), (10, st(5))]), None);
        assert_eq!(main_of(&[]), None);
    }

    #[test]
    fn finds_the_cgroup2_mount_and_a_process_group() {
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_mount(hybrid).as_deref(),
            Some(std::path::Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("22 1 0:5 / /proc rw - proc proc rw\n"), None);
        let membership = "4:memory:/user.slice\n0::/user.slice/user-1000.slice/user@1000.service/app.slice/maqet-vm@a.service\n";
        assert_eq!(
            unified_group(membership),
            Some("/user.slice/user-1000.slice/user@1000.service/app.slice/maqet-vm@a.service")
        );
        assert_eq!(unified_group("4:memory:/x\n"), None);
        assert_eq!(
            cpu_usage_usec("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n"),
            Some(2500)
        );
        assert_eq!(cpu_usage_usec("nr_periods 0\n"), None);
    }

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let line = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 300000000 2048 18446744073709551615";
        let s = ProcStat::parse(line).unwrap();
        assert_eq!(s.ppid, 1);
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
