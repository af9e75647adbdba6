//! Bytes the node stores per channel, measured in real SQLite files: two channel parties
//! (the `channel` crate's state machine) make 10,000 payments, alternating direction,
//! and each party's store gets exactly what the node writes (the channel's state, and
//! for each revocation received the monitor's HTLC records) in one transaction per
//! payment. Then 10,000 commitment dances that add no HTLC (update_fee), first with no
//! HTLC in flight, then with five. Prints, per party: the monitor's rows and bytes, the
//! channel state's bytes, the database file, and what the former layout (one serialized
//! commitment per revocation) would have held.
//!
//! `MONITOR_BENCH_PAYMENTS` changes the number of payments (default 10,000).

#[path = "../../channel/tests/common/mod.rs"]
mod pair;

use channel::msgs::Message;
use channel::state::RevokedCommitment;
use channel::{ChannelId, FeeratePerKw, Msat};
use hub::store::{Store, StoredChannel, Write};
use pair::Pair;

struct Party {
    store: Store,
    path: std::path::PathBuf,
    channel_id: ChannelId,
    legacy_bytes: u64,
    revocations: u64,
}

impl Party {
    async fn new(dir: &std::path::Path, name: &str, channel_id: ChannelId) -> Party {
        let path = dir.join(format!("{name}.sqlite"));
        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .expect("store");
        Party {
            store,
            path,
            channel_id,
            legacy_bytes: 0,
            revocations: 0,
        }
    }

    /// Writes the party's channel state and the revocations it received since `from`.
    async fn persist(
        &mut self,
        state: &channel::state::ChannelState,
        revoked: &[RevokedCommitment],
    ) {
        let mut writes = vec![Write::Channel(StoredChannel {
            channel_id: self.channel_id.0,
            peer_id: vec![2; 33],
            channel_index: 0,
            status: "normal".into(),
            state: serde_json::to_vec(state).expect("state"),
            updated_at: 0,
        })];
        for r in revoked {
            writes.push(hub::monitor::records::revocation_write(self.channel_id, r));
            self.legacy_bytes += serde_json::to_vec(r).expect("revoked").len() as u64;
            self.revocations += 1;
        }
        self.store.write(&writes).await.expect("write");
    }

    async fn report(&self, what: &str, payments: u64) {
        let (rows, monitor_bytes) = self
            .store
            .monitor_footprint(&self.channel_id.0)
            .await
            .expect("footprint");
        let state = self
            .store
            .channel(&self.channel_id.0)
            .await
            .expect("channel")
            .map(|c| c.state.len() as u64)
            .unwrap_or(0);
        let file = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(self.path.with_extension("sqlite-wal"))
                .map(|m| m.len())
                .unwrap_or(0);
        let per_payment = if payments > 0 {
            format!("{:.1}", monitor_bytes as f64 / payments as f64)
        } else {
            "-".into()
        };
        println!(
            "{what}: {} revocations; monitor {rows} rows, {monitor_bytes} bytes ({per_payment} bytes/payment); \
             channel state {state} bytes; database file {file} bytes; former layout {} bytes",
            self.revocations, self.legacy_bytes
        );
    }
}

/// Delivers and signs until quiet; returns the revocations each side received.
fn settle(p: &mut Pair) -> [Vec<RevokedCommitment>; 2] {
    let before = [p.revoked[0].len(), p.revoked[1].len()];
    p.settle();
    [
        p.revoked[0][before[0]..].to_vec(),
        p.revoked[1][before[1]..].to_vec(),
    ]
}

async fn persist(
    p: &mut Pair,
    alice: &mut Party,
    bob: &mut Party,
    new: [Vec<RevokedCommitment>; 2],
) {
    alice.persist(p.alice.state(), &new[0]).await;
    bob.persist(p.bob.state(), &new[1]).await;
    // The pair keeps every revocation for its own tests; the node keeps none.
    p.revoked = [vec![], vec![]];
}

fn pay(p: &mut Pair, from_bob: bool, amount: Msat) -> [Vec<RevokedCommitment>; 2] {
    let hash = p.add(from_bob, amount, 500).expect("add");
    let mut new = settle(p);
    let receiver = p.party(!from_bob);
    let id = receiver
        .log()
        .committed_htlcs
        .iter()
        .find(|h| h.payment_hash == hash)
        .map(|h| h.id)
        .expect("committed");
    let preimage = p.preimage(&hash).expect("preimage");
    let m = p
        .party(!from_bob)
        .send_fulfill(id, preimage)
        .expect("fulfill");
    p.send(!from_bob, Message::UpdateFulfillHtlc(m));
    let more = settle(p);
    new[0].extend(more[0].iter().cloned());
    new[1].extend(more[1].iter().cloned());
    new
}

fn fee_dance(p: &mut Pair, n: u64) -> [Vec<RevokedCommitment>; 2] {
    let rate = FeeratePerKw(if n % 2 == 0 { 2_000 } else { 2_600 });
    let m = p.alice.send_update_fee(rate).expect("update_fee");
    p.send(false, Message::UpdateFee(m));
    settle(p)
}

async fn run(payments: u64) {
    let dir = tempfile::tempdir().expect("dir");
    let mut p = Pair::open_with(Msat(5_000_000_000), FeeratePerKw(2_000), true);
    let id = p.alice.channel_id();
    let mut alice = Party::new(dir.path(), "alice", id).await;
    let mut bob = Party::new(dir.path(), "bob", id).await;
    let s = [p.alice.state().clone(), p.bob.state().clone()];
    alice.persist(&s[0], &[]).await;
    bob.persist(&s[1], &[]).await;
    alice.report("Alice, open", 0).await;

    let started = std::time::Instant::now();
    for n in 0..payments {
        let new = pay(&mut p, n % 2 == 1, Msat(10_000_000));
        persist(&mut p, &mut alice, &mut bob, new).await;
        if n + 1 == payments / 10 {
            alice
                .report(&format!("Alice, {} payments", n + 1), n + 1)
                .await;
        }
    }
    println!(
        "{payments} payments in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    alice
        .report(&format!("Alice, {payments} payments"), payments)
        .await;
    bob.report(&format!("Bob, {payments} payments"), payments)
        .await;

    let dances = payments;
    for n in 0..dances {
        let new = fee_dance(&mut p, n);
        persist(&mut p, &mut alice, &mut bob, new).await;
    }
    alice
        .report(
            &format!("Alice, then {dances} update_fee dances, no HTLC in flight"),
            payments,
        )
        .await;

    for _ in 0..5 {
        p.add(true, Msat(20_000_000), 900).expect("add");
    }
    let new = settle(&mut p);
    persist(&mut p, &mut alice, &mut bob, new).await;
    alice
        .report("Alice, five HTLCs added and left in flight", payments + 5)
        .await;
    for n in 0..dances {
        let new = fee_dance(&mut p, n);
        persist(&mut p, &mut alice, &mut bob, new).await;
    }
    alice
        .report(
            &format!("Alice, then {dances} update_fee dances with five HTLCs in flight"),
            payments + 5,
        )
        .await;
}

fn main() {
    // `cargo test --benches` runs this too; keep that quick.
    let payments = if std::env::args().any(|a| a == "--test") {
        50
    } else {
        std::env::var("MONITOR_BENCH_PAYMENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000)
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(payments));
}
