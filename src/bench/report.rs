//! The benchmark's report: one structure, printed as plain text for people
//! or as JSON (`--json`) for machines. Every figure is measured in the run
//! that prints it; a figure that could not be measured is absent (`null`),
//! never estimated.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::measure::LatencySummary;
use super::reference::ReferenceResult;

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub in_flight: usize,
    pub prefetch: u16,
    pub db_pool: u32,
    pub latency_ms: u64,
    /// Commands per second asked for; `None`: as fast as confirms allow.
    pub rate: Option<f64>,
    /// `in-process` or the URL given.
    pub simulator: String,
    pub clock_ticks_per_second: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub database: String,
    pub settings: Settings,
    /// Distinct commands.
    pub commands: usize,
    /// Commands published a second time (same id, same body).
    pub duplicates: usize,
    /// Commands whose terminal event arrived.
    pub completed: usize,
    /// Events marked `replayed`.
    pub replays: usize,
    /// Events marked `reconciled` (settlements of `unknown`).
    pub reconciled: usize,
    /// Terminal events seen more than once (delivery is at least once).
    pub repeated_terminal_events: usize,
    pub wall_seconds: f64,
    /// First to last publish of a command (duplicates aside).
    pub publish_seconds: f64,
    pub commands_per_sec: f64,
    pub latency: Option<LatencySummary>,
    /// Each command's latency minus its own gateway time (the worker's
    /// measurement around each HTTP call, summed over its attempts): what
    /// the worker, the broker and the database add.
    pub over_gateway: Option<LatencySummary>,
    pub outcomes: BTreeMap<String, usize>,
    /// The worker's CPU time from the moment it was consuming to the last event.
    pub worker_cpu_seconds: f64,
    pub worker_cpu_ms_per_command: f64,
    /// Including start-up (migrations, connections).
    pub worker_cpu_total_seconds: f64,
    pub worker_peak_rss_mib: f64,
    /// The bench process over the same interval: simulator, publisher, event consumer.
    pub bench_cpu_seconds: f64,
    pub attempts: i64,
    pub attempts_per_command: f64,
    /// Delta of `pg_stat_database.xact_commit` for the bench database.
    pub pg_commits: i64,
    pub pg_commits_per_command: f64,
    pub round_trips: Option<u64>,
    pub round_trips_per_command: Option<f64>,
    pub reference: Option<ReferenceResult>,
    /// Worker commands/s divided by reference commands/s.
    pub ratio_to_reference: Option<f64>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        self.write_run(&mut t);
        self.write_timing(&mut t);
        self.write_costs(&mut t);
        self.write_reference(&mut t);
        let _ = writeln!(t, "database:      {}", self.database);
        for note in &self.notes {
            let _ = writeln!(t, "note: {note}");
        }
        t
    }

    /// Which run, with which settings, and what came back.
    fn write_run(&self, t: &mut String) {
        let s = &self.settings;
        let rate = s
            .rate
            .map(|r| format!("{r} commands/s"))
            .unwrap_or_else(|| "unpaced".into());
        let _ = writeln!(t, "backoffice-worker bench (run {})", self.run_id);
        let _ = writeln!(
            t,
            "settings:      in-flight {}, prefetch {}, db pool {}, simulator latency {} ms, rate {}, simulator {}",
            s.in_flight, s.prefetch, s.db_pool, s.latency_ms, rate, s.simulator
        );
        let _ = writeln!(
            t,
            "commands:      {} ({} duplicates published, {} replays received)",
            self.commands, self.duplicates, self.replays
        );
        let _ = writeln!(t, "completed:     {} of {}", self.completed, self.commands);
        let outcomes = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(t, "outcomes:      {outcomes}");
    }

    /// How long it took, how fast it went, and each command's latency.
    fn write_timing(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "wall time:     {:.3} s (first publish to last terminal event)",
            self.wall_seconds
        );
        let _ = writeln!(
            t,
            "published:     in {:.3} s ({:.1} commands/s offered)",
            self.publish_seconds,
            self.commands as f64 / self.publish_seconds.max(f64::EPSILON)
        );
        let _ = writeln!(t, "throughput:    {:.1} commands/s", self.commands_per_sec);
        match &self.latency {
            Some(l) => {
                let _ = writeln!(
                    t,
                    "latency:       p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms (publish to result event, {} samples)",
                    l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.samples
                );
            }
            None => {
                let _ = writeln!(t, "latency:       no samples");
            }
        }
        if let Some(l) = &self.over_gateway {
            let _ = writeln!(
                t,
                "over gateway:  p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms (latency minus the command's own gateway time)",
                l.p50_ms, l.p95_ms, l.p99_ms
            );
        }
    }

    /// What it cost: CPU, memory, attempts, commits, round trips.
    fn write_costs(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "worker CPU:    {:.2} s during the run, {:.3} ms per command ({:.2} s including start-up)",
            self.worker_cpu_seconds, self.worker_cpu_ms_per_command, self.worker_cpu_total_seconds
        );
        let _ = writeln!(
            t,
            "worker memory: {:.1} MiB peak RSS",
            self.worker_peak_rss_mib
        );
        let _ = writeln!(
            t,
            "bench CPU:     {:.2} s during the run (simulator, publisher, event consumer)",
            self.bench_cpu_seconds
        );
        let _ = writeln!(
            t,
            "attempts:      {} ({:.2} per command)",
            self.attempts, self.attempts_per_command
        );
        let _ = writeln!(
            t,
            "pg commits:    {} ({:.2} per command)",
            self.pg_commits, self.pg_commits_per_command
        );
        if let (Some(total), Some(per)) = (self.round_trips, self.round_trips_per_command) {
            let _ = writeln!(t, "round trips:   {total} ({per:.2} per command)");
        }
    }

    /// The floor the run is compared with (`--reference`).
    fn write_reference(&self, t: &mut String) {
        if let Some(r) = &self.reference {
            let _ = writeln!(
                t,
                "reference:     {:.1} commands/s ({} messages in {:.3} s, concurrency {}, pool {})",
                r.commands_per_sec, r.commands, r.seconds, r.concurrency, r.pool
            );
            let _ = writeln!(
                t,
                "ref CPU:       {:.3} ms per command ({:.3} s, {} runtime, {:.1} MiB peak RSS); the worker's is {:.2}x",
                r.cpu_ms_per_command,
                r.cpu_seconds,
                r.runtime.name(),
                r.peak_rss_mib,
                self.worker_cpu_ms_per_command / r.cpu_ms_per_command.max(1e-9)
            );
        }
        if let Some(l) = self.reference.as_ref().and_then(|r| r.latency) {
            let _ = writeln!(
                t,
                "ref latency:   p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms (the reference loop paced alike, publish to event)",
                l.p50_ms, l.p95_ms, l.p99_ms
            );
            if let Some(o) = &self.over_gateway {
                let _ = writeln!(
                    t,
                    "vs reference:  p50 {:.2}x, p99 {:.2}x (over gateway / reference latency)",
                    o.p50_ms / l.p50_ms.max(1e-9),
                    o.p99_ms / l.p99_ms.max(1e-9)
                );
            }
        }
        if let Some(ratio) = self.ratio_to_reference {
            let _ = writeln!(
                t,
                "ratio:         {:.2} (worker commands/s / reference commands/s)",
                ratio
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Report {
        Report {
            run_id: "abc".into(),
            database: "bench_abc (dropped)".into(),
            settings: Settings {
                in_flight: 2000,
                prefetch: 500,
                db_pool: 16,
                latency_ms: 0,
                rate: None,
                simulator: "in-process".into(),
                clock_ticks_per_second: 100,
            },
            commands: 300,
            duplicates: 6,
            completed: 300,
            replays: 6,
            reconciled: 0,
            repeated_terminal_events: 0,
            wall_seconds: 1.5,
            publish_seconds: 1.0,
            commands_per_sec: 200.0,
            latency: LatencySummary::from_samples(vec![std::time::Duration::from_millis(3); 300]),
            over_gateway: None,
            outcomes: [("succeeded".to_string(), 300)].into_iter().collect(),
            worker_cpu_seconds: 0.9,
            worker_cpu_ms_per_command: 3.0,
            worker_cpu_total_seconds: 1.2,
            worker_peak_rss_mib: 40.0,
            bench_cpu_seconds: 0.5,
            attempts: 600,
            attempts_per_command: 2.0,
            pg_commits: 1500,
            pg_commits_per_command: 5.0,
            round_trips: Some(4500),
            round_trips_per_command: Some(15.0),
            reference: Some(ReferenceResult {
                commands: 300,
                seconds: 0.5,
                commands_per_sec: 600.0,
                concurrency: 500,
                pool: 16,
                rate: None,
                latency: None,
                runtime: crate::bench::reference_loop::LoopRuntime::MultiThread,
                cpu_seconds: 0.075,
                cpu_ms_per_command: 0.25,
                peak_rss_mib: 30.0,
            }),
            ratio_to_reference: Some(0.333),
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn the_text_has_every_figure() {
        let text = sample().to_text();
        for needle in [
            "in-flight 2000, prefetch 500, db pool 16, simulator latency 0 ms, rate unpaced",
            "commands:      300 (6 duplicates published, 6 replays received)",
            "completed:     300 of 300",
            "outcomes:      succeeded 300",
            "wall time:     1.500 s",
            "throughput:    200.0 commands/s",
            "p50 3.0 ms, p95 3.0 ms, p99 3.0 ms, max 3.0 ms",
            "worker CPU:    0.90 s during the run, 3.000 ms per command",
            "worker memory: 40.0 MiB peak RSS",
            "attempts:      600 (2.00 per command)",
            "pg commits:    1500 (5.00 per command)",
            "round trips:   4500 (15.00 per command)",
            "reference:     600.0 commands/s",
            "ref CPU:       0.250 ms per command (0.075 s, multi-thread runtime, 30.0 MiB peak RSS); the worker's is 12.00x",
            "ratio:         0.33",
            "note: a note",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn optional_figures_are_left_out_not_invented() {
        let mut report = sample();
        report.round_trips = None;
        report.round_trips_per_command = None;
        report.reference = None;
        report.ratio_to_reference = None;
        let text = report.to_text();
        assert!(!text.contains("round trips"));
        assert!(!text.contains("reference:"));
        assert!(!text.contains("ref CPU:"));
        assert!(!text.contains("ratio:"));
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["ratio_to_reference"].is_null());
        assert_eq!(json["commands"], 300);
    }
}
