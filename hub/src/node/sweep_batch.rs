//! Batching of the sweeps without a deadline: to_local of our commitment and the outputs
//! of our HTLC transactions after their CSV delay, and our to_remote of a commitment of
//! the counterparty's. Nobody else can take these outputs, so they need not each pay for
//! a transaction of their own.
//!
//! Every block, those that can be mined in the next block, that nothing in the mempool
//! spends and that no batch holds yet, from every channel, are swept together (at most
//! [`super::NodeConfig::sweep_batch_max_inputs`] inputs per transaction) to one wallet
//! address, at the estimate for [`NO_DEADLINE_BLOCKS`] but never above the rate any of
//! their single sweeps was built at (so each pays less than it would alone). Each channel
//! signs its own inputs over the whole transaction (`Channel::sign_own_sweep_input`,
//! which refuses anything else); the mempool is asked first (`testmempoolaccept`). A lone
//! one goes out as its single sweep. Claims with a deadline (HTLC outputs, justice, HTLC
//! transactions) are never batched: each stays alone, so that the counterparty's spend
//! of one cannot hold the others up; nor is our to_remote of a revoked commitment (a
//! watchtower's penalty, which also takes it, must not have to outbid a whole batch).
//!
//! A batch is written down (a record of kind `sweep_batch`) before it is broadcast, and
//! broadcast again every block until it confirms. While it waits, the single sweeps of
//! its members are held back (they would conflict with it); once it confirms, they count
//! as confirmed. A batch that is not in the mempool and cannot get there (another
//! transaction spent one of its inputs, a reorganisation took a commitment out, or the
//! mempool refuses it for any other reason) is forgotten, and its members go out alone
//! again (or in a new batch). One still in the mempool is kept while it can confirm. Within
//! [`NO_DEADLINE_PATIENCE`] blocks of its earliest member's nominal deadline, a batch
//! still waiting is replaced (BIP 125) at the estimate for the blocks left, within the
//! fee budget of what it sweeps, as a single sweep would be.

use super::justice_fees::{INCREMENTAL_RELAY_PER_KW, JUSTICE_FLOOR};
use super::sweep_fees::{NO_DEADLINE_BLOCKS, NO_DEADLINE_PATIENCE};
use super::sweeps::ANTI_REORG_DEPTH;
use super::{Node, NodeError};
use crate::store::{unix_now, Record, Write};
use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxIn, TxOut, Txid, Witness};
use channel::{ChannelId, FeeratePerKw};
use serde::{Deserialize, Serialize};

/// The default of [`super::NodeConfig::sweep_batch_max_inputs`]: a batch of this many
/// to_local inputs weighs about 32,000 weight units, well within Bitcoin Core's standard
/// limit of 400,000 (the flag's largest value, 1,000, stays within it too).
pub const DEFAULT_SWEEP_BATCH_MAX_INPUTS: usize = 100;

const RECORD_KIND: &str = "sweep_batch";

/// The smallest output a batch creates (Bitcoin Core's dust threshold for P2WSH).
const MIN_OUTPUT_SAT: u64 = 330;

/// A transaction sweeping several outputs of ours without a deadline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SweepBatch {
    /// The transaction: one input per member, in order, and one output to the wallet.
    pub(super) tx: Transaction,
    /// What each input stands for.
    pub(super) members: Vec<Member>,
}

/// One input of a batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Member {
    /// The channel whose output it spends (and whose keys sign it).
    pub(super) channel: ChannelId,
    /// The channel's single sweep of that output, held back while the batch waits.
    pub(super) single: Txid,
    /// The output's value.
    pub(super) value_sat: u64,
    /// Its nominal deadline: [`NO_DEADLINE_BLOCKS`] after it became spendable.
    pub(super) deadline: u32,
}

/// A single sweep that may join a batch.
struct Candidate {
    channel: ChannelId,
    single: Transaction,
    value: Amount,
    deadline: u32,
}

impl Candidate {
    fn member(&self) -> Member {
        Member {
            channel: self.channel,
            single: self.single.compute_txid(),
            value_sat: self.value.to_sat(),
            deadline: self.deadline,
        }
    }

    /// The rate its single sweep pays, sat per 1000 weight units.
    fn rate(&self) -> u64 {
        let fee = self
            .value
            .to_sat()
            .saturating_sub(self.single.output[0].value.to_sat());
        fee * 1000 / self.single.weight().to_wu().max(1)
    }
}

