"""A hostile web client in its own process: connections that pipeline requests and never read.

    python -m tests.support.web_attacker HOST PORT CONNECTIONS PIPELINE SOURCE [SOURCE...]

It runs in another process so that its sockets do not count against the victim's descriptor limit
(the victim is the test process). It opens CONNECTIONS connections to HOST:PORT, round robin from
the SOURCE addresses, sends each PIPELINE pipelined ``GET /static/app.js`` at once, and never reads.
Then it prints one JSON line ``{"opened": N, "failed": N, "sent": BYTES}``; each line it reads on
stdin is answered with ``{"open": N}`` (its connections the victim has not closed); at end of input
it exits, and the kernel resets every connection it still holds.
"""

from __future__ import annotations

import json
import resource
import socket
import struct
import sys

TCP_ESTABLISHED = 1


def still_open(sock: socket.socket) -> bool:
    """True while the victim has neither closed nor reset the connection (``TCP_INFO`` state)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    return struct.unpack("B", info[:1])[0] == TCP_ESTABLISHED


def main(argv: list[str]) -> None:
    host, port, connections, pipeline, *sources = argv
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    request = f"GET /static/app.js HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() * int(pipeline)
    socks: list[socket.socket] = []
    failed = sent = 0
    for i in range(int(connections)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(3)
        try:
            sock.bind((sources[i % len(sources)], 0))
            sock.connect((host, int(port)))
            sock.setblocking(False)
            sent += sock.send(request)
        except OSError:
            sock.close()
            failed += 1
            continue
        socks.append(sock)
    print(json.dumps({"opened": len(socks), "failed": failed, "sent": sent}), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"open": sum(map(still_open, socks))}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
