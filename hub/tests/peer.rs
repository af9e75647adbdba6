//! The peer link over real sockets on 127.0.0.1 (port 0).

use bitcoin::secp256k1::{PublicKey, SecretKey};
use channel::keys::secp;
use channel::msgs::{Message, Ping, UpdateFee};
use channel::ChannelId;
use hub::peer::{accept, connect, PeerError};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const CHAIN: [u8; 32] = [0x06; 32];

fn key(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test]
async fn handshake_init_ping_and_messages() {
    let (l, addr) = listener().await;
    let server_key = key(2);
    let server_id = PublicKey::from_secret_key(secp(), &server_key);
    let server = tokio::spawn(async move {
        let (stream, _) = l.accept().await.unwrap();
        let (peer_id, mut w, mut r) = accept(stream, server_key, CHAIN).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        r.answer_pings(tx);
        let got = r.recv().await.unwrap();
        // Pings were answered without surfacing; send the pongs.
        while let Ok(m) = rx.try_recv() {
            w.send(&m).await.unwrap();
        }
        w.send(&got).await.unwrap(); // echo
        peer_id
    });
    let (mut w, mut r) = connect(addr, key(1), server_id, CHAIN).await.unwrap();
    w.send(&Message::Ping(Ping {
        num_pong_bytes: 4,
        ignored: vec![0; 3],
    }))
    .await
    .unwrap();
    let fee = Message::UpdateFee(UpdateFee {
        channel_id: ChannelId([3; 32]),
        feerate_per_kw: 253,
    });
    w.send(&fee).await.unwrap();
    match r.recv().await.unwrap() {
        Message::Pong(p) => assert_eq!(p.ignored.len(), 4),
        other => panic!("expected pong, got {other:?}"),
    }
    assert_eq!(r.recv().await.unwrap(), fee);
    assert_eq!(
        server.await.unwrap(),
        PublicKey::from_secret_key(secp(), &key(1))
    );
}

#[tokio::test]
async fn wrong_node_id_fails_the_handshake() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (stream, _) = l.accept().await.unwrap();
        accept(stream, key(2), CHAIN).await.map(|_| ())
    });
    let wrong_id = PublicKey::from_secret_key(secp(), &key(9));
    let err = connect(addr, key(1), wrong_id, CHAIN)
        .await
        .err()
        .expect("must fail");
    assert!(
        matches!(err, PeerError::Handshake(_) | PeerError::Io(_)),
        "{err}"
    );
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn garbage_is_refused_without_crashing() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..3 {
            let (stream, _) = l.accept().await.unwrap();
            results.push(
                accept(stream, key(2), CHAIN)
                    .await
                    .map(|_| ())
                    .err()
                    .map(|e| e.to_string()),
            );
        }
        results
    });
    // Bad version byte, random act one, and a short read.
    let mut act = [0u8; 50];
    act[0] = 1;
    let payloads: [Vec<u8>; 3] = [
        act.to_vec(),
        (0..50u8).map(|i| i.wrapping_mul(37)).collect(),
        vec![0; 10],
    ];
    for p in payloads {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&p).await.unwrap();
        s.shutdown().await.unwrap();
        // Keep the socket open until the server has answered or closed.
        let mut buf = [0u8; 64];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
    }
    let results = server.await.unwrap();
    assert!(results.iter().all(|r| r.is_some()), "{results:?}");
    assert!(
        results[0].as_deref().unwrap().contains("ACT1_BAD_VERSION"),
        "{results:?}"
    );
}

#[tokio::test]
async fn peer_on_another_chain_is_refused() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (stream, _) = l.accept().await.unwrap();
        accept(stream, key(2), [0x07; 32]).await.map(|_| ())
    });
    let server_id = PublicKey::from_secret_key(secp(), &key(2));
    let client = connect(addr, key(1), server_id, CHAIN).await;
    let server = server.await.unwrap();
    assert!(client.is_err() || server.is_err());
    assert!(matches!(
        server,
        Err(PeerError::Protocol(_)) | Err(PeerError::Io(_))
    ));
}
