//! One full payment between two in-memory parties: update_add_htlc, commitment dance,
//! update_fulfill_htlc, commitment dance — real signatures, no disk. Prints payments/s
//! and the ECDSA signs and verifies per payment, then runs criterion.

#[path = "../tests/common/mod.rs"]
mod common;

use channel::msgs::OnionPacket;
use channel::sign::ecdsa_op_counts;
use channel::state::Channel;
use channel::*;
use common::Pair;
use criterion::Criterion;
use std::hint::black_box;
use std::time::Instant;

/// Both sides sign and revoke once each: `from` signs first.
fn dance(from: &mut Channel, to: &mut Channel) {
    let cs = from.send_commitment().expect("commit");
    let raa = to.receive_commitment(&cs).expect("receive commit");
    from.receive_revoke(&raa).expect("revoke");
    let cs = to.send_commitment().expect("commit back");
    let raa = from.receive_commitment(&cs).expect("receive commit back");
    to.receive_revoke(&raa).expect("revoke back");
}

fn payment(payer: &mut Channel, payee: &mut Channel, n: u64) {
    let mut p = [0u8; 32];
    p[..8].copy_from_slice(&n.to_be_bytes());
    let preimage = PaymentPreimage(p);
    let add = payer
        .send_add_htlc(
            Msat(10_000_000),
            preimage.payment_hash(),
            500,
            OnionPacket::default(),
        )
        .expect("add");
    payee.receive_add_htlc(&add).expect("receive add");
    dance(payer, payee);
    let fulfill = payee
        .send_fulfill(HtlcId(add.id), preimage)
        .expect("fulfill");
    payer.receive_fulfill(&fulfill).expect("receive fulfill");
    dance(payee, payer);
}

fn run(pair: &mut Pair, count: u64, offset: u64) {
    for n in 0..count {
        if n % 2 == 0 {
            payment(&mut pair.alice, &mut pair.bob, offset + n);
        } else {
            payment(&mut pair.bob, &mut pair.alice, offset + n);
        }
    }
}

/// Microbenchmarks of the secp256k1 operations a payment is made of, on this machine.
fn crypto_bound() -> (f64, f64) {
    use bitcoin::secp256k1::{Message, SecretKey};
    let secp = channel::keys::secp();
    let key = SecretKey::from_slice(&[3; 32]).unwrap();
    let pk = key.public_key(secp);
    let msg = Message::from_digest([5; 32]);
    let n = 2000;
    let t = Instant::now();
    let mut sig = secp.sign_ecdsa(&msg, &key);
    for _ in 0..n {
        sig = secp.sign_ecdsa(black_box(&msg), &key);
    }
    let sign_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        black_box(secp.verify_ecdsa(black_box(&msg), &sig, &pk).is_ok());
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let secrets = channel::keys::ChannelSecrets::from_seed(&[9; 32]);
    let (a, b) = (
        secrets.basepoints(),
        channel::keys::ChannelSecrets::from_seed(&[8; 32]).basepoints(),
    );
    let t = Instant::now();
    for i in 0..n {
        black_box(channel::keys::CommitmentKeys::derive(
            &secrets.per_commitment_point(CommitmentNumber(i)),
            &a,
            &b,
            true,
        ));
    }
    let derive_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("secp256k1 on this machine: sign {sign_us:.1} us, verify {verify_us:.1} us, per-commitment point + keys {derive_us:.1} us");
    (sign_us, verify_us)
}

fn summary() {
    let (sign_us, verify_us) = crypto_bound();
    let mut pair = Pair::open(Msat(5_000_000_000), FeeratePerKw(1000));
    run(&mut pair, 200, 0); // warm up
    let (s0, v0) = ecdsa_op_counts();
    let count = 2000;
    let start = Instant::now();
    run(&mut pair, count, 1_000_000);
    let elapsed = start.elapsed();
    let (s1, v1) = ecdsa_op_counts();
    println!(
        "one payment (add, dance, fulfill, dance), both parties on one thread: {:.0} payments/s ({:.1} us each); ECDSA per payment: {:.1} signs, {:.1} verifies",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64,
        (s1 - s0) as f64 / count as f64,
        (v1 - v0) as f64 / count as f64,
    );
    let sigs_only = ((s1 - s0) as f64 * sign_us + (v1 - v0) as f64 * verify_us) / count as f64;
    println!(
        "signatures alone would allow {:.0} payments/s; this run reaches {:.0}% of that",
        1e6 / sigs_only,
        100.0 * sigs_only / (elapsed.as_secs_f64() * 1e6 / count as f64)
    );
}

fn bench(c: &mut Criterion) {
    let mut pair = Pair::open(Msat(5_000_000_000), FeeratePerKw(1000));
    let mut n = 10_000_000u64;
    c.bench_function("payment", |b| {
        b.iter(|| {
            n += 1;
            run(black_box(&mut pair), 2, n * 2);
        })
    });
}

fn main() {
    summary();
    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(5))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
