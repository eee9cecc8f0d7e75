"""A "what address do you see" echo for the NAT lab, run as a script inside a lab namespace.

``serve udp|tcp PORT``: answer every datagram (or connection) with the sender's address as ``ip:port``;
prints ``ready`` once bound. ``ask udp|tcp LOCAL_PORT HOST:PORT...``: from one socket bound to
``LOCAL_PORT`` (0: any), ask each target in turn and print one answer a line; exit 1 on the first target
that does not answer within ``--wait`` seconds (default 2).
"""

from __future__ import annotations

import argparse
import socket
import sys


def serve(proto: str, port: int) -> None:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        if proto == "tcp":
            sock.listen()
        print("ready", flush=True)
        while True:
            if proto == "udp":
                _, peer = sock.recvfrom(2048)
                sock.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
            else:
                conn, peer = sock.accept()
                with conn:
                    conn.sendall(f"{peer[0]}:{peer[1]}".encode())


def ask(proto: str, local_port: int, targets: list[str], wait: float) -> int:
    if proto == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", local_port))
        sock.settimeout(wait)
    for target in targets:
        host, port = target.rsplit(":", 1)
        try:
            if proto == "udp":
                sock.sendto(b"?", (host, int(port)))
                answer, _ = sock.recvfrom(2048)
            else:
                with socket.create_connection((host, int(port)), timeout=wait) as conn:
                    answer = conn.recv(2048)
        except OSError as exc:
            print(f"no answer from {target}: {exc}", file=sys.stderr)
            return 1
        print(answer.decode(), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "ask"])
    parser.add_argument("proto", choices=["udp", "tcp"])
    parser.add_argument("port", type=int)
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--wait", type=float, default=2.0)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.proto, args.port)
        return 0
    return ask(args.proto, args.port, args.targets, args.wait)


if __name__ == "__main__":
    sys.exit(main())
