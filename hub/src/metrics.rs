//! Prometheus metrics (`/metrics`): counters and latency histograms updated as payments,
//! forwards and webhook deliveries finish; channel gauges filled in at scrape time.

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge_vec,
    Encoder, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, TextEncoder,
};
use std::sync::LazyLock;

static PAYMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hub_payments_total",
        "Payments sent by this node, by result",
        &["result"]
    )
    .expect("metric registers")
});
static FORWARDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hub_forwards_total",
        "HTLCs forwarded by this node, by result",
        &["result"]
    )
    .expect("metric registers")
});
static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "hub_payment_latency_seconds",
        "Time from sending (or receiving, for forwards) an HTLC to its resolution",
        &["kind", "result"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0]
    )
    .expect("metric registers")
});
static INVOICES_PAID: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hub_invoices_paid_total",
        "Invoices of this node that were paid"
    )
    .expect("metric registers")
});
static WEBHOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hub_webhook_deliveries_total",
        "Webhook delivery attempts, by outcome",
        &["result"]
    )
    .expect("metric registers")
});
static CHANNELS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("hub_channels", "Channels by status", &["status"])
        .expect("metric registers")
});
static CAPACITY: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "hub_channel_capacity_sat",
        "Total capacity of channels not closed",
        &["status"]
    )
    .expect("metric registers")
});
static BALANCE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "hub_balance_msat",
        "This node's balance: in channels (local) and on chain (wallet)",
        &["where"]
    )
    .expect("metric registers")
});

static ECDSA: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hub_ecdsa_operations_total",
        "ECDSA signatures made and verified over channel transactions",
        &["op"]
    )
    .expect("metric registers")
});

fn elapsed_secs(start_ms: u64) -> f64 {
    crate::node::now_ms().saturating_sub(start_ms) as f64 / 1000.0
}

/// A payment this node sent finished.
pub fn payment_done(ok: bool, sent_at_ms: u64) {
    let result = if ok { "succeeded" } else { "failed" };
    PAYMENTS.with_label_values(&[result]).inc();
    if sent_at_ms > 0 {
        LATENCY
            .with_label_values(&["payment", result])
            .observe(elapsed_secs(sent_at_ms));
    }
}

/// A forward finished.
pub fn forward_done(ok: bool, received_at_ms: u64) {
    let result = if ok { "settled" } else { "failed" };
    FORWARDS.with_label_values(&[result]).inc();
    if received_at_ms > 0 {
        LATENCY
            .with_label_values(&["forward", result])
            .observe(elapsed_secs(received_at_ms));
    }
}

/// One of our invoices was paid.
pub fn invoice_paid() {
    INVOICES_PAID.inc();
}

/// A webhook delivery attempt ended with `result` ("delivered", "retry", "failed").
pub fn webhook_delivery(result: &str) {
    WEBHOOKS.with_label_values(&[result]).inc();
}

/// The text exposition, with channel gauges set from `channels` and the wallet balance.
pub fn render(channels: &[crate::node::ChannelSummary], wallet_sat: u64) -> String {
    CHANNELS.reset();
    CAPACITY.reset();
    // Touch the counters so they appear (at zero) before the first event.
    for r in ["succeeded", "failed"] {
        PAYMENTS.with_label_values(&[r]);
    }
    for r in ["settled", "failed"] {
        FORWARDS.with_label_values(&[r]);
    }
    LazyLock::force(&INVOICES_PAID);
    LazyLock::force(&LATENCY);
    LazyLock::force(&WEBHOOKS);
    {
        // Brought up to the process's counts; one render at a time, or two would both add
        // the same difference.
        static SYNC: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = SYNC.lock().unwrap_or_else(|e| e.into_inner());
        let (signs, verifies) = channel::sign::ecdsa_op_counts();
        for (op, n) in [("sign", signs), ("verify", verifies)] {
            let c = ECDSA.with_label_values(&[op]);
            c.inc_by(n.saturating_sub(c.get()));
        }
    }
    let mut local = 0u64;
    for c in channels {
        let status = c.status.as_str();
        CHANNELS.with_label_values(&[status]).inc();
        CAPACITY
            .with_label_values(&[status])
            .add(i64::try_from(c.capacity_sat).unwrap_or(i64::MAX));
        if c.status != crate::node::ChannelStatus::Closed {
            local = local.saturating_add(c.local.0);
        }
    }
    BALANCE
        .with_label_values(&["channels"])
        .set(i64::try_from(local).unwrap_or(i64::MAX));
    BALANCE
        .with_label_values(&["wallet"])
        .set(i64::try_from(wallet_sat.saturating_mul(1000)).unwrap_or(i64::MAX));
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
