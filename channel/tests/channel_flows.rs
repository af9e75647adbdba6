//! Whole channel lives between two in-memory parties: payments, cooperative close, force
//! close with HTLCs, breach and justice, reconnection — every on-chain transaction checked
//! by Bitcoin Core's script interpreter.

mod common;

use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, ScriptBuf, Transaction, TxOut};
use channel::msgs::*;
use channel::state::{revoked_outputs, ChannelError, HtlcStatus, ViewOf};
use channel::sweep::build_delayed_sweep;
use channel::*;
use common::*;

fn p2wsh(tag: u8) -> ScriptBuf {
    ScriptBuf::new_p2wsh(&ScriptBuf::from_bytes(vec![0x51, tag]).wscript_hash())
}

/// One payment: add, dance, fulfill, dance.
fn pay(p: &mut Pair, from_bob: bool, amount: Msat) {
    let hash = p.add(from_bob, amount, 500).expect("add");
    p.settle();
    let receiver = p.party(!from_bob);
    let (id, _) = receiver
        .log()
        .committed_htlcs
        .iter()
        .find(|h| h.payment_hash == hash)
        .map(|h| (h.id, h.payment_hash))
        .expect("committed");
    assert!(matches!(
        receiver.log().find_htlc(Side::Remote, id),
        Some((_, HtlcStatus::Committed))
    ));
    let preimage = p.preimage(&hash).unwrap();
    let m = p
        .party(!from_bob)
        .send_fulfill(id, preimage)
        .expect("fulfill");
    p.send(!from_bob, Message::UpdateFulfillHtlc(m));
    p.settle();
}

fn shutdown_both(p: &mut Pair) {
    let a = p.alice.send_shutdown(p2wsh(1)).unwrap();
    p.bob.receive_shutdown(&a).unwrap();
    let b = p.bob.send_shutdown(p2wsh(2)).unwrap();
    p.alice.receive_shutdown(&b).unwrap();
    assert!(p.alice.ready_to_negotiate_close() && p.bob.ready_to_negotiate_close());
}

#[test]
fn payments_both_ways_then_cooperative_close() {
    let mut p = Pair::open(Msat(0), FeeratePerKw(1000));
    for _ in 0..10 {
        pay(&mut p, false, Msat(30_000_000));
    }
    for _ in 0..5 {
        pay(&mut p, true, Msat(3_000_000));
    }
    let a = p.alice.view(ViewOf::CurrentLocal);
    assert_eq!(
        (a.local, a.remote),
        (Msat(9_715_000_000), Msat(285_000_000))
    );
    assert!(a.htlcs.is_empty());

    // No new HTLC once shutdown is sent.
    shutdown_both(&mut p);
    assert_eq!(
        p.add(false, Msat(1_000_000), 500).err(),
        Some(ChannelError::ShuttingDown)
    );

    let first = p
        .alice
        .start_closing(
            500,
            FeeRange {
                min_fee_satoshis: 300,
                max_fee_satoshis: 1000,
            },
        )
        .unwrap()
        .expect("funder proposes");
    assert_eq!(
        p.bob
            .start_closing(
                0,
                FeeRange {
                    min_fee_satoshis: 200,
                    max_fee_satoshis: 800
                }
            )
            .unwrap(),
        None
    );
    let bob_out = p.bob.receive_closing_signed(&first).unwrap();
    let reply = bob_out.reply.expect("bob echoes the fee");
    assert_eq!(reply.fee_satoshis, 500);
    let alice_out = p.alice.receive_closing_signed(&reply).unwrap();
    assert_eq!(alice_out.reply, None);
    let tx = alice_out.closing_tx.expect("alice done");
    assert_eq!(Some(tx.clone()), bob_out.closing_tx);

    let spent = [(funding_outpoint(), funding_txout(&p.alice))];
    consensus_verify(&tx, &spent).expect("closing tx valid");
    let paid = |s: ScriptBuf| {
        tx.output
            .iter()
            .find(|o| o.script_pubkey == s)
            .map(|o| o.value.to_sat())
    };
    assert_eq!(paid(p2wsh(1)), Some(9_715_000 - 500), "funder pays the fee");
    assert_eq!(paid(p2wsh(2)), Some(285_000));
    assert_eq!(
        tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>() + 500,
        FUNDING_SAT
    );
}

