//! Consensus and policy constants of the devnet: Bitcoin Core's regtest parameters.

use bitcoin::{Amount, CompactTarget, FeeRate, Weight};

/// Compact target of every regtest block (`powLimit`, no retargeting on regtest).
pub const REGTEST_BITS_U32: u32 = 0x207f_ffff;

/// [`REGTEST_BITS_U32`] as a [`CompactTarget`].
pub fn regtest_bits() -> CompactTarget {
    CompactTarget::from_consensus(REGTEST_BITS_U32)
}
/// Blocks a coinbase output must wait before it can be spent (`COINBASE_MATURITY`).
pub const COINBASE_MATURITY: u32 = 100;
/// Regtest halves the block subsidy every 150 blocks.
pub const SUBSIDY_HALVING_INTERVAL: u32 = 150;
/// `MAX_BLOCK_WEIGHT` (BIP141).
pub const MAX_BLOCK_WEIGHT: Weight = Weight::from_wu(4_000_000);
/// `MAX_BLOCK_SIGOPS_COST` (BIP141).
pub const MAX_BLOCK_SIGOPS_COST: usize = 80_000;
/// Policy: largest standard transaction weight (`MAX_STANDARD_TX_WEIGHT`).
pub const MAX_STANDARD_TX_WEIGHT: Weight = Weight::from_wu(400_000);
/// Policy: most transactions in one mempool cluster (Core v31 `-limitclustercount`).
pub const MAX_CLUSTER_COUNT: usize = 64;
/// Policy: largest virtual size of one mempool cluster (Core v31 `-limitclustersize`, 101 kvB).
pub const MAX_CLUSTER_VSIZE: u64 = 101_000;
/// Policy: the extra fee rate a replacement must pay for its own size (Core v29.1+: 100 sat/kvB).
pub const INCREMENTAL_RELAY_FEE: FeeRate = FeeRate::from_sat_per_kwu(25);
/// Policy: most transactions one replacement may evict (BIP125 rule 5).
pub const MAX_REPLACEMENT_CANDIDATES: usize = 100;
/// Policy: most signature operations (cost) in one relayed transaction.
pub const MAX_STANDARD_TX_SIGOPS_COST: usize = 16_000;
/// Policy: smallest non-witness size of a relayed transaction (`MIN_STANDARD_TX_NONWITNESS_SIZE`).
pub const MIN_STANDARD_TX_NONWITNESS_SIZE: usize = 65;
/// Bitcoin Core v29.1+'s default `-minrelaytxfee`: 100 sat/kvB (0.1 sat/vB).
pub const DEFAULT_MIN_RELAY_FEE: FeeRate = FeeRate::from_sat_per_kwu(25);
/// `-dustrelayfee` default, 3000 sat/kvB, used for the dust threshold.
pub const DUST_RELAY_FEE: FeeRate = FeeRate::from_sat_per_kwu(750);
/// `sendrawtransaction`'s default `maxfeerate`: 0.10 BTC/kvB.
pub const DEFAULT_MAX_RAW_TX_FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(2_500_000);
/// A block may be at most this far (seconds) ahead of the node's clock (`MAX_FUTURE_BLOCK_TIME`).
pub const MAX_FUTURE_BLOCK_TIME: u64 = 2 * 60 * 60;
/// Regtest reports `initialblockdownload` while the tip is older than this (`-maxtipage`).
pub const MAX_TIP_AGE: u64 = 24 * 60 * 60;
/// BIP113: a transaction's time lock is compared with the median of the last 11 block times.
pub const MEDIAN_TIME_SPAN: usize = 11;

/// Script verification flags, as in Bitcoin Core's `script/interpreter.h` and
/// libbitcoinconsensus (`bitcoinconsensus_SCRIPT_FLAGS_VERIFY_*`).
pub mod flags {
    /// BIP16 pay-to-script-hash.
    pub const P2SH: u32 = 1 << 0;
    /// BIP66 strict DER signatures.
    pub const DERSIG: u32 = 1 << 2;
    /// BIP147 dummy element of CHECKMULTISIG must be empty.
    pub const NULLDUMMY: u32 = 1 << 4;
    /// BIP65 OP_CHECKLOCKTIMEVERIFY.
    pub const CHECKLOCKTIMEVERIFY: u32 = 1 << 9;
    /// BIP112 OP_CHECKSEQUENCEVERIFY.
    pub const CHECKSEQUENCEVERIFY: u32 = 1 << 10;
    /// BIP141/143 segregated witness.
    pub const WITNESS: u32 = 1 << 11;
    /// All of the above: every soft fork that regtest activates from block 1 and that
    /// libbitcoinconsensus can check.
    pub const MANDATORY: u32 =
        P2SH | DERSIG | NULLDUMMY | CHECKLOCKTIMEVERIFY | CHECKSEQUENCEVERIFY | WITNESS;
}

/// Block subsidy at `height` on regtest (`GetBlockSubsidy`).
pub fn block_subsidy(height: u32) -> Amount {
    let halvings = height / SUBSIDY_HALVING_INTERVAL;
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat((50 * 100_000_000u64) >> halvings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsidy_halves_every_150_blocks_on_regtest() {
        assert_eq!(block_subsidy(0), Amount::from_btc(50.0).unwrap());
        assert_eq!(block_subsidy(149), Amount::from_btc(50.0).unwrap());
        assert_eq!(block_subsidy(150), Amount::from_btc(25.0).unwrap());
        assert_eq!(block_subsidy(150 * 64), Amount::ZERO);
    }

    #[test]
    fn fee_rate_constants_match_core_per_kvb_values() {
        assert_eq!(DEFAULT_MIN_RELAY_FEE.to_sat_per_kwu() * 4, 100);
        assert_eq!(DUST_RELAY_FEE.to_sat_per_kwu() * 4, 3000);
        assert_eq!(DEFAULT_MAX_RAW_TX_FEE_RATE.to_sat_per_kwu() * 4, 10_000_000);
    }
}