impl Node {
    /// Reads the batches still kept, at start-up.
    pub(super) async fn load_sweep_batches(&self) -> Result<(), NodeError> {
        let mut batches = Vec::new();
        for r in self.store.records(RECORD_KIND, None).await? {
            // One that cannot be read is left out: its members go out alone.
            match r.decode::<SweepBatch>() {
                Ok(b) => batches.push(b),
                Err(e) => tracing::warn!("sweep batch {} not read: {e}", r.id),
            }
        }
        *self.sweep_batches.lock().expect("batch lock") = batches;
        Ok(())
    }

    /// The transaction of the batch that spends `outpoint`, if one does.
    pub(super) fn batch_holding(&self, outpoint: &OutPoint) -> Option<Transaction> {
        self.sweep_batches
            .lock()
            .expect("batch lock")
            .iter()
            .find(|b| b.tx.input.iter().any(|i| i.previous_output == *outpoint))
            .map(|b| b.tx.clone())
    }

    /// Every block, after the single sweeps were looked at: the batches kept are
    /// broadcast again, bumped or forgotten, and the sweeps without a deadline that can
    /// go out now are batched (or sent alone).
    pub(super) async fn sweep_in_batches(&self) {
        let Ok(tip) = self.config.chain.tip().await else {
            return;
        };
        self.keep_batches(tip.height).await;
        self.form_batches(tip.height).await;
    }

    async fn keep_batches(&self, tip: u32) {
        let chain = &self.config.chain;
        let batches = self.sweep_batches.lock().expect("batch lock").clone();
        for b in batches {
            let txid = b.tx.compute_txid();
            let Ok(status) = chain.tx_status(&txid).await else {
                continue;
            };
            let held = self.members_still_swept(&b).await;
            let in_mempool = match status {
                chain::TxStatus::Confirmed { confirmations, .. } => {
                    // Kept until its members' single sweeps are forgotten
                    // (`ANTI_REORG_DEPTH` deep: a reorganisation may still take it out).
                    if confirmations >= ANTI_REORG_DEPTH && held == 0 {
                        self.drop_batch(&txid, "confirmed").await;
                    }
                    continue;
                }
                chain::TxStatus::InMempool => true,
                chain::TxStatus::Unknown => false,
            };
            if !in_mempool {
                if held < b.members.len() {
                    self.drop_batch(&txid, "a channel no longer sweeps one of its outputs")
                        .await;
                    continue;
                }
                if self.batch_lost(&b.tx).await && chain.confirmations(&txid).await.ok() == Some(0)
                {
                    self.drop_batch(&txid, "another transaction spent one of its inputs")
                        .await;
                    continue;
                }
            }
            let b = match self.bump_batch(&b, tip).await {
                Some(new) => new,
                None => b,
            };
            if let Err(e) = chain.broadcast(&b.tx).await {
                let txid = b.tx.compute_txid();
                if matches!(chain.tx_status(&txid).await, Ok(chain::TxStatus::Unknown)) {
                    // Not in the mempool and refused: its members go out without it.
                    self.drop_batch(&txid, &format!("refused by the mempool: {e}"))
                        .await;
                } else {
                    tracing::debug!(%txid, "sweep batch already out: {e}");
                }
            }
        }
    }

    /// How many of `b`'s members their channel still sweeps (its single sweep of that
    /// output is still among the channel's sweeps).
    async fn members_still_swept(&self, b: &SweepBatch) -> usize {
        let mut held = 0;
        for (m, input) in b.members.iter().zip(&b.tx.input) {
            let Ok(entry) = self.entry(&m.channel).await else {
                continue;
            };
            let e = entry.lock().await;
            if e.monitor.sweep_of(&input.previous_output).is_some() {
                held += 1;
            }
        }
        held
    }

    /// Whether an input of `tx` (unconfirmed) was spent on chain by another transaction.
    /// An answer the chain could not give counts as "not lost".
    async fn batch_lost(&self, tx: &Transaction) -> bool {
        let chain = &self.config.chain;
        for input in &tx.input {
            let o = input.previous_output;
            let parent_confirmed = chain.confirmations(&o.txid).await.unwrap_or(0) >= 1;
            if parent_confirmed && matches!(chain.tx_out(&o, false).await, Ok(None)) {
                return true;
            }
        }
        false
    }

    async fn drop_batch(&self, txid: &Txid, why: &str) {
        let write = Write::DeleteRecord {
            kind: RECORD_KIND.into(),
            id: txid.to_string(),
        };
        if let Err(e) = self.group.commit(vec![write]).await {
            tracing::warn!(%txid, "sweep batch not forgotten: {e}");
            return;
        }
        self.sweep_batches
            .lock()
            .expect("batch lock")
            .retain(|b| b.tx.compute_txid() != *txid);
        tracing::info!(%txid, "sweep batch forgotten: {why}");
    }

