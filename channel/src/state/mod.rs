//! The BOLT 2 channel state machine for normal operation: HTLC updates, fee updates, the
//! commitment_signed / revoke_and_ack dance, shutdown and closing negotiation, and
//! channel_reestablish. It is fed messages and returns messages; it does no I/O, so the
//! caller persists its state before sending what it returns.
//!
//! Every `receive_*` method validates completely before changing anything: on error the
//! channel is exactly as it was.

mod anchor;
mod claims;
mod close;
mod commitments;
mod justice;
mod log;
pub mod open;
mod reestablish;
mod revoked;
mod updates;

pub use anchor::ANCHOR_INPUT_WITNESS_WEIGHT;
pub use close::{ClosingOutcome, ShutdownState};
pub use justice::{revoked_outputs, second_stage_outputs};
pub use log::{Htlc, HtlcStatus, Removal, Update, UpdateKind, UpdateLog, View, ViewOf};
pub use revoked::obscured_commitment_number;

use crate::commitment::{obscure_factor, CommitmentTx};
use crate::keys::{derive_privkey, secp, Basepoints, ChannelSecrets, CommitmentKeys};
use crate::msgs::{ChannelReady, CommitmentSigned, RevokeAndAck};
use crate::script::funding_script;
use crate::secrets::{CounterpartySecrets, SecretStoreError};
use crate::sign::{funding_witness, sign_input};
use crate::sweep::SweepError;
use crate::types::*;
use bitcoin::secp256k1::{ecdsa::Signature, PublicKey, SecretKey};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction};

/// BOLT 2: at most 483 HTLCs in each direction.
pub const MAX_HTLCS: u16 = 483;
/// The fee rate multiple the funder's balance must still pay after offering an HTLC on
/// a static_remotekey channel (BOLT 2 recommends twice the current rate).
pub const FEE_SPIKE_BUFFER_MULTIPLE: u32 = 2;
/// BOLT 2: cltv_expiry must be a block height (below the timestamp threshold).
pub const MAX_CLTV_EXPIRY: u32 = 500_000_000;
/// Most value in dust HTLCs (trimmed to fees in a commitment, both directions together)
/// a channel may carry: on a force close it goes to miners, not to either side. Beyond
/// it we offer no dust HTLC and fail the dust ones we are offered (Core Lightning's
/// default `max-dust-htlc-exposure-msat`).
pub const MAX_DUST_HTLC_EXPOSURE: Msat = Msat(50_000_000);

/// The limits one side announces in open_channel / accept_channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelParams {
    /// Outputs below this are left off the announcer's commitment.
    pub dust_limit_sat: u64,
    /// Cap on the total value of HTLCs offered to the announcer.
    pub max_htlc_value_in_flight: Msat,
    /// Balance the announcer requires the other side to keep.
    pub channel_reserve_sat: u64,
    /// Smallest HTLC the announcer accepts.
    pub htlc_minimum: Msat,
    /// CSV delay the announcer imposes on the other side's to_local.
    pub to_self_delay: u16,
    /// Cap on the number of HTLCs offered to the announcer.
    pub max_accepted_htlcs: u16,
}

/// Everything agreed in open_channel / accept_channel / funding_created.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelSetup {
    /// The funding output.
    pub funding_outpoint: OutPoint,
    /// The channel's capacity.
    pub funding_sat: u64,
    /// Whether this node opened (funded) the channel and pays commitment fees.
    pub is_funder: bool,
    /// Amount the funder gave the fundee at open.
    pub push: Msat,
    /// Initial commitment fee rate.
    pub feerate: FeeratePerKw,
    /// Our announced limits.
    pub local_params: ChannelParams,
    /// Their announced limits.
    pub remote_params: ChannelParams,
    /// Their basepoints.
    pub remote_basepoints: Basepoints,
    /// Their per-commitment point for commitment 0.
    pub remote_first_per_commitment_point: PublicKey,
    /// `option_static_remotekey`.
    pub static_remotekey: bool,
    /// `option_anchors_zero_fee_htlc_tx`.
    #[serde(default)]
    pub anchors: bool,
}

