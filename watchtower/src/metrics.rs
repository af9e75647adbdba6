//! Counters for `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The tower's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Appointments stored (all statuses).
    pub appointments: AtomicI64,
    /// Blocks scanned (connected blocks processed).
    pub blocks_scanned: AtomicU64,
    /// Transactions scanned.
    pub transactions_scanned: AtomicU64,
    /// Blocks disconnected by reorgs.
    pub blocks_disconnected: AtomicU64,
    /// Breaches found (a locator matched).
    pub breaches_seen: AtomicU64,
    /// Penalties broadcast (including rebroadcasts).
    pub penalties_broadcast: AtomicU64,
    /// Penalties that reached the required confirmations.
    pub penalties_confirmed: AtomicU64,
    /// Matched appointments whose blob gave no valid penalty.
    pub invalid_appointments: AtomicU64,
    /// Last block height scanned.
    pub block_height: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        put(
            "watchtower_appointments",
            "gauge",
            "Appointments stored.",
            self.appointments.load(Ordering::Relaxed).max(0).to_string(),
        );
        put(
            "watchtower_block_height",
            "gauge",
            "Last block height scanned.",
            get(&self.block_height),
        );
        put(
            "watchtower_blocks_scanned_total",
            "counter",
            "Blocks scanned for breaches.",
            get(&self.blocks_scanned),
        );
        put(
            "watchtower_transactions_scanned_total",
            "counter",
            "Transactions scanned for breaches.",
            get(&self.transactions_scanned),
        );
        put(
            "watchtower_blocks_disconnected_total",
            "counter",
            "Blocks disconnected by reorganisations.",
            get(&self.blocks_disconnected),
        );
        put(
            "watchtower_breaches_seen_total",
            "counter",
            "Transactions whose locator matched an appointment.",
            get(&self.breaches_seen),
        );
        put(
            "watchtower_penalties_broadcast_total",
            "counter",
            "Penalty broadcasts, including rebroadcasts.",
            get(&self.penalties_broadcast),
        );
        put(
            "watchtower_penalties_confirmed_total",
            "counter",
            "Penalties that reached the required confirmations.",
            get(&self.penalties_confirmed),
        );
        put(
            "watchtower_invalid_appointments_total",
            "counter",
            "Matched appointments whose blob gave no valid penalty.",
            get(&self.invalid_appointments),
        );
        out
    }
}
