//! The channel monitor's decision when the funding output is spent
//! (`ChannelMonitor::resolve_spend`), for each thing that can spend it, on
//! static_remotekey and anchor channels. The channel is a real two-party channel (the
//! `channel` crate's own test pair, carried through HTLCs and revocations); the
//! revocations go through the monitor's records in a real SQLite file; every transaction
//! the monitor decides on is run through Bitcoin Core's script interpreter against the
//! outputs it spends, and the satoshis it claims are checked against the commitment's.

#[path = "../../channel/tests/common/mod.rs"]
mod pair;

use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut};
use channel::state::Channel;
use channel::*;
use hub::monitor::{records, ChannelMonitor, ClaimParams, Spend};
use hub::store::Store;
use pair::*;

fn params() -> ClaimParams {
    ClaimParams {
        dest: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_raw_hash(
            bitcoin::hashes::Hash::from_byte_array([7; 20]),
        )),
        sweep: FeeratePerKw(1_000),
        justice_to_local: FeeratePerKw(5_000),
        justice_htlc: FeeratePerKw(7_000),
    }
}

/// The outputs of `parent` as (outpoint, txout) pairs, for the interpreter.
fn outputs_of(parent: &Transaction) -> Vec<(OutPoint, TxOut)> {
    let txid = parent.compute_txid();
    parent
        .output
        .iter()
        .enumerate()
        .map(|(i, o)| (OutPoint::new(txid, i as u32), o.clone()))
        .collect()
}

/// Every transaction in `txs` spends outputs of `parent` only, passes the interpreter,
/// and pays a positive fee (none when `zero_fee`: an anchor channel's HTLC transactions,
/// whose fee the wallet adds); returns the total value they take from `parent`.
fn verify(parent: &Transaction, txs: &[Transaction], zero_fee: bool) -> u64 {
    let spent = outputs_of(parent);
    let mut taken = 0;
    for tx in txs {
        let mut input = 0;
        for i in &tx.input {
            let (_, out) = spent
                .iter()
                .find(|(o, _)| *o == i.previous_output)
                .expect("spends the commitment on chain");
            input += out.value.to_sat();
        }
        consensus_verify(tx, &spent).unwrap_or_else(|e| panic!("{e}: {tx:?}"));
        let output: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        if zero_fee {
            assert_eq!(
                output, input,
                "an anchor HTLC transaction pays no fee of its own"
            );
        } else {
            assert!(output < input, "a claim pays a fee");
        }
        taken += input;
    }
    taken
}

fn verify_claims(parent: &Transaction, txs: &[Transaction]) -> u64 {
    verify(parent, txs, false)
}

/// Every output of `commitment` but the anchors, in satoshis.
fn non_anchor_value(commitment: &Transaction) -> u64 {
    commitment
        .output
        .iter()
        .map(|o| o.value)
        .filter(|v| *v != Amount::from_sat(channel::commitment::ANCHOR_OUTPUT_SAT))
        .map(Amount::to_sat)
        .sum()
}

/// Alice (the funder, our side) and Bob with two HTLCs on their commitments: Alice
/// offered 40,000 sat, Bob offered 30,000 sat. Returns the pair, Bob's commitment
/// holding both HTLCs that he has since revoked, and Bob's HTLC's payment hash.
fn channel_with_htlcs(anchors: bool) -> (Pair, Transaction, PaymentHash) {
    let mut p = Pair::open_with(Msat(300_000_000), FeeratePerKw(1_500), anchors);
    p.add(false, Msat(40_000_000), 700).unwrap();
    let bobs = p.add(true, Msat(30_000_000), 701).unwrap();
    p.settle();
    let (revoked, _) = p.bob.signed_local_commitment().unwrap();
    // One more dance: Bob revokes the commitment above.
    p.add(false, Msat(2_000_000), 702).unwrap();
    p.settle();
    (p, revoked, bobs)
}

async fn store_with_revocations(dir: &tempfile::TempDir, p: &Pair) -> Store {
    let url = format!("sqlite://{}", dir.path().join("monitor.db").display());
    let store = Store::open(&url).await.unwrap();
    let writes: Vec<_> = p.revoked[0]
        .iter()
        .map(|r| records::revocation_write(p.alice.channel_id(), r))
        .collect();
    store.write(&writes).await.unwrap();
    store
}

async fn rebuilt(
    store: &Store,
    alice: &Channel,
    tx: &Transaction,
) -> Option<state::RevokedCommitment> {
    let (number, _) = alice.revoked_commitment_number(tx)?;
    let candidates = records::revoked_htlcs(store, &alice.channel_id(), number)
        .await
        .unwrap();
    alice.revoked_from_chain(tx, &candidates)
}