    /// `b` replaced at the estimate for the blocks left before its earliest member's
    /// nominal deadline, once that is within [`NO_DEADLINE_PATIENCE`] blocks and the
    /// estimate is above what it pays; stored in its place. `None`: left as it is.
    async fn bump_batch(&self, b: &SweepBatch, tip: u32) -> Option<SweepBatch> {
        let deadline = b.members.iter().map(|m| m.deadline).min()?;
        if deadline > tip + NO_DEADLINE_PATIENCE {
            return None;
        }
        let rate = self.sweep_rate(deadline.saturating_sub(tip).max(1)).await;
        let total: u64 = b.members.iter().map(|m| m.value_sat).sum();
        let old_fee = total.checked_sub(b.tx.output[0].value.to_sat())?;
        let weight = placeholder_weight(&b.tx.input, &b.tx.output[0].script_pubkey);
        let wanted = rate.fee_for_weight(weight);
        let budget = total * self.config.fee_budget_percent / 100;
        // BIP 125: the old fee plus the incremental relay fee over its size.
        let floor = old_fee + INCREMENTAL_RELAY_PER_KW * weight / 1000;
        let fee = wanted.max(floor + 1).min(budget);
        if wanted <= old_fee || fee <= floor {
            return None;
        }
        let tx = self
            .sign_batch(
                &b.members,
                b.tx.input.clone(),
                b.tx.output[0].script_pubkey.clone(),
                fee,
            )
            .await?;
        let new = SweepBatch {
            tx,
            members: b.members.clone(),
        };
        let old_txid = b.tx.compute_txid();
        let new_txid = new.tx.compute_txid();
        let writes = vec![
            Write::Record(Record::json(
                RECORD_KIND,
                &new_txid.to_string(),
                "",
                unix_now(),
                &new,
            )),
            Write::DeleteRecord {
                kind: RECORD_KIND.into(),
                id: old_txid.to_string(),
            },
        ];
        if let Err(e) = self.group.commit(writes).await {
            tracing::warn!(%old_txid, "sweep batch not replaced: {e}");
            return None;
        }
        {
            let mut batches = self.sweep_batches.lock().expect("batch lock");
            batches.retain(|x| x.tx.compute_txid() != old_txid);
            batches.push(new.clone());
        }
        tracing::info!(old = %old_txid, new = %new_txid, fee, "sweep batch replaced at a higher fee as its deadline nears");
        Some(new)
    }

    async fn form_batches(&self, tip: u32) {
        let chain = &self.config.chain;
        let max = self.config.sweep_batch_max_inputs;
        let ids = self.channels_with_sweeps().await;
        let mut candidates = Vec::new();
        for id in ids {
            let breach = match self.entry(&id).await {
                Ok(e) => e.lock().await.monitor.breach().map(|r| r.commitment.txid()),
                Err(_) => continue,
            };
            for p in self.own_pending_sweeps(&id).await {
                if p.deadline.is_some() || p.old.lock_time != LockTime::ZERO {
                    continue;
                }
                if Some(p.old.input[0].previous_output.txid) == breach {
                    self.broadcast_single(&p.old).await;
                    continue;
                }
                let o = p.old.input[0].previous_output;
                if self.batch_holding(&o).is_some() {
                    continue;
                }
                match chain.tx_status(&p.old.compute_txid()).await {
                    Ok(chain::TxStatus::Unknown) => {}
                    _ => continue, // out already, or the chain did not answer
                }
                let deadline = self.nominal_deadline(&p.old).await;
                // Nearing its deadline it is bumped alone (`sweep_fees`); spent in the
                // mempool (by an earlier version), it can only replace that alone.
                let batchable = max >= 2
                    && deadline.is_some_and(|d| d > tip + NO_DEADLINE_PATIENCE)
                    && matches!(chain.tx_out(&o, true).await, Ok(Some(_)))
                    && chain.test_accept(&p.old).await.is_ok();
                match deadline {
                    Some(deadline) if batchable => candidates.push(Candidate {
                        channel: id,
                        single: p.old,
                        value: p.value,
                        deadline,
                    }),
                    _ => self.broadcast_single(&p.old).await,
                }
            }
        }
        for chunk in candidates.chunks(max.max(1)) {
            if chunk.len() < 2 || !self.start_batch(chunk).await {
                for c in chunk {
                    self.broadcast_single(&c.single).await;
                }
            }
        }
    }

    async fn broadcast_single(&self, tx: &Transaction) {
        if let Err(e) = self.config.chain.broadcast(tx).await {
            tracing::debug!(txid = %tx.compute_txid(), "sweep not accepted yet: {e}");
        }
    }

