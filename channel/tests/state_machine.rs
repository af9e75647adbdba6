//! Property test of the BOLT 2 state machine: two in-memory parties driven through random
//! interleavings of adds, fulfills, fails, fee updates, commitment dances, reconnections
//! and attacks.

mod common;

use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{OutPoint, ScriptBuf};
use channel::keys::point_from_secret;
use channel::msgs::*;
use channel::state::{Channel, ChannelError, ChannelState, HtlcStatus, ViewOf};
use channel::*;
use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Action {
    Add { bob: bool, amount: u64, cltv: u32 },
    Fulfill { bob: bool, pick: usize },
    Fail { bob: bool, pick: usize },
    Fee { rate: u32 },
    Commit { bob: bool },
    Deliver { bob: bool, count: u8 },
    Reconnect,
    Settle,
    Restart { bob: bool },
    Attack { bob: bool, kind: u8 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<bool>(), prop_oneof![1_000u64..600_000u64, 546_000u64..2_000_000, 1_000_000u64..900_000_000], 100u32..1000)
            .prop_map(|(bob, amount, cltv)| Action::Add { bob, amount, cltv }),
        3 => (any::<bool>(), any::<usize>()).prop_map(|(bob, pick)| Action::Fulfill { bob, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(bob, pick)| Action::Fail { bob, pick }),
        1 => (253u32..20_000).prop_map(|rate| Action::Fee { rate }),
        4 => any::<bool>().prop_map(|bob| Action::Commit { bob }),
        8 => (any::<bool>(), 1u8..4).prop_map(|(bob, count)| Action::Deliver { bob, count }),
        1 => Just(Action::Reconnect),
        2 => Just(Action::Settle),
        1 => any::<bool>().prop_map(|bob| Action::Restart { bob }),
        2 => (any::<bool>(), 0u8..6).prop_map(|(bob, kind)| Action::Attack { bob, kind }),
    ]
}

/// HTLCs offered to `ch` that it may now settle.
fn settleable(ch: &Channel) -> Vec<(HtlcId, PaymentHash)> {
    ch.log()
        .committed_htlcs
        .iter()
        .filter(|h| h.offerer == Side::Remote)
        .filter(|h| {
            matches!(
                ch.log().find_htlc(Side::Remote, h.id),
                Some((_, HtlcStatus::Committed))
            )
        })
        .map(|h| (h.id, h.payment_hash))
        .collect()
}

fn check_invariants(p: &Pair) {
    let capacity = Msat(FUNDING_SAT * 1000);
    for ch in [&p.alice, &p.bob] {
        for of in [
            ViewOf::CurrentLocal,
            ViewOf::CurrentRemote,
            ViewOf::NextLocal,
            ViewOf::NextRemote,
            ViewOf::Everything,
        ] {
            let v = ch.view(of);
            let htlcs: u64 = v.htlcs.iter().map(|h| h.amount.0).sum();
            assert_eq!(
                v.local.0 + v.remote.0 + htlcs,
                capacity.0,
                "{of:?} sums to capacity"
            );
        }
    }
    // Every revocation secret received matches the point of the commitment it revokes and
    // is the one the other party generated.
    for (i, revoked) in p.revoked.iter().enumerate() {
        let other = if i == 0 {
            &p.bob_secrets
        } else {
            &p.alice_secrets
        };
        for r in revoked {
            assert_eq!(
                point_from_secret(&r.per_commitment_secret),
                r.commitment.keys.per_commitment_point
            );
            assert_eq!(
                r.per_commitment_secret,
                other.per_commitment_secret(r.number)
            );
        }
    }
}

