//! BOLT 8 and BOLT 1 against an implementation we did not write: Core Lightning's
//! `pyln-proto` (PyPI), driven by `interop/pyln/peer.py`. Needs `HUB_TEST_PYTHON`, a Python
//! with pyln-proto installed (`tools/test` makes one in a venv); without it these tests
//! fail rather than pass unseen.

use bitcoin::hex::{DisplayHex, FromHex};
use channel::noise::{Transport, HEADER_LEN, MAC_LEN};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn python() -> String {
    std::env::var("HUB_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "HUB_TEST_PYTHON is not set: it must name a Python with pyln-proto installed \
             (run the tests with tools/test, which sets it up)"
        )
    })
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/pyln/peer.py")
}

fn pyln(args: &[&str]) -> std::process::Output {
    let out = Command::new(python())
        .arg(peer_script())
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "peer.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!(
        "../../channel/tests/vectors/bolt8-transport.json"
    ))
    .expect("BOLT 8 vectors")
}

/// Every frame of 2,002 messages (four key rotations each way) is byte-for-byte what
/// pyln-proto's transport produces from the same state, and each of pyln's frames
/// decrypts on our side. The spec's vectors print only messages 0, 1, 500, 501, 1000
/// and 1001, which cannot see a rotation made one nonce early.
#[test]
fn every_frame_matches_pyln_proto() {
    let v = vectors();
    let m = &v["message_test"];
    let hex = |k: &str| m[k].as_str().expect("hex").to_string();
    let count = 2002;
    let out = pyln(&[
        "frames",
        &hex("ck"),
        &hex("sk"),
        &hex("rk"),
        &hex("message_hex"),
        &count.to_string(),
    ]);
    let theirs: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| Vec::<u8>::from_hex(l).expect("hex frame"))
        .collect();
    assert_eq!(theirs.len(), count);
    let key = |k: &str| <[u8; 32]>::from_hex(&hex(k)).expect("32 bytes");
    let msg = Vec::<u8>::from_hex(&hex("message_hex")).expect("message");
    let mut ours = Transport::from_keys(key("ck"), key("sk"), key("rk"));
    let mut reader = Transport::from_keys(key("ck"), key("rk"), key("sk"));
    for (i, frame) in theirs.iter().enumerate() {
        let mine = ours.encrypt(&msg).expect("encrypts");
        assert_eq!(
            mine.to_lower_hex_string(),
            frame.to_lower_hex_string(),
            "message {i} differs from pyln-proto's"
        );
        let len = reader
            .decrypt_length(&frame[..HEADER_LEN])
            .unwrap_or_else(|e| panic!("length of pyln's message {i}: {e}"));
        let body = reader
            .decrypt_body(&frame[HEADER_LEN..HEADER_LEN + usize::from(len) + MAC_LEN])
            .unwrap_or_else(|e| panic!("body of pyln's message {i}: {e}"));
        assert_eq!(body, msg);
    }
}

fn hub() -> (scenarios::Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = scenarios::spawn(&scenarios::devnet_args(
        dir.path().join("hub").to_str().expect("utf-8"),
        "pyln-key",
    ));
    (hub, dir)
}

fn node_features(stdout: &str) -> Vec<usize> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("node features"))
        .expect("peer.py printed the node's features");
    line.split_whitespace()
        .skip(2)
        .map(|b| b.parse().expect("bit"))
        .collect()
}

/// pyln-proto connects to a hub process as initiator with the init of Core Lightning,
/// LDK and an LND-like node; each session carries an unknown odd message, a stranger's
/// channel_update, gossip queries (answered) and thousands of pings (answered).
#[test]
fn pyln_peers_with_real_feature_sets_connect_and_stay() {
    let (hub, _dir) = hub();
    for (features, pings) in [("cln", "2100"), ("ldk", "600"), ("lnd-like", "600")] {
        let out = pyln(&["connect", &hub.peer_addr, &hub.node_id, features, pings]);
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        assert!(
            stdout.lines().any(|l| l == format!("ok {pings}")),
            "{features}: {stdout}"
        );
        // The hub requires the features BOLT 9 lists as ASSUMED.
        let bits = node_features(&stdout);
        for required in [0, 8, 12, 14, 44] {
            assert!(
                bits.contains(&required),
                "{features}: bit {required} in {bits:?}"
            );
        }
        // And offers basic_mpp, option_anchors_zero_fee_htlc_tx and option_scid_alias.
        for offered in [17, 23, 47] {
            assert!(
                bits.contains(&offered),
                "{features}: bit {offered} in {bits:?}"
            );
        }
    }
}

/// A peer requiring a feature the hub does not know, or lacking one the hub requires,
/// is disconnected at init; the hub keeps serving others.
#[test]
fn pyln_peers_with_unacceptable_features_are_refused() {
    let (hub, _dir) = hub();
    // Bit 100 required; and the LDK set without channel_type (bit 44).
    let unknown_even = format!("10{}", "00".repeat(12));
    let no_channel_type = "800888880a8a51a1";
    for features in [unknown_even.as_str(), no_channel_type] {
        let out = Command::new(python())
            .arg(peer_script())
            .args(["connect", &hub.peer_addr, &hub.node_id, features, "10"])
            .output()
            .expect("python runs");
        assert!(
            !out.status.success(),
            "features {features}: the hub kept the connection"
        );
    }
    let out = pyln(&["connect", &hub.peer_addr, &hub.node_id, "cln", "10"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok 10"));
}

/// The hub dials a pyln-proto listener (the hub is the BOLT 8 initiator) and answers
/// 2,100 pings over the link.
#[test]
fn the_hub_connects_to_a_pyln_peer() {
    let (hub, _dir) = hub();
    let mut child = Command::new(python())
        .arg(peer_script())
        .args(["listen", "2100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let mut words = first.split_whitespace().skip(1);
    let port = words.next().expect("port").to_string();
    let id = words.next().expect("node id").to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = scenarios::Api::default();
    rt.block_on(api.ok(
        &hub.api,
        "pyln-key",
        "POST",
        "/v1/peers",
        Some(serde_json::json!({"node_id": id, "address": format!("127.0.0.1:{port}")})),
    ));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("peer.py ends");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "peer.py: {err}");
    assert!(rest.iter().any(|l| l == "ok 2100"), "{rest:?}");
}
