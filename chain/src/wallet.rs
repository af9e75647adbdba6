//! The on-chain wallet: BIP84 (P2WPKH) keys from a BIP32 seed, UTXOs tracked from
//! [`ChainEvent`]s (reorg-safe: each block's changes are undone when it is disconnected),
//! coin selection, change, and signed transactions that fund a channel's 2-of-2 P2WSH
//! output. The seed file is created with mode 0600 and never printed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::Path;

use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv};
use bitcoin::secp256k1::{All, Message, Secp256k1};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::{predict_weight, InputWeightPrediction, Version};
use bitcoin::{
    absolute, ecdsa, Address, Amount, CompressedPublicKey, FeeRate, Network, OutPoint, PrivateKey,
    ScriptBuf, Sequence, Transaction, TxIn, TxOut, Weight, Witness,
};

use crate::devnet::params::COINBASE_MATURITY;
use crate::poller::ChainEvent;
use crate::source::{BlockRef, ChainError, ChainSource};

/// Fee rate used when the chain source has no estimate (2 sat/vB).
pub const FALLBACK_FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(500);
/// Addresses derived beyond the last used one on each keychain (BIP44 gap limit).
const LOOKAHEAD: u32 = 20;
/// Blocks remembered for ordering checks (a reorg deeper than this is not verified).
const RECENT_BLOCKS: usize = 2016;
const EXTERNAL: u32 = 0;
const INTERNAL: u32 = 1;

/// Wallet failures.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Reading or writing the seed file failed.
    #[error("seed file {path}: {source}")]
    SeedIo {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The seed file does not hold a 16–64 byte hex seed.
    #[error("seed file {0} is malformed")]
    SeedMalformed(String),
    /// Key derivation failed.
    #[error("key derivation: {0}")]
    Bip32(#[from] bitcoin::bip32::Error),
    /// Not enough spendable coins.
    #[error("insufficient funds: need {needed}, have {available}")]
    InsufficientFunds {
        /// Amount plus fee.
        needed: Amount,
        /// Spendable balance.
        available: Amount,
    },
    /// The funding script is not a P2WSH output script.
    #[error("funding output script is not P2WSH")]
    NotP2wsh,
    /// The requested amount is below the dust limit of its output.
    #[error("amount {0} is dust")]
    Dust(Amount),
    /// The output to spend is not one of this wallet's.
    #[error("the output is not this wallet's")]
    NotOurs,
    /// Signing failed.
    #[error("signing: {0}")]
    Signing(String),
    /// A block was disconnected that the wallet never saw connected.
    #[error("disconnect of block {0:?} out of order with the wallet's view")]
    OutOfOrder(BlockRef),
    /// The chain source failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// A coin the wallet can spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletUtxo {
    /// Where it is.
    pub outpoint: OutPoint,
    /// The output.
    pub output: TxOut,
    /// Height of the block that created it.
    pub height: u32,
    /// Whether it is a coinbase output (maturity applies).
    pub is_coinbase: bool,
    keychain: u32,
    index: u32,
}

/// Balances by spendability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// Confirmed and spendable now.
    pub spendable: Amount,
    /// Coinbase outputs that are not yet mature.
    pub immature: Amount,
    /// Reserved by transactions this wallet built that are not yet confirmed.
    pub locked: Amount,
    /// The change of those transactions, ours once they confirm (not in [`Self::total`]:
    /// the coins they spend are still counted in `locked`).
    pub trusted_pending: Amount,
}

impl Balance {
    /// Everything the wallet holds in the chain.
    pub fn total(&self) -> Amount {
        self.spendable + self.immature + self.locked
    }
}

/// A signed transaction paying a channel's funding output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingTx {
    /// The signed transaction, ready to broadcast.
    pub tx: Transaction,
    /// Index of the funding output (BOLT 2 `funding_output_index`).
    pub funding_output_index: u32,
    /// Fee paid.
    pub fee: Amount,
}

struct BlockDelta {
    block: BlockRef,
    added: Vec<OutPoint>,
    spent: Vec<WalletUtxo>,
}

