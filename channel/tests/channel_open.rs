//! open_channel / accept_channel checks and the funding signatures that follow them.

mod common;

use bitcoin::OutPoint;
use channel::channel_type::ChannelType;
use channel::keys::ChannelSecrets;
use channel::msgs::{AcceptChannel, OpenChannel};
use channel::state::open::*;
use channel::state::Channel;
use channel::*;

fn open_msg(s: &ChannelSecrets) -> OpenChannel {
    let b = s.basepoints();
    OpenChannel {
        chain_hash: [6; 32],
        temporary_channel_id: ChannelId([1; 32]),
        funding_satoshis: 1_000_000,
        push_msat: 10_000_000,
        dust_limit_satoshis: 546,
        max_htlc_value_in_flight_msat: 500_000_000,
        channel_reserve_satoshis: 10_000,
        htlc_minimum_msat: 1000,
        feerate_per_kw: 1000,
        to_self_delay: 144,
        max_accepted_htlcs: 30,
        funding_pubkey: b.funding_pubkey,
        revocation_basepoint: b.revocation_basepoint,
        payment_basepoint: b.payment_basepoint,
        delayed_payment_basepoint: b.delayed_payment_basepoint,
        htlc_basepoint: b.htlc_basepoint,
        first_per_commitment_point: s.per_commitment_point(CommitmentNumber(0)),
        channel_flags: 0,
        upfront_shutdown_script: None,
        channel_type: Some(channel::channel_type::ChannelType::StaticRemoteKey.to_bytes()),
    }
}

fn accept_msg(s: &ChannelSecrets) -> AcceptChannel {
    let b = s.basepoints();
    AcceptChannel {
        temporary_channel_id: ChannelId([1; 32]),
        dust_limit_satoshis: 546,
        max_htlc_value_in_flight_msat: 500_000_000,
        channel_reserve_satoshis: 10_000,
        htlc_minimum_msat: 1000,
        minimum_depth: 3,
        to_self_delay: 144,
        max_accepted_htlcs: 30,
        funding_pubkey: b.funding_pubkey,
        revocation_basepoint: b.revocation_basepoint,
        payment_basepoint: b.payment_basepoint,
        delayed_payment_basepoint: b.delayed_payment_basepoint,
        htlc_basepoint: b.htlc_basepoint,
        first_per_commitment_point: s.per_commitment_point(CommitmentNumber(0)),
        upfront_shutdown_script: None,
        channel_type: Some(channel::channel_type::ChannelType::StaticRemoteKey.to_bytes()),
    }
}

#[test]
fn open_accept_funding_signatures() {
    let funder = ChannelSecrets::from_seed(&[10; 32]);
    let fundee = ChannelSecrets::from_seed(&[11; 32]);
    let open = open_msg(&funder);
    let accept = accept_msg(&fundee);
    let policy = OpenPolicy::default();
    assert_eq!(
        check_open_channel(&open, &params_from_accept(&accept), &policy),
        Ok(channel::channel_type::ChannelType::StaticRemoteKey)
    );
    check_accept_channel(&open, &accept, &policy).unwrap();

    let outpoint = OutPoint::new(
        <bitcoin::Txid as bitcoin::hashes::Hash>::from_byte_array([5; 32]),
        0,
    );
    let mut a = Channel::new(setup_from_messages(&open, &accept, outpoint, true), funder);
    let mut b = Channel::new(setup_from_messages(&open, &accept, outpoint, false), fundee);
    assert_eq!(a.channel_id(), b.channel_id());
    // funding_created then funding_signed.
    b.receive_initial_signature(a.sign_initial_remote_commitment().unwrap())
        .unwrap();
    a.receive_initial_signature(b.sign_initial_remote_commitment().unwrap())
        .unwrap();
    let (tx_a, _) = a.signed_local_commitment().unwrap();
    let funding = [(outpoint, common::funding_txout_of(&a, 1_000_000))];
    common::consensus_verify(&tx_a, &funding).unwrap();
    // The fundee starts with the pushed amount.
    assert_eq!(
        b.view(channel::state::ViewOf::CurrentLocal).local,
        Msat(10_000_000)
    );
    // A second funding signature is refused.
    let sig = b.sign_initial_remote_commitment().unwrap();
    assert!(a.receive_initial_signature(sig).is_err());
}

