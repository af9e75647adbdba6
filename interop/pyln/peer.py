"""An independent BOLT 8 / BOLT 1 peer for the hub's tests, built on Core Lightning's
`pyln-proto` (its Noise transport, keys and handshake). The hub's Rust tests run it.

Usage:
  peer.py frames CK SK RK MSG_HEX COUNT
      Prints, one per line, the hex frames pyln-proto's transport produces when it sends
      MSG_HEX COUNT times from the given post-handshake state (BOLT 8 message vectors).
  peer.py connect HOST:PORT NODE_ID FEATURES PINGS
      Connects to the node as initiator and runs the session below.
  peer.py listen PINGS
      Listens on 127.0.0.1:0, prints "listening PORT NODE_ID", accepts one connection
      (as responder) and runs the session below with the CLN feature set.

The session: init with FEATURES (hex, or a name: cln, ldk, lnd-like), the peer's init
read and its feature bits printed; then an unknown odd message, a channel_update signed by
somebody else, gossip_timestamp_filter and query_channel_range (its reply is checked),
query_short_channel_ids (its reply is checked), then PINGS pings, each answered by a pong
of the asked length, then a final report line "ok PINGS" on stdout. Any failure exits
non-zero with the reason on stderr.
"""

import os
import socket
import struct
import sys

from pyln.proto import wire
from pyln.proto.primitives import PrivateKey, PublicKey

FEATURE_SETS = {
    # Bits as sent by Core Lightning v26.06.6 and LDK 0.2.7 (../shared/interop-notes.md).
    "cln": [0, 5, 7, 8, 11, 12, 14, 17, 19, 23, 25, 27, 35, 39, 43, 44, 47, 51, 63],
    "ldk": [0, 5, 7, 8, 12, 14, 17, 19, 23, 25, 27, 35, 39, 43, 44, 47, 51, 63],
    # Only data_loss_protect, static_remotekey and payment_secret required; the rest offered.
    "lnd-like": [0, 5, 7, 9, 12, 14, 17, 23, 25, 27, 31, 45, 47, 51, 55],
}


def fail(why):
    sys.stderr.write(why + "\n")
    sys.exit(1)


