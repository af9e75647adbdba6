//! The channel monitor: what on-chain enforcement of one channel needs and what it has
//! decided. It sits under the channel manager (`node`), which feeds it: every revocation
//! is recorded ([`records::revocation_write`]) in the same database transaction as the
//! channel state that took it, before any reply leaves; the keys, the revocation secrets
//! and the commitments it builds from are read from the channel's own state, which is
//! written in that same transaction. When the funding output is spent,
//! [`ChannelMonitor::resolve_spend`] alone decides what the node must get confirmed:
//! justice for each output of a revoked commitment, the sweeps of our outputs, the claims
//! of HTLCs on the counterparty's commitment, and our own HTLC transactions.
//!
//! The transactions it decided on are kept here until they confirm, and change only
//! through its methods; the node's sweeper (the per-block passes in `node`:
//! `justice_fees`, `sweep_fees`, `htlc_tx_fees`, `anchor_cpfp`, `sweeps`) broadcasts
//! them and has them replaced as fees and the chain require. The monitor is stored with its channel's row (its fields flattened into the
//! same document, so rows written before it existed read unchanged).

pub mod records;

use bitcoin::{ScriptBuf, Transaction, Txid};
use channel::state::{Channel, ChannelError, RevokedCommitment};
use channel::{CommitmentNumber, FeeratePerKw, PaymentHash, PaymentPreimage, Side};
use serde::{Deserialize, Serialize};

/// A child that pays for its parent (CPFP), as last broadcast: for our anchor commitment
/// through its anchor, for our funding transaction through its change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeChild {
    /// The signed child.
    pub tx: Transaction,
    /// Its own fee.
    pub fee_sat: u64,
    /// The fee rate of the parent and the child together, sat per 1000 weight units.
    pub package_sat_per_kwu: u64,
}

/// One channel's on-chain enforcement state. It changes only through its own methods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMonitor {
    /// The funding output has been spent on chain (a block holding the spend is on the
    /// active chain; a reorganisation undoes it, see [`ChannelMonitor::forget_spend`]).
    #[serde(default)]
    funding_spent: bool,
    /// Our transactions taking our funds from a commitment on chain, broadcast (and
    /// replaced when fees rise) until they confirm.
    #[serde(default)]
    sweeps: Vec<Transaction>,
    /// The commitment (ours or the counterparty's) that spent the funding output.
    #[serde(default)]
    onchain_commitment: Option<Txid>,
    /// When `onchain_commitment` is a revoked commitment of the counterparty's: that
    /// commitment, rebuilt from the chain and the monitor's records.
    #[serde(default)]
    breach: Option<RevokedCommitment>,
    /// The child paying for our anchor commitment while it waits to confirm.
    #[serde(default)]
    anchor_child: Option<FeeChild>,
}

/// What spent the funding output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// The closing transaction both sides agreed on.
    MutualClose,
    /// A commitment of the counterparty's it revoked: a breach.
    Revoked(CommitmentNumber),
    /// Our current commitment.
    Local,
    /// A commitment of the counterparty's it has not revoked.
    Remote,
}

/// Where claims pay to, and the fee rates a resolution starts at (the sweeper raises
/// them by deadline later).
#[derive(Clone, Debug)]
pub struct ClaimParams {
    /// Our wallet's script every claim pays to.
    pub dest: ScriptBuf,
    /// Our own sweeps and claims.
    pub sweep: FeeratePerKw,
    /// Justice on a revoked to_local output.
    pub justice_to_local: FeeratePerKw,
    /// Justice on a revoked HTLC output.
    pub justice_htlc: FeeratePerKw,
}

/// What [`ChannelMonitor::resolve_spend`] decided beyond the sweeps it keeps.
#[derive(Debug)]
pub struct Resolution {
    /// What the spend was.
    pub spend: Spend,
    /// Our HTLC-success/HTLC-timeout transactions, signed by both sides, still to be
    /// completed (under anchors, funded by the wallet) and kept with
    /// [`ChannelMonitor::add_sweeps`].
    pub local_htlc_txs: Vec<Transaction>,
    /// Outputs that could not be claimed (worth less than their fee), with why.
    pub skipped: Vec<(&'static str, ChannelError)>,
}

impl Resolution {
    /// Nothing is left on chain for us to claim: the channel is done.
    pub fn settles_nothing(&self, monitor: &ChannelMonitor) -> bool {
        monitor.sweeps.is_empty() && self.local_htlc_txs.is_empty()
    }
}

impl ChannelMonitor {
    /// The funding output has been spent in a block of the active chain (until a
    /// reorganisation takes that block out: [`ChannelMonitor::forget_spend`]).
    pub fn funding_spent(&self) -> bool {
        self.funding_spent
    }

    /// Our transactions still to get confirmed for the close.
    pub fn sweeps(&self) -> &[Transaction] {
        &self.sweeps
    }

    /// The commitment (ours or the counterparty's) that spent the funding output.
    pub fn onchain_commitment(&self) -> Option<Txid> {
        self.onchain_commitment
    }

