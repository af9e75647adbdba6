//! BOLT 2 "Channel Establishment": checking open_channel / accept_channel and turning the
//! pair into the [`ChannelSetup`] the state machine runs on.

use super::{ChannelParams, ChannelSetup, MAX_HTLCS};
use crate::channel_type::{accept_proposed, check_echo, ChannelType, ChannelTypeError};
use crate::keys::Basepoints;
use crate::msgs::{AcceptChannel, OpenChannel};
use crate::types::{FeeratePerKw, Msat};
use bitcoin::OutPoint;

/// BOLT 3: the lowest dust limit a node may announce.
pub const MIN_DUST_LIMIT_SAT: u64 = 354;

/// What this node accepts from a peer opening or accepting a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenPolicy {
    /// Longest CSV delay we let the peer impose on our funds.
    pub max_to_self_delay: u16,
    /// Most confirmations we wait for before the channel is usable.
    pub max_minimum_depth: u32,
    /// Smallest channel we accept.
    pub min_funding_sat: u64,
    /// Largest channel we accept.
    pub max_funding_sat: u64,
    /// Fee rates outside this range are refused.
    pub feerate_range: (FeeratePerKw, FeeratePerKw),
    /// Largest dust limit we let the peer set: outputs below it leave its commitments
    /// and the closing transaction, as fees.
    pub max_dust_limit_sat: u64,
    /// Largest reserve the peer may require us to keep, in thousandths of the capacity:
    /// a peer asking for nearly the whole channel would make our side of it unusable.
    pub max_reserve_permille: u64,
}

impl Default for OpenPolicy {
    fn default() -> Self {
        OpenPolicy {
            max_to_self_delay: 2016,
            max_minimum_depth: 144,
            min_funding_sat: 20_000,
            max_funding_sat: 100_000_000,
            feerate_range: (FeeratePerKw(253), FeeratePerKw(100_000)),
            // The largest standard dust threshold (P2PKH), as LDK allows.
            max_dust_limit_sat: 546,
            // 20%, as LND bounds the reserve a peer may ask of it.
            max_reserve_permille: 200,
        }
    }
}

/// Why an open_channel or accept_channel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Capacity outside our policy.
    #[error("funding_satoshis {0} outside the accepted range")]
    FundingAmount(u64),
    /// push_msat above the capacity.
    #[error("push_msat above the channel capacity")]
    PushTooLarge,
    /// to_self_delay longer than we accept.
    #[error("to_self_delay {0} too large")]
    ToSelfDelay(u16),
    /// max_accepted_htlcs above 483.
    #[error("max_accepted_htlcs {0} above 483")]
    MaxAcceptedHtlcs(u16),
    /// Dust limit below 354 sat.
    #[error("dust_limit_satoshis {0} below 354")]
    DustLimitTooLow(u64),
    /// Dust limit above what we accept.
    #[error("dust_limit_satoshis {0} above our maximum")]
    DustLimitTooHigh(u64),
    /// A reserve below a dust limit makes an unspendable output.
    #[error("channel_reserve_satoshis below a dust limit")]
    ReserveBelowDust,
    /// The reserves eat the channel.
    #[error("channel reserves leave nothing to spend")]
    ReserveTooLarge,
    /// The reserve the peer requires of us is above our policy's share of the capacity.
    #[error("channel_reserve_satoshis {0} is more than we keep in a channel of this size")]
    ReserveAbovePolicy(u64),
    /// Fee rate outside our range.
    #[error("feerate_per_kw {0} unreasonable")]
    Feerate(u32),
    /// The funder cannot pay the first commitment's fee.
    #[error("funder cannot pay the initial commitment fee")]
    FunderCannotPayFee,
    /// minimum_depth larger than we wait.
    #[error("minimum_depth {0} too large")]
    MinimumDepth(u32),
    /// accept_channel for another temporary id.
    #[error("temporary_channel_id mismatch")]
    TemporaryChannelId,
    /// The channel type is not one we run, or accept_channel did not echo ours.
    #[error(transparent)]
    ChannelType(#[from] ChannelTypeError),
}

