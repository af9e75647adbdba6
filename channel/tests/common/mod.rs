//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bitcoin::{OutPoint, Transaction, TxOut};

/// Bitcoin Core's script flags for segwit v0 spends: P2SH | DERSIG | NULLDUMMY |
/// CHECKLOCKTIMEVERIFY | CHECKSEQUENCEVERIFY | WITNESS (libbitcoinconsensus values).
pub const SCRIPT_FLAGS: u32 = 1 | (1 << 2) | (1 << 4) | (1 << 9) | (1 << 10) | (1 << 11);

/// Runs Bitcoin Core's script interpreter on every input of `tx` against the outputs it
/// spends.
pub fn consensus_verify(tx: &Transaction, spent: &[(OutPoint, TxOut)]) -> Result<(), String> {
    tx.verify_with_flags(
        |op| spent.iter().find(|(o, _)| o == op).map(|(_, t)| t.clone()),
        SCRIPT_FLAGS,
    )
    .map_err(|e| format!("{e:?}"))
}

use bitcoin::hashes::Hash;
use bitcoin::{Amount, ScriptBuf, Txid};
use channel::keys::ChannelSecrets;
use channel::msgs::{ChannelReestablish, Message, OnionPacket};
use channel::state::{Channel, ChannelError, ChannelParams, ChannelSetup, RevokedCommitment};
use channel::{FeeratePerKw, Msat, PaymentHash, PaymentPreimage};
use std::collections::VecDeque;

/// Channel capacity used by the two-party tests.
pub const FUNDING_SAT: u64 = 10_000_000;

/// Limits both test parties announce.
pub fn params() -> ChannelParams {
    ChannelParams {
        dust_limit_sat: 546,
        max_htlc_value_in_flight: Msat(5_000_000_000),
        channel_reserve_sat: 100_000,
        htlc_minimum: Msat(1000),
        to_self_delay: 144,
        max_accepted_htlcs: 30,
    }
}

/// The funding output both test channels spend.
pub fn funding_outpoint() -> OutPoint {
    OutPoint::new(Txid::from_byte_array([0x42; 32]), 1)
}

/// Two channel parties in memory, Alice the funder, with a message queue per direction.
/// Each queued commitment_signed carries the commitment the sender signed, so delivery
/// can check that both sides agree on it.
pub struct Pair {
    pub alice: Channel,
    pub bob: Channel,
    /// Messages in flight to Alice (index 0) and to Bob (index 1).
    pub queues: [VecDeque<(Message, Option<Transaction>)>; 2],
    pub revoked: [Vec<RevokedCommitment>; 2],
    pub preimages: Vec<PaymentPreimage>,
    pub alice_secrets: ChannelSecrets,
    pub bob_secrets: ChannelSecrets,
}

impl Pair {
    /// A funded, ready channel with `push_msat` given to Bob at open.
    pub fn open(push: Msat, feerate: FeeratePerKw) -> Pair {
        Self::open_with(push, feerate, false)
    }

    /// [`Pair::open`], with `option_anchors_zero_fee_htlc_tx` when `anchors`.
    pub fn open_with(push: Msat, feerate: FeeratePerKw, anchors: bool) -> Pair {
        let alice_secrets = ChannelSecrets::from_seed(&[1; 32]);
        let bob_secrets = ChannelSecrets::from_seed(&[2; 32]);
        let setup = |them: &ChannelSecrets, is_funder| ChannelSetup {
            funding_outpoint: funding_outpoint(),
            funding_sat: FUNDING_SAT,
            is_funder,
            push,
            feerate,
            local_params: params(),
            remote_params: params(),
            remote_basepoints: them.basepoints(),
            remote_first_per_commitment_point: them
                .per_commitment_point(channel::CommitmentNumber(0)),
            static_remotekey: true,
            anchors,
        };
        let mut alice = Channel::new(setup(&bob_secrets, true), alice_secrets.clone());
        let mut bob = Channel::new(setup(&alice_secrets, false), bob_secrets.clone());
        bob.receive_initial_signature(alice.sign_initial_remote_commitment().unwrap())
            .expect("funding_created signature");
        alice
            .receive_initial_signature(bob.sign_initial_remote_commitment().unwrap())
            .expect("funding_signed signature");
        alice.receive_channel_ready(&bob.channel_ready()).unwrap();
        bob.receive_channel_ready(&alice.channel_ready()).unwrap();
        Pair {
            alice,
            bob,
            queues: [VecDeque::new(), VecDeque::new()],
            revoked: [vec![], vec![]],
            preimages: vec![],
            alice_secrets,
            bob_secrets,
        }
    }

    pub fn party(&mut self, bob: bool) -> &mut Channel {
        if bob {
            &mut self.bob
        } else {
            &mut self.alice
        }
    }