#[test]
fn closing_fee_negotiation_converges_in_the_overlap() {
    let mut p = Pair::open(Msat(1_000_000_000), FeeratePerKw(1000));
    shutdown_both(&mut p);
    let first = p
        .alice
        .start_closing(
            1500,
            FeeRange {
                min_fee_satoshis: 1000,
                max_fee_satoshis: 2000,
            },
        )
        .unwrap()
        .unwrap();
    p.bob
        .start_closing(
            0,
            FeeRange {
                min_fee_satoshis: 200,
                max_fee_satoshis: 1200,
            },
        )
        .unwrap();
    let counter = p.bob.receive_closing_signed(&first).unwrap();
    assert_eq!(counter.closing_tx, None);
    let counter = counter.reply.unwrap();
    assert_eq!(
        counter.fee_satoshis, 1200,
        "bob counters at the top of the overlap"
    );
    let agreed = p.alice.receive_closing_signed(&counter).unwrap();
    let echo = agreed.reply.unwrap();
    assert_eq!(echo.fee_satoshis, 1200);
    let done = p.bob.receive_closing_signed(&echo).unwrap();
    assert_eq!(done.closing_tx, agreed.closing_tx);
    consensus_verify(
        &done.closing_tx.unwrap(),
        &[(funding_outpoint(), funding_txout(&p.alice))],
    )
    .unwrap();

    // Disjoint ranges are refused.
    let mut q = Pair::open(Msat(1_000_000_000), FeeratePerKw(1000));
    shutdown_both(&mut q);
    let first = q
        .alice
        .start_closing(
            5000,
            FeeRange {
                min_fee_satoshis: 4000,
                max_fee_satoshis: 6000,
            },
        )
        .unwrap()
        .unwrap();
    q.bob
        .start_closing(
            0,
            FeeRange {
                min_fee_satoshis: 100,
                max_fee_satoshis: 300,
            },
        )
        .unwrap();
    let before = q.bob.clone();
    assert!(q.bob.receive_closing_signed(&first).is_err());
    assert!(q.bob == before);
}

#[test]
fn force_close_with_htlcs_in_flight_resolves_on_chain() {
    force_close_with_htlcs_in_flight(false);
}

/// The same under option_anchors_zero_fee_htlc_tx: the HTLC transactions are free and
/// carry nSequence 1, and so do Bob's claims and his to_remote sweep (1-block CSV).
#[test]
fn force_close_with_htlcs_in_flight_resolves_on_chain_anchors() {
    force_close_with_htlcs_in_flight(true);
}

/// A channel with an HTLC offered each way (Alice's 50,000 sat expiring at 600, Bob's
/// 20,000 sat at 610), both committed.
fn two_htlcs_in_flight(anchors: bool) -> Pair {
    let mut p = Pair::open_with(Msat(2_000_000_000), FeeratePerKw(2000), anchors);
    p.add(false, Msat(50_000_000), 600).unwrap();
    p.add(true, Msat(20_000_000), 610).unwrap();
    p.settle();
    p
}

fn force_close_with_htlcs_in_flight(anchors: bool) {
    let p = two_htlcs_in_flight(anchors);

    let (commit, built) = p.alice.signed_local_commitment().unwrap();
    let spent = [(funding_outpoint(), funding_txout(&p.alice))];
    consensus_verify(&commit, &spent).expect("commitment valid");
    assert_eq!(built.htlcs.len(), 2);

    // Second stage: HTLC-timeout for Alice's offer, HTLC-success (with the preimage) for
    // Bob's.
    let preimages = p.preimages.clone();
    let htlc_txs = p
        .alice
        .signed_local_htlc_txs(|h| preimages.iter().copied().find(|x| x.payment_hash() == *h));
    assert_eq!(htlc_txs.len(), 2);
    let commit_outs: Vec<(OutPoint, TxOut)> = commit
        .output
        .iter()
        .enumerate()
        .map(|(i, o)| (OutPoint::new(commit.compute_txid(), i as u32), o.clone()))
        .collect();
    for tx in &htlc_txs {
        consensus_verify(tx, &commit_outs).expect("HTLC tx valid");
    }
    // Without the preimage only the timeout can be built.
    assert_eq!(p.alice.signed_local_htlc_txs(|_| None).len(), 1);

    // Alice's to_local after the CSV delay, and the output of her HTLC-timeout likewise.
    let delay = p.alice.setup().remote_params.to_self_delay;
    let key = p.alice.local_delayed_key(p.alice.local_commitment_number());
    let (vout, ws) = built.to_local.clone().expect("to_local");
    let out = OutPoint::new(commit.compute_txid(), vout);
    let value = commit.output[vout as usize].value;
    let sweep =
        build_delayed_sweep(out, value, &ws, delay, &key, p2wsh(9), FeeratePerKw(1000)).unwrap();
    consensus_verify(&sweep, &[(out, commit.output[vout as usize].clone())]).expect("sweep valid");
    // One block early is refused by the script (CSV).
    let early = build_delayed_sweep(
        out,
        value,
        &ws,
        delay - 1,
        &key,
        p2wsh(9),
        FeeratePerKw(1000),
    )
    .unwrap();
    assert!(consensus_verify(&early, &[(out, commit.output[vout as usize].clone())]).is_err());

    let timeout = htlc_txs
        .iter()
        .find(|t| t.lock_time.to_consensus_u32() == 600)
        .unwrap();
    let t_out = OutPoint::new(timeout.compute_txid(), 0);
    let second = build_delayed_sweep(
        t_out,
        timeout.output[0].value,
        &ws_of_htlc_output(&p, &built),
        delay,
        &key,
        p2wsh(9),
        FeeratePerKw(1000),
    )
    .unwrap();
    consensus_verify(&second, &[(t_out, timeout.output[0].clone())])
        .expect("second-stage sweep valid");

    // Bob's commitment is valid too.
    let (bob_commit, _) = p.bob.signed_local_commitment().unwrap();
    consensus_verify(&bob_commit, &spent).unwrap();

    // Alice's resolutions of her own commitment: HTLC txs and their delayed sweeps.
    let find = |h: &PaymentHash| preimages.iter().copied().find(|x| x.payment_hash() == *h);
    let resolutions: Vec<Transaction> = p
        .alice
        .signed_local_htlc_txs(find)
        .into_iter()
        .flat_map(|tx| {
            let sweep = p
                .alice
                .sweep_local_htlc_output(&tx, p2wsh(3), FeeratePerKw(1000))
                .expect("sweep");
            [tx, sweep]
        })
        .collect();
    assert_eq!(
        resolutions.len(),
        4,
        "two HTLC txs and two second-stage sweeps"
    );
    let mut outs = commit_outs.clone();
    for tx in &resolutions {
        consensus_verify(tx, &outs).expect("resolution valid");
        outs.push((OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone()));
    }
    // Bob's claims on Alice's commitment (his remote one): Alice's offer with the
    // preimage, his own offer after its timeout.
    let claims =
        p.bob
            .remote_htlc_claims(&commit.compute_txid(), find, p2wsh(4), FeeratePerKw(1000));
    assert_eq!(claims.len(), 2);
    for tx in &claims {
        consensus_verify(tx, &commit_outs).expect("claim valid");
    }
    assert!(claims.iter().any(|t| t.lock_time.to_consensus_u32() == 610));
    // Bob's own balance on Alice's commitment.
    let to_remote = p
        .bob
        .sweep_to_remote(&commit, p2wsh(4), FeeratePerKw(1000))
        .expect("bob has a to_remote output")
        .unwrap();
    consensus_verify(&to_remote, &commit_outs).expect("to_remote sweep valid");
    if anchors {
        assert_eq!(
            commit.output.len(),
            6,
            "two anchors, to_local, to_remote, two HTLCs"
        );
        for tx in claims.iter().chain([&to_remote]) {
            assert_eq!(tx.input[0].sequence, bitcoin::Sequence::from_height(1));
        }
    }
    // Without the preimage Bob can only wait for his own offer to time out.
    assert_eq!(
        p.bob
            .remote_htlc_claims(
                &commit.compute_txid(),
                |_| None,
                p2wsh(4),
                FeeratePerKw(1000)
            )
            .len(),
        1
    );
}