/// The channel types this node runs, preferred first.
pub const SUPPORTED_CHANNEL_TYPES: &[ChannelType] = &[
    ChannelType::AnchorsZeroFeeHtlcTx,
    ChannelType::StaticRemoteKey,
];

/// The limits a peer announced in open_channel.
pub fn params_from_open(m: &OpenChannel) -> ChannelParams {
    ChannelParams {
        dust_limit_sat: m.dust_limit_satoshis,
        max_htlc_value_in_flight: Msat(m.max_htlc_value_in_flight_msat),
        channel_reserve_sat: m.channel_reserve_satoshis,
        htlc_minimum: Msat(m.htlc_minimum_msat),
        to_self_delay: m.to_self_delay,
        max_accepted_htlcs: m.max_accepted_htlcs,
    }
}

/// The limits a peer announced in accept_channel.
pub fn params_from_accept(m: &AcceptChannel) -> ChannelParams {
    ChannelParams {
        dust_limit_sat: m.dust_limit_satoshis,
        max_htlc_value_in_flight: Msat(m.max_htlc_value_in_flight_msat),
        channel_reserve_sat: m.channel_reserve_satoshis,
        htlc_minimum: Msat(m.htlc_minimum_msat),
        to_self_delay: m.to_self_delay,
        max_accepted_htlcs: m.max_accepted_htlcs,
    }
}

/// The basepoints in open_channel.
pub fn basepoints_from_open(m: &OpenChannel) -> Basepoints {
    Basepoints {
        funding_pubkey: m.funding_pubkey,
        revocation_basepoint: m.revocation_basepoint,
        payment_basepoint: m.payment_basepoint,
        delayed_payment_basepoint: m.delayed_payment_basepoint,
        htlc_basepoint: m.htlc_basepoint,
    }
}

/// The basepoints in accept_channel.
pub fn basepoints_from_accept(m: &AcceptChannel) -> Basepoints {
    Basepoints {
        funding_pubkey: m.funding_pubkey,
        revocation_basepoint: m.revocation_basepoint,
        payment_basepoint: m.payment_basepoint,
        delayed_payment_basepoint: m.delayed_payment_basepoint,
        htlc_basepoint: m.htlc_basepoint,
    }
}

/// The reserve the peer requires us to keep, against our policy's share of `funding_sat`.
fn check_reserve_asked(
    reserve_sat: u64,
    funding_sat: u64,
    policy: &OpenPolicy,
) -> Result<(), OpenError> {
    if reserve_sat.saturating_mul(1000) > funding_sat.saturating_mul(policy.max_reserve_permille) {
        return Err(OpenError::ReserveAbovePolicy(reserve_sat));
    }
    Ok(())
}

fn check_params(p: &ChannelParams, policy: &OpenPolicy) -> Result<(), OpenError> {
    if p.to_self_delay > policy.max_to_self_delay {
        return Err(OpenError::ToSelfDelay(p.to_self_delay));
    }
    if p.max_accepted_htlcs > MAX_HTLCS {
        return Err(OpenError::MaxAcceptedHtlcs(p.max_accepted_htlcs));
    }
    if p.dust_limit_sat < MIN_DUST_LIMIT_SAT {
        return Err(OpenError::DustLimitTooLow(p.dust_limit_sat));
    }
    if p.dust_limit_sat > policy.max_dust_limit_sat {
        return Err(OpenError::DustLimitTooHigh(p.dust_limit_sat));
    }
    Ok(())
}