    /// Builds, stores and broadcasts the batch of `chunk`. `false` when no batch was
    /// stored (its single sweeps are then sent alone).
    async fn start_batch(&self, chunk: &[Candidate]) -> bool {
        let estimate = self.sweep_rate(NO_DEADLINE_BLOCKS).await;
        let lowest_single = chunk.iter().map(Candidate::rate).min().unwrap_or(0);
        let rate = FeeratePerKw(
            u64::from(estimate.0)
                .min(lowest_single)
                .max(u64::from(JUSTICE_FLOOR.0))
                .min(u64::from(u32::MAX)) as u32,
        );
        let inputs: Vec<TxIn> = chunk.iter().map(|c| c.single.input[0].clone()).collect();
        // Weighed with a member's destination (a wallet address of the same kind) before
        // a new address is taken, so that none is taken for a batch not made.
        let fee = rate.fee_for_weight(placeholder_weight(
            &inputs,
            &chunk[0].single.output[0].script_pubkey,
        ));
        let total: u64 = chunk.iter().map(|c| c.value.to_sat()).sum();
        if fee > total * self.config.fee_budget_percent / 100 {
            return false;
        }
        // The newest address: those the members' single sweeps were given, older, stay
        // below it, within the wallet's gap when it scans the chain again.
        let dest = match self.wallet.lock().await.new_address() {
            Ok(a) => a.script_pubkey(),
            Err(e) => {
                tracing::warn!("sweep batch: no wallet address: {e}");
                return false;
            }
        };
        let members: Vec<Member> = chunk.iter().map(Candidate::member).collect();
        let Some(tx) = self.sign_batch(&members, inputs, dest, fee).await else {
            return false;
        };
        let batch = SweepBatch { tx, members };
        let txid = batch.tx.compute_txid();
        if let Err(e) = self.config.chain.test_accept(&batch.tx).await {
            tracing::warn!(%txid, "sweep batch refused by the mempool: {e}");
            return false;
        }
        let record = Record::json(RECORD_KIND, &txid.to_string(), "", unix_now(), &batch);
        if let Err(e) = self.group.commit(vec![Write::Record(record)]).await {
            tracing::warn!(%txid, "sweep batch not stored: {e}");
            return false;
        }
        let singles_fee: u64 = chunk
            .iter()
            .map(|c| c.value.to_sat() - c.single.output[0].value.to_sat())
            .sum();
        tracing::info!(
            %txid,
            inputs = chunk.len(),
            fee,
            fee_alone = singles_fee,
            rate = rate.0,
            "sweeping outputs without a deadline in one transaction"
        );
        self.sweep_batches
            .lock()
            .expect("batch lock")
            .push(batch.clone());
        self.broadcast_single(&batch.tx).await;
        true
    }

    /// The batch of `members` spending `inputs` (their single sweeps' inputs, whose
    /// witnesses say which output each is) to `dest`, paying `fee`, each input signed by
    /// its channel. `None` when the value left would be dust or a channel refused.
    async fn sign_batch(
        &self,
        members: &[Member],
        inputs: Vec<TxIn>,
        dest: ScriptBuf,
        fee: u64,
    ) -> Option<Transaction> {
        let total: u64 = members.iter().map(|m| m.value_sat).sum();
        let value = total.checked_sub(fee).filter(|v| *v >= MIN_OUTPUT_SAT)?;
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs,
            output: vec![TxOut {
                value: Amount::from_sat(value),
                script_pubkey: dest,
            }],
        };
        for (i, m) in members.iter().enumerate() {
            let template = tx.input.get(i)?.witness.clone();
            let entry = self.entry(&m.channel).await.ok()?;
            let e = entry.lock().await;
            if let Err(err) =
                e.channel
                    .sign_own_sweep_input(&mut tx, i, Amount::from_sat(m.value_sat), &template)
            {
                tracing::warn!(channel = %m.channel, "sweep batch input not signed: {err}");
                return None;
            }
        }
        Some(tx)
    }
}

/// The weight of a transaction spending `inputs` to `dest`, each signature counted at
/// its largest (73 bytes), so that a fee computed on it never pays below its rate.
fn placeholder_weight(inputs: &[TxIn], dest: &ScriptBuf) -> u64 {
    let input = inputs
        .iter()
        .map(|i| {
            let mut w = Witness::new();
            for (k, item) in i.witness.iter().enumerate() {
                if k == 0 {
                    w.push([0u8; 73]);
                } else {
                    w.push(item);
                }
            }
            TxIn {
                witness: w,
                ..i.clone()
            }
        })
        .collect();
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input,
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: dest.clone(),
        }],
    }
    .weight()
    .to_wu()
}