fn ws_of_htlc_output(p: &Pair, built: &channel::commitment::CommitmentTx) -> ScriptBuf {
    channel::script::to_local_script(
        &built.keys.revocation_key,
        p.alice.setup().remote_params.to_self_delay,
        &built.keys.local_delayed_key,
    )
}

#[test]
fn breach_justice_takes_to_local_and_every_htlc() {
    let mut p = Pair::open(Msat(2_000_000_000), FeeratePerKw(1500));
    p.add(false, Msat(40_000_000), 700).unwrap();
    p.add(false, Msat(7_000_000), 701).unwrap();
    p.add(true, Msat(30_000_000), 702).unwrap();
    p.settle();
    // Alice's commitment with the three HTLCs; the next payment makes her revoke it.
    let (old_commit, old_built) = p.alice.signed_local_commitment().unwrap();
    assert_eq!(old_built.htlcs.len(), 3);
    pay(&mut p, false, Msat(1_000_000));

    // Bob holds the revocation of that commitment.
    let revoked = p.revoked[1]
        .iter()
        .find(|r| r.commitment.txid() == old_commit.compute_txid())
        .expect("bob received the revocation of alice's old commitment")
        .clone();
    let dest = p2wsh(7);
    let justice = p
        .bob
        .justice_tx(&revoked, dest.clone(), FeeratePerKw(2000))
        .unwrap();
    let outs = revoked_outputs(&revoked.commitment);
    assert_eq!(outs.len(), 4, "to_local and three HTLC outputs");
    assert_eq!(justice.input.len(), 4);
    let spent: Vec<(OutPoint, TxOut)> = outs
        .iter()
        .map(|o| {
            (
                o.outpoint,
                old_commit.output[o.outpoint.vout as usize].clone(),
            )
        })
        .collect();
    consensus_verify(&justice, &spent).expect("justice tx valid");
    let taken: u64 = spent.iter().map(|(_, o)| o.value.to_sat()).sum();
    let fee = FeeratePerKw(2000).fee_for_weight(justice.weight().to_wu());
    assert_eq!(justice.output[0].script_pubkey, dest);
    // The weight estimate assumed 73-byte signatures; real ones are at most that.
    assert!(justice.output[0].value.to_sat() <= taken - fee + 8);
    assert!(justice.output[0].value.to_sat() >= taken - fee - 8 * 4);

    // Alice's current commitment is not revoked: a forged secret gets nothing.
    let mut forged = revoked.clone();
    forged.per_commitment_secret = [5; 32];
    assert_eq!(
        p.bob.justice_tx(&forged, dest, FeeratePerKw(2000)).err(),
        Some(ChannelError::InvalidRevocationSecret)
    );
}

