//! What the benchmark measures besides counting events: latency percentiles,
//! and a process's CPU time and peak memory read from `/proc`.
//!
//! CPU comes from `/proc/<pid>/stat` (utime + stime, in clock ticks) and peak
//! memory from `/proc/<pid>/status` (`VmHWM`, the resident high-water mark),
//! so the worker is measured from outside, as any other process would be,
//! without instrumenting it.

use std::time::Duration;

use serde::Serialize;

/// The nearest-rank percentile of sorted samples: the smallest sample such
/// that at least `p` % of all samples are at or below it. Nearest rank never
/// invents a value that was not observed, which is what a latency report
/// should quote.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// End-to-end latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn from_samples(mut samples: Vec<Duration>) -> Option<LatencySummary> {
        samples.sort_unstable();
        let ms = |p: f64| percentile(&samples, p).map(|d| d.as_secs_f64() * 1000.0);
        Some(LatencySummary {
            samples: samples.len(),
            p50_ms: ms(50.0)?,
            p95_ms: ms(95.0)?,
            p99_ms: ms(99.0)?,
            max_ms: ms(100.0)?,
        })
    }
}

/// Clock ticks per second for `/proc/<pid>/stat`. The crate has no libc
/// binding, so ask `getconf CLK_TCK`; 100 is the value on every Linux
/// architecture we run on, used if `getconf` is missing.
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// utime + stime from the text of `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may itself contain spaces or parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}/{file}: {source}")]
    Read {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("/proc/{pid}/{file} has no {field}")]
    Missing {
        pid: u32,
        file: &'static str,
        field: &'static str,
    },
}

/// A process observed through `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: u32,
    ticks_per_second: u64,
}

impl Proc {
    pub fn new(pid: u32) -> Proc {
        Proc {
            pid,
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    pub fn current() -> Proc {
        Proc::new(std::process::id())
    }

    pub fn ticks_per_second(&self) -> u64 {
        self.ticks_per_second
    }

    fn read(&self, file: &'static str) -> Result<String, ProcError> {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.pid)).map_err(|source| {
            ProcError::Read {
                pid: self.pid,
                file,
                source,
            }
        })
    }

    /// CPU time (user + system) used so far.
    pub fn cpu(&self) -> Result<Duration, ProcError> {
        let ticks = parse_stat_cpu_ticks(&self.read("stat")?).ok_or(ProcError::Missing {
            pid: self.pid,
            file: "stat",
            field: "utime/stime",
        })?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / self.ticks_per_second as f64,
        ))
    }

    /// Peak resident memory, in bytes.
    pub fn peak_rss(&self) -> Result<u64, ProcError> {
        let kib = parse_vm_hwm_kib(&self.read("status")?).ok_or(ProcError::Missing {
            pid: self.pid,
            file: "status",
            field: "VmHWM",
        })?;
        Ok(kib * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 95.0), Some(Duration::from_millis(95)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&samples, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
        // Ten samples: p95 is the 10th (ceil(9.5)), p50 the 5th.
        let ten = ms(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 1000]);
        assert_eq!(percentile(&ten, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&ten, 95.0), Some(Duration::from_millis(1000)));
        assert_eq!(percentile(&ten, 90.0), Some(Duration::from_millis(90)));
        // One sample is every percentile.
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 1.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&samples, 100.5), None);
    }

    #[test]
    fn summary_sorts_its_samples() {
        let summary = LatencySummary::from_samples(ms(&[5, 1, 4, 2, 3])).unwrap();
        assert_eq!(summary.samples, 5);
        assert_eq!(summary.p50_ms, 3.0);
        assert_eq!(summary.p95_ms, 5.0);
        assert_eq!(summary.max_ms, 5.0);
        assert!(LatencySummary::from_samples(Vec::new()).is_none());
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (backoffice (w) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("12 (short) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tbackoffice-work\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(51234));
        assert_eq!(parse_vm_hwm_kib("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        let me = Proc::current();
        let busy = std::time::Instant::now();
        let mut x = 0u64;
        while busy.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        assert!(x != 1);
        assert!(me.cpu().unwrap() > Duration::ZERO);
        assert!(me.peak_rss().unwrap() > 1024 * 1024);
        assert!(me.ticks_per_second() > 0);
    }
}
