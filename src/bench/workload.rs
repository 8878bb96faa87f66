//! The benchmark's command mix: which commands are published, in what order,
//! on which on-demand payment ids, and which are published twice.
//!
//! The mix is exact (largest-remainder rounding, so the counts add up to the
//! number asked for) and shuffled with a seeded generator, so that a run is
//! reproducible from its seed and the worker never sees a periodic pattern it
//! could accidentally benefit from. Every command gets its own payment, so no
//! two commands ever wait for each other's payment lease: the benchmark
//! measures the worker, not contention the workload invented.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::money::Amount;

/// Lowest on-demand id the simulator accepts (8 digits, no leading zero).
const FIRST_ON_DEMAND: u64 = 100_000_000;
/// Highest on-demand id (9 digits).
const LAST_ON_DEMAND: u64 = 999_999_999;
/// The most commands a run can place on distinct on-demand ids (two ids each,
/// an even and an odd one, so that every kind finds the state it needs).
pub const MAX_COMMANDS: usize = ((LAST_ON_DEMAND - FIRST_ON_DEMAND) / 2 - 1) as usize;
/// About one message in fifty is a producer's retry of an earlier command.
pub const DUPLICATE_PER_MILLE: usize = 20;
/// How many messages after its original a duplicate is published: close
/// enough that the original is often still running (the pending-replay path),
/// as a producer retrying after a lost confirm would do.
const DUPLICATE_GAP: usize = 10;

/// One kind of command in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PaymentzCapture,
    PaymentzRefund,
    PaymentzCancel,
    PraxisCapture,
    PraxisCancel,
    PaymentzInquiry,
    PraxisInquiry,
}

impl Kind {
    /// The mix, in per mille. The brief's shares add up to 95 %; the last 5 %
    /// are Praxis inquiries, so that both gateways' inquiry paths are measured.
    pub const MIX: [(Kind, usize); 7] = [
        (Kind::PaymentzCapture, 350),
        (Kind::PaymentzRefund, 250),
        (Kind::PaymentzCancel, 150),
        (Kind::PraxisCapture, 100),
        (Kind::PraxisCancel, 50),
        (Kind::PaymentzInquiry, 50),
        (Kind::PraxisInquiry, 50),
    ];

    pub fn gateway(self) -> &'static str {
        match self {
            Kind::PaymentzCapture
            | Kind::PaymentzRefund
            | Kind::PaymentzCancel
            | Kind::PaymentzInquiry => "paymentz",
            Kind::PraxisCapture | Kind::PraxisCancel | Kind::PraxisInquiry => "praxis",
        }
    }

    pub fn operation(self) -> &'static str {
        match self {
            Kind::PaymentzCapture | Kind::PraxisCapture => "capture",
            Kind::PaymentzRefund => "refund",
            Kind::PaymentzCancel | Kind::PraxisCancel => "cancel",
            Kind::PaymentzInquiry | Kind::PraxisInquiry => "inquiry",
        }
    }

    /// Whether the command needs a captured payment: the simulator makes odd
    /// Paymentz ids captured and even ones authorized.
    fn wants_captured(self) -> bool {
        matches!(self, Kind::PaymentzRefund | Kind::PaymentzInquiry)
    }
}

/// One distinct command.
#[derive(Debug, Clone)]
pub struct Command {
    pub id: String,
    pub kind: Kind,
    pub payment_id: String,
    /// The JSON body as published; a duplicate publishes these very bytes.
    pub body: Vec<u8>,
}

/// One message to publish: a command (by index into [`Workload::commands`])
/// and its body.
#[derive(Debug, Clone)]
pub struct Message {
    pub command: usize,
    pub duplicate: bool,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub commands: Vec<Command>,
    /// In publish order; every command once, duplicates after their original.
    pub messages: Vec<Message>,
    pub duplicates: usize,
}