/// The cheater broadcasts its revoked commitment together with its pre-signed
/// HTLC-success (for an HTLC it knows the preimage of) and HTLC-timeout: each output has
/// a justice transaction of its own, so only the two HTLC ones are lost, and the
/// second-stage outputs are taken with the revocation key. Script-checked by Bitcoin
/// Core's interpreter, with and without anchors.
fn breach_with_second_stage_race(anchors: bool) {
    let mut p = Pair::open_with(Msat(2_000_000_000), FeeratePerKw(1500), anchors);
    let to_alice = p.add(true, Msat(40_000_000), 700).unwrap();
    p.add(false, Msat(30_000_000), 701).unwrap();
    p.settle();
    let (old_commit, old_built) = p.alice.signed_local_commitment().unwrap();
    assert_eq!(old_built.htlcs.len(), 2);
    let preimage = p.preimage(&to_alice).unwrap();
    let second_stage = p
        .alice
        .signed_local_htlc_txs(|h| (*h == to_alice).then_some(preimage));
    assert_eq!(second_stage.len(), 2, "HTLC-success and HTLC-timeout");
    pay(&mut p, false, Msat(1_000_000));
    let revoked = p.revoked[1]
        .iter()
        .find(|r| r.commitment.txid() == old_commit.compute_txid())
        .expect("alice's old commitment revoked")
        .clone();
    let prevout = |o: OutPoint| (o, old_commit.output[o.vout as usize].clone());

    let dest = p2wsh(9);
    let justice = p
        .bob
        .justice_txs(&revoked, dest.clone(), |_| FeeratePerKw(2000))
        .unwrap();
    assert_eq!(justice.len(), 3, "to_local and two HTLC outputs, apart");
    for tx in &justice {
        assert_eq!(tx.input.len(), 1);
        consensus_verify(tx, &[prevout(tx.input[0].previous_output)]).expect("justice valid");
    }
    for tx in &second_stage {
        // The cheater's transaction is valid: it spends one HTLC output of the commitment.
        consensus_verify(tx, &[prevout(tx.input[0].previous_output)]).expect("cheater's tx");
        let contested: Vec<_> = justice
            .iter()
            .filter(|j| j.input[0].previous_output == tx.input[0].previous_output)
            .collect();
        assert_eq!(contested.len(), 1, "only one justice transaction is lost");
        let claim = p
            .bob
            .second_stage_justice(&revoked, tx, dest.clone(), FeeratePerKw(2000))
            .expect("a second-stage output to take")
            .unwrap();
        let out = OutPoint::new(tx.compute_txid(), 0);
        assert_eq!(claim.input[0].previous_output, out);
        consensus_verify(&claim, &[(out, tx.output[0].clone())]).expect("claim valid");
        assert_eq!(claim.output[0].script_pubkey, dest);
    }
    // The tower's penalty: to_local and Bob's own to_remote, nothing the race touches.
    let penalty = p
        .bob
        .penalty_tx(&revoked, dest.clone(), FeeratePerKw(2000))
        .unwrap();
    assert_eq!(penalty.input.len(), 2);
    for tx in &second_stage {
        assert!(penalty
            .input
            .iter()
            .all(|i| i.previous_output != tx.input[0].previous_output));
    }
    let spent: Vec<_> = penalty
        .input
        .iter()
        .map(|i| prevout(i.previous_output))
        .collect();
    consensus_verify(&penalty, &spent).expect("penalty valid");
    // Nothing to take from our own justice or from the commitment itself.
    for tx in justice.iter().chain([&old_commit]) {
        assert!(p
            .bob
            .second_stage_justice(&revoked, tx, dest.clone(), FeeratePerKw(2000))
            .is_none());
    }
}

#[test]
fn breach_with_second_stage_race_static_remotekey() {
    breach_with_second_stage_race(false);
}

#[test]
fn breach_with_second_stage_race_anchors() {
    breach_with_second_stage_race(true);
}

