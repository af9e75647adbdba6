//! Every target for a bounded number of executions, so CI catches a panic that a codec
//! change brings in. `FUZZ_ITERATIONS` overrides the count.

use fuzz::{runner, targets};

fn iterations(name: &str) -> u64 {
    if let Some(n) = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    // The onion target does elliptic-curve work on most inputs; keep CI time even.
    match name {
        "onion_peel" | "bolt11" => 20_000,
        _ => 40_000,
    }
}

fn check(name: &str) {
    let t = targets::by_name(name).expect("registered target");
    let s = runner::run(&t, iterations(name), 0x5eed, None);
    let report: Vec<String> = s
        .crashes
        .iter()
        .map(|c| format!("{}\n  input: {}", c.message, hex::encode(&c.input)))
        .collect();
    assert!(report.is_empty(), "{name} panicked:\n{}", report.join("\n"));
    assert_eq!(s.executions, iterations(name));
}

#[test]
fn wire_message() {
    check("wire_message");
}

#[test]
fn tlv_stream() {
    check("tlv_stream");
}

#[test]
fn bolt8_frames() {
    check("bolt8_frames");
}

#[test]
fn onion_peel() {
    check("onion_peel");
}

#[test]
fn bolt11() {
    check("bolt11");
}

#[test]
fn rpc_response() {
    check("rpc_response");
}

#[test]
fn rest_body() {
    check("rest_body");
}

#[test]
fn watchtower_appointment() {
    check("watchtower_appointment");
}

#[test]
fn every_target_is_tested_here() {
    let names: Vec<&str> = targets::all().iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "wire_message",
            "tlv_stream",
            "bolt8_frames",
            "onion_peel",
            "bolt11",
            "rpc_response",
            "rest_body",
            "watchtower_appointment"
        ]
    );
}
