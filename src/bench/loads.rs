//! `bench --loads 30,100,300`: several runs in one invocation, compared.
//!
//! First a saturated run (`--commands`, unpaced), then one run paced at each
//! rate (for `--load-seconds` each), then, with `--prefill N`, a saturated
//! run again on a database pre-filled with N finished commands. Each run is
//! a whole `bench` run of its own (fresh database, queues and worker
//! process); with `--reference` each also measures the reference loop,
//! paced alike. The table at the end gives the ratios the efficiency
//! targets are written in: CPU per command against saturation, latency over
//! the gateway against the paced reference, and saturated throughput on the
//! pre-filled database against the empty one. A second table sets the
//! worker's CPU per command beside the reference loop's (each measured as a
//! process of its own): the loop's against its own saturated figure, and
//! the worker's against the loop's at the same load. Absolute figures drift
//! between machines and within a session; these ratios come from one run.

use std::fmt::Write as _;

use serde::Serialize;

use super::report::Report;
use super::BenchArgs;

/// One run of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// `saturated`, `100/s`, `saturated, prefilled 10000000`.
    pub name: String,
    pub report: Report,
}

/// The ratios of one paced run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub commands_per_sec: f64,
    pub cpu_ms_per_command: f64,
    /// CPU per command divided by the saturated run's.
    pub cpu_vs_saturated: Option<f64>,
    /// The reference loop's own CPU per command in this run (`--reference`).
    pub reference_cpu_ms_per_command: Option<f64>,
    /// The reference loop's CPU per command divided by its own in the
    /// saturated run: what light load costs the floor itself.
    pub reference_cpu_vs_saturated: Option<f64>,
    /// The worker's CPU per command divided by the reference loop's in the
    /// same run (the same load).
    pub cpu_vs_reference: Option<f64>,
    pub over_gateway_p50_ms: Option<f64>,
    pub over_gateway_p99_ms: Option<f64>,
    pub reference_p50_ms: Option<f64>,
    pub reference_p99_ms: Option<f64>,
    pub p50_vs_reference: Option<f64>,
    pub p99_vs_reference: Option<f64>,
    /// Throughput divided by the reference loop's (saturated runs only).
    pub ratio_to_reference: Option<f64>,
    /// Throughput divided by the empty database's saturated run.
    pub throughput_vs_empty: Option<f64>,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub phases: Vec<Phase>,
    pub rows: Vec<Row>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut plans: Vec<(String, BenchArgs)> = Vec::new();
    plans.push((
        "saturated".into(),
        BenchArgs {
            rate: None,
            prefill: 0,
            loads: Vec::new(),
            ..args.clone()
        },
    ));
    for &rate in &args.loads {
        let commands = ((rate * args.load_seconds.as_secs_f64()).round() as usize).max(50);
        plans.push((
            format!("{rate}/s"),
            BenchArgs {
                rate: Some(rate),
                commands,
                prefill: 0,
                loads: Vec::new(),
                ..args.clone()
            },
        ));
    }
    if args.prefill > 0 {
        plans.push((
            format!("saturated, prefilled {}", args.prefill),
            BenchArgs {
                rate: None,
                loads: Vec::new(),
                ..args.clone()
            },
        ));
    }
    let mut phases = Vec::new();
    for (name, plan) in plans {
        eprintln!("=== {name}: {} commands", plan.commands);
        let report = super::run_one(&plan).await?;
        if !args.json {
            println!("=== {name}");
            print!("{}", report.to_text());
        }
        phases.push(Phase { name, report });
    }
    let comparison = compare(phases);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&comparison).expect("the comparison serializes")
        );
    } else {
        print!("{}", to_text(&comparison));
    }
    Ok(())
}