/// A BIP84 single-account wallet.
pub struct Wallet {
    secp: Secp256k1<All>,
    account: Xpriv,
    network: Network,
    scripts: HashMap<ScriptBuf, (u32, u32)>,
    derived: [u32; 2],
    next_unused: [u32; 2],
    utxos: HashMap<OutPoint, WalletUtxo>,
    locked: HashSet<OutPoint>,
    /// Change outputs of our own transactions not yet in a block.
    pending_change: HashMap<OutPoint, Amount>,
    /// Undo data of connected blocks that changed the wallet (others need none).
    deltas: Vec<BlockDelta>,
    /// The last blocks processed (bounded), to check that disconnects come in order.
    recent: VecDeque<BlockRef>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Wallet")
            .field("network", &self.network)
            .field("utxos", &self.utxos.len())
            .finish_non_exhaustive()
    }
}

/// Reads the hex seed at `path`, or creates one (32 random bytes, mode 0600).
pub fn load_or_create_seed(path: &Path) -> Result<Vec<u8>, WalletError> {
    let io = |source| WalletError::SeedIo {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let seed = hex::decode(text.trim())
                .map_err(|_| WalletError::SeedMalformed(path.display().to_string()))?;
            if !(16..=64).contains(&seed.len()) {
                return Err(WalletError::SeedMalformed(path.display().to_string()));
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "seed file is readable by others; chmod 600 it");
                }
            }
            Ok(seed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use bitcoin::secp256k1::rand::RngCore;
            let mut seed = [0u8; 32];
            bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut seed);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(io)?;
            file.write_all(hex::encode(seed).as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(seed.to_vec())
        }
        Err(e) => Err(io(e)),
    }
}

impl Wallet {
    /// A wallet for `network` from a BIP32 seed (account `m/84'/coin'/0'`).
    pub fn from_seed(seed: &[u8], network: Network) -> Result<Self, WalletError> {
        let secp = Secp256k1::new();
        let master = Xpriv::new_master(network, seed)?;
        let coin = if network == Network::Bitcoin { 0 } else { 1 };
        let path: DerivationPath = vec![
            ChildNumber::from_hardened_idx(84)?,
            ChildNumber::from_hardened_idx(coin)?,
            ChildNumber::from_hardened_idx(0)?,
        ]
        .into();
        let account = master.derive_priv(&secp, &path)?;
        let mut wallet = Self {
            secp,
            account,
            network,
            scripts: HashMap::new(),
            derived: [0, 0],
            next_unused: [0, 0],
            utxos: HashMap::new(),
            locked: HashSet::new(),
            pending_change: HashMap::new(),
            deltas: Vec::new(),
            recent: VecDeque::new(),
        };
        wallet.derive_up_to(EXTERNAL, LOOKAHEAD)?;
        wallet.derive_up_to(INTERNAL, LOOKAHEAD)?;
        Ok(wallet)
    }

    /// Opens the wallet whose seed is at `seed_path`, creating the seed if missing.
    pub fn open(seed_path: &Path, network: Network) -> Result<Self, WalletError> {
        let seed = load_or_create_seed(seed_path)?;
        Self::from_seed(&seed, network)
    }

    fn key(&self, keychain: u32, index: u32) -> Result<PrivateKey, WalletError> {
        let path = [
            ChildNumber::from_normal_idx(keychain)?,
            ChildNumber::from_normal_idx(index)?,
        ];
        Ok(self.account.derive_priv(&self.secp, &path)?.to_priv())
    }

    fn script(&self, keychain: u32, index: u32) -> Result<ScriptBuf, WalletError> {
        let pk = CompressedPublicKey::from_private_key(&self.secp, &self.key(keychain, index)?)
            .map_err(|e| WalletError::Signing(e.to_string()))?;
        Ok(ScriptBuf::new_p2wpkh(&pk.wpubkey_hash()))
    }

    fn derive_up_to(&mut self, keychain: u32, count: u32) -> Result<(), WalletError> {
        let k = keychain as usize;
        while self.derived[k] < count {
            let script = self.script(keychain, self.derived[k])?;
            self.scripts.insert(script, (keychain, self.derived[k]));
            self.derived[k] += 1;
        }
        Ok(())
    }

    fn next_script(&mut self, keychain: u32) -> Result<ScriptBuf, WalletError> {
        let k = keychain as usize;
        let index = self.next_unused[k];
        self.next_unused[k] += 1;
        self.derive_up_to(keychain, self.next_unused[k] + LOOKAHEAD)?;
        self.script(keychain, index)
    }

    /// A fresh receive address (`m/84'/coin'/0'/0/i`).
    pub fn new_address(&mut self) -> Result<Address, WalletError> {
        let script = self.next_script(EXTERNAL)?;
        Address::from_script(&script, self.network).map_err(|e| WalletError::Signing(e.to_string()))
    }