#[test]
fn unreasonable_opens_are_refused() {
    let funder = ChannelSecrets::from_seed(&[10; 32]);
    let fundee = ChannelSecrets::from_seed(&[11; 32]);
    let ours = params_from_accept(&accept_msg(&fundee));
    let policy = OpenPolicy::default();
    type Case = (Box<dyn Fn(&mut OpenChannel)>, OpenError);
    let cases: Vec<Case> = vec![
        (
            Box::new(|m| m.funding_satoshis = 1000),
            OpenError::FundingAmount(1000),
        ),
        (
            Box::new(|m| m.push_msat = 1_000_000_001),
            OpenError::PushTooLarge,
        ),
        (
            Box::new(|m| m.to_self_delay = 5000),
            OpenError::ToSelfDelay(5000),
        ),
        (
            Box::new(|m| m.max_accepted_htlcs = 484),
            OpenError::MaxAcceptedHtlcs(484),
        ),
        (
            Box::new(|m| m.dust_limit_satoshis = 100),
            OpenError::DustLimitTooLow(100),
        ),
        (
            Box::new(|m| m.dust_limit_satoshis = 547),
            OpenError::DustLimitTooHigh(547),
        ),
        (
            Box::new(|m| m.channel_reserve_satoshis = 500),
            OpenError::ReserveBelowDust,
        ),
        (Box::new(|m| m.feerate_per_kw = 1), OpenError::Feerate(1)),
        // A peer may not ask us to keep more than 20% of the channel.
        (
            Box::new(|m| m.channel_reserve_satoshis = 200_001),
            OpenError::ReserveAbovePolicy(200_001),
        ),
    ];
    for (mutate, want) in cases {
        let mut m = open_msg(&funder);
        mutate(&mut m);
        assert_eq!(check_open_channel(&m, &ours, &policy), Err(want));
    }
    // Under a policy that lets a peer ask for anything, reserves that eat the channel
    // are still refused.
    let mut m = open_msg(&funder);
    m.channel_reserve_satoshis = 995_000;
    let lax = OpenPolicy {
        max_reserve_permille: 1000,
        ..OpenPolicy::default()
    };
    assert_eq!(
        check_open_channel(&m, &ours, &lax),
        Err(OpenError::ReserveTooLarge)
    );
    let mut m = open_msg(&funder);
    m.channel_reserve_satoshis = 200_000;
    assert!(
        check_open_channel(&m, &ours, &policy).is_ok(),
        "20% is allowed"
    );
    let open = open_msg(&funder);
    let mut accept = accept_msg(&fundee);
    accept.channel_reserve_satoshis = 250_000;
    assert_eq!(
        check_accept_channel(&open, &accept, &policy),
        Err(OpenError::ReserveAbovePolicy(250_000))
    );
    let mut accept = accept_msg(&fundee);
    accept.minimum_depth = 1000;
    assert_eq!(
        check_accept_channel(&open, &accept, &policy),
        Err(OpenError::MinimumDepth(1000))
    );
    let mut accept = accept_msg(&fundee);
    accept.temporary_channel_id = ChannelId([2; 32]);
    assert_eq!(
        check_accept_channel(&open, &accept, &policy),
        Err(OpenError::TemporaryChannelId)
    );
    // channel_type: an open without one, or with a type we do not run, is refused; an
    // accept must echo the proposed type.
    // Anchors with scid_alias (bits 12, 22, 46) is a type of its own, not run here.
    let anchors_alias = vec![0x40, 0x00, 0x00, 0x40, 0x10, 0x00];
    for proposed in [None, Some(anchors_alias), Some(vec![0x01])] {
        let mut m = open_msg(&funder);
        m.channel_type = proposed;
        assert!(matches!(
            check_open_channel(&m, &ours, &policy),
            Err(OpenError::ChannelType(_))
        ));
    }
    // option_anchors_zero_fee_htlc_tx (bits 12 and 22) and static_remotekey are run.
    for (proposed, ty) in [
        (vec![0x40, 0x10, 0x00], ChannelType::AnchorsZeroFeeHtlcTx),
        (vec![0x10, 0x00], ChannelType::StaticRemoteKey),
    ] {
        let mut m = open_msg(&funder);
        m.channel_type = Some(proposed);
        assert_eq!(check_open_channel(&m, &ours, &policy), Ok(ty));
    }
    for echoed in [None, Some(vec![0x40, 0x10, 0x00])] {
        let mut accept = accept_msg(&fundee);
        accept.channel_type = echoed;
        assert!(matches!(
            check_accept_channel(&open, &accept, &policy),
            Err(OpenError::ChannelType(_))
        ));
    }
}