impl Workload {
    /// `count` distinct commands plus about 2 % duplicates. `run_id` goes into
    /// every command id (so a run never collides with another run's ids on a
    /// shared broker); `seed` decides the order, the amounts, the duplicates
    /// and where the payment ids start.
    pub fn generate(count: usize, run_id: &str, seed: u64) -> Workload {
        assert!(
            count <= MAX_COMMANDS,
            "at most {MAX_COMMANDS} commands per run"
        );
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut kinds = Vec::with_capacity(count);
        for (kind, n) in Kind::MIX.iter().zip(shares(count)) {
            kinds.extend(std::iter::repeat_n(kind.0, n));
        }
        kinds.shuffle(&mut rng);

        // Even base; command k owns ids base + 2k (even) and base + 2k + 1 (odd).
        // A random base keeps runs against a shared `--simulator-url` apart.
        let span = LAST_ON_DEMAND - FIRST_ON_DEMAND - 2 * count as u64 - 2;
        let base = (FIRST_ON_DEMAND + rng.gen_range(0..=span)) & !1;
        let base = base.max(FIRST_ON_DEMAND);

        let commands: Vec<Command> = kinds
            .into_iter()
            .enumerate()
            .map(|(k, kind)| {
                let even = base + 2 * k as u64;
                let payment = if kind.wants_captured() {
                    even + 1
                } else {
                    even
                };
                let id = format!("bench-{run_id}-{k}");
                let body = body(&id, kind, &payment.to_string(), &mut rng, run_id);
                Command {
                    id,
                    kind,
                    payment_id: payment.to_string(),
                    body: serde_json::to_vec(&body).expect("JSON values serialize"),
                }
            })
            .collect();

        let duplicates = count * DUPLICATE_PER_MILLE / 1000;
        let mut originals: Vec<usize> = (0..count).collect();
        originals.shuffle(&mut rng);
        originals.truncate(duplicates);
        // after[i]: the duplicates published right after command i.
        let mut after: Vec<Vec<usize>> = vec![Vec::new(); count];
        for original in originals {
            let at = (original + DUPLICATE_GAP).min(count - 1);
            after[at].push(original);
        }
        let mut messages = Vec::with_capacity(count + duplicates);
        for (i, command) in commands.iter().enumerate() {
            messages.push(Message {
                command: i,
                duplicate: false,
                body: command.body.clone(),
            });
            for &original in &after[i] {
                messages.push(Message {
                    command: original,
                    duplicate: true,
                    body: commands[original].body.clone(),
                });
            }
        }
        Workload {
            commands,
            messages,
            duplicates,
        }
    }

    /// How many commands of each kind.
    pub fn counts(&self) -> std::collections::BTreeMap<Kind, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for command in &self.commands {
            *counts.entry(command.kind).or_insert(0) += 1;
        }
        counts
    }
}

/// `count` split by [`Kind::MIX`], rounded so that the parts add up to `count`
/// (largest remainder first).
fn shares(count: usize) -> Vec<usize> {
    let total: usize = Kind::MIX.iter().map(|(_, w)| w).sum();
    let mut parts: Vec<usize> = Kind::MIX.iter().map(|(_, w)| count * w / total).collect();
    let mut remainders: Vec<(usize, usize)> = Kind::MIX
        .iter()
        .enumerate()
        .map(|(i, (_, w))| (count * w % total, i))
        .collect();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let missing = count - parts.iter().sum::<usize>();
    for &(_, i) in remainders.iter().take(missing) {
        parts[i] += 1;
    }
    parts
}

