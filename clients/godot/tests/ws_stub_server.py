#!/usr/bin/env python3
"""A scripted croft WebSocket server (stdlib only) for ws_test.gd.

It plays one connection of the wire format: requires the subprotocol croft.v4 and a binary
first frame with the expected token, sends a ping, a Welcome, a text frame (a bad frame for the
client), Friends, waits for the client's FindMatch (one binary frame 00) and a pong, sends
MatchFound, then closes with code 4003. It prints PORT <n> once listening and exits 0 when the
client behaved, 1 otherwise.

    python3 ws_stub_server.py <token-hex>
"""

import base64
import hashlib
import socket
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "croft.v4"
# LobbyServerMessage fixtures (see fixtures.tsv).
WELCOME = bytes.fromhex("00e90703616e6e")  # Welcome { user_id: 1001, username: "ann" }
FRIENDS = bytes.fromhex("0100")  # Friends([])
MATCH_FOUND = bytes.fromhex("0707007f000001882701aa00")
FIND_MATCH = bytes.fromhex("00")


def recv_exact(conn, n):
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise EOFError("peer closed")
        out += chunk
    return out


def read_frame(conn):
    b0, b1 = recv_exact(conn, 2)
    opcode = b0 & 0x0F
    masked = b1 & 0x80
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", recv_exact(conn, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", recv_exact(conn, 8))[0]
    mask = recv_exact(conn, 4) if masked else b"\0\0\0\0"
    data = bytearray(recv_exact(conn, n))
    for i in range(n):
        data[i] ^= mask[i % 4]
    if not masked:
        raise ValueError("client frames must be masked")
    return opcode, bytes(data)


def send_frame(conn, opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    conn.sendall(head + payload)


def fail(msg):
    print("stub server: FAIL: " + msg, flush=True)
    sys.exit(1)


def main():
    token = bytes.fromhex(sys.argv[1])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(60)
    print("PORT %d" % srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    conn.settimeout(20)
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            fail("no handshake")
        request += chunk
    lines = request.decode("latin-1").split("\r\n")
    if not lines[0].startswith("GET /ws "):
        fail("request line: " + lines[0])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    if SUBPROTOCOL not in offered:
        fail("subprotocol not offered: %r" % offered)
    accept = base64.b64encode(
        hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()
    ).decode()
    conn.sendall(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n"
            % (accept, SUBPROTOCOL)
        ).encode()
    )
    opcode, data = read_frame(conn)
    if opcode != 2:
        fail("first frame has opcode %d, not binary" % opcode)
    if data != token:
        fail("first frame is not the token (%d bytes)" % len(data))
    send_frame(conn, 0x9, b"croft")  # ping
    send_frame(conn, 2, WELCOME)
    send_frame(conn, 1, b"a text frame")
    send_frame(conn, 2, FRIENDS)
    got_pong = False
    got_find = False
    while not (got_pong and got_find):
        opcode, data = read_frame(conn)
        if opcode == 0xA:
            if data != b"croft":
                fail("pong payload %r" % data)
            got_pong = True
        elif opcode == 2:
            if data != FIND_MATCH:
                fail("expected FindMatch, got %s" % data.hex())
            got_find = True
        else:
            fail("unexpected opcode %d" % opcode)
    send_frame(conn, 2, MATCH_FOUND)
    send_frame(conn, 0x8, struct.pack(">H", 4003) + b"replaced by a newer connection")
    try:
        opcode, data = read_frame(conn)
        if opcode != 0x8:
            fail("expected the close reply, got opcode %d" % opcode)
    except (EOFError, socket.timeout):
        pass
    conn.close()
    print("stub server: ok", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any error is a failed test
        fail(repr(e))