/// Why a message or request was refused. The channel is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The commitment signature does not verify.
    #[error("invalid commitment signature")]
    InvalidCommitmentSignature,
    /// An HTLC signature does not verify.
    #[error("invalid signature for HTLC output {0}")]
    InvalidHtlcSignature(usize),
    /// commitment_signed carried the wrong number of HTLC signatures.
    #[error("expected {expected} HTLC signatures, got {got}")]
    WrongHtlcSignatureCount {
        /// HTLC outputs in the commitment.
        expected: usize,
        /// Signatures received.
        got: usize,
    },
    /// The revealed secret does not match the commitment's point.
    #[error("per-commitment secret does not match the revoked commitment")]
    InvalidRevocationSecret,
    /// The revealed secret is inconsistent with earlier ones.
    #[error(transparent)]
    SecretStore(#[from] SecretStoreError),
    /// No HTLC with that id.
    #[error("unknown HTLC id {0}")]
    UnknownHtlc(u64),
    /// The HTLC cannot be removed yet (not irrevocably committed, or already removed).
    #[error("HTLC {0} cannot be removed in its current state")]
    HtlcNotRemovable(u64),
    /// The preimage does not hash to the HTLC's payment hash.
    #[error("preimage does not match HTLC {0}")]
    WrongPreimage(u64),
    /// update_add_htlc with an id out of sequence (a replay, or a skipped id).
    #[error("expected HTLC id {expected}, got {got}")]
    UnexpectedHtlcId {
        /// The next id.
        expected: u64,
        /// The id received.
        got: u64,
    },
    /// An HTLC of zero value or below the receiver's htlc_minimum_msat.
    #[error("HTLC amount {0} is below the minimum")]
    AmountBelowMinimum(Msat),
    /// A dust HTLC would take the value trimmed to fees in a commitment above
    /// [`MAX_DUST_HTLC_EXPOSURE`].
    #[error("dust HTLC exposure {0} above the limit")]
    DustExposure(Msat),
    /// The transaction is not an HTLC transaction of our current commitment.
    #[error("not an HTLC transaction of our current commitment")]
    NotOurHtlcTx,
    /// The input is not one of the channel's own outputs without a deadline.
    #[error("not an output of ours that this channel alone can sweep")]
    NotOurSweep,
    /// An amount larger than the channel.
    #[error("amount {0} exceeds the channel capacity")]
    AmountExceedsCapacity(Msat),
    /// Over the receiver's max_accepted_htlcs.
    #[error("too many HTLCs in flight")]
    TooManyHtlcs,
    /// Over the receiver's max_htlc_value_in_flight_msat.
    #[error("HTLC value in flight over the limit")]
    InFlightExceeded,
    /// The sender cannot afford it while keeping its reserve and paying the fee.
    #[error("insufficient balance: need {needed}, have {available}")]
    InsufficientBalance {
        /// What the update needs.
        needed: Msat,
        /// What the sender has.
        available: Msat,
    },
    /// cltv_expiry must be a block height.
    #[error("cltv_expiry {0} is not a block height")]
    InvalidCltvExpiry(u32),
    /// update_fee from the side that does not pay fees, or a zero fee rate.
    #[error("invalid update_fee")]
    InvalidFeeUpdate,
    /// update_fail_malformed_htlc without the BADONION bit.
    #[error("update_fail_malformed_htlc without BADONION")]
    MissingBadOnion,
    /// A commitment_signed that changes nothing.
    #[error("commitment_signed without changes")]
    NoChanges,
    /// We must wait for revoke_and_ack before signing again.
    #[error("awaiting revoke_and_ack")]
    AwaitingRevoke,
    /// The signed commitment would take more from a side than it has.
    #[error("commitment overdraws a balance")]
    CommitmentOverdrawn,
    /// A message that does not fit the channel's state (a replayed revoke_and_ack, ...).
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// The channel is closing: no new HTLCs.
    #[error("channel is shutting down")]
    ShuttingDown,
    /// The message names another channel.
    #[error("message for another channel")]
    WrongChannel,
    /// A shutdown script that BOLT 2 does not allow.
    #[error("invalid shutdown scriptpubkey")]
    InvalidShutdownScript,
    /// Closing fee outside the acceptable range.
    #[error("closing fee negotiation failed: {0}")]
    ClosingFee(&'static str),
    /// channel_reestablish does not fit our state and proves nothing: fail the channel.
    #[error("channel_reestablish mismatch: {0}")]
    Reestablish(&'static str),
    /// channel_reestablish proves the peer holds a newer state than ours (BOLT 2
    /// option_data_loss_protect): our commitment may be revoked, so we must never
    /// broadcast it; we wait for the peer to close and sweep our output from its.
    #[error("channel_reestablish proves we lost state: waiting for the peer to close")]
    LocalStateLost,
    /// channel_reestablish shows the peer is behind us: it cannot resume the channel, and
    /// we fail it on chain so that it can recover its funds.
    #[error("channel_reestablish shows the peer lost state")]
    RemoteStateLost,
    /// A sweep could not be built.
    #[error(transparent)]
    Sweep(#[from] SweepError),
}

/// A remote commitment the remote has just revoked, with what is needed to punish a
/// broadcast of it (justice transaction, watchtower appointment).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevokedCommitment {
    /// Its commitment number.
    pub number: CommitmentNumber,
    /// The commitment as built (its txid is the watchtower locator's source).
    pub commitment: CommitmentTx,
    /// The revealed per-commitment secret.
    pub per_commitment_secret: [u8; 32],
}

/// Everything about one channel that must survive a restart, without its secrets (which
/// the node derives again from its seed). Persist it before sending what a method returns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelState {
    setup: ChannelSetup,
    local_basepoints: Basepoints,
    channel_id: ChannelId,
    obscure: u64,
    funding_script: ScriptBuf,
    log: UpdateLog,
    local_number: u64,
    local_keys: CommitmentKeys,
    local_sigs: Option<(Signature, Vec<Signature>)>,
    /// Point of our commitment `local_number + 1`, computed once when it is revealed.
    next_local_point: PublicKey,
    remote_number: u64,
    remote_tx: CommitmentTx,
    remote_revocable: Option<CommitmentTx>,
    remote_next_point: Option<PublicKey>,
    counterparty_secrets: CounterpartySecrets,
    next_local_htlc_id: u64,
    next_remote_htlc_id: u64,
    /// The last of commitment_signed / revoke_and_ack we sent was revoke_and_ack.
    last_sent_was_revoke: bool,
    shutdown: ShutdownState,
}

/// One channel, from this node's side: its state and its secrets.
#[derive(Clone)]
pub struct Channel {
    secrets: ChannelSecrets,
    local_basepoints: Basepoints,
    s: ChannelState,
    /// The dust exposure this side accepts (not stored: the node's setting).
    max_dust_exposure: Msat,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("channel_id", &self.s.channel_id)
            .field("local_number", &self.s.local_number)
            .field("remote_number", &self.s.remote_number)
            .field("log", &self.s.log)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Channel {
    /// Equal when the whole state and the secrets' seed are.
    fn eq(&self, other: &Self) -> bool {
        self.s == other.s && self.secrets.commitment_seed == other.secrets.commitment_seed
    }
}

/// A stored state that does not belong to the secrets it was restored with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel state does not match the node's keys")]
pub struct WrongSecrets;

impl Channel {
    /// A channel whose funding output is known, before the first commitment signatures
    /// are exchanged (funding_created / funding_signed).
    pub fn new(setup: ChannelSetup, secrets: ChannelSecrets) -> Channel {
        let local_basepoints = secrets.basepoints();
        let (funder_pb, fundee_pb) = if setup.is_funder {
            (
                local_basepoints.payment_basepoint,
                setup.remote_basepoints.payment_basepoint,
            )
        } else {
            (
                setup.remote_basepoints.payment_basepoint,
                local_basepoints.payment_basepoint,
            )
        };
        let capacity = Msat(setup.funding_sat * 1000);
        let (local, remote) = if setup.is_funder {
            (Msat(capacity.0 - setup.push.0), setup.push)
        } else {
            (setup.push, Msat(capacity.0 - setup.push.0))
        };
        let local_point = secrets.per_commitment_point(CommitmentNumber(0));
        let state = ChannelState {
            channel_id: ChannelId::from_funding_outpoint(
                &setup.funding_outpoint.txid,
                setup.funding_outpoint.vout as u16,
            ),
            obscure: obscure_factor(&funder_pb, &fundee_pb),
            funding_script: funding_script(
                &local_basepoints.funding_pubkey,
                &setup.remote_basepoints.funding_pubkey,
            ),
            log: UpdateLog::new(local, remote, setup.feerate),
            local_number: 0,
            local_keys: CommitmentKeys::derive(
                &local_point,
                &local_basepoints,
                &setup.remote_basepoints,
                setup.static_remotekey,
            ),
            local_sigs: None,
            next_local_point: secrets.per_commitment_point(CommitmentNumber(1)),
            remote_number: 0,
            remote_tx: CommitmentTx {
                tx: Transaction {
                    version: bitcoin::transaction::Version::TWO,
                    lock_time: bitcoin::absolute::LockTime::ZERO,
                    input: vec![],
                    output: vec![],
                },
                keys: CommitmentKeys::derive(
                    &setup.remote_first_per_commitment_point,
                    &setup.remote_basepoints,
                    &local_basepoints,
                    setup.static_remotekey,
                ),
                htlcs: vec![],
                to_local: None,
                to_remote: None,
                fee_sat: 0,
                to_self_delay: 0,
                feerate: setup.feerate,
                anchors: setup.anchors,
            },
            remote_revocable: None,
            remote_next_point: None,
            counterparty_secrets: CounterpartySecrets::new(),
            next_local_htlc_id: 0,
            next_remote_htlc_id: 0,
            last_sent_was_revoke: false,
            shutdown: ShutdownState::default(),
            local_basepoints,
            setup,
        };
        let mut ch = Channel {
            secrets,
            local_basepoints,
            s: state,
            max_dust_exposure: MAX_DUST_HTLC_EXPOSURE,
        };
        let keys = ch.s.remote_tx.keys;
        ch.s.remote_tx = ch.build_remote(0, &keys, &ch.s.log.view(ViewOf::CurrentRemote));
        ch
    }

    /// The channel's state, to persist.
    pub fn state(&self) -> &ChannelState {
        &self.s
    }

    /// A channel restored from its stored state and the secrets the node derives for it.
    pub fn restore(state: ChannelState, secrets: ChannelSecrets) -> Result<Channel, WrongSecrets> {
        let local_basepoints = secrets.basepoints();
        if local_basepoints != state.local_basepoints {
            return Err(WrongSecrets);
        }
        Ok(Channel {
            secrets,
            local_basepoints,
            s: state,
            max_dust_exposure: MAX_DUST_HTLC_EXPOSURE,
        })
    }

    /// Sets the dust exposure this side accepts when it offers an HTLC or takes an
    /// update_fee (default [`MAX_DUST_HTLC_EXPOSURE`]). The tests' scripted attacker
    /// raises it to play a peer that ignores the limit.
    pub fn set_max_dust_exposure(&mut self, max: Msat) {
        self.max_dust_exposure = max;
    }

    // ---- queries ------------------------------------------------------------------

    /// The BOLT 2 channel id.
    pub fn channel_id(&self) -> ChannelId {
        self.s.channel_id
    }
    /// The agreed setup.
    pub fn setup(&self) -> &ChannelSetup {
        &self.s.setup
    }
    /// Our basepoints.
    pub fn local_basepoints(&self) -> &Basepoints {
        &self.local_basepoints
    }
    /// The funding output's witness script.
    pub fn funding_script(&self) -> &ScriptBuf {
        &self.s.funding_script
    }
    /// Our current commitment number.
    pub fn local_commitment_number(&self) -> CommitmentNumber {
        CommitmentNumber(self.s.local_number)
    }
    /// The remote's latest commitment number.
    pub fn remote_commitment_number(&self) -> CommitmentNumber {
        CommitmentNumber(self.s.remote_number)
    }
    /// Balances and HTLCs of a commitment.
    pub fn view(&self, of: ViewOf) -> View {
        self.s.log.view(of)
    }
    /// The update log (for inspection and persistence).
    pub fn log(&self) -> &UpdateLog {
        &self.s.log
    }
    /// True while we wait for the remote's revoke_and_ack.
    pub fn awaiting_revoke(&self) -> bool {
        self.s.remote_revocable.is_some()
    }
    /// Whether sending commitment_signed now would carry changes.
    pub fn has_changes_to_sign(&self) -> bool {
        self.s.log.remote_has_changes()
    }
    /// The secrets revealed by the remote so far.
    pub fn counterparty_secrets(&self) -> &CounterpartySecrets {
        &self.s.counterparty_secrets
    }
    /// The remote's latest commitment as we signed it.
    pub fn remote_commitment(&self) -> &CommitmentTx {
        &self.s.remote_tx
    }
    /// The shutdown / closing negotiation state.
    pub fn shutdown_state(&self) -> &ShutdownState {
        &self.s.shutdown
    }
    /// The capacity in millisatoshis.
    pub fn capacity(&self) -> Msat {
        Msat(self.s.setup.funding_sat * 1000)
    }

    fn funding_value(&self) -> Amount {
        Amount::from_sat(self.s.setup.funding_sat)
    }

    // ---- funding ----------------------------------------------------------------------

    /// Our signature of the remote's first commitment (funding_created or funding_signed).
    pub fn sign_initial_remote_commitment(&self) -> Result<Signature, ChannelError> {
        if self.s.remote_number != 0 {
            return Err(ChannelError::Unexpected("funding already signed"));
        }
        Ok(self.sign_remote(&self.s.remote_tx).0)
    }

    /// Checks the remote's signature of our first commitment and keeps it.
    pub fn receive_initial_signature(&mut self, sig: Signature) -> Result<(), ChannelError> {
        if self.s.local_sigs.is_some() {
            return Err(ChannelError::Unexpected(
                "initial signature already received",
            ));
        }
        let c = self.build_local(
            0,
            &self.s.local_keys,
            &self.s.log.view(ViewOf::CurrentLocal),
        );
        self.verify_local(&c, &sig, &[])?;
        self.s.local_sigs = Some((sig, vec![]));
        Ok(())
    }

    /// Our channel_ready, carrying the point of our commitment 1.
    pub fn channel_ready(&self) -> ChannelReady {
        ChannelReady {
            channel_id: self.s.channel_id,
            second_per_commitment_point: self.secrets.per_commitment_point(CommitmentNumber(1)),
            short_channel_id: None,
        }
    }

    /// Takes the remote's channel_ready (the point of its commitment 1).
    pub fn receive_channel_ready(&mut self, msg: &ChannelReady) -> Result<(), ChannelError> {
        self.check_channel(&msg.channel_id)?;
        if self.s.remote_number != 0 {
            return Err(ChannelError::Unexpected(
                "channel_ready after the first commitment",
            ));
        }
        self.s.remote_next_point = Some(msg.second_per_commitment_point);
        Ok(())
    }

    fn check_channel(&self, id: &ChannelId) -> Result<(), ChannelError> {
        if *id != self.s.channel_id {
            return Err(ChannelError::WrongChannel);
        }
        Ok(())
    }

    // ---- the commitment dance ------------------------------------------------------------

    /// Signs the remote's next commitment with every pending change: returns the
    /// commitment_signed to send.
    pub fn send_commitment(&mut self) -> Result<CommitmentSigned, ChannelError> {
        if self.awaiting_revoke() {
            return Err(ChannelError::AwaitingRevoke);
        }
        let point = self
            .s
            .remote_next_point
            .ok_or(ChannelError::Unexpected("no next per-commitment point yet"))?;
        if !self.s.log.remote_has_changes() {
            return Err(ChannelError::NoChanges);
        }
        let view = self.s.log.view(ViewOf::NextRemote);
        if view.overdrawn {
            return Err(ChannelError::CommitmentOverdrawn);
        }
        let keys = self.remote_keys_for(&point);
        let c = self.build_remote(self.s.remote_number + 1, &keys, &view);
        let (signature, htlc_signatures) = self.sign_remote(&c);
        self.s.log.on_commitment_sent();
        self.s.remote_number += 1;
        self.s.remote_revocable = Some(std::mem::replace(&mut self.s.remote_tx, c));
        self.s.remote_next_point = None;
        self.s.last_sent_was_revoke = false;
        Ok(CommitmentSigned {
            channel_id: self.s.channel_id,
            signature,
            htlc_signatures,
        })
    }

    /// Takes the remote's commitment_signed for our next commitment, checks every
    /// signature, and revokes our previous commitment: returns the revoke_and_ack to send.
    pub fn receive_commitment(
        &mut self,
        msg: &CommitmentSigned,
    ) -> Result<RevokeAndAck, ChannelError> {
        self.check_channel(&msg.channel_id)?;
        if self.s.local_sigs.is_none() {
            return Err(ChannelError::Unexpected(
                "commitment_signed before funding signatures",
            ));
        }
        if !self.s.log.local_has_changes() {
            return Err(ChannelError::NoChanges);
        }
        let next = self.s.local_number + 1;
        let view = self.s.log.view(ViewOf::NextLocal);
        if view.overdrawn {
            return Err(ChannelError::CommitmentOverdrawn);
        }
        let keys = self.local_keys_for(next);
        let c = self.build_local(next, &keys, &view);
        self.verify_local(&c, &msg.signature, &msg.htlc_signatures)?;

        let revoke = self.revoke_message(self.s.local_number);
        self.s.next_local_point = revoke.next_per_commitment_point;
        self.s.log.on_commitment_received();
        self.s.local_number = next;
        self.s.local_keys = keys;
        self.s.local_sigs = Some((msg.signature, msg.htlc_signatures.clone()));
        self.s.last_sent_was_revoke = true;
        Ok(revoke)
    }

    /// The revoke_and_ack that revokes our commitment `number`.
    fn revoke_message(&self, number: u64) -> RevokeAndAck {
        RevokeAndAck {
            channel_id: self.s.channel_id,
            per_commitment_secret: self.secrets.per_commitment_secret(CommitmentNumber(number)),
            next_per_commitment_point: self
                .secrets
                .per_commitment_point(CommitmentNumber(number + 2)),
        }
    }

    /// Takes the remote's revoke_and_ack: checks the secret against the revoked
    /// commitment's point and stores it. Returns the revoked commitment, which the caller
    /// keeps (or hands to a watchtower) to punish a broadcast of it.
    pub fn receive_revoke(
        &mut self,
        msg: &RevokeAndAck,
    ) -> Result<RevokedCommitment, ChannelError> {
        self.check_channel(&msg.channel_id)?;
        let revoked = self
            .s
            .remote_revocable
            .as_ref()
            .ok_or(ChannelError::Unexpected(
                "revoke_and_ack without a pending commitment",
            ))?;
        let secret = SecretKey::from_slice(&msg.per_commitment_secret)
            .map_err(|_| ChannelError::InvalidRevocationSecret)?;
        if PublicKey::from_secret_key(secp(), &secret) != revoked.keys.per_commitment_point {
            return Err(ChannelError::InvalidRevocationSecret);
        }
        let number = self.s.remote_number - 1;
        let mut store = self.s.counterparty_secrets.clone();
        store.insert(
            msg.per_commitment_secret,
            CommitmentNumber(number).secret_index(),
        )?;

        self.s.counterparty_secrets = store;
        self.s.log.on_revoke_received();
        self.s.remote_next_point = Some(msg.next_per_commitment_point);
        let commitment = self.s.remote_revocable.take().expect("checked above");
        Ok(RevokedCommitment {
            number: CommitmentNumber(number),
            commitment,
            per_commitment_secret: msg.per_commitment_secret,
        })
    }

    // ---- on chain -----------------------------------------------------------------------

    /// Our current commitment, fully signed, ready to broadcast (force close), with the
    /// built commitment for resolving its outputs.
    pub fn signed_local_commitment(&self) -> Option<(Transaction, CommitmentTx)> {
        let (remote_sig, _) = self.s.local_sigs.as_ref()?;
        let c = self.build_local(
            self.s.local_number,
            &self.s.local_keys,
            &self.s.log.view(ViewOf::CurrentLocal),
        );
        let local_sig = sign_input(
            &c.tx,
            0,
            &self.s.funding_script,
            self.funding_value(),
            &self.secrets.funding_key,
        );
        let mut tx = c.tx.clone();
        tx.input[0].witness = funding_witness(
            &self.s.funding_script,
            (&self.local_basepoints.funding_pubkey, &local_sig),
            (&self.s.setup.remote_basepoints.funding_pubkey, remote_sig),
        );
        Some((tx, c))
    }

    /// Signed HTLC-success / HTLC-timeout transactions for our current commitment.
    /// HTLC-success needs the preimage, looked up with `preimage_for`.
    pub fn signed_local_htlc_txs(
        &self,
        preimage_for: impl Fn(&PaymentHash) -> Option<PaymentPreimage>,
    ) -> Vec<Transaction> {
        let Some((_, remote_htlc_sigs)) = self.s.local_sigs.as_ref() else {
            return vec![];
        };
        let c = self.build_local(
            self.s.local_number,
            &self.s.local_keys,
            &self.s.log.view(ViewOf::CurrentLocal),
        );
        let htlc_key = derive_privkey(
            &self.secrets.htlc_basepoint_secret,
            &c.keys.per_commitment_point,
        );
        let mut txs = Vec::new();
        for (i, (out, remote_sig)) in c.htlcs.iter().zip(remote_htlc_sigs).enumerate() {
            let preimage = if out.htlc.offered {
                None
            } else {
                match preimage_for(&out.htlc.payment_hash) {
                    Some(p) => Some(p),
                    None => continue,
                }
            };
            let mut tx = c.htlc_tx(i);
            let local_sig = sign_input(
                &tx,
                0,
                &out.witness_script,
                c.output_value(out.vout),
                &htlc_key,
            );
            tx.input[0].witness = crate::sign::htlc_tx_witness(
                &out.witness_script,
                remote_sig,
                &local_sig,
                bitcoin::EcdsaSighashType::All,
                preimage.as_ref().map(|p| &p.0),
                c.anchors,
            );
            txs.push(tx);
        }
        txs
    }

    /// The secret key of our delayed outputs on our commitment `number` (to sweep
    /// to_local after the CSV delay).
    pub fn local_delayed_key(&self, number: CommitmentNumber) -> SecretKey {
        derive_privkey(
            &self.secrets.delayed_payment_basepoint_secret,
            &self.secrets.per_commitment_point(number),
        )
    }
}