pub fn compare(phases: Vec<Phase>) -> Comparison {
    let saturated = phases.first().map(|p| &p.report);
    let saturated_reference_cpu = saturated
        .and_then(|s| s.reference.as_ref())
        .map(|x| x.cpu_ms_per_command);
    let rows = phases
        .iter()
        .map(|phase| {
            let r = &phase.report;
            let reference_latency = r.reference.as_ref().and_then(|x| x.latency);
            let reference_cpu = r.reference.as_ref().map(|x| x.cpu_ms_per_command);
            let over = r.over_gateway;
            let paced = r.settings.rate.is_some();
            Row {
                name: phase.name.clone(),
                commands_per_sec: r.commands_per_sec,
                cpu_ms_per_command: r.worker_cpu_ms_per_command,
                cpu_vs_saturated: saturated
                    .map(|s| r.worker_cpu_ms_per_command / s.worker_cpu_ms_per_command.max(1e-9)),
                reference_cpu_ms_per_command: reference_cpu,
                reference_cpu_vs_saturated: reference_cpu
                    .zip(saturated_reference_cpu)
                    .map(|(here, sat)| here / sat.max(1e-9)),
                cpu_vs_reference: reference_cpu
                    .map(|here| r.worker_cpu_ms_per_command / here.max(1e-9)),
                over_gateway_p50_ms: over.map(|o| o.p50_ms),
                over_gateway_p99_ms: over.map(|o| o.p99_ms),
                reference_p50_ms: reference_latency.map(|l| l.p50_ms),
                reference_p99_ms: reference_latency.map(|l| l.p99_ms),
                p50_vs_reference: over
                    .zip(reference_latency)
                    .map(|(o, l)| o.p50_ms / l.p50_ms.max(1e-9)),
                p99_vs_reference: over
                    .zip(reference_latency)
                    .map(|(o, l)| o.p99_ms / l.p99_ms.max(1e-9)),
                ratio_to_reference: if paced { None } else { r.ratio_to_reference },
                throughput_vs_empty: match saturated {
                    Some(s) if !paced => Some(r.commands_per_sec / s.commands_per_sec.max(1e-9)),
                    _ => None,
                },
                peak_rss_mib: r.worker_peak_rss_mib,
            }
        })
        .collect();
    Comparison { phases, rows }
}

pub fn to_text(c: &Comparison) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "=== comparison (one invocation; ratios are what to quote)"
    );
    let _ = writeln!(
        t,
        "{:<28} {:>10} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "run",
        "cmds/s",
        "CPU ms/c",
        "xsat",
        "p50 ovgw",
        "p99 ovgw",
        "ref p50",
        "ref p99",
        "p50 x",
        "p99 x",
        "x ref",
        "x empty",
        "RSS MiB"
    );
    for r in &c.rows {
        let _ = writeln!(
            t,
            "{:<28} {:>10.1} {:>9.3} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8.1}",
            r.name,
            r.commands_per_sec,
            r.cpu_ms_per_command,
            opt(r.cpu_vs_saturated, 2),
            opt(r.over_gateway_p50_ms, 1),
            opt(r.over_gateway_p99_ms, 1),
            opt(r.reference_p50_ms, 1),
            opt(r.reference_p99_ms, 1),
            opt(r.p50_vs_reference, 2),
            opt(r.p99_vs_reference, 2),
            opt(r.ratio_to_reference, 2),
            opt(r.throughput_vs_empty, 2),
            r.peak_rss_mib
        );
    }
    let _ = writeln!(
        t,
        "xsat: CPU per command / the saturated run's; p50 x, p99 x: latency over the gateway / \
         the reference loop's latency paced alike; x ref: throughput / the reference loop's; \
         x empty: throughput / the first (empty database) saturated run's"
    );
    if c.rows
        .iter()
        .any(|r| r.reference_cpu_ms_per_command.is_some())
    {
        write_cpu_table(&mut t, c);
    }
    t
}

/// A figure, or `-` where it was not measured.
fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    }
}