    /// Whether `script` belongs to this wallet.
    pub fn is_mine(&self, script: &ScriptBuf) -> bool {
        self.scripts.contains_key(script)
    }

    /// The last block the wallet has processed.
    pub fn synced_to(&self) -> Option<BlockRef> {
        self.recent.back().copied()
    }

    /// Updates the UTXO set from a chain event. Disconnects undo exactly what the
    /// matching connect did.
    pub fn apply(&mut self, event: &ChainEvent) -> Result<(), WalletError> {
        match event {
            ChainEvent::BlockConnected { block_ref, block } => {
                let mut delta = BlockDelta {
                    block: *block_ref,
                    added: Vec::new(),
                    spent: Vec::new(),
                };
                for tx in &block.txdata {
                    for input in &tx.input {
                        // Locks stay: if a reorg brings the coin back, our spending tx is
                        // back in the mempool and the coin is still reserved.
                        if let Some(u) = self.utxos.remove(&input.previous_output) {
                            delta.spent.push(u);
                        }
                    }
                    let txid = tx.compute_txid();
                    for (vout, output) in tx.output.iter().enumerate() {
                        let Some(&(keychain, index)) = self.scripts.get(&output.script_pubkey)
                        else {
                            continue;
                        };
                        let outpoint = OutPoint {
                            txid,
                            vout: vout as u32,
                        };
                        self.pending_change.remove(&outpoint);
                        self.utxos.insert(
                            outpoint,
                            WalletUtxo {
                                outpoint,
                                output: output.clone(),
                                height: block_ref.height,
                                is_coinbase: tx.is_coinbase(),
                                keychain,
                                index,
                            },
                        );
                        delta.added.push(outpoint);
                        let k = keychain as usize;
                        if index >= self.next_unused[k] {
                            self.next_unused[k] = index + 1;
                            self.derive_up_to(keychain, index + 1 + LOOKAHEAD)?;
                        }
                    }
                }
                if !delta.added.is_empty() || !delta.spent.is_empty() {
                    self.deltas.push(delta);
                }
                self.recent.push_back(*block_ref);
                if self.recent.len() > RECENT_BLOCKS {
                    self.recent.pop_front();
                }
            }
            ChainEvent::BlockDisconnected { block_ref } => {
                match self.recent.back() {
                    Some(last) if last == block_ref => {
                        self.recent.pop_back();
                    }
                    // Before the wallet started (or deeper than it remembers): no delta
                    // can be newer than the block, so there is nothing to undo.
                    None => {}
                    Some(_) => return Err(WalletError::OutOfOrder(*block_ref)),
                }
                if self.deltas.last().is_some_and(|d| d.block == *block_ref) {
                    if let Some(delta) = self.deltas.pop() {
                        for outpoint in delta.added {
                            self.utxos.remove(&outpoint);
                        }
                        for u in delta.spent {
                            self.utxos.insert(u.outpoint, u);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn tip_height(&self) -> u32 {
        self.synced_to().map(|b| b.height).unwrap_or(0)
    }

    fn is_mature(&self, u: &WalletUtxo) -> bool {
        !u.is_coinbase || self.tip_height() + 1 - u.height >= COINBASE_MATURITY
    }

    /// Balances as of the last processed block.
    pub fn balance(&self) -> Balance {
        let mut b = Balance::default();
        for u in self.utxos.values() {
            if self.locked.contains(&u.outpoint) {
                b.locked += u.output.value;
            } else if self.is_mature(u) {
                b.spendable += u.output.value;
            } else {
                b.immature += u.output.value;
            }
        }
        b.trusted_pending = self.pending_change.values().copied().sum();
        b
    }

    /// Every coin the wallet holds.
    pub fn utxos(&self) -> impl Iterator<Item = &WalletUtxo> {
        self.utxos.values()
    }

    /// Releases coins reserved by a transaction that was not broadcast after all. Its
    /// change address, when it was the last one handed out, is handed out again: failed
    /// attempts must not push later change past the gap a restored wallet scans.
    pub fn unlock(&mut self, tx: &Transaction) {
        for input in &tx.input {
            self.locked.remove(&input.previous_output);
        }
        let k = INTERNAL as usize;
        if let Some(last) = self.next_unused[k].checked_sub(1) {
            if let Ok(script) = self.script(INTERNAL, last) {
                if tx.output.iter().any(|o| o.script_pubkey == script) {
                    self.next_unused[k] = last;
                }
            }
        }
        let txid = tx.compute_txid();
        self.pending_change.retain(|o, _| o.txid != txid);
    }

    /// A fee rate for confirmation within `target_blocks` from the chain source, or
    /// [`FALLBACK_FEE_RATE`] when it has no estimate.
    pub async fn fee_rate<S: ChainSource + ?Sized>(
        source: &S,
        target_blocks: u16,
    ) -> Result<FeeRate, WalletError> {
        Ok(source
            .estimate_fee_rate(target_blocks)
            .await?
            .unwrap_or(FALLBACK_FEE_RATE))
    }

    /// Builds and signs a transaction that pays `amount` to a channel's 2-of-2 P2WSH
    /// `funding_script` (BOLT 3 funding output), with change back to the wallet. The
    /// spent coins are reserved until the transaction confirms or [`Self::unlock`].
    pub fn build_funding_tx(
        &mut self,
        funding_script: ScriptBuf,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<FundingTx, WalletError> {
        if !funding_script.is_p2wsh() {
            return Err(WalletError::NotP2wsh);
        }
        let (tx, fee) = self.build_and_sign(
            vec![TxOut {
                value: amount,
                script_pubkey: funding_script,
            }],
            fee_rate,
        )?;
        Ok(FundingTx {
            tx,
            funding_output_index: 0,
            fee,
        })
    }

    /// Builds and signs a transaction paying `outputs` (in that order, change appended
    /// last), with the fee for `fee_rate`. Returns the transaction and its fee.
    pub fn build_and_sign(
        &mut self,
        outputs: Vec<TxOut>,
        fee_rate: FeeRate,
    ) -> Result<(Transaction, Amount), WalletError> {
        for o in &outputs {
            if o.value < o.script_pubkey.minimal_non_dust() {
                return Err(WalletError::Dust(o.value));
            }
        }
        let target: Amount = outputs.iter().map(|o| o.value).sum();
        let change_script = self.script(INTERNAL, self.next_unused[INTERNAL as usize])?;
        let candidates = self.spendable_largest_first();
        let available: Amount = candidates.iter().map(|u| u.output.value).sum();
        let out_lens: Vec<usize> = outputs.iter().map(|o| o.script_pubkey.len()).collect();
        let mut selected = Vec::new();
        let mut value_in = Amount::ZERO;
        let mut plan = None;
        for u in candidates {
            value_in += u.output.value;
            selected.push(u);
            let inputs = vec![InputWeightPrediction::P2WPKH_MAX; selected.len()];
            let fee_no_change = fee_rate
                .fee_wu(predict_weight(inputs.clone(), out_lens.iter().copied()))
                .unwrap_or(Amount::MAX);
            let with_change = out_lens.iter().copied().chain([change_script.len()]);
            let fee_change = fee_rate
                .fee_wu(predict_weight(inputs, with_change))
                .unwrap_or(Amount::MAX);
            if value_in >= target + fee_change + change_script.minimal_non_dust() {
                plan = Some((fee_change, Some(value_in - target - fee_change)));
                break;
            }
            if value_in >= target + fee_no_change {
                // Leftover below dust goes to the fee.
                plan = Some((value_in - target, None));
                break;
            }
        }
        let Some((fee, change)) = plan else {
            return Err(WalletError::InsufficientFunds {
                needed: target,
                available,
            });
        };
        let mut outputs = outputs;
        if let Some(change) = change {
            self.next_script(INTERNAL)?;
            outputs.push(TxOut {
                value: change,
                script_pubkey: change_script,
            });
        }
        let mut tx = Transaction {
            version: Version::TWO,
            // Anti fee-sniping: valid only after the current tip, like Core's wallet.
            lock_time: absolute::LockTime::from_height(self.tip_height())
                .unwrap_or(absolute::LockTime::ZERO),
            input: selected
                .iter()
                .map(|u| TxIn {
                    previous_output: u.outpoint,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        self.sign(&mut tx, &selected, 0)?;
        for u in &selected {
            self.locked.insert(u.outpoint);
        }
        if change.is_some() {
            self.note_change(&tx, tx.output.len() - 1);
        }
        Ok((tx, fee))
    }

    fn note_change(&mut self, tx: &Transaction, vout: usize) {
        self.pending_change.insert(
            OutPoint::new(tx.compute_txid(), vout as u32),
            tx.output[vout].value,
        );
    }

    /// Brings the fee of `tx`, a transaction that pays none of its own (its inputs hold
    /// what its outputs pay): an option_anchors_zero_fee_htlc_tx HTLC transaction. Wallet
    /// coins are appended as inputs and one change output after the existing outputs, so
    /// that the whole transaction pays `fee_rate` (its existing witnesses are counted at
    /// their present size); the coins are reserved as in [`Self::build_and_sign`]. A
    /// signature on an existing input that commits to all inputs and outputs must be made
    /// again by the caller. Returns the transaction and the fee it now pays.
    pub fn add_fee_inputs(
        &mut self,
        tx: Transaction,
        fee_rate: FeeRate,
    ) -> Result<(Transaction, Amount), WalletError> {
        self.add_package_fee_inputs(tx, fee_rate, Weight::ZERO, Amount::ZERO, Amount::ZERO)
    }

    /// [`Self::add_fee_inputs`] for a child that pays for its unconfirmed parent (CPFP
    /// through an anchor): the fee makes the package, the parent of `parent_weight` paying
    /// `parent_fee` plus this transaction, pay `fee_rate`. `surplus` is what the existing
    /// inputs hold beyond the existing outputs (the anchor's 330 sat); it goes to the fee.
    /// Returns the transaction and the fee it pays itself.
    pub fn add_package_fee_inputs(
        &mut self,
        tx: Transaction,
        fee_rate: FeeRate,
        parent_weight: Weight,
        parent_fee: Amount,
        surplus: Amount,
    ) -> Result<(Transaction, Amount), WalletError> {
        let change_script = self.script(INTERNAL, self.next_unused[INTERNAL as usize])?;
        let candidates = self.spendable_largest_first();
        let available: Amount = candidates.iter().map(|u| u.output.value).sum();
        let first_input = tx.input.len();
        let mut funded = tx.clone();
        funded.output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: change_script.clone(),
        });
        let fee_of = |t: &Transaction| {
            fee_rate
                .fee_wu(t.weight() + parent_weight)
                .unwrap_or(Amount::MAX)
                .checked_sub(parent_fee)
                .unwrap_or(Amount::ZERO)
        };
        // Placeholder witnesses of the largest P2WPKH size: the weight is then measured,
        // not predicted.
        let dummy = Witness::from_slice(&[vec![0u8; 73], vec![0u8; 33]]);
        let mut value_in = surplus;
        let mut selected = Vec::new();
        let mut plan = None;
        for u in candidates {
            value_in += u.output.value;
            funded.input.push(TxIn {
                previous_output: u.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: dummy.clone(),
            });
            selected.push(u);
            let fee = fee_of(&funded);
            if value_in >= fee + change_script.minimal_non_dust() {
                plan = Some((fee, value_in - fee));
                break;
            }
        }
        let Some((fee, change)) = plan else {
            return Err(WalletError::InsufficientFunds {
                needed: fee_of(&funded).max(change_script.minimal_non_dust()),
                available,
            });
        };
        self.next_script(INTERNAL)?;
        if let Some(o) = funded.output.last_mut() {
            o.value = change;
        }
        self.sign(&mut funded, &selected, first_input)?;
        for u in &selected {
            self.locked.insert(u.outpoint);
        }
        self.note_change(&funded, funded.output.len() - 1);
        Ok((funded, fee))
    }

    /// A child that pays for `parent`, an unconfirmed transaction of this wallet's paying
    /// `parent_fee`, through its output `vout` (this wallet's change): child pays for
    /// parent (CPFP), for a parent whose txid must not change (a channel's funding, on
    /// which the commitments are signed). The two together pay `fee_rate`. The child
    /// spends that output alone when it can pay the fee, else with more coins; its one
    /// output is new change. The coins are reserved as in [`Self::build_and_sign`].
    /// Returns the signed child and the fee it pays itself.
    pub fn cpfp_child(
        &mut self,
        parent: &Transaction,
        vout: u32,
        fee_rate: FeeRate,
        parent_fee: Amount,
    ) -> Result<(Transaction, Amount), WalletError> {
        let output = parent
            .output
            .get(vout as usize)
            .ok_or(WalletError::NotOurs)?
            .clone();
        let &(keychain, index) = self
            .scripts
            .get(&output.script_pubkey)
            .ok_or(WalletError::NotOurs)?;
        let own = WalletUtxo {
            outpoint: OutPoint::new(parent.compute_txid(), vout),
            output,
            height: 0,
            is_coinbase: false,
            keychain,
            index,
        };
        let template = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: own.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::from_slice(&[vec![0u8; 73], vec![0u8; 33]]),
            }],
            output: vec![],
        };
        let change_script = self.script(INTERNAL, self.next_unused[INTERNAL as usize])?;
        let mut alone = template.clone();
        alone.output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: change_script.clone(),
        });
        let fee = fee_rate
            .fee_wu(alone.weight() + parent.weight())
            .unwrap_or(Amount::MAX)
            .checked_sub(parent_fee)
            .unwrap_or(Amount::ZERO);
        let (mut tx, fee) = if own.output.value >= fee + change_script.minimal_non_dust() {
            self.next_script(INTERNAL)?;
            alone.output[0].value = own.output.value - fee;
            self.note_change(&alone, 0);
            (alone, fee)
        } else {
            self.add_package_fee_inputs(
                template,
                fee_rate,
                parent.weight(),
                parent_fee,
                own.output.value,
            )?
        };
        self.sign(&mut tx, std::slice::from_ref(&own), 0)?;
        self.locked.insert(own.outpoint);
        Ok((tx, fee))
    }

    /// Reserves the coins that `tx` spends (a transaction built before a restart that is
    /// still to confirm), also those the wallet has not seen yet while it catches up
    /// with the chain.
    pub fn reserve(&mut self, tx: &Transaction) {
        for input in &tx.input {
            self.locked.insert(input.previous_output);
        }
    }

    /// Takes back an [`Self::unlock`] of `tx`, a transaction of this wallet's that stays
    /// after all (a replacement for it was refused): its coins reserved again, its change
    /// counted as pending again, and the change address not handed out again.
    pub fn restore(&mut self, tx: &Transaction) {
        self.reserve(tx);
        let k = INTERNAL as usize;
        for (vout, o) in tx.output.iter().enumerate() {
            if let Some(&(INTERNAL, index)) = self.scripts.get(&o.script_pubkey) {
                if index >= self.next_unused[k] {
                    self.next_unused[k] = index + 1;
                }
                self.note_change(tx, vout);
            }
        }
    }

    /// Mature, unreserved coins, largest first (fewest inputs, lowest fee); ties broken
    /// by outpoint for determinism.
    fn spendable_largest_first(&self) -> Vec<WalletUtxo> {
        let mut candidates: Vec<WalletUtxo> = self
            .utxos
            .values()
            .filter(|u| !self.locked.contains(&u.outpoint) && self.is_mature(u))
            .cloned()
            .collect();
        candidates.sort_by(|a, b| {
            b.output
                .value
                .cmp(&a.output.value)
                .then(a.outpoint.cmp(&b.outpoint))
        });
        candidates
    }

    /// Signs inputs `first_input..` of `tx`, which spend `coins` in order.
    fn sign(
        &self,
        tx: &mut Transaction,
        coins: &[WalletUtxo],
        first_input: usize,
    ) -> Result<(), WalletError> {
        let mut witnesses = Vec::with_capacity(coins.len());
        {
            let mut cache = SighashCache::new(&*tx);
            for (i, u) in coins.iter().enumerate() {
                let key = self.key(u.keychain, u.index)?;
                let hash = cache
                    .p2wpkh_signature_hash(
                        first_input + i,
                        &u.output.script_pubkey,
                        u.output.value,
                        EcdsaSighashType::All,
                    )
                    .map_err(|e| WalletError::Signing(e.to_string()))?;
                let sig = self.secp.sign_ecdsa(&Message::from(hash), &key.inner);
                let pk = key.public_key(&self.secp);
                witnesses.push(Witness::p2wpkh(
                    &ecdsa::Signature {
                        signature: sig,
                        sighash_type: EcdsaSighashType::All,
                    },
                    &pk.inner,
                ));
            }
        }
        for (input, w) in tx.input.iter_mut().skip(first_input).zip(witnesses) {
            input.witness = w;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    #[test]
    fn seed_file_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed");
        let seed = load_or_create_seed(&path).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load_or_create_seed(&path).expect("reload"), seed);
        let w = Wallet::from_seed(&seed, Network::Regtest).expect("wallet");
        assert!(!format!("{w:?}").contains(&hex::encode(&seed)));
    }

    #[test]
    fn bip84_test_vector_first_receive_address() {
        // BIP84's test mnemonic "abandon … about" seed; account m/84'/0'/0' first address.
        let seed = hex::decode(
            "5eb00bbddcf069084889a8ab9155568165f5c453ccb85e70811aaed6f6da5fc19a5ac40b389cd370d086206dec8aa6c43daea6690f20ad3d8d48b2d2ce9e38e4",
        )
        .expect("hex");
        let mut w = Wallet::from_seed(&seed, Network::Bitcoin).expect("wallet");
        assert_eq!(
            w.new_address().expect("address").to_string(),
            "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
        );
    }

    #[test]
    fn funding_requires_p2wsh_and_funds() {
        let mut w = Wallet::from_seed(&[1u8; 32], Network::Regtest).expect("wallet");
        let p2wpkh = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([0; 20]));
        assert!(matches!(
            w.build_funding_tx(p2wpkh, Amount::from_sat(10_000), FALLBACK_FEE_RATE),
            Err(WalletError::NotP2wsh)
        ));
        let p2wsh = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([0; 32]));
        assert!(matches!(
            w.build_funding_tx(p2wsh, Amount::from_sat(10_000), FALLBACK_FEE_RATE),
            Err(WalletError::InsufficientFunds { .. })
        ));
    }

    #[test]
    fn an_unlocked_funding_gives_back_its_coins_and_its_change_address() {
        let mut w = wallet_with_coins(3, &[1_000_000]);
        let p2wsh = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([5; 32]));
        let spendable = w.balance().spendable;
        assert_eq!(spendable, Amount::from_sat(1_000_000));
        let change_of = |tx: &Transaction| {
            tx.output
                .iter()
                .find(|o| o.script_pubkey != p2wsh)
                .map(|o| o.script_pubkey.clone())
        };
        let first = w
            .build_funding_tx(p2wsh.clone(), Amount::from_sat(100_000), FALLBACK_FEE_RATE)
            .expect("funding");
        assert_eq!(w.balance().spendable, Amount::ZERO, "the coin is reserved");
        // Thirty attempts given up: the coin and the same change address each time.
        let mut last = first.tx.clone();
        for _ in 0..30 {
            w.unlock(&last);
            assert_eq!(w.balance().spendable, spendable);
            let again = w
                .build_funding_tx(p2wsh.clone(), Amount::from_sat(100_000), FALLBACK_FEE_RATE)
                .expect("funding");
            assert_eq!(change_of(&again.tx), change_of(&first.tx));
            last = again.tx;
        }
        // Given back, then kept after all (its replacement was refused): the coin is
        // reserved again, its change pending again, and its change address is not
        // handed out to the next transaction.
        let kept = last;
        let pending = w.balance().trusted_pending;
        assert!(pending > Amount::ZERO);
        w.unlock(&kept);
        assert_eq!(w.balance().trusted_pending, Amount::ZERO);
        w.restore(&kept);
        assert_eq!(w.balance().spendable, Amount::ZERO, "reserved again");
        assert_eq!(w.balance().trusted_pending, pending, "change pending again");
        let next = w.next_script(INTERNAL).expect("script");
        assert_ne!(Some(next), change_of(&kept), "change address not reused");
    }

