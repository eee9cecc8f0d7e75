"""One side of a hole punch (``tidings.node.net.punch``) for the NAT lab, run as a script inside a lab
namespace.

It binds a fresh port and prints ``port P``; then it reads one line on stdin, ``HOST:PORT [DELAY]`` (the
peer's public address, and seconds to wait before opening, as ``punch_go`` makes one side wait), and
punches within ``--timeout`` seconds. On success both sides send ``hello from NAME`` and read the
other's, and it prints ``OK WAY attempts=N refused=N seconds=S got=TEXT`` (exit 0); on failure
``FAIL CODE attempts=N refused=N: MESSAGE`` (exit 1).
"""

from __future__ import annotations

import argparse
import sys

import trio
from tidings.node.addresses import parse_address
from tidings.node.net.punch import PunchFailed, bind_punch_socket, simultaneous_open

READ = 5.0  # seconds for the peer's hello once connected


async def _exchange(stream: trio.SocketStream, name: str) -> str:
    await stream.send_all(f"hello from {name}\n".encode())
    got = b""
    with trio.fail_after(READ):
        while not got.endswith(b"\n"):
            chunk = await stream.receive_some(100)
            if not chunk:
                break
            got += chunk
    return got.decode().strip()


async def punch(name: str, timeout: float) -> int:
    sock = await bind_punch_socket(None)
    print(f"port {sock.port}", flush=True)
    line = await trio.to_thread.run_sync(sys.stdin.readline)
    target, _, delay = line.strip().partition(" ")
    host, port = parse_address(target)
    await trio.sleep(float(delay or 0))
    try:
        stream = await simultaneous_open(sock, host, port, timeout=timeout)
    except PunchFailed as exc:
        stats = sock.statistics()
        print(f"FAIL {exc.code} attempts={stats.attempts} refused={stats.refused}: {exc.message}", flush=True)
        return 1
    stats = sock.statistics()
    async with stream:
        got = await _exchange(stream, name)
    print(
        f"OK {stats.way} attempts={stats.attempts} refused={stats.refused} seconds={stats.seconds:.3f} "
        f"got={got}",
        flush=True,
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    return trio.run(punch, args.name, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