#[test]
fn lost_messages_are_retransmitted_after_reestablish() {
    let mut p = Pair::open(Msat(2_000_000_000), FeeratePerKw(1000));
    // Alice's add and commitment_signed are lost.
    p.add(false, Msat(5_000_000), 500).unwrap();
    let m = p.alice.send_commitment().unwrap();
    p.send(false, Message::CommitmentSigned(m));
    p.reconnect().unwrap();
    assert_eq!(p.queues[1].len(), 2, "add and commitment_signed again");
    p.settle();
    assert_eq!(p.bob.view(ViewOf::CurrentLocal).htlcs.len(), 1);

    // Bob's revoke_and_ack is lost.
    p.add(true, Msat(3_000_000), 500).unwrap();
    let m = p.bob.send_commitment().unwrap();
    p.send(true, Message::CommitmentSigned(m));
    p.deliver(false).unwrap().unwrap(); // add
    p.deliver(false).unwrap().unwrap(); // commitment_signed; alice queues revoke
    p.queues[1].clear();
    p.reconnect().unwrap();
    assert!(matches!(
        p.queues[1].front(),
        Some((Message::RevokeAndAck(_), _))
    ));
    p.settle();
    let a = p.alice.view(ViewOf::CurrentLocal);
    let b = p.bob.view(ViewOf::CurrentLocal);
    assert_eq!((a.local, a.remote, a.htlcs.len()), (b.remote, b.local, 2));

    // A peer that claims a wrong secret of ours is refused.
    let mut bad = p.bob.reestablish_message();
    bad.your_last_per_commitment_secret = [1; 32];
    assert!(matches!(
        p.alice.handle_reestablish(&bad),
        Err(ChannelError::Reestablish(_))
    ));
    // A peer that claims to be ahead of us is refused.
    let mut ahead = p.bob.reestablish_message();
    ahead.next_revocation_number += 5;
    assert!(matches!(
        p.alice.handle_reestablish(&ahead),
        Err(ChannelError::Reestablish(_))
    ));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut p = Pair::open(Msat(2_000_000_000), FeeratePerKw(1000));
    let hash = p.add(false, Msat(5_000_000), 500).unwrap();
    p.settle();
    let cid = p.bob.channel_id();
    let htlc = |id, amount_msat, cltv_expiry| UpdateAddHtlc {
        channel_id: cid,
        id,
        amount_msat,
        payment_hash: PaymentHash([3; 32]),
        cltv_expiry,
        onion_routing_packet: OnionPacket::default(),
        blinding_point: None,
    };
    let check = |r: Result<(), ChannelError>,
                 before: &channel::state::Channel,
                 after: &channel::state::Channel,
                 want: &str| {
        let e = r.expect_err(want);
        assert!(format!("{e:?}").contains(want), "{e:?} is not {want}");
        assert!(before == after, "{want}: state unchanged");
    };

    let before = p.bob.clone();
    let r = p.bob.receive_add_htlc(&htlc(0, 1_000_000, 500));
    check(r, &before, &p.bob, "UnexpectedHtlcId");
    let r = p.bob.receive_add_htlc(&htlc(1, 999, 500));
    check(r, &before, &p.bob, "AmountBelowMinimum");
    let r = p.bob.receive_add_htlc(&htlc(1, u64::MAX, 500));
    check(r, &before, &p.bob, "AmountExceedsCapacity");
    let r = p.bob.receive_add_htlc(&htlc(1, 9_000_000_000, 500));
    check(r, &before, &p.bob, "InFlightExceeded");
    let r = p.bob.receive_add_htlc(&htlc(1, 1_000_000, 500_000_000));
    check(r, &before, &p.bob, "InvalidCltvExpiry");
    let r = p.bob.receive_update_fee(&UpdateFee {
        channel_id: cid,
        feerate_per_kw: 0,
    });
    check(r, &before, &p.bob, "InvalidFeeUpdate");
    let r = p
        .bob
        .receive_fulfill(&UpdateFulfillHtlc {
            channel_id: cid,
            id: 0,
            payment_preimage: PaymentPreimage([0; 32]),
        })
        .map(|_| ());
    check(r, &before, &p.bob, "UnknownHtlc");
    let r = p
        .alice
        .receive_fulfill(&UpdateFulfillHtlc {
            channel_id: cid,
            id: 0,
            payment_preimage: PaymentPreimage([0; 32]),
        })
        .map(|_| ());
    let alice_before = p.alice.clone();
    check(r, &alice_before, &p.alice, "WrongPreimage");
    let r = p
        .alice
        .receive_fail_malformed(&UpdateFailMalformedHtlc {
            channel_id: cid,
            id: 0,
            sha256_of_onion: [0; 32],
            failure_code: 0x4000,
        })
        .map(|_| ());
    check(r, &alice_before, &p.alice, "MissingBadOnion");

    // The receiver checks the sender can pay: Bob has 2,000,000 sat and must keep
    // 100,000 sat of reserve.
    let r = p.alice.receive_add_htlc(&UpdateAddHtlc {
        id: 0,
        ..htlc(0, 1_950_000_000, 500)
    });
    check(r, &alice_before, &p.alice, "InsufficientBalance");

    // A commitment_signed with a valid signature but the wrong HTLC signature count, and
    // one with a signature of the wrong commitment.
    let m = p.alice.send_fail(HtlcId(0), vec![]).err();
    assert!(m.is_some(), "alice cannot fail her own offer");
    let preimage = p.preimage(&hash).unwrap();
    let f = p.bob.send_fulfill(HtlcId(0), preimage).unwrap();
    p.alice.receive_fulfill(&f).unwrap();
    let good = p.bob.send_commitment().unwrap();
    let alice_before = p.alice.clone();
    let mut extra = good.clone();
    extra.htlc_signatures.push(good.signature);
    check(
        p.alice.receive_commitment(&extra).map(|_| ()),
        &alice_before,
        &p.alice,
        "WrongHtlcSignatureCount",
    );
    let mut wrong = good.clone();
    wrong.signature = bitcoin::secp256k1::ecdsa::Signature::from_compact(&[7; 64]).unwrap();
    check(
        p.alice.receive_commitment(&wrong).map(|_| ()),
        &alice_before,
        &p.alice,
        "InvalidCommitmentSignature",
    );
    let raa = p.alice.receive_commitment(&good).unwrap();

    // A revocation secret for the wrong commitment, then a replay of the right one.
    let bob_before = p.bob.clone();
    let mut wrong_secret = raa.clone();
    wrong_secret.per_commitment_secret = p.alice_secrets.per_commitment_secret(CommitmentNumber(7));
    check(
        p.bob.receive_revoke(&wrong_secret).map(|_| ()),
        &bob_before,
        &p.bob,
        "InvalidRevocationSecret",
    );
    p.bob.receive_revoke(&raa).unwrap();
    let bob_before = p.bob.clone();
    check(
        p.bob.receive_revoke(&raa).map(|_| ()),
        &bob_before,
        &p.bob,
        "Unexpected",
    );
    // A message for another channel.
    let r = p.bob.receive_update_fee(&UpdateFee {
        channel_id: ChannelId([9; 32]),
        feerate_per_kw: 300,
    });
    check(r, &bob_before, &p.bob, "WrongChannel");
}