async fn resolves_every_spend(anchors: bool) {
    let (p, revoked_tx, bobs_hash) = channel_with_htlcs(anchors);
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_revocations(&dir, &p).await;
    let know = |h: &PaymentHash| p.preimage(h).filter(|_| *h == bobs_hash);
    let know_nothing = |_: &PaymentHash| None;

    // A mutual close: nothing to claim, the funding output is no longer watched.
    let (alice_tx, _) = p.alice.signed_local_commitment().unwrap();
    let mut m = ChannelMonitor::default();
    let closing = alice_tx.compute_txid(); // any transaction agreed as the closing one
    let r = m.resolve_spend(&p.alice, &alice_tx, None, Some(closing), &params(), know);
    assert_eq!(r.spend, Spend::MutualClose);
    assert!(m.sweeps().is_empty() && r.local_htlc_txs.is_empty());
    assert!(m.funding_spent());
    assert_eq!(m.onchain_commitment(), None);

    // Our own commitment: to_local after our CSV delay, and both HTLC transactions
    // (the success one only with the preimage).
    let mut m = ChannelMonitor::default();
    assert!(rebuilt(&store, &p.alice, &alice_tx).await.is_none());
    let r = m.resolve_spend(&p.alice, &alice_tx, None, None, &params(), know);
    assert_eq!(r.spend, Spend::Local);
    assert_eq!(m.sweeps().len(), 1, "to_local");
    assert_eq!(
        m.sweeps()[0].input[0].sequence.0,
        144,
        "after our CSV delay"
    );
    assert_eq!(
        r.local_htlc_txs.len(),
        3,
        "two timeouts (40,000 and 2,000 sat) and a success"
    );
    verify_claims(&alice_tx, m.sweeps());
    verify(&alice_tx, &r.local_htlc_txs, anchors);
    assert_eq!(m.onchain_commitment(), Some(alice_tx.compute_txid()));
    let mut m = ChannelMonitor::default();
    let r = m.resolve_spend(&p.alice, &alice_tx, None, None, &params(), know_nothing);
    assert_eq!(
        r.local_htlc_txs.len(),
        2,
        "no HTLC-success without the preimage"
    );

    // Bob's current commitment: our to_remote, the timeout claims of our two HTLCs (not
    // before their expiry) and, with the preimage, the claim of his.
    let (bob_tx, bob_built) = p.bob.signed_local_commitment().unwrap();
    let (vout, _) = bob_built.to_local.as_ref().expect("Bob's to_local");
    let bob_to_local = bob_built.output_value(*vout).to_sat();
    assert!(rebuilt(&store, &p.alice, &bob_tx).await.is_none());
    let mut m = ChannelMonitor::default();
    let r = m.resolve_spend(&p.alice, &bob_tx, None, None, &params(), know);
    assert_eq!(r.spend, Spend::Remote);
    assert!(r.local_htlc_txs.is_empty());
    let timeouts: Vec<_> = m
        .sweeps()
        .iter()
        .filter(|t| t.lock_time.to_consensus_u32() >= 700)
        .collect();
    assert_eq!(
        timeouts.len(),
        2,
        "the timeout claims wait for their expiry"
    );
    assert_eq!(
        m.sweeps().len(),
        4,
        "to_remote, two timeout claims, one success claim"
    );
    let taken = verify_claims(&bob_tx, m.sweeps());
    assert_eq!(taken, non_anchor_value(&bob_tx) - bob_to_local);
    let mut m = ChannelMonitor::default();
    m.resolve_spend(&p.alice, &bob_tx, None, None, &params(), know_nothing);
    assert_eq!(m.sweeps().len(), 3, "no success claim without the preimage");

    // Bob's revoked commitment: justice for each of his outputs on its own (his
    // to_local and both HTLC outputs), and our to_remote; together, everything but the
    // anchors.
    let revoked = rebuilt(&store, &p.alice, &revoked_tx)
        .await
        .expect("rebuilt");
    let mut m = ChannelMonitor::default();
    let r = m.resolve_spend(
        &p.alice,
        &revoked_tx,
        Some(revoked.clone()),
        None,
        &params(),
        know_nothing,
    );
    assert_eq!(r.spend, Spend::Revoked(revoked.number));
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert_eq!(
        m.sweeps().len(),
        4,
        "three justice transactions and to_remote"
    );
    assert!(
        m.sweeps().iter().all(|t| t.input.len() == 1),
        "one output each"
    );
    let taken = verify_claims(&revoked_tx, m.sweeps());
    assert_eq!(
        taken,
        non_anchor_value(&revoked_tx),
        "the cheater keeps nothing"
    );
    assert_eq!(m.breach(), Some(&revoked));

    // The block with the spend is reorganised out: the funding output is watched again
    // and every decided sweep is handed back.
    let dropped = m.forget_spend();
    assert_eq!(dropped.len(), 4);
    assert!(!m.funding_spent() && m.sweeps().is_empty() && m.breach().is_none());
    assert_eq!(m.onchain_commitment(), None);
    store.close().await;
}

#[tokio::test]
async fn the_monitor_resolves_every_spend_of_a_static_remotekey_channel() {
    resolves_every_spend(false).await;
}

#[tokio::test]
async fn the_monitor_resolves_every_spend_of_an_anchor_channel() {
    resolves_every_spend(true).await;
}
