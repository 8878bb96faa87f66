//! `backoffice-worker bench` as an operator runs it: a small run with the
//! reference loop and round-trip counting, against the real RabbitMQ and
//! PostgreSQL. It checks that the report is complete and that the run left
//! nothing behind; it never asserts a speed.

use std::process::Command;

#[test]
fn a_small_run_reports_every_figure_and_cleans_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
        .args([
            "bench",
            "--commands",
            "300",
            "--reference",
            "--count-round-trips",
            "--json",
        ])
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{stdout}"));

    assert_eq!(report["commands"], 300, "{report:#}");
    assert_eq!(report["completed"], 300, "{report:#}");
    assert_eq!(report["duplicates"], 6, "{report:#}");
    let outcomes = report["outcomes"].as_object().expect("outcomes");
    let total: u64 = outcomes.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 300, "{report:#}");

    let number = |key: &str| -> f64 {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("`{key}` missing or not a number in {report:#}"))
    };
    for key in [
        "wall_seconds",
        "commands_per_sec",
        "worker_cpu_ms_per_command",
        "worker_peak_rss_mib",
        "attempts_per_command",
        "pg_commits_per_command",
        "round_trips_per_command",
        "ratio_to_reference",
    ] {
        assert!(number(key) > 0.0, "`{key}` is not positive in {report:#}");
    }
    // Every command makes at least one gateway call. (Commits and round trips
    // per command can be below one: intake and completion batch them.)
    assert!(number("attempts_per_command") >= 1.0, "{report:#}");
    for key in ["p50_ms", "p95_ms", "p99_ms", "max_ms"] {
        assert!(
            report["latency"][key].as_f64().is_some(),
            "latency `{key}` missing in {report:#}"
        );
    }
    let latency = &report["latency"];
    assert!(latency["p50_ms"].as_f64() <= latency["p99_ms"].as_f64());
    assert!(latency["p99_ms"].as_f64() <= latency["max_ms"].as_f64());
    assert_eq!(latency["samples"], 300);
    assert!(report["reference"]["commands_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(report["reference"]["commands"], 300);
    // The reference loop ran in a process of its own, measured from /proc.
    let reference = &report["reference"];
    assert_eq!(reference["runtime"], "multi-thread", "{reference:#}");
    for key in ["cpu_seconds", "cpu_ms_per_command", "peak_rss_mib"] {
        assert!(
            reference[key]
                .as_f64()
                .is_some_and(|v| v.is_finite() && v > 0.0),
            "reference `{key}` not positive in {reference:#}"
        );
    }
    let per_command = reference["cpu_ms_per_command"].as_f64().unwrap();
    let seconds = reference["cpu_seconds"].as_f64().unwrap();
    assert!(
        (per_command * 300.0 / 1000.0 - seconds).abs() < 1e-9,
        "{reference:#}"
    );
    let settings = &report["settings"];
    for key in ["in_flight", "prefetch", "db_pool", "latency_ms"] {
        assert!(settings[key].as_u64().is_some(), "setting `{key}` missing");
    }

    // Nothing left behind: no database of that run, no worker process.
    let database = report["database"].as_str().unwrap();
    assert!(database.ends_with("(dropped)"), "{database}");
    let name = database.split_whitespace().next().unwrap();
    let left: i64 = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
            .await
            .expect("connect to PostgreSQL");
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap()
    });
    assert_eq!(left, 0, "database {name} was not dropped");
    let run_id = report["run_id"].as_str().unwrap();
    let workers = Command::new("pgrep")
        .args(["-f", &format!("backoffice-bench-{run_id}")])
        .output()
        .expect("pgrep");
    assert!(
        workers.stdout.is_empty(),
        "a worker of this run is still running: {}",
        String::from_utf8_lossy(&workers.stdout)
    );
    // Its argument list names the run's reference queue.
    let loops = Command::new("pgrep")
        .args([
            "-f",
            &format!("bench-reference-loop --queue bench.{run_id}."),
        ])
        .output()
        .expect("pgrep");
    assert!(
        loops.stdout.is_empty(),
        "a reference loop of this run is still running: {}",
        String::from_utf8_lossy(&loops.stdout)
    );
}

/// `--loads`: a saturated run, a paced run with the reference loop paced
/// alike, and a run on a pre-filled database, compared in one table; the
/// reference loop on one thread (`--reference-runtime current-thread`).
#[test]
fn loads_compare_paced_runs_with_saturation_and_the_paced_reference() {
    let out = Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
        .args([
            "bench",
            "--commands",
            "200",
            "--loads",
            "40",
            "--load-seconds",
            "2s",
            "--prefill",
            "3000",
            "--reference",
            "--reference-runtime",
            "current-thread",
            "--json",
        ])
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let c: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{stdout}"));
    let rows = c["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["saturated", "40/s", "saturated, prefilled 3000"],
        "{c:#}"
    );
    assert_eq!(c["phases"][1]["report"]["commands"], 80, "{c:#}");
    assert_eq!(c["phases"][1]["report"]["completed"], 80, "{c:#}");
    let paced = &rows[1];
    for key in [
        "cpu_vs_saturated",
        "over_gateway_p50_ms",
        "reference_p50_ms",
        "reference_p99_ms",
        "p50_vs_reference",
        "p99_vs_reference",
    ] {
        assert!(
            paced[key].as_f64().is_some_and(|v| v > 0.0),
            "`{key}` in {paced:#}"
        );
    }
    assert_eq!(
        c["phases"][1]["report"]["reference"]["latency"]["samples"],
        80
    );
    assert!(rows[0]["ratio_to_reference"].as_f64().is_some());
    // The floor's own CPU per command in every run, and the ratios built on it.
    for row in rows {
        for key in [
            "reference_cpu_ms_per_command",
            "reference_cpu_vs_saturated",
            "cpu_vs_reference",
        ] {
            assert!(
                row[key].as_f64().is_some_and(|v| v.is_finite() && v > 0.0),
                "`{key}` not positive in {row:#}"
            );
        }
    }
    assert_eq!(rows[0]["reference_cpu_vs_saturated"], 1.0, "{c:#}");
    for phase in c["phases"].as_array().unwrap() {
        assert_eq!(
            phase["report"]["reference"]["runtime"], "current-thread",
            "{phase:#}"
        );
    }
    assert!(rows[2]["throughput_vs_empty"]
        .as_f64()
        .is_some_and(|v| v > 0.0));
    let prefilled_notes = c["phases"][2]["report"]["notes"].to_string();
    assert!(
        prefilled_notes.contains("pre-filled with 3000"),
        "{prefilled_notes}"
    );
}

/// `--prefill` without `--loads` still measures the empty database first,
/// in the same invocation, so its ratio is never taken across runs.
#[test]
fn a_prefilled_run_is_compared_with_the_empty_database_in_the_same_invocation() {
    let out = Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
        .args(["bench", "--commands", "150", "--prefill", "2000", "--json"])
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let c: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{stdout}"));
    let names: Vec<&str> = c["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["saturated", "saturated, prefilled 2000"], "{c:#}");
    assert!(c["rows"][1]["throughput_vs_empty"]
        .as_f64()
        .is_some_and(|v| v > 0.0));
    // The prefilled commands' attempts are not the run's.
    let attempts = c["phases"][1]["report"]["attempts"]
        .as_i64()
        .expect("attempts");
    assert!((150..=150 * 5).contains(&attempts), "{attempts} attempts");
}
