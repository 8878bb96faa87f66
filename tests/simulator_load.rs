//! Throughput check, ignored by default (timing depends on the machine):
//! `cargo test --release --test simulator simulator_load:: -- --ignored --nocapture`.
//! Many concurrent refunds on on-demand payments over keep-alive
//! connections; afterwards the ledger must hold exactly one entry per
//! successful answer, which is the property load tests rely on.

use crate::simulator_support;

use std::sync::Arc;
use std::time::Instant;

use simulator_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run explicitly"]
async fn thousands_of_requests_per_second() {
    let sim = start().await;
    let pz = Arc::new(Paymentz::sandbox(&sim));
    let token = Arc::new(pz.token().await);
    let workers = 64;
    let per_worker = 300;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let pz = pz.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for i in 0..per_worker {
                // Odd ids are captured on first touch; 100 payments shared by all workers.
                let id = format!("{}", 50_000_001 + 2 * ((w * per_worker + i) % 100));
                let answer = pz.op(&token, "RF", &id, Some("1.00")).await;
                if answer["result"]["code"] == "00005" {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut succeeded = 0;
    for task in tasks {
        succeeded += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = (workers * per_worker) as f64;
    println!(
        "{total} refunds in {elapsed:?}: {:.0} requests/s",
        total / elapsed.as_secs_f64()
    );
    assert_eq!(sim.sim().stats().ledger_entries, succeeded);
    assert_eq!(
        succeeded as f64, total,
        "1000.00 leaves room for 192 refunds of 1.00 each"
    );
}