    /// Queues a message from Alice (`from_bob == false`) or Bob.
    pub fn send(&mut self, from_bob: bool, msg: Message) {
        let signed = match &msg {
            Message::CommitmentSigned(_) => {
                Some(self.party(from_bob).remote_commitment().tx.clone())
            }
            _ => None,
        };
        self.queues[usize::from(!from_bob)].push_back((msg, signed));
    }

    /// Delivers the next message to Alice (`to_bob == false`) or Bob; queues any reply.
    pub fn deliver(&mut self, to_bob: bool) -> Option<Result<(), ChannelError>> {
        let (msg, signed) = self.queues[usize::from(to_bob)].pop_front()?;
        Some(self.apply(to_bob, &msg, signed))
    }

    fn apply(
        &mut self,
        to_bob: bool,
        msg: &Message,
        signed: Option<Transaction>,
    ) -> Result<(), ChannelError> {
        let ch = self.party(to_bob);
        match msg {
            Message::UpdateAddHtlc(m) => ch.receive_add_htlc(m),
            Message::UpdateFulfillHtlc(m) => ch.receive_fulfill(m).map(|_| ()),
            Message::UpdateFailHtlc(m) => ch.receive_fail(m).map(|_| ()),
            Message::UpdateFailMalformedHtlc(m) => ch.receive_fail_malformed(m).map(|_| ()),
            Message::UpdateFee(m) => ch.receive_update_fee(m),
            Message::CommitmentSigned(m) => {
                let raa = ch.receive_commitment(m)?;
                let (tx, _) = ch.signed_local_commitment().expect("signed");
                let mut unsigned = tx.clone();
                unsigned.input[0].witness = bitcoin::Witness::new();
                assert_eq!(
                    Some(unsigned),
                    signed,
                    "both sides agree on the signed commitment"
                );
                self.send(to_bob, Message::RevokeAndAck(raa));
                Ok(())
            }
            Message::RevokeAndAck(m) => {
                let revoked = ch.receive_revoke(m)?;
                self.revoked[usize::from(to_bob)].push(revoked);
                Ok(())
            }
            other => panic!("unexpected message in test: {other:?}"),
        }
    }

    /// Delivers everything and signs until both sides are quiescent.
    pub fn settle(&mut self) {
        for _ in 0..100 {
            while let Some(r) = self.deliver(true) {
                r.expect("honest message accepted");
            }
            while let Some(r) = self.deliver(false) {
                r.expect("honest message accepted");
            }
            let mut progressed = false;
            for bob in [false, true] {
                let ch = self.party(bob);
                if !ch.awaiting_revoke() && ch.has_changes_to_sign() {
                    let m = ch.send_commitment().expect("commit");
                    self.send(bob, Message::CommitmentSigned(m));
                    progressed = true;
                }
            }
            if !progressed && self.queues.iter().all(|q| q.is_empty()) {
                return;
            }
        }
        panic!("did not settle");
    }

    /// Offers an HTLC from one side with a fresh preimage.
    pub fn add(
        &mut self,
        from_bob: bool,
        amount: Msat,
        cltv: u32,
    ) -> Result<PaymentHash, ChannelError> {
        let mut p = [0u8; 32];
        p[..8].copy_from_slice(&(self.preimages.len() as u64).to_be_bytes());
        p[31] = 0xaa;
        let preimage = PaymentPreimage(p);
        let hash = preimage.payment_hash();
        let m = self
            .party(from_bob)
            .send_add_htlc(amount, hash, cltv, OnionPacket::default())?;
        self.preimages.push(preimage);
        self.send(from_bob, Message::UpdateAddHtlc(m));
        Ok(hash)
    }

    pub fn preimage(&self, hash: &PaymentHash) -> Option<PaymentPreimage> {
        self.preimages
            .iter()
            .copied()
            .find(|p| p.payment_hash() == *hash)
    }

    /// Disconnects both sides and reestablishes, delivering the retransmissions.
    pub fn reconnect(&mut self) -> Result<(), ChannelError> {
        self.queues = [VecDeque::new(), VecDeque::new()];
        self.alice.on_disconnect();
        self.bob.on_disconnect();
        let a: ChannelReestablish = self.alice.reestablish_message();
        let b: ChannelReestablish = self.bob.reestablish_message();
        for m in self.bob.handle_reestablish(&a)? {
            self.send(true, m);
        }
        for m in self.alice.handle_reestablish(&b)? {
            self.send(false, m);
        }
        Ok(())
    }
}

/// The funding output as a TxOut, for the interpreter.
pub fn funding_txout(ch: &Channel) -> TxOut {
    TxOut {
        value: Amount::from_sat(FUNDING_SAT),
        script_pubkey: ScriptBuf::new_p2wsh(&ch.funding_script().wscript_hash()),
    }
}

/// A funding output of `sat` satoshis for `ch`, for the interpreter.
pub fn funding_txout_of(ch: &Channel, sat: u64) -> TxOut {
    TxOut {
        value: Amount::from_sat(sat),
        script_pubkey: ScriptBuf::new_p2wsh(&ch.funding_script().wscript_hash()),
    }
}