/// The fundee's checks of open_channel (BOLT 2 "The open_channel Message", receiver
/// requirements), given the limits we will answer with; returns the channel type to echo.
pub fn check_open_channel(
    m: &OpenChannel,
    ours: &ChannelParams,
    policy: &OpenPolicy,
) -> Result<ChannelType, OpenError> {
    let channel_type = accept_proposed(m.channel_type.as_deref(), SUPPORTED_CHANNEL_TYPES)?;
    if !(policy.min_funding_sat..=policy.max_funding_sat).contains(&m.funding_satoshis) {
        return Err(OpenError::FundingAmount(m.funding_satoshis));
    }
    let capacity = m.funding_satoshis.saturating_mul(1000);
    if m.push_msat > capacity {
        return Err(OpenError::PushTooLarge);
    }
    let theirs = params_from_open(m);
    check_params(&theirs, policy)?;
    check_reserve_asked(m.channel_reserve_satoshis, m.funding_satoshis, policy)?;
    if m.dust_limit_satoshis > m.channel_reserve_satoshis
        || ours.channel_reserve_sat < theirs.dust_limit_sat
        || ours.dust_limit_sat > theirs.channel_reserve_sat
    {
        return Err(OpenError::ReserveBelowDust);
    }
    let (lo, hi) = policy.feerate_range;
    if m.feerate_per_kw < lo.0 || m.feerate_per_kw > hi.0 {
        return Err(OpenError::Feerate(m.feerate_per_kw));
    }
    let funder = capacity - m.push_msat;
    // BOLT 2: the funder must afford the initial commitment's fee and, under anchors,
    // the two anchor outputs.
    let anchors = channel_type.has_anchors();
    let fee = (crate::commitment::commitment_fee_sat(FeeratePerKw(m.feerate_per_kw), 0, anchors)
        + crate::commitment::anchors_cost_sat(anchors))
        * 1000;
    if funder < fee {
        return Err(OpenError::FunderCannotPayFee);
    }
    // Both balances at or below the reserves: nobody could ever pay.
    if funder - fee <= ours.channel_reserve_sat * 1000
        && m.push_msat <= m.channel_reserve_satoshis * 1000
    {
        return Err(OpenError::ReserveTooLarge);
    }
    if ours
        .channel_reserve_sat
        .saturating_add(m.channel_reserve_satoshis)
        >= m.funding_satoshis
    {
        return Err(OpenError::ReserveTooLarge);
    }
    Ok(channel_type)
}

/// The funder's checks of accept_channel against its own open_channel.
pub fn check_accept_channel(
    open: &OpenChannel,
    m: &AcceptChannel,
    policy: &OpenPolicy,
) -> Result<(), OpenError> {
    if m.temporary_channel_id != open.temporary_channel_id {
        return Err(OpenError::TemporaryChannelId);
    }
    let proposed = open
        .channel_type
        .as_deref()
        .and_then(ChannelType::from_bytes)
        .ok_or_else(|| ChannelTypeError::Unsupported("(none proposed)".into()))?;
    check_echo(proposed, m.channel_type.as_deref())?;
    if m.minimum_depth > policy.max_minimum_depth {
        return Err(OpenError::MinimumDepth(m.minimum_depth));
    }
    let theirs = params_from_accept(m);
    check_params(&theirs, policy)?;
    check_reserve_asked(m.channel_reserve_satoshis, open.funding_satoshis, policy)?;
    if m.channel_reserve_satoshis < open.dust_limit_satoshis
        || open.channel_reserve_satoshis < m.dust_limit_satoshis
    {
        return Err(OpenError::ReserveBelowDust);
    }
    if m.channel_reserve_satoshis
        .saturating_add(open.channel_reserve_satoshis)
        >= open.funding_satoshis
    {
        return Err(OpenError::ReserveTooLarge);
    }
    Ok(())
}

/// The setup of a channel once the funding outpoint is known, from this node's side.
pub fn setup_from_messages(
    open: &OpenChannel,
    accept: &AcceptChannel,
    funding_outpoint: OutPoint,
    is_funder: bool,
) -> ChannelSetup {
    let (local_params, remote_params, remote_basepoints, remote_first_point) = if is_funder {
        (
            params_from_open(open),
            params_from_accept(accept),
            basepoints_from_accept(accept),
            accept.first_per_commitment_point,
        )
    } else {
        (
            params_from_accept(accept),
            params_from_open(open),
            basepoints_from_open(open),
            open.first_per_commitment_point,
        )
    };
    ChannelSetup {
        funding_outpoint,
        funding_sat: open.funding_satoshis,
        is_funder,
        push: Msat(open.push_msat),
        feerate: FeeratePerKw(open.feerate_per_kw),
        local_params,
        remote_params,
        remote_basepoints,
        remote_first_per_commitment_point: remote_first_point,
        static_remotekey: true,
        anchors: open
            .channel_type
            .as_deref()
            .and_then(ChannelType::from_bytes)
            .is_some_and(ChannelType::has_anchors),
    }
}