/// An option_anchors_zero_fee_htlc_tx channel between the two parties: payments both
/// ways with HTLC signatures made SIGHASH_SINGLE|ANYONECANPAY; the commitment has both
/// anchors (330 sat each, paid by the funder) and a P2WSH to_remote; the zero-fee HTLC
/// transactions (nSequence 1) pass the interpreter.
#[test]
fn anchor_channel_commitments_and_htlc_transactions() {
    let mut p = Pair::open_with(Msat(2_000_000_000), FeeratePerKw(2000), true);
    for _ in 0..3 {
        pay(&mut p, false, Msat(30_000_000));
        pay(&mut p, true, Msat(7_000_000));
    }
    p.add(false, Msat(50_000_000), 600).unwrap();
    p.add(true, Msat(20_000_000), 610).unwrap();
    p.settle();

    let (commit, built) = p.alice.signed_local_commitment().unwrap();
    consensus_verify(&commit, &[(funding_outpoint(), funding_txout(&p.alice))])
        .expect("commitment valid");
    let anchors = commit
        .output
        .iter()
        .filter(|o| o.value.to_sat() == channel::commitment::ANCHOR_OUTPUT_SAT)
        .count();
    assert_eq!(anchors, 2, "both anchors");
    let to_remote = &commit.output[built.to_remote.expect("to_remote") as usize];
    assert!(
        to_remote.script_pubkey.is_p2wsh(),
        "to_remote behind a CSV of 1"
    );
    // Alice funds: her balance pays the fee and the two anchors.
    let a = p.alice.view(ViewOf::CurrentLocal);
    let (to_local_vout, _) = built.to_local.clone().expect("to_local");
    assert_eq!(
        commit.output[to_local_vout as usize].value.to_sat(),
        a.local.to_sat() - built.fee_sat - 2 * channel::commitment::ANCHOR_OUTPUT_SAT
    );

    let preimages = p.preimages.clone();
    let htlc_txs = p
        .alice
        .signed_local_htlc_txs(|h| preimages.iter().copied().find(|x| x.payment_hash() == *h));
    assert_eq!(htlc_txs.len(), 2);
    let commit_outs: Vec<(OutPoint, TxOut)> = commit
        .output
        .iter()
        .enumerate()
        .map(|(i, o)| (OutPoint::new(commit.compute_txid(), i as u32), o.clone()))
        .collect();
    for tx in &htlc_txs {
        assert_eq!(tx.input[0].sequence.0, 1);
        let spent = &commit_outs[tx.input[0].previous_output.vout as usize].1;
        assert_eq!(tx.output[0].value, spent.value, "zero fee");
        consensus_verify(tx, &commit_outs).expect("HTLC tx valid");
        // The counterparty's signature is SIGHASH_SINGLE|ANYONECANPAY (BOLT 3), ours
        // SIGHASH_ALL: once a fee input is added, ours is made again over the whole
        // transaction (so nobody can move our input into a transaction of theirs).
        assert_eq!(*tx.input[0].witness.nth(1).unwrap().last().unwrap(), 0x83);
        assert_eq!(*tx.input[0].witness.nth(2).unwrap().last().unwrap(), 0x01);
        let (mut funded, coin) = with_fee_input(tx);
        let mut spent = commit_outs.clone();
        spent.push(coin);
        assert!(
            consensus_verify(&funded, &spent).is_err(),
            "our first signature does not cover the fee input"
        );
        p.alice.sign_local_htlc_input(&mut funded).expect("ours");
        consensus_verify(&funded, &spent).expect("HTLC tx with a fee input valid");
        assert_eq!(funded.input[0].witness.nth(1), tx.input[0].witness.nth(1));
        let mut stranger = funded.clone();
        stranger.input[0].previous_output.vout = 99;
        assert_eq!(
            p.alice.sign_local_htlc_input(&mut stranger),
            Err(ChannelError::NotOurHtlcTx)
        );
    }
}