/// Sends a hostile or broken message to one party and checks it is refused with the
/// state left exactly as it was.
fn attack(p: &mut Pair, bob: bool, kind: u8, last: &Option<Message>) {
    let capacity = FUNDING_SAT * 1000;
    let ch = p.party(bob);
    let before = ch.clone();
    let channel_id = ch.channel_id();
    let bogus_sig = Signature::from_compact(&[7u8; 64]).expect("valid compact encoding");
    let result: Result<(), ChannelError> = match kind {
        0 => ch
            .receive_commitment(&CommitmentSigned {
                channel_id,
                signature: bogus_sig,
                htlc_signatures: vec![],
            })
            .map(|_| ()),
        1 => ch
            .receive_revoke(&RevokeAndAck {
                channel_id,
                per_commitment_secret: [9u8; 32],
                next_per_commitment_point: point_from_secret(&[3u8; 32]),
            })
            .map(|_| ()),
        2 => {
            let id = ch.log().updates.len() as u64; // any id: amount is checked too
            ch.receive_add_htlc(&UpdateAddHtlc {
                channel_id,
                id,
                amount_msat: capacity + 1,
                payment_hash: PaymentHash([1; 32]),
                cltv_expiry: 500,
                onion_routing_packet: OnionPacket::default(),
                blinding_point: None,
            })
        }
        3 => ch
            .receive_fulfill(&UpdateFulfillHtlc {
                channel_id,
                id: 1 << 40,
                payment_preimage: PaymentPreimage([0; 32]),
            })
            .map(|_| ()),
        4 => match last {
            // A replay of the last message this party accepted (update_fee carries no id
            // and may legitimately repeat, so it is not replayed).
            Some(Message::UpdateFee(_)) | None => return,
            Some(m) => match m {
                Message::UpdateAddHtlc(m) => ch.receive_add_htlc(m),
                Message::UpdateFulfillHtlc(m) => ch.receive_fulfill(m).map(|_| ()),
                Message::UpdateFailHtlc(m) => ch.receive_fail(m).map(|_| ()),
                Message::CommitmentSigned(m) => ch.receive_commitment(m).map(|_| ()),
                Message::RevokeAndAck(m) => ch.receive_revoke(m).map(|_| ()),
                _ => return,
            },
        },
        _ => ch
            .receive_fail(&UpdateFailHtlc {
                channel_id: ChannelId([0xee; 32]),
                id: 0,
                reason: vec![],
            })
            .map(|_| ()),
    };
    assert!(result.is_err(), "attack {kind} must be refused");
    assert!(*ch == before, "attack {kind} left the state unchanged");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_both_parties_consistent(actions in proptest::collection::vec(action(), 20..250)) {
        let mut p = Pair::open(Msat(3_000_000_000), FeeratePerKw(2500));
        let mut last: [Option<Message>; 2] = [None, None];
        for a in actions {
            match a {
                Action::Add { bob, amount, cltv } => {
                    let _ = p.add(bob, Msat(amount), cltv);
                }
                Action::Fulfill { bob, pick } | Action::Fail { bob, pick } => {
                    let fulfill = matches!(a, Action::Fulfill { .. });
                    let candidates = settleable(p.party(bob));
                    if let Some((id, hash)) = candidates.get(pick % candidates.len().max(1)).copied() {
                        let preimage = p.preimage(&hash).expect("test knows every preimage");
                        let ch = p.party(bob);
                        let msg = if fulfill {
                            Message::UpdateFulfillHtlc(ch.send_fulfill(id, preimage).expect("settleable"))
                        } else {
                            Message::UpdateFailHtlc(ch.send_fail(id, vec![1, 2, 3]).expect("failable"))
                        };
                        p.send(bob, msg);
                    }
                }
                Action::Fee { rate } => {
                    if let Ok(m) = p.alice.send_update_fee(FeeratePerKw(rate)) {
                        p.send(false, Message::UpdateFee(m));
                    }
                    // The fundee may never send update_fee.
                    prop_assert_eq!(p.bob.send_update_fee(FeeratePerKw(rate)).err(), Some(ChannelError::InvalidFeeUpdate));
                }
                Action::Commit { bob } => {
                    let ch = p.party(bob);
                    match ch.send_commitment() {
                        Ok(m) => p.send(bob, Message::CommitmentSigned(m)),
                        Err(e) => prop_assert!(matches!(e, ChannelError::AwaitingRevoke | ChannelError::NoChanges), "{e}"),
                    }
                }
                Action::Deliver { bob, count } => {
                    for _ in 0..count {
                        let next = p.queues[usize::from(bob)].front().map(|(m, _)| m.clone());
                        match p.deliver(bob) {
                            None => break,
                            Some(r) => {
                                prop_assert!(r.is_ok(), "honest message refused: {:?}", r);
                                last[usize::from(bob)] = next;
                            }
                        }
                    }
                }
                Action::Reconnect => {
                    p.reconnect().expect("reestablish between honest parties");
                    last = [None, None];
                }
                Action::Settle => p.settle(),
                Action::Restart { bob } => {
                    // The node stops and comes back from its stored state and its seed.
                    let secrets = if bob { p.bob_secrets.clone() } else { p.alice_secrets.clone() };
                    let wrong = if bob { p.alice_secrets.clone() } else { p.bob_secrets.clone() };
                    let ch = p.party(bob);
                    let stored = serde_json::to_vec(ch.state()).expect("serialize");
                    let state: ChannelState = serde_json::from_slice(&stored).expect("deserialize");
                    prop_assert!(Channel::restore(state.clone(), wrong).is_err());
                    let restored = Channel::restore(state, secrets).expect("restore");
                    prop_assert!(restored == *ch);
                    *ch = restored;
                }
                Action::Attack { bob, kind } => attack(&mut p, bob, kind, &last[usize::from(bob)]),
            }
            check_invariants(&p);
        }
        // Quiescence: both sides agree on balances and HTLCs of each commitment.
        p.settle();
        check_invariants(&p);
        let a = p.alice.view(ViewOf::CurrentLocal);
        let b = p.bob.view(ViewOf::CurrentLocal);
        prop_assert_eq!((a.local, a.remote, a.feerate), (b.remote, b.local, b.feerate));
        prop_assert_eq!(a.htlcs.len(), b.htlcs.len());
        prop_assert_eq!(p.alice.remote_commitment().txid(), p.bob.signed_local_commitment().unwrap().0.compute_txid());
        prop_assert_eq!(p.bob.remote_commitment().txid(), p.alice.signed_local_commitment().unwrap().0.compute_txid());

        // Breach: every commitment the counterparty revoked can be punished, and Bitcoin
        // Core's interpreter accepts the justice transaction.
        for (i, revoked) in p.revoked.iter().enumerate() {
            let me = if i == 0 { &p.alice } else { &p.bob };
            for r in revoked.iter().rev().take(3) {
                let outs = channel::state::revoked_outputs(&r.commitment);
                if outs.is_empty() {
                    continue;
                }
                let dest = ScriptBuf::new_p2wsh(&ScriptBuf::from_bytes(vec![0x51]).wscript_hash());
                let tx = me.justice_tx(r, dest, FeeratePerKw(253)).expect("justice tx");
                prop_assert_eq!(tx.input.len(), outs.len());
                let spent: Vec<(OutPoint, bitcoin::TxOut)> = outs
                    .iter()
                    .map(|o| (o.outpoint, r.commitment.tx.output[o.outpoint.vout as usize].clone()))
                    .collect();
                prop_assert_eq!(consensus_verify(&tx, &spent), Ok(()));
            }
        }
    }
}
