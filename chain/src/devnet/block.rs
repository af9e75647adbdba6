//! Block assembly (coinbase with BIP34 height and BIP141 witness commitment, Merkle root,
//! nonce search) and the context-free block checks of Bitcoin Core's `CheckBlock`.

use std::collections::HashSet;

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::blockdata::script::Builder;
use bitcoin::hashes::Hash;
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::PushBytesBuf;
use bitcoin::transaction::Version;
use bitcoin::{
    absolute, Amount, Block, BlockHash, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxMerkleNode, TxOut, Witness,
};

use super::params::{regtest_bits, MAX_BLOCK_SIGOPS_COST, MAX_BLOCK_WEIGHT};
use super::validation::{check_transaction, TxReject};

/// Why a block was rejected, with Bitcoin Core's reason string (`bad-txnmrklroot`,
/// `high-hash`, `bad-cb-amount`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}{}", if debug.is_empty() { String::new() } else { format!(", {debug}") })]
pub struct BlockReject {
    /// Core's reject reason.
    pub reason: String,
    /// Detail, e.g. the failing transaction.
    pub debug: String,
}

impl BlockReject {
    /// A rejection with `reason` and no detail.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            debug: String::new(),
        }
    }

    /// A rejection carrying a transaction's rejection as detail (Core's
    /// "bad-txns-…" block states keep the transaction reason).
    pub fn from_tx(e: TxReject, txid: bitcoin::Txid) -> Self {
        Self {
            reason: e.reason,
            debug: format!("{} (tx {txid})", e.debug),
        }
    }
}

/// BIP141 witness reserved value used in every coinbase this devnet builds (32 zero bytes).
const WITNESS_RESERVED_VALUE: [u8; 32] = [0; 32];

/// Builds the coinbase of a block at `height`, paying `value` to `script_pubkey`, the way
/// Bitcoin Core's miner does: scriptSig `<height> OP_0`, nSequence 0xfffffffe, nLockTime
/// `height - 1`, and an OP_RETURN witness commitment output.
pub fn build_coinbase(height: u32, script_pubkey: ScriptBuf, value: Amount) -> Transaction {
    let script_sig = Builder::new()
        .push_int(i64::from(height))
        .push_int(0)
        .into_script();
    let mut witness = Witness::new();
    witness.push(WITNESS_RESERVED_VALUE);
    Transaction {
        version: Version::TWO,
        lock_time: absolute::LockTime::from_consensus(height.saturating_sub(1)),
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
            witness,
        }],
        output: vec![TxOut {
            value,
            script_pubkey,
        }],
    }
}

/// Assembles a block on `prev` at `time` from a coinbase and transactions, adds the witness
/// commitment, fills in the Merkle root and searches a nonce that meets the regtest target.
pub fn assemble_block(
    prev: BlockHash,
    time: u32,
    mut coinbase: Transaction,
    txs: Vec<Transaction>,
) -> Block {
    let mut txdata = Vec::with_capacity(txs.len() + 1);
    txdata.push(coinbase.clone());
    txdata.extend(txs);
    let mut block = Block {
        header: Header {
            version: BlockVersion::from_consensus(0x2000_0000),
            prev_blockhash: prev,
            merkle_root: TxMerkleNode::all_zeros(),
            time,
            bits: regtest_bits(),
            nonce: 0,
        },
        txdata,
    };
    // The commitment covers wtxids, which do not depend on the coinbase (its slot is zero).
    if let Some(root) = block.witness_root() {
        let commitment = Block::compute_witness_commitment(&root, &WITNESS_RESERVED_VALUE);
        let mut data = PushBytesBuf::from([0xaa, 0x21, 0xa9, 0xed]);
        // 36 bytes always fit a push.
        let _ = data.extend_from_slice(commitment.as_byte_array());
        let script = Builder::new()
            .push_opcode(OP_RETURN)
            .push_slice(data)
            .into_script();
        coinbase.output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: script,
        });
        block.txdata[0] = coinbase;
    }
    if let Some(root) = block.compute_merkle_root() {
        block.header.merkle_root = root;
    }
    mine_header(&mut block.header);
    block
}

/// Nonce search by double SHA-256 until the header meets its own target (about two
/// attempts on average at regtest difficulty). Bumps the time if the nonce space runs out.
pub fn mine_header(header: &mut Header) {
    let target = header.target();
    loop {
        if target.is_met_by(header.block_hash()) {
            return;
        }
        if header.nonce == u32::MAX {
            header.nonce = 0;
            header.time += 1;
        } else {
            header.nonce += 1;
        }
    }
}