/// `tx` with a P2WPKH input of 10,000 sat (signed SIGHASH_ALL) and a 9,000 sat change
/// output appended, as a wallet pays an anchor channel's HTLC transaction: 1,000 sat fee.
fn with_fee_input(tx: &Transaction) -> (Transaction, (OutPoint, TxOut)) {
    use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
    use bitcoin::sighash::{EcdsaSighashType, SighashCache};
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
    let pk = bitcoin::CompressedPublicKey(key.public_key(&secp));
    let script = ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
    let coin = (
        OutPoint::new(bitcoin::Txid::from_byte_array([7; 32]), 1),
        TxOut {
            value: bitcoin::Amount::from_sat(10_000),
            script_pubkey: script.clone(),
        },
    );
    let mut funded = tx.clone();
    funded.input.push(bitcoin::TxIn {
        previous_output: coin.0,
        ..Default::default()
    });
    funded.output.push(TxOut {
        value: bitcoin::Amount::from_sat(9_000),
        script_pubkey: script.clone(),
    });
    let hash = SighashCache::new(&funded)
        .p2wpkh_signature_hash(1, &script, coin.1.value, EcdsaSighashType::All)
        .unwrap();
    let sig = bitcoin::ecdsa::Signature {
        signature: secp.sign_ecdsa(&Message::from(hash), &key),
        sighash_type: EcdsaSighashType::All,
    };
    funded.input[1].witness = bitcoin::Witness::p2wpkh(&sig, &pk.0);
    (funded, coin)
}

/// Dust HTLCs (trimmed to fees: a force close gives them to miners) are capped at
/// `MAX_DUST_HTLC_EXPOSURE` across both directions: at 10,000 sat/kw a 5,000 sat HTLC is
/// dust, ten of them reach 50,000 sat, the eleventh is refused whoever offers it; a
/// non-dust HTLC still goes.
#[test]
fn dust_htlc_exposure_is_capped() {
    let mut p = Pair::open(Msat(2_000_000_000), FeeratePerKw(10_000));
    let dust = Msat(5_000_000);
    for i in 0..10 {
        let from_bob = i % 3 == 0;
        p.add(from_bob, dust, 700).expect("within the cap");
    }
    p.settle();
    let probe = channel::state::Htlc {
        offerer: Side::Local,
        id: HtlcId(99),
        amount: dust,
        payment_hash: PaymentHash([0; 32]),
        cltv_expiry: 700,
        onion: Default::default(),
    };
    assert!(p.alice.is_dust(&probe));
    assert_eq!(p.alice.dust_exposure(None), Msat(50_000_000));
    assert_eq!(p.bob.dust_exposure(None), Msat(50_000_000));
    for from_bob in [false, true] {
        assert_eq!(
            p.add(from_bob, dust, 700).err(),
            Some(ChannelError::DustExposure(Msat(55_000_000)))
        );
    }
    let big = Msat(200_000_000);
    assert!(!p.alice.is_dust(&channel::state::Htlc {
        amount: big,
        ..probe
    }));
    p.add(false, big, 700).expect("not dust");
    p.settle();
    assert_eq!(p.alice.dust_exposure(None), Msat(50_000_000));
    // An update_fee at a rate that trims the large HTLC too would put 250,000 sat to
    // miners: refused, nothing changed; one that trims nothing more is taken.
    let before = p.bob.clone();
    let cid = p.bob.channel_id();
    assert_eq!(
        p.bob.receive_update_fee(&UpdateFee {
            channel_id: cid,
            feerate_per_kw: 300_000,
        }),
        Err(ChannelError::DustExposure(Msat(250_000_000)))
    );
    assert_eq!(p.bob.state(), before.state());
    p.bob
        .receive_update_fee(&UpdateFee {
            channel_id: cid,
            feerate_per_kw: 10_500,
        })
        .expect("within the cap");
}

/// BOLT 2's fee spike buffer: Alice, the funder, may offer an HTLC only if what she keeps
/// still pays the commitment fee at twice the rate with one more HTLC on it, above her
/// reserve (on an anchor channel, at the current rate). The offer refused changes
/// nothing; the peer's own check is unchanged (Bob may still take what BOLT 2 allows).
#[test]
fn the_funder_keeps_a_fee_spike_buffer() {
    let reserve = 100_000;
    let rate = 10_000u64;
    // What Alice must keep after an HTLC on a static_remotekey channel: the fee at twice
    // the rate with the HTLC and one more (BOLT 3 weights 724 + 2 × 172).
    let buffer = 2 * rate * (724 + 2 * 172) / 1000;
    // On an anchor channel: the rate itself, base weight 1,124, and the two anchors.
    let anchor_buffer = rate * (1124 + 2 * 172) / 1000 + 660;
    for anchors in [false, true] {
        // Alice keeps 200,000 sat of the channel.
        let alice = 200_000;
        let push = Msat((FUNDING_SAT - alice) * 1000);
        let mut p = Pair::open_with(push, FeeratePerKw(rate as u32), anchors);
        let needed = if anchors { anchor_buffer } else { buffer };
        let too_much = Msat((alice - reserve - needed + 1) * 1000);
        let before = p.alice.clone();
        let r = p.add(false, too_much, 500);
        assert!(
            matches!(r, Err(ChannelError::InsufficientBalance { .. })),
            "anchors {anchors}: {r:?}"
        );
        assert!(p.alice == before, "a refused offer changes nothing");
        let within = Msat((alice - reserve - needed) * 1000);
        p.add(false, within, 500).expect("within the buffer");
        p.settle();
    }
    // The anchor buffer is the smaller: an amount refused on static_remotekey is offered
    // on an anchor channel.
    assert!(anchor_buffer < buffer);
}