    /// The counterparty's revoked commitment that spent the funding output, rebuilt.
    pub fn breach(&self) -> Option<&RevokedCommitment> {
        self.breach.as_ref()
    }

    /// The child paying for our anchor commitment while it waits.
    pub fn anchor_child(&self) -> Option<&FeeChild> {
        self.anchor_child.as_ref()
    }

    /// Records the child now paying for our anchor commitment (`None`: none).
    pub fn set_anchor_child(&mut self, child: Option<FeeChild>) {
        self.anchor_child = child;
    }

    /// Once the funding output is spent, the anchor child is settled: when the commitment
    /// it pays for is the one on chain, it stays valid (a miner may have taken the parent
    /// alone) and is kept with the sweeps, its coins reserved until it confirms (`true`);
    /// else it can never confirm (`false`: its coins are free again).
    pub fn settle_anchor_child(&mut self) -> Option<(FeeChild, bool)> {
        let child = self.anchor_child.take()?;
        let parent = child.tx.input.first().map(|i| i.previous_output.txid);
        let keep = parent.is_some() && parent == self.onchain_commitment;
        if keep {
            self.add_sweeps([child.tx.clone()]);
        }
        Some((child, keep))
    }

    /// Replaces sweep `old` by `new` (a bumped version of it); `false` when `old` is no
    /// longer one of the sweeps (it settled meanwhile), and nothing changes.
    pub fn replace_sweep(&mut self, old: &Transaction, new: &Transaction) -> bool {
        match self.sweeps.iter_mut().find(|t| *t == old) {
            Some(slot) => {
                *slot = new.clone();
                true
            }
            None => false,
        }
    }

    /// Forgets the sweeps with these txids (confirmed deep enough, or lost for good).
    pub fn forget_sweeps(&mut self, txids: &[Txid]) {
        self.sweeps.retain(|t| !txids.contains(&t.compute_txid()));
    }

    /// The sweep spending `outpoint`.
    pub fn sweep_of(&self, outpoint: &bitcoin::OutPoint) -> Option<&Transaction> {
        self.sweeps
            .iter()
            .find(|t| t.input.iter().any(|i| i.previous_output == *outpoint))
    }

    /// `tx` spent the funding output of `channel`. Records the spend and decides what we
    /// must get confirmed: for a breach (`revoked`, rebuilt by the caller from
    /// [`records::revoked_htlcs`]), one justice transaction per output (a cheater's
    /// second-stage transaction that takes one output first invalidates only that one)
    /// and our to_remote; for our commitment, our to_local and our HTLC transactions;
    /// for the counterparty's current commitment, our to_remote and every HTLC we can
    /// claim (with a preimage `preimage_for` knows, or after its expiry), each to `params.dest`. A mutual close
    /// (`closing` is the agreed closing transaction's id) needs nothing.
    pub fn resolve_spend(
        &mut self,
        channel: &Channel,
        tx: &Transaction,
        revoked: Option<RevokedCommitment>,
        closing: Option<Txid>,
        params: &ClaimParams,
        preimage_for: impl Fn(&PaymentHash) -> Option<PaymentPreimage>,
    ) -> Resolution {
        let txid = tx.compute_txid();
        self.funding_spent = true;
        let mut resolution = Resolution {
            spend: Spend::MutualClose,
            local_htlc_txs: Vec::new(),
            skipped: Vec::new(),
        };
        if closing == Some(txid) {
            return resolution;
        }
        self.onchain_commitment = Some(txid);
        self.breach = revoked.clone();
        let mut sweeps = Vec::new();
        // One output that cannot be swept (worth less than its fee) must not stop the
        // others: each is built, or skipped with the reason, on its own.
        let mut add = |s: Option<Result<Transaction, ChannelError>>, what: &'static str| match s {
            Some(Ok(t)) => sweeps.push(t),
            Some(Err(err)) => resolution.skipped.push((what, err)),
            None => {}
        };
        if let Some(r) = revoked {
            resolution.spend = Spend::Revoked(r.number);
            let rate = |htlc| {
                if htlc {
                    params.justice_htlc
                } else {
                    params.justice_to_local
                }
            };
            match channel.justice_txs(&r, params.dest.clone(), rate) {
                Ok(txs) => txs.into_iter().for_each(|t| add(Some(Ok(t)), "justice")),
                Err(err) => add(Some(Err(err)), "justice"),
            }
            add(
                channel.sweep_to_remote(tx, params.dest.clone(), params.sweep),
                "to_remote",
            );
        } else if let Some((_, built)) = channel
            .signed_local_commitment()
            .filter(|(t, _)| t.compute_txid() == txid)
        {
            resolution.spend = Spend::Local;
            let number = channel.local_commitment_number();
            add(
                channel.sweep_local_to_local(number, &built, params.dest.clone(), params.sweep),
                "to_local",
            );
            resolution.local_htlc_txs = channel.signed_local_htlc_txs(&preimage_for);
        } else {
            resolution.spend = Spend::Remote;
            add(
                channel.sweep_to_remote(tx, params.dest.clone(), params.sweep),
                "to_remote",
            );
            sweeps.extend(channel.remote_htlc_claims(
                &txid,
                &preimage_for,
                params.dest.clone(),
                params.sweep,
            ));
        }
        self.sweeps = sweeps;
        resolution
    }