def bits_to_bytes(bits):
    if not bits:
        return b""
    n = max(bits) // 8 + 1
    b = bytearray(n)
    for bit in bits:
        b[n - 1 - bit // 8] |= 1 << (bit % 8)
    return bytes(b)


def bytes_to_bits(b):
    return [i * 8 + j for i, byte in enumerate(reversed(b)) for j in range(8) if byte >> j & 1]


def features_arg(arg):
    if arg in FEATURE_SETS:
        return bits_to_bytes(FEATURE_SETS[arg])
    return bytes.fromhex(arg)


def tlv(t, v):
    assert t < 253 and len(v) < 253
    return bytes([t, len(v)]) + v


def parse_init(m):
    (t,) = struct.unpack(">H", m[:2])
    if t != 16:
        fail("first message from the node is type %d, not init" % t)
    (glen,) = struct.unpack(">H", m[2:4])
    g = m[4 : 4 + glen]
    (flen,) = struct.unpack(">H", m[4 + glen : 6 + glen])
    f = m[6 + glen : 6 + glen + flen]
    rest = m[6 + glen + flen :]
    networks = []
    while rest:
        typ, ln = rest[0], rest[1]
        val = rest[2 : 2 + ln]
        if typ == 1:
            networks = [val[i : i + 32] for i in range(0, len(val), 32)]
        rest = rest[2 + ln :]
    return g, f, networks


def read_until(conn, wanted, skip_pings=True):
    """Reads messages until one of type `wanted`, answering the node's pings."""
    while True:
        m = conn.read_message()
        (t,) = struct.unpack(">H", m[:2])
        if t == wanted:
            return m
        if t == 18 and skip_pings:
            (n,) = struct.unpack(">H", m[2:4])
            conn.send_message(struct.pack(">HH", 19, n) + b"\x00" * n)
            continue
        if t in (1, 17):
            fail("node sent %s: %r" % ("warning" if t == 1 else "error", m[36:]))
        # channel_update and other messages the node may send are fine.


def session(conn, features, pings):
    # pyln-proto writes a frame's header and body with two send() calls: without
    # TCP_NODELAY each message would wait out a delayed ACK.
    conn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    m = conn.read_message()
    g, f, networks = parse_init(m)
    print("node features " + " ".join(str(b) for b in bytes_to_bits(g + f)), flush=True)
    chain = networks[0] if networks else b"\x00" * 32
    init = struct.pack(">HH", 16, 0) + struct.pack(">H", len(features)) + features
    init += tlv(1, chain)
    # remote_addr: IPv4 127.0.0.1:9735, as real nodes send the address they see.
    init += tlv(3, bytes([1, 127, 0, 0, 1]) + struct.pack(">H", 9735))
    conn.send_message(init)

    # An unknown odd message: ignored (BOLT 1, "it's OK to be odd").
    conn.send_message(struct.pack(">H", 32771) + os.urandom(40))
    # A channel_update of some other node's channel (as gossip relays send): never a reason
    # to disconnect.
    cu = struct.pack(">H", 258) + b"\x01" * 64 + chain
    cu += struct.pack(">QIBBHQIIQ", 0x0001_0000_0200_03, 1700000000, 1, 0, 40, 1, 1000, 1, 10**9)
    conn.send_message(cu)
    conn.send_message(struct.pack(">H", 265) + chain + struct.pack(">II", 0, 0xFFFFFFFF))
    conn.send_message(struct.pack(">H", 263) + chain + struct.pack(">II", 100, 1000))
    reply = read_until(conn, 264)
    if reply[2:34] != chain:
        fail("reply_channel_range for another chain")
    first, number, complete = struct.unpack(">IIB", reply[34:43])
    if (first, number, complete) != (100, 1000, 1):
        fail("reply_channel_range %d %d %d" % (first, number, complete))
    # query_short_channel_ids with one (unknown) id, uncompressed encoding.
    ids = b"\x00" + struct.pack(">Q", 0x0001_0000_0200_03)
    conn.send_message(struct.pack(">H", 261) + chain + struct.pack(">H", len(ids)) + ids)
    end = read_until(conn, 262)
    if end[2:34] != chain or end[34] != 1:
        fail("reply_short_channel_ids_end %r" % end.hex())

    for i in range(pings):
        n = i % 97
        conn.send_message(struct.pack(">HH", 18, n) + struct.pack(">H", i % 13) + b"\x00" * (i % 13))
        pong = read_until(conn, 19)
        (ln,) = struct.unpack(">H", pong[2:4])
        if ln != n:
            fail("pong %d has %d bytes, asked %d" % (i, ln, n))
    print("ok %d" % pings, flush=True)


def frames(ck, sk, rk, msg, count):
    class Sink:
        def __init__(self):
            self.out = b""

        def send(self, b):
            self.out += b
            return len(b)

    sink = Sink()
    conn = wire.LightningConnection(
        sink, remote_pubkey=None, local_privkey=PrivateKey(b"\x11" * 32), is_initiator=False
    )
    conn.sk, conn.sck, conn.rk, conn.rck = sk, ck, rk, ck
    conn.sn = conn.rn = 0
    for _ in range(count):
        sink.out = b""
        conn.send_message(msg)
        print(sink.out.hex())


def main():
    mode = sys.argv[1]
    if mode == "frames":
        ck, sk, rk, msg = (bytes.fromhex(a) for a in sys.argv[2:6])
        frames(ck, sk, rk, msg, int(sys.argv[6]))
    elif mode == "connect":
        host, port = sys.argv[2].rsplit(":", 1)
        node_id = PublicKey(bytes.fromhex(sys.argv[3]))
        conn = wire.connect(PrivateKey(os.urandom(32)), node_id, host, int(port))
        session(conn, features_arg(sys.argv[4]), int(sys.argv[5]))
    elif mode == "listen":
        key = PrivateKey(os.urandom(32))
        server = wire.LightningServerSocket(key)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        node_id = key.public_key().serializeCompressed().hex()
        print("listening %d %s" % (server.getsockname()[1], node_id), flush=True)
        conn, _ = server.accept()
        session(conn, features_arg("cln"), int(sys.argv[2]))
    else:
        fail("unknown mode " + mode)


if __name__ == "__main__":
    main()