    /// A wallet holding one confirmed coin of each of `values`, and those coins' outputs.
    fn wallet_with_coins(seed: u8, values: &[u64]) -> Wallet {
        use bitcoin::blockdata::constants::genesis_block;
        use std::sync::Arc;
        let mut w = Wallet::from_seed(&[seed; 32], Network::Regtest).expect("wallet");
        let mut block = genesis_block(Network::Regtest);
        for (i, v) in values.iter().enumerate() {
            let mine = w.new_address().expect("address").script_pubkey();
            block.txdata.push(Transaction {
                version: bitcoin::transaction::Version::TWO,
                lock_time: bitcoin::absolute::LockTime::ZERO,
                input: vec![bitcoin::TxIn {
                    previous_output: OutPoint::new(
                        bitcoin::Txid::from_byte_array([9; 32]),
                        i as u32,
                    ),
                    ..Default::default()
                }],
                output: vec![TxOut {
                    value: Amount::from_sat(*v),
                    script_pubkey: mine,
                }],
            });
        }
        let block_ref = BlockRef {
            hash: block.block_hash(),
            height: 1,
        };
        w.apply(&ChainEvent::BlockConnected {
            block_ref,
            block: Arc::new(block),
        })
        .expect("connect");
        w
    }

    /// Bitcoin Core's interpreter on every input of `tx`, the outputs it spends looked up
    /// in `parents`.
    fn verify(tx: &Transaction, parents: &[&Transaction], coins: &[WalletUtxo]) {
        tx.verify(|op| {
            parents
                .iter()
                .find(|p| p.compute_txid() == op.txid)
                .map(|p| p.output[op.vout as usize].clone())
                .or_else(|| {
                    coins
                        .iter()
                        .find(|u| u.outpoint == *op)
                        .map(|u| u.output.clone())
                })
        })
        .expect("valid under Core's script rules");
    }