/// Context-free block checks (`CheckBlockHeader` + `CheckBlock`): proof of work, Merkle
/// root (including CVE-2012-2459 mutation), a single leading coinbase, every transaction's
/// `CheckTransaction`, weight, sigops and the witness commitment.
pub fn check_block(block: &Block) -> Result<(), BlockReject> {
    if block.header.bits != regtest_bits() {
        return Err(BlockReject::new("bad-diffbits"));
    }
    if !block.header.target().is_met_by(block.block_hash()) {
        return Err(BlockReject::new("high-hash"));
    }
    if block.txdata.is_empty() {
        return Err(BlockReject::new("bad-blk-length"));
    }
    if !block.check_merkle_root() {
        return Err(BlockReject::new("bad-txnmrklroot"));
    }
    let mut txids = HashSet::with_capacity(block.txdata.len());
    for tx in &block.txdata {
        if !txids.insert(tx.compute_txid()) {
            return Err(BlockReject::new("bad-txns-duplicate"));
        }
    }
    if !block.txdata[0].is_coinbase() {
        return Err(BlockReject::new("bad-cb-missing"));
    }
    if block.txdata[1..].iter().any(Transaction::is_coinbase) {
        return Err(BlockReject::new("bad-cb-multiple"));
    }
    for tx in &block.txdata {
        check_transaction(tx).map_err(|e| BlockReject::from_tx(e, tx.compute_txid()))?;
    }
    if block.weight() > MAX_BLOCK_WEIGHT {
        return Err(BlockReject::new("bad-blk-weight"));
    }
    // Legacy sigops only here; P2SH and witness sigops need the spent outputs and are
    // counted at connection time.
    let legacy: usize = block
        .txdata
        .iter()
        .map(|tx| tx.total_sigop_cost(|_| None))
        .sum();
    if legacy > MAX_BLOCK_SIGOPS_COST {
        return Err(BlockReject::new("bad-blk-sigops"));
    }
    if !block.check_witness_commitment() {
        return Err(BlockReject::new("bad-witness-merkle-match"));
    }
    Ok(())
}

/// Checks BIP34 as Core does: the coinbase scriptSig starts with `CScript() << height`.
pub fn check_bip34_height(block: &Block, height: u32) -> Result<(), BlockReject> {
    let expected = Builder::new().push_int(i64::from(height)).into_script();
    let script_sig = block
        .txdata
        .first()
        .and_then(|tx| tx.input.first())
        .map(|i| i.script_sig.as_bytes());
    match script_sig {
        Some(s) if s.starts_with(expected.as_bytes()) => Ok(()),
        _ => Err(BlockReject::new("bad-cb-height")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::blockdata::constants::genesis_block;
    use bitcoin::Network;

    fn sample_block() -> Block {
        let genesis = genesis_block(Network::Regtest);
        let cb = build_coinbase(
            1,
            ScriptBuf::new_op_return([1u8; 4]),
            Amount::from_btc(50.0).unwrap(),
        );
        assemble_block(genesis.block_hash(), genesis.header.time + 1, cb, vec![])
    }

    #[test]
    fn assembled_block_passes_checks_and_encodes_height() {
        let block = sample_block();
        assert_eq!(check_block(&block), Ok(()));
        assert_eq!(check_bip34_height(&block, 1), Ok(()));
        assert!(check_bip34_height(&block, 2).is_err());
        // Core's coinbase for height 1 has scriptSig 0x5100.
        assert_eq!(
            block.txdata[0].input[0].script_sig.as_bytes(),
            &[0x51, 0x00]
        );
    }

    #[test]
    fn tampered_blocks_are_rejected_with_core_reasons() {
        let mut block = sample_block();
        block.txdata[0].output[0].value = Amount::from_sat(1);
        mine_header(&mut block.header);
        assert_eq!(
            check_block(&block).map_err(|e| e.reason),
            Err("bad-txnmrklroot".into())
        );

        let mut block = sample_block();
        // Find a nonce that does NOT meet the target.
        while block.header.target().is_met_by(block.block_hash()) {
            block.header.nonce = block.header.nonce.wrapping_add(1);
        }
        assert_eq!(
            check_block(&block).map_err(|e| e.reason),
            Err("high-hash".into())
        );
    }
}