/// The outputs only their owner can take, without a deadline, of two channels (Alice's
/// to_local and the outputs of her HTLC transactions; Bob's to_remote) swept in one
/// transaction: each channel signs its own inputs over the whole transaction, and
/// Bitcoin Core's interpreter accepts every input. Anything with a deadline, or another
/// channel's output, is refused.
#[test]
fn own_outputs_of_two_channels_swept_in_one_transaction() {
    own_outputs_batched(false);
    own_outputs_batched(true);
}

fn own_outputs_batched(anchors: bool) {
    use bitcoin::{absolute::LockTime, transaction::Version, Amount};
    let p = two_htlcs_in_flight(anchors);
    let (commit, built) = p.alice.signed_local_commitment().unwrap();
    let preimages = p.preimages.clone();
    let find = |h: &PaymentHash| preimages.iter().copied().find(|x| x.payment_hash() == *h);
    let htlc_txs = p.alice.signed_local_htlc_txs(find);
    assert_eq!(htlc_txs.len(), 2);
    let rate = FeeratePerKw(1000);
    let number = p.alice.local_commitment_number();
    // (whether Bob signs it, its single-input sweep)
    let mut singles = vec![(
        false,
        p.alice
            .sweep_local_to_local(number, &built, p2wsh(9), rate)
            .unwrap()
            .unwrap(),
    )];
    for tx in &htlc_txs {
        singles.push((
            false,
            p.alice.sweep_local_htlc_output(tx, p2wsh(9), rate).unwrap(),
        ));
    }
    singles.push((
        true,
        p.bob
            .sweep_to_remote(&commit, p2wsh(9), rate)
            .unwrap()
            .unwrap(),
    ));
    let mut spent: Vec<(OutPoint, TxOut)> = commit
        .output
        .iter()
        .enumerate()
        .map(|(i, o)| (OutPoint::new(commit.compute_txid(), i as u32), o.clone()))
        .collect();
    for tx in &htlc_txs {
        spent.push((OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone()));
    }
    let value_of = |o: &OutPoint| spent.iter().find(|(p, _)| p == o).unwrap().1.value;
    let total: Amount = singles
        .iter()
        .map(|(_, t)| value_of(&t.input[0].previous_output))
        .sum();
    let mut batch = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: singles.iter().map(|(_, t)| t.input[0].clone()).collect(),
        output: vec![TxOut {
            value: total - Amount::from_sat(2_000),
            script_pubkey: p2wsh(9),
        }],
    };
    for (i, (bob, t)) in singles.iter().enumerate() {
        let ch = if *bob { &p.bob } else { &p.alice };
        let v = value_of(&t.input[0].previous_output);
        ch.sign_own_sweep_input(&mut batch, i, v, &t.input[0].witness)
            .expect("our own output");
    }
    consensus_verify(&batch, &spent).expect("every input of the batch valid");
    let singles_weight: u64 = singles.iter().map(|(_, t)| t.weight().to_wu()).sum();
    assert!(
        batch.weight().to_wu() + 3 * 40 * 4 < singles_weight,
        "one transaction's overhead and output instead of four"
    );
    // Each signature covers the whole transaction.
    let mut tampered = batch.clone();
    tampered.output[0].value -= Amount::from_sat(1);
    assert!(consensus_verify(&tampered, &spent).is_err());

    let refused = |ch: &channel::state::Channel, template: &bitcoin::Witness, index: usize| {
        let mut b = batch.clone();
        let r = ch.sign_own_sweep_input(&mut b, index, Amount::from_sat(1_000), template);
        matches!(r, Err(ChannelError::NotOurSweep)) && b == batch
    };
    // An HTLC claim (it has a deadline; the counterparty may take the output).
    let claims = p
        .bob
        .remote_htlc_claims(&commit.compute_txid(), find, p2wsh(4), rate);
    assert!(!claims.is_empty());
    for c in &claims {
        assert!(refused(&p.bob, &c.input[0].witness, 0));
    }
    // Another channel's output, either way round.
    assert!(refused(&p.bob, &singles[0].1.input[0].witness, 0));
    assert!(refused(&p.alice, &singles[3].1.input[0].witness, 3));
    // An input the transaction does not have.
    assert!(refused(&p.alice, &singles[0].1.input[0].witness, 4));
}