/// The command as a producer would publish it (`shared/spec/messages.md`).
fn body(
    id: &str,
    kind: Kind,
    payment_id: &str,
    rng: &mut SmallRng,
    run_id: &str,
) -> serde_json::Value {
    let mut body = json!({
        "id": id,
        "gateway": kind.gateway(),
        "account": "default",
        "operation": kind.operation(),
        "payment_id": payment_id,
        "metadata": {"bench_run": run_id},
    });
    match kind {
        // On-demand Paymentz payments are 1000.00 EUR, authorized or fully captured.
        Kind::PaymentzCapture | Kind::PaymentzRefund => {
            let amount = Amount::from_minor(rng.gen_range(100..=50_000));
            body["amount"] = json!(amount.to_string());
            body["currency"] = json!("EUR");
        }
        Kind::PraxisCapture | Kind::PraxisCancel | Kind::PraxisInquiry => {
            body["currency"] = json!("USD");
        }
        Kind::PaymentzCancel | Kind::PaymentzInquiry => {}
    }
    body
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    #[test]
    fn counts_add_up_and_follow_the_mix() {
        for n in [0usize, 1, 7, 19, 20, 300, 1001, 20_000] {
            let w = Workload::generate(n, "t", 7);
            assert_eq!(w.commands.len(), n);
            assert_eq!(w.counts().values().sum::<usize>(), n);
            assert_eq!(w.duplicates, n * 20 / 1000);
            assert_eq!(w.messages.len(), n + w.duplicates);
            assert_eq!(
                w.messages.iter().filter(|m| m.duplicate).count(),
                w.duplicates
            );
            // Each share within one command of its exact value.
            for (kind, per_mille) in Kind::MIX {
                let got = w.counts().get(&kind).copied().unwrap_or(0) as f64;
                let exact = n as f64 * per_mille as f64 / 1000.0;
                assert!(
                    (got - exact).abs() < 1.0,
                    "{kind:?}: {got} vs {exact} of {n}"
                );
            }
        }
        let w = Workload::generate(20_000, "t", 1);
        assert_eq!(w.counts()[&Kind::PaymentzCapture], 7000);
        assert_eq!(w.counts()[&Kind::PaymentzRefund], 5000);
        assert_eq!(w.counts()[&Kind::PraxisCancel], 1000);
        assert_eq!(w.duplicates, 400);
    }

    #[test]
    fn ids_and_payments_are_unique_and_on_demand() {
        let w = Workload::generate(5000, "run1", 42);
        let ids: HashSet<&str> = w.commands.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), w.commands.len());
        let mut payments = HashSet::new();
        for c in &w.commands {
            assert!(
                payments.insert((c.kind.gateway(), c.payment_id.clone())),
                "{c:?}"
            );
            let n: u64 = c.payment_id.parse().unwrap();
            assert!((FIRST_ON_DEMAND..=LAST_ON_DEMAND).contains(&n));
            if c.kind.gateway() == "paymentz" {
                assert_eq!(n % 2 == 1, c.kind.wants_captured(), "{c:?}");
            }
            let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
            assert_eq!(body["id"], c.id.as_str());
            assert_eq!(body["payment_id"], c.payment_id.as_str());
            assert_eq!(body["operation"], c.kind.operation());
            let has_amount = body.get("amount").is_some();
            assert_eq!(
                has_amount,
                matches!(c.kind, Kind::PaymentzCapture | Kind::PaymentzRefund)
            );
            if has_amount {
                let amount = Amount::parse_positive(body["amount"].as_str().unwrap()).unwrap();
                assert!(amount.minor() <= 100_000);
            }
        }
    }

    #[test]
    fn duplicates_are_exact_copies_published_after_their_original() {
        let w = Workload::generate(3000, "d", 9);
        let mut first_at: HashMap<usize, usize> = HashMap::new();
        let mut duplicated = HashSet::new();
        for (at, m) in w.messages.iter().enumerate() {
            assert_eq!(m.body, w.commands[m.command].body);
            if m.duplicate {
                let original = first_at[&m.command];
                assert!(original < at, "a duplicate follows its original");
                assert_eq!(w.messages[original].body, m.body);
                assert!(
                    duplicated.insert(m.command),
                    "at most one duplicate per command"
                );
            } else {
                assert!(first_at.insert(m.command, at).is_none());
            }
        }
        assert_eq!(first_at.len(), 3000);
        assert_eq!(duplicated.len(), w.duplicates);
    }

    #[test]
    fn the_seed_decides_the_run() {
        let a = Workload::generate(500, "x", 3);
        let b = Workload::generate(500, "x", 3);
        let c = Workload::generate(500, "x", 4);
        let bodies = |w: &Workload| {
            w.messages
                .iter()
                .map(|m| m.body.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(bodies(&a), bodies(&b));
        assert_ne!(bodies(&a), bodies(&c));
    }
}
