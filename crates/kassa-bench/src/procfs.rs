//! What a process costs, read from Linux's /proc: CPU seconds and resident memory; and the CPU
//! time the hypervisor took from the machine.

use std::collections::HashMap;

/// Clock ticks per second of /proc's CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The machine's CPU time so far, all cores, from the `cpu` line of `/proc/stat`: every state's
/// ticks together, and those of `steal` (time a virtual machine's CPUs were ready to run but
/// the hypervisor ran something else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTicks {
    pub total: u64,
    pub steal: u64,
}

impl MachineTicks {
    /// Now, or `None` where `/proc/stat` cannot be read.
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// From the text of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal …`.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // guest and guest_nice (the 9th and 10th) are already counted in user and nice.
        let total = ticks.iter().take(8).sum();
        Some(Self {
            total,
            steal: *ticks.get(7)?,
        })
    }

    /// The share of the machine's CPU time since `before` that the hypervisor took (0–1).
    pub fn stolen_since(&self, before: &MachineTicks) -> f64 {
        let total = self.total.saturating_sub(before.total);
        let steal = self.steal.saturating_sub(before.steal);
        if total == 0 {
            0.0
        } else {
            steal as f64 / total as f64
        }
    }
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_and_start(pid).map(|(cpu, _)| cpu)
}

/// A process's CPU seconds so far and its start time (clock ticks since boot).
fn cpu_and_start(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    Some(((utime + stime) / TICKS_PER_SECOND, start))
}

/// CPU seconds so far of every process named `comm` alive now (e.g. all PostgreSQL backends),
/// by process: pid and start time, so that a pid reused by a new process is a new process.
#[derive(Debug, Clone, Default)]
pub struct CpuByProcess(HashMap<(u32, u64), f64>);

impl CpuByProcess {
    /// Reads every process named `comm` now.
    pub fn of_all(comm: &str) -> Self {
        Self(
            processes_named(comm)
                .filter_map(|pid| cpu_and_start(pid).map(|(cpu, start)| ((pid, start), cpu)))
                .collect(),
        )
    }

    /// CPU seconds used since `before` was read: a process alive at both readings counts the
    /// difference, one started in between counts all of its CPU, and one that ended in between
    /// counts nothing — a lower bound, never the negative of an ended process's whole lifetime.
    pub fn since(&self, before: &CpuByProcess) -> f64 {
        self.0
            .iter()
            .map(|(process, after)| {
                (after - before.0.get(process).copied().unwrap_or(0.0)).max(0.0)
            })
            .sum()
    }
}

/// The local RabbitMQ node's process (beam.smp), if it runs on this machine.
pub fn rabbitmq_pid() -> Option<u32> {
    processes_named("beam.smp").next()
}

/// The number of the write-ahead log that the RabbitMQ node `pid` writes its quorum queues'
/// commands to now (the file `…/quorum/…/NNNNNNNN.wal` the process holds open), if it can be read.
/// The node starts the next file each time the log reaches `wal_max_size_bytes` (512 MiB by
/// default) and writes the full one out to the queues' segment files, so the number grows by one
/// per roll-over.
pub fn rabbitmq_quorum_wal(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|path| path.components().any(|c| c.as_os_str() == "quorum"))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            name.strip_suffix(".wal")?.parse::<u64>().ok()
        })
        .max()
}

/// Resident set size of a process now (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmRSS:")
}

/// Peak resident set size of a process so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:")
}

/// Peak resident set size of this process so far, in KiB.
pub fn own_peak_rss_kib() -> Option<u64> {
    status_kib("self", "VmHWM:")
}

fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn processes_named(comm: &str) -> impl Iterator<Item = u32> + '_ {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(move |entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (name.trim() == comm).then_some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::{CpuByProcess, MachineTicks};
    use std::collections::HashMap;

    #[test]
    fn the_quorum_wal_read_is_the_highest_quorum_log_the_process_holds_open() {
        let dir = std::env::temp_dir().join(format!("kassa-bench-wal-{}", std::process::id()));
        let quorum = dir.join("quorum").join("rabbit@localhost");
        let coordination = dir.join("coordination").join("rabbit@localhost");
        std::fs::create_dir_all(&quorum).unwrap();
        std::fs::create_dir_all(&coordination).unwrap();
        let open = |path: std::path::PathBuf| std::fs::File::create(path).unwrap();
        // The coordination log is not the quorum queues' and counts for nothing.
        let _other = open(coordination.join("00000099.wal"));
        let _old = open(quorum.join("00000006.wal"));
        let _now = open(quorum.join("00000007.wal"));
        let _segment = open(quorum.join("00000123.segment"));
        let read = super::rabbitmq_quorum_wal(std::process::id());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read, Some(7));
        assert_eq!(super::rabbitmq_quorum_wal(u32::MAX), None);
    }

    #[test]
    fn the_share_stolen_by_the_hypervisor_is_read_from_the_machine_cpu_line() {
        // Linux's /proc/stat: the machine's line first, then one per core.
        let before = MachineTicks::parse(
            "cpu  1000 0 200 5000 10 0 5 100 0 0\ncpu0 500 0 100 2500 5 0 2 50 0 0\n",
        )
        .unwrap();
        assert_eq!(
            before,
            MachineTicks {
                total: 6315,
                steal: 100
            }
        );
        // 400 ticks later, 100 of them stolen.
        let after = MachineTicks::parse("cpu  1200 0 250 5050 10 0 5 200 0 0\n").unwrap();
        assert!((after.stolen_since(&before) - 0.25).abs() < 1e-9);
        assert_eq!(before.stolen_since(&before), 0.0);
        assert_eq!(MachineTicks::parse("intr 1 2 3\n"), None);
    }

    #[test]
    fn cpu_since_counts_only_what_processes_alive_at_the_end_used_in_between() {
        let before = CpuByProcess(HashMap::from([
            ((10, 1), 5.0),   // still alive: counts 0.5
            ((11, 1), 100.0), // ended in between: counts nothing (not −100)
            ((12, 1), 7.0),   // pid 12 ended and was reused by a new process (start 9)
        ]));
        let after = CpuByProcess(HashMap::from([
            ((10, 1), 5.5),
            ((12, 9), 0.25), // the new process: all of its CPU
            ((13, 8), 1.0),  // started in between: all of its CPU
        ]));
        assert!((after.since(&before) - 1.75).abs() < 1e-9);
    }

    #[test]
    fn a_process_read_twice_counts_the_cpu_it_used_in_between() {
        let pid = std::process::id();
        let read = || {
            CpuByProcess(HashMap::from_iter(
                super::cpu_and_start(pid).map(|(cpu, start)| ((pid, start), cpu)),
            ))
        };
        let before = read();
        assert_eq!(before.0.len(), 1, "this process is read from /proc");
        // Burn CPU until /proc's 10 ms ticks move (a deadline, not a fixed wait).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut spin = 0u64;
        let after = loop {
            for i in 0..1_000_000u64 {
                spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(i));
            }
            let after = read();
            if after.since(&before) > 0.0 || std::time::Instant::now() > deadline {
                break after;
            }
        };
        // Same process, same key: the difference is counted, not the whole lifetime again.
        assert_eq!(
            after.0.keys().collect::<Vec<_>>(),
            before.0.keys().collect::<Vec<_>>()
        );
        let used = after.since(&before);
        assert!(used > 0.0 && used < 10.5, "used {used} s");
    }
}