/// The worker's CPU per command beside the reference loop's, each against
/// its own saturated figure, and the worker's against the loop's at the
/// same load: how much of the worker's light-load cost the floor has too.
fn write_cpu_table(t: &mut String, c: &Comparison) {
    let _ = writeln!(
        t,
        "=== CPU per command: the worker and the reference loop (each its own process)"
    );
    let _ = writeln!(
        t,
        "{:<28} {:>10} {:>7} {:>10} {:>8} {:>10}",
        "run", "worker ms", "xsat", "ref ms", "ref xsat", "worker/ref"
    );
    for r in &c.rows {
        let _ = writeln!(
            t,
            "{:<28} {:>10.3} {:>7} {:>10} {:>8} {:>10}",
            r.name,
            r.cpu_ms_per_command,
            opt(r.cpu_vs_saturated, 2),
            opt(r.reference_cpu_ms_per_command, 3),
            opt(r.reference_cpu_vs_saturated, 2),
            opt(r.cpu_vs_reference, 2),
        );
    }
    let _ = writeln!(
        t,
        "ref xsat: the reference loop's CPU per command / its own in the saturated run; \
         worker/ref: the worker's CPU per command / the reference loop's in the same run"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::LatencySummary;
    use crate::bench::reference::ReferenceResult;
    use crate::bench::reference_loop::LoopRuntime;

    fn latency(p50: f64, p99: f64) -> Option<LatencySummary> {
        Some(LatencySummary {
            samples: 10,
            p50_ms: p50,
            p95_ms: p99,
            p99_ms: p99,
            max_ms: p99,
        })
    }

    #[test]
    fn ratios_against_saturation_and_the_paced_reference() {
        let mut saturated = crate::bench::report::tests::sample();
        saturated.worker_cpu_ms_per_command = 0.5;
        saturated.commands_per_sec = 3000.0;
        let mut paced = saturated.clone();
        paced.settings.rate = Some(100.0);
        paced.worker_cpu_ms_per_command = 0.75;
        paced.over_gateway = latency(6.0, 12.0);
        paced.reference = Some(ReferenceResult {
            commands: 100,
            seconds: 1.0,
            commands_per_sec: 100.0,
            concurrency: 500,
            pool: 16,
            rate: Some(100.0),
            latency: latency(4.0, 6.0),
            runtime: LoopRuntime::MultiThread,
            cpu_seconds: 0.1,
            cpu_ms_per_command: 1.0,
            peak_rss_mib: 20.0,
        });
        let mut prefilled = saturated.clone();
        prefilled.commands_per_sec = 2850.0;
        let c = compare(vec![
            Phase {
                name: "saturated".into(),
                report: saturated,
            },
            Phase {
                name: "100/s".into(),
                report: paced,
            },
            Phase {
                name: "saturated, prefilled 10".into(),
                report: prefilled,
            },
        ]);
        let row = &c.rows[1];
        assert_eq!(row.cpu_vs_saturated, Some(1.5));
        assert_eq!(row.p50_vs_reference, Some(1.5));
        assert_eq!(row.p99_vs_reference, Some(2.0));
        assert_eq!(row.throughput_vs_empty, None);
        assert_eq!(c.rows[2].throughput_vs_empty, Some(0.95));
        // The floor's CPU: 1.0 ms paced against 0.25 ms saturated (the sample's).
        assert_eq!(row.reference_cpu_ms_per_command, Some(1.0));
        assert_eq!(row.reference_cpu_vs_saturated, Some(4.0));
        assert_eq!(row.cpu_vs_reference, Some(0.75));
        assert_eq!(c.rows[0].reference_cpu_vs_saturated, Some(1.0));
        assert_eq!(c.rows[0].cpu_vs_reference, Some(2.0));
        let text = to_text(&c);
        assert!(text.contains("100/s"), "{text}");
        assert!(text.contains("0.95"), "{text}");
        assert!(text.contains("ref xsat"), "{text}");
        assert!(text.contains("4.00"), "{text}");
        let mut none = c.clone();
        for row in &mut none.rows {
            row.reference_cpu_ms_per_command = None;
        }
        assert!(!to_text(&none).contains("ref xsat"));
    }
}
