//! A revoked commitment rebuilt from its broadcast and the HTLCs recorded once each (with
//! the range of commitment numbers they were in) is the commitment the counterparty
//! revoked: same outputs, same justice, same tower penalty. Nothing else rebuilds: not
//! our own commitment, not the counterparty's current one, not a mutual close, not a
//! transaction of another channel.

mod common;

use bitcoin::{ScriptBuf, Sequence};
use channel::commitment::CommitmentHtlc;
use channel::msgs::*;
use channel::state::RevokedCommitment;
use channel::*;
use common::*;
use std::collections::BTreeMap;

fn p2wsh(tag: u8) -> ScriptBuf {
    ScriptBuf::new_p2wsh(&ScriptBuf::from_bytes(vec![0x51, tag]).wscript_hash())
}

/// What a node records from the revocations it receives: each HTLC once, with the first
/// and last commitment number it had an output in.
#[derive(Default)]
struct Record(BTreeMap<HtlcKey, (CommitmentHtlc, u64, u64)>);

/// Offered by the holder, id, payment hash.
type HtlcKey = (bool, u64, [u8; 32]);

impl Record {
    fn take(&mut self, r: &RevokedCommitment) {
        for h in r.htlcs() {
            let e = self
                .0
                .entry((h.offered, h.id.0, h.payment_hash.0))
                .or_insert((*h, r.number.0, r.number.0));
            e.2 = r.number.0;
        }
    }

    fn candidates(&self, number: u64) -> Vec<CommitmentHtlc> {
        self.0
            .values()
            .filter(|(_, first, last)| (*first..=*last).contains(&number))
            .map(|(h, _, _)| *h)
            .collect()
    }
}

/// Alice and Bob pay each other with HTLCs in flight across many dances, among them a
/// dust HTLC (trimmed) and two identical ones; Bob rebuilds every commitment Alice
/// revoked from its transaction alone.
fn rebuilds_every_revoked_commitment(anchors: bool) {
    let mut p = Pair::open_with(Msat(300_000_000), FeeratePerKw(1500), anchors);
    let mut record = Record::default();
    let mut seen = 0;
    let mut check = |p: &mut Pair, record: &mut Record| {
        for r in &p.revoked[1][seen..] {
            record.take(r);
            seen += 1;
        }
    };
    let big = p.add(false, Msat(40_000_000), 700).unwrap();
    p.add(true, Msat(30_000_000), 701).unwrap();
    p.add(false, Msat(400_000), 702).unwrap(); // below the dust limit: trimmed
    p.settle();
    check(&mut p, &mut record);
    // Two HTLCs with the same hash, amount and expiry (two parts of one payment).
    let twin = p.preimage(&big).unwrap().payment_hash();
    for _ in 0..2 {
        let m = p
            .alice
            .send_add_htlc(Msat(5_000_000), twin, 710, OnionPacket::default())
            .unwrap();
        p.send(false, Message::UpdateAddHtlc(m));
    }
    p.settle();
    check(&mut p, &mut record);
    for i in 0..6u64 {
        let hash = p.add(i % 2 == 0, Msat(2_000_000 + i * 1000), 720).unwrap();
        p.settle();
        check(&mut p, &mut record);
        let id = p
            .party(i % 2 != 0)
            .log()
            .committed_htlcs
            .iter()
            .find(|h| h.payment_hash == hash)
            .map(|h| h.id)
            .unwrap();
        let preimage = p.preimage(&hash).unwrap();
        let m = p.party(i % 2 != 0).send_fulfill(id, preimage).unwrap();
        p.send(i % 2 != 0, Message::UpdateFulfillHtlc(m));
        p.settle();
        check(&mut p, &mut record);
    }
    assert!(p.revoked[1].len() >= 10, "{}", p.revoked[1].len());

    let dest = p2wsh(3);
    let rate = FeeratePerKw(2000);
    for original in &p.revoked[1] {
        let candidates = record.candidates(original.number.0);
        let rebuilt = p
            .bob
            .revoked_from_chain(&original.commitment.tx, &candidates)
            .expect("a revoked commitment of Alice's");
        assert_eq!(rebuilt.number, original.number);
        assert_eq!(
            rebuilt.per_commitment_secret,
            original.per_commitment_secret
        );
        assert_eq!(rebuilt.commitment.txid(), original.commitment.txid());
        assert_eq!(rebuilt.commitment.htlcs, original.commitment.htlcs);
        assert_eq!(rebuilt.commitment.to_local, original.commitment.to_local);
        assert_eq!(rebuilt.commitment.to_remote, original.commitment.to_remote);
        assert_eq!(rebuilt.commitment.keys, original.commitment.keys);
        assert_eq!(
            p.bob.justice_txs(&rebuilt, dest.clone(), |_| rate).unwrap(),
            p.bob.justice_txs(original, dest.clone(), |_| rate).unwrap()
        );
        assert_eq!(
            p.bob.penalty_tx(&rebuilt, dest.clone(), rate).unwrap(),
            p.bob.penalty_tx(original, dest.clone(), rate).unwrap()
        );
        // Without the recorded HTLCs only to_local and to_remote are found.
        let bare = p
            .bob
            .revoked_from_chain(&original.commitment.tx, &[])
            .unwrap();
        assert!(bare.commitment.htlcs.is_empty());
        assert_eq!(bare.commitment.to_local, original.commitment.to_local);
    }
    // Commitments with the twin HTLCs carry both, on distinct outputs.
    assert!(p.revoked[1].iter().any(|r| {
        r.commitment
            .htlcs
            .iter()
            .filter(|h| h.htlc.payment_hash == twin && h.htlc.amount == Msat(5_000_000))
            .count()
            == 2
    }));

    // Not revoked: Alice's current commitment, Bob's own, a mutual close, another
    // channel's commitment.
    let (alice_now, _) = p.alice.signed_local_commitment().unwrap();
    assert!(p.bob.revoked_from_chain(&alice_now, &[]).is_none());
    let (bob_now, _) = p.bob.signed_local_commitment().unwrap();
    assert!(p.bob.revoked_from_chain(&bob_now, &[]).is_none());
    let mut close = p.revoked[1][0].commitment.tx.clone();
    close.lock_time = bitcoin::absolute::LockTime::ZERO;
    close.input[0].sequence = Sequence::MAX;
    assert!(p.bob.revoked_from_chain(&close, &[]).is_none());
    let mut elsewhere = p.revoked[1][0].commitment.tx.clone();
    elsewhere.input[0].previous_output.vout += 1;
    assert!(p.bob.revoked_from_chain(&elsewhere, &[]).is_none());
    // Alice never holds Bob's revoked commitments as Bob's: her own old ones are not his.
    assert!(p
        .alice
        .revoked_from_chain(&p.revoked[1][0].commitment.tx, &[])
        .is_none());
}

#[test]
fn rebuilds_every_revoked_commitment_static_remotekey() {
    rebuilds_every_revoked_commitment(false);
}

#[test]
fn rebuilds_every_revoked_commitment_anchors() {
    rebuilds_every_revoked_commitment(true);
}