    /// Keeps `txs` with the sweeps to get confirmed (each once): our completed HTLC
    /// transactions, claims with preimages learnt after the close, claims of a cheater's
    /// second-stage outputs.
    pub fn add_sweeps(&mut self, txs: impl IntoIterator<Item = Transaction>) {
        for tx in txs {
            if !self.sweeps.contains(&tx) {
                self.sweeps.push(tx);
            }
        }
    }

    /// The HTLC claims the commitment on chain allows with `preimage_for`, and whose
    /// commitment that is: on our own, the HTLC-timeout and HTLC-success transactions
    /// signed by both sides (still to be completed, and their outputs swept after our
    /// CSV delay); on the counterparty's, direct claims to `dest` at `rate`. `None`
    /// before a commitment of the channel's is on chain (or for a revoked one: justice
    /// takes its HTLC outputs).
    pub fn htlc_claims(
        &self,
        channel: &Channel,
        preimage_for: impl Fn(&PaymentHash) -> Option<PaymentPreimage>,
        dest: ScriptBuf,
        rate: FeeratePerKw,
    ) -> Option<(Side, Vec<Transaction>)> {
        let txid = self.onchain_commitment?;
        let (side, _) = channel.commitment_by_txid(&txid)?;
        Some(match side {
            Side::Local => (side, channel.signed_local_htlc_txs(preimage_for)),
            Side::Remote => (
                side,
                channel.remote_htlc_claims(&txid, preimage_for, dest, rate),
            ),
        })
    }

    /// The block that held the spend left the active chain: the funding output is
    /// watched again, and the sweeps decided for the spend are dropped (returned, for
    /// the wallet to release their coins).
    pub fn forget_spend(&mut self) -> Vec<Transaction> {
        self.funding_spent = false;
        self.onchain_commitment = None;
        self.breach = None;
        std::mem::take(&mut self.sweeps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, OutPoint, TxIn, TxOut};

    fn spending(parent: Txid, vout: u32, value: u64) -> Transaction {
        Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(parent, vout),
                ..Default::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(value),
                script_pubkey: ScriptBuf::new(),
            }],
        }
    }

    fn child(parent: Txid) -> FeeChild {
        FeeChild {
            tx: spending(parent, 0, 1_000),
            fee_sat: 500,
            package_sat_per_kwu: 2_500,
        }
    }

    #[test]
    fn sweeps_are_replaced_forgotten_and_found_by_what_they_spend() {
        let commitment = Txid::from_byte_array([1; 32]);
        let mut m = ChannelMonitor {
            funding_spent: true,
            onchain_commitment: Some(commitment),
            ..Default::default()
        };
        let a = spending(commitment, 0, 10_000);
        let b = spending(commitment, 1, 20_000);
        m.add_sweeps([a.clone(), b.clone(), a.clone()]);
        assert_eq!(m.sweeps(), &[a.clone(), b.clone()], "each once");
        let bumped = spending(commitment, 0, 9_000);
        assert!(m.replace_sweep(&a, &bumped));
        assert!(!m.replace_sweep(&a, &bumped), "the old one is gone");
        assert_eq!(m.sweep_of(&OutPoint::new(commitment, 0)), Some(&bumped));
        m.forget_sweeps(&[bumped.compute_txid()]);
        assert_eq!(m.sweeps(), &[b]);
        assert!(m.sweep_of(&OutPoint::new(commitment, 0)).is_none());
    }

    #[test]
    fn an_anchor_child_is_kept_only_for_the_commitment_on_chain() {
        let ours = Txid::from_byte_array([1; 32]);
        let theirs = Txid::from_byte_array([2; 32]);
        let mut m = ChannelMonitor {
            funding_spent: true,
            onchain_commitment: Some(ours),
            ..Default::default()
        };
        assert!(m.settle_anchor_child().is_none());
        m.set_anchor_child(Some(child(ours)));
        let (c, keep) = m.settle_anchor_child().expect("settled");
        assert!(keep);
        assert_eq!(m.sweeps(), &[c.tx], "broadcast until it confirms");
        assert!(m.anchor_child().is_none());
        let mut m = ChannelMonitor {
            funding_spent: true,
            onchain_commitment: Some(theirs),
            ..Default::default()
        };
        m.set_anchor_child(Some(child(ours)));
        let (_, keep) = m.settle_anchor_child().expect("settled");
        assert!(
            !keep,
            "their commitment spent the funding: the child can never confirm"
        );
        assert!(m.sweeps().is_empty());
    }
}
