//! CPU time from /proc, for the benchmarks' CPU per event and at-rest figures (Linux only).
//!
//! Ticks are USER_HZ, 100 a second on Linux for every architecture this runs on.

/// Clock ticks a second in /proc (USER_HZ).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks (user + system) of one process, with its threads, from /proc.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // NB: the command name (field 2) may hold spaces; the fields after it are counted from its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks of every PostgreSQL process on this machine (the local server's backends and workers).
/// A process that exits between two samples takes its ticks with it, so pooled connections, which
/// live through a run, are what this counts well.
pub fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(process_ticks)
        .sum()
}

/// CPU ticks the whole machine spent busy (user, nice, system, irq, softirq), from /proc/stat.
pub fn machine_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // NB: user, nice, system, (idle and iowait skipped), irq, softirq.
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?)
}

/// The CPU of the processes a run is about, sampled at its start or end.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    server: Option<u64>,
    postgres: u64,
    this: Option<u64>,
    machine: Option<u64>,
}

/// CPU per event, in microseconds, of each part between two samples.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct PerEvent {
    /// The server under load (the sequencer), when its pid is known.
    pub server_us: Option<f64>,
    /// Every PostgreSQL process on the machine.
    pub postgres_us: f64,
    /// The load generator itself.
    pub load_generator_us: Option<f64>,
    /// The whole machine.
    pub machine_us: Option<f64>,
}

impl Sample {
    /// Samples the server `server` (if given), PostgreSQL, this process and the machine.
    pub fn take(server: Option<u32>) -> Self {
        Self {
            server: server.and_then(process_ticks),
            postgres: postgres_ticks(),
            this: process_ticks(std::process::id()),
            machine: machine_ticks(),
        }
    }

    /// The CPU per event from `self` to `later`, over `events` events.
    pub fn per_event(&self, later: &Sample, events: u64) -> PerEvent {
        let us = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SECOND * 1e6 / events.max(1) as f64;
        let both = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| us(a, b));
        PerEvent {
            server_us: both(self.server, later.server),
            postgres_us: us(self.postgres, later.postgres),
            load_generator_us: both(self.this, later.this),
            machine_us: both(self.machine, later.machine),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_this_process_burns_shows_in_its_ticks_and_in_the_machines() {
        let me = std::process::id();
        let before = Sample::take(Some(me));
        let start_ticks = process_ticks(me).expect("own /proc/<pid>/stat");
        // NB: burns CPU until the kernel has counted five ticks of it (bounded, in case it never does).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while process_ticks(me).unwrap_or(0) < start_ticks + 5 && start.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let after = Sample::take(Some(me));
        let per = before.per_event(&after, 1);
        assert!(per.server_us.expect("own pid") >= 50_000.0, "{per:?}");
        // NB: the same process, read twice per sample with /proc's PostgreSQL walk in between: a clock
        // tick may land between the two reads of either sample (seen in CI: 50,000 vs 60,000 us).
        let tick_us = 1e6 / TICKS_PER_SECOND;
        let (server, this) = (per.server_us.unwrap(), per.load_generator_us.expect("own pid"));
        assert!((server - this).abs() <= 2.0 * tick_us, "{per:?}");
        // NB: the machine's count and the process's are kept apart and may round differently.
        assert!(per.machine_us.expect("/proc/stat") >= per.server_us.unwrap() * 0.5, "{per:?}");
        let per_two = before.per_event(&after, 2);
        assert_eq!(per_two.server_us.unwrap() * 2.0, per.server_us.unwrap());
    }
}