    #[test]
    fn a_child_pays_for_its_funding_parent() {
        let mut w = wallet_with_coins(4, &[1_000_000, 50_000]);
        let coins: Vec<WalletUtxo> = w.utxos().cloned().collect();
        let p2wsh = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([5; 32]));
        let low = FeeRate::from_sat_per_kwu(500);
        let funding = w
            .build_funding_tx(p2wsh.clone(), Amount::from_sat(900_000), low)
            .expect("funding");
        let change = funding.tx.output.len() as u32 - 1;
        assert_ne!(funding.tx.output[change as usize].script_pubkey, p2wsh);
        let pending = w.balance().trusted_pending;
        // At 50 times the rate: the change alone pays.
        let high = FeeRate::from_sat_per_kwu(25_000);
        let (child, fee) = w
            .cpfp_child(&funding.tx, change, high, funding.fee)
            .expect("child");
        assert_eq!(child.input.len(), 1, "the change alone pays");
        assert_eq!(
            child.input[0].previous_output.txid,
            funding.tx.compute_txid()
        );
        verify(&child, &[&funding.tx], &coins);
        let package =
            (funding.fee + fee).to_sat() * 1000 / (funding.tx.weight() + child.weight()).to_wu();
        assert!(package >= 25_000, "the package pays the rate: {package}");
        assert!(package < 25_500, "and no more than its rounding: {package}");
        let spent = funding.tx.output[change as usize].value;
        assert_eq!(child.output[0].value, spent - fee);
        assert_eq!(
            w.balance().trusted_pending,
            pending + spent - fee,
            "the child's change is pending"
        );
        // Given up: its change goes, the funding's stays.
        w.unlock(&child);
        assert_eq!(w.balance().trusted_pending, pending);
        // A change too small for a steeper rate: another coin joins it.
        let steep = FeeRate::from_sat_per_kwu(110_000);
        let (child, fee) = w
            .cpfp_child(&funding.tx, change, steep, funding.fee)
            .expect("child with another coin");
        assert_eq!(child.input.len(), 2);
        verify(&child, &[&funding.tx], &coins);
        let package =
            (funding.fee + fee).to_sat() * 1000 / (funding.tx.weight() + child.weight()).to_wu();
        assert!(package >= 110_000, "{package}");
        // The funding output is not the wallet's to spend.
        let funding_vout = 1 - change;
        assert!(matches!(
            w.cpfp_child(&funding.tx, funding_vout, high, funding.fee),
            Err(WalletError::NotOurs)
        ));
    }

    #[test]
    fn disconnects_must_match_the_last_connected_block() {
        use bitcoin::blockdata::constants::genesis_block;
        use std::sync::Arc;
        let mut w = Wallet::from_seed(&[2u8; 32], Network::Regtest).expect("wallet");
        let block = Arc::new(genesis_block(Network::Regtest));
        let a = BlockRef {
            hash: block.block_hash(),
            height: 7,
        };
        let b = BlockRef {
            hash: bitcoin::BlockHash::all_zeros(),
            height: 7,
        };
        w.apply(&ChainEvent::BlockConnected {
            block_ref: a,
            block,
        })
        .expect("connect");
        assert_eq!(w.synced_to(), Some(a));
        assert!(matches!(
            w.apply(&ChainEvent::BlockDisconnected { block_ref: b }),
            Err(WalletError::OutOfOrder(_))
        ));
        w.apply(&ChainEvent::BlockDisconnected { block_ref: a })
            .expect("disconnect");
        assert_eq!(w.synced_to(), None);
    }
}
