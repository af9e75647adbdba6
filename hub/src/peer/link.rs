//! An encrypted, authenticated connection to one peer over TCP.

use super::features::{check_remote_features, local_features, FeatureError};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use channel::msgs::{Init, Message, Pong};
use channel::noise::{
    Decryptor, Encryptor, HandshakeError, InitiatorHandshake, ResponderHandshake, TransportError,
    ACT_ONE_LEN, ACT_THREE_LEN, HEADER_LEN, MAC_LEN,
};
use channel::wire::DecodeError;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long the handshake and init may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a peer connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The BOLT 8 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A frame did not decrypt.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// A message did not decode.
    #[error("bad message: {0}")]
    Decode(#[from] DecodeError),
    /// The peer's init is unacceptable.
    #[error("features: {0}")]
    Features(#[from] FeatureError),
    /// The peer's first message was not init, or it is on another chain.
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// Handshake or init took too long.
    #[error("timed out")]
    Timeout,
}

/// Reads messages from a peer.
pub struct PeerReader {
    stream: OwnedReadHalf,
    cipher: Decryptor,
    writer_pongs: Option<tokio::sync::mpsc::Sender<Message>>,
    /// The features of the peer's `init` (with its legacy global features ORed in).
    remote_features: Vec<u8>,
}

/// Sends messages to a peer.
pub struct PeerWriter {
    stream: OwnedWriteHalf,
    cipher: Encryptor,
}

impl PeerWriter {
    /// Encrypts and sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), PeerError> {
        let frame = self.cipher.encrypt(&msg.encode())?;
        self.stream.write_all(&frame).await?;
        Ok(())
    }
}

impl PeerReader {
    /// Reads the next message. Pings are answered (through `reply` if set by
    /// [`PeerReader::answer_pings`]) and not returned; unknown odd messages are skipped.
    pub async fn recv(&mut self) -> Result<Message, PeerError> {
        loop {
            let mut header = [0u8; HEADER_LEN];
            self.stream.read_exact(&mut header).await?;
            let len = self.cipher.decrypt_length(&header)?;
            let mut body = vec![0u8; usize::from(len) + MAC_LEN];
            self.stream.read_exact(&mut body).await?;
            let plain = self.cipher.decrypt_body(&body)?;
            match Message::decode(&plain)? {
                Message::Unknown { .. } => continue,
                Message::Ping(p) if self.writer_pongs.is_some() => {
                    // BOLT 1: answer unless num_pong_bytes >= 65532.
                    if p.num_pong_bytes < 65532 {
                        let pong = Message::Pong(Pong {
                            ignored: vec![0; usize::from(p.num_pong_bytes)],
                        });
                        if let Some(tx) = &self.writer_pongs {
                            // A full queue: the peer sends and does not read. Its
                            // connection ends rather than our memory growing.
                            if tx.try_send(pong).is_err() {
                                return Err(PeerError::Protocol("peer does not read"));
                            }
                        }
                    }
                    continue;
                }
                m => return Ok(m),
            }
        }
    }

    /// The feature bits the peer set in `init` (big-endian bitfield, legacy global
    /// features ORed in).
    pub fn remote_features(&self) -> &[u8] {
        &self.remote_features
    }

    /// Hands answers to pings to `tx` (the task that owns the writer sends them).
    pub fn answer_pings(&mut self, tx: tokio::sync::mpsc::Sender<Message>) {
        self.writer_pongs = Some(tx);
    }
}

fn init_message(chain_hash: [u8; 32]) -> Message {
    Message::Init(Init {
        globalfeatures: vec![],
        features: local_features(),
        networks: Some(vec![chain_hash]),
        remote_addr: None,
    })
}

/// Exchanges init and checks the peer's.
async fn exchange_init(
    w: &mut PeerWriter,
    r: &mut PeerReader,
    chain_hash: [u8; 32],
) -> Result<(), PeerError> {
    w.send(&init_message(chain_hash)).await?;
    match r.recv().await? {
        Message::Init(init) => {
            check_remote_features(&init.globalfeatures, &init.features)?;
            if let Some(networks) = &init.networks {
                if !networks.contains(&chain_hash) {
                    return Err(PeerError::Protocol("peer is on another chain"));
                }
            }
            let (long, short) = if init.features.len() >= init.globalfeatures.len() {
                (&init.features, &init.globalfeatures)
            } else {
                (&init.globalfeatures, &init.features)
            };
            let mut merged = long.clone();
            let offset = long.len() - short.len();
            for (i, b) in short.iter().enumerate() {
                merged[offset + i] |= b;
            }
            r.remote_features = merged;
            Ok(())
        }
        _ => Err(PeerError::Protocol("first message was not init")),
    }
}

fn halves(stream: TcpStream, transport: channel::noise::Transport) -> (PeerWriter, PeerReader) {
    let (enc, dec) = transport.split();
    let (read, write) = stream.into_split();
    (
        PeerWriter {
            stream: write,
            cipher: enc,
        },
        PeerReader {
            stream: read,
            cipher: dec,
            writer_pongs: None,
            remote_features: Vec::new(),
        },
    )
}

fn fresh_key() -> SecretKey {
    SecretKey::new(&mut bitcoin::secp256k1::rand::thread_rng())
}

/// Connects to the node `remote_id` at `addr`, runs the handshake as initiator, and
/// exchanges init.
pub async fn connect(
    addr: SocketAddr,
    local_key: SecretKey,
    remote_id: PublicKey,
    chain_hash: [u8; 32],
) -> Result<(PeerWriter, PeerReader), PeerError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async move {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (hs, act_one) = InitiatorHandshake::new(local_key, &remote_id, fresh_key());
        stream.write_all(&act_one).await?;
        let mut act_two = [0u8; ACT_ONE_LEN];
        stream.read_exact(&mut act_two).await?;
        let (act_three, transport) = hs.process_act_two(&act_two)?;
        stream.write_all(&act_three).await?;
        let (mut w, mut r) = halves(stream, transport);
        exchange_init(&mut w, &mut r, chain_hash).await?;
        Ok((w, r))
    })
    .await
    .map_err(|_| PeerError::Timeout)?
}

/// Runs the handshake as responder on an accepted connection and exchanges init;
/// returns the peer's node id.
pub async fn accept(
    mut stream: TcpStream,
    local_key: SecretKey,
    chain_hash: [u8; 32],
) -> Result<(PublicKey, PeerWriter, PeerReader), PeerError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async move {
        stream.set_nodelay(true)?;
        let mut hs = ResponderHandshake::new(local_key, fresh_key());
        let mut act_one = [0u8; ACT_ONE_LEN];
        stream.read_exact(&mut act_one).await?;
        let act_two = hs.process_act_one(&act_one)?;
        stream.write_all(&act_two).await?;
        let mut act_three = [0u8; ACT_THREE_LEN];
        stream.read_exact(&mut act_three).await?;
        let (remote_id, transport) = hs.process_act_three(&act_three)?;
        let (mut w, mut r) = halves(stream, transport);
        exchange_init(&mut w, &mut r, chain_hash).await?;
        Ok((remote_id, w, r))
    })
    .await
    .map_err(|_| PeerError::Timeout)?
}
