"""A hostile user of a relay, run as a script inside a NAT lab namespace (``NatLab.popen``).

    python natlab_hostile.py reserve-flood RELAY_HOST:PORT
    python natlab_hostile.py garbage RELAY_HOST:PORT TARGET_FEED_HEX

``reserve-flood``: a fresh identity connects to the relay, says hello and sends ``reserve`` again and
again, without waiting for answers. ``garbage``: a fresh identity asks the relay for a circuit to the target
(``connect``), and once joined sends random bytes instead of a Noise handshake, again and again on new
circuits. Either way the script prints one JSON line when the relay closes on it, or when 20 s are up:
``{"closed": bool, "answers": [...], "circuits": n, "seconds": s}``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import trio
from tidings.node.addresses import parse_address
from tidings.node.net.transport import ChannelClosed, SecureChannel
from tidings.protocol import SigningKey
from tidings.protocol.errors import TidingsError
from tidings.protocol.reach_events import Connect, Connected, Refused, Reserve
from tidings.protocol.replication import Hello, Replication

LIMIT = 20.0


async def _session(address: str, key: SigningKey) -> SecureChannel:
    host, port = parse_address(address)
    stream = await trio.open_tcp_stream(host, port)
    return await SecureChannel.handshake(
        stream, initiator=True, identity=key, transport_private=os.urandom(32), timeout=5.0
    )


async def reserve_flood(address: str) -> dict[str, object]:
    channel = await _session(address, SigningKey(os.urandom(32)))
    rep = Replication()
    answers: list[str] = []
    await channel.write_now(rep.send(Hello(agent="hostile")))
    rep.receive(await channel.receive())
    closed = False
    with trio.move_on_after(LIMIT):
        try:
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    while True:
                        event = rep.receive(await channel.receive())
                        answers.append(
                            type(event).__name__ + (f":{event.code}" if isinstance(event, Refused) else "")
                        )

                nursery.start_soon(read)
                for _ in range(200):
                    await channel.write_now(rep.send(Reserve()))
                    await trio.sleep(0.05)
        except (ChannelClosed, TidingsError, OSError, trio.BrokenResourceError):
            closed = True
        except BaseExceptionGroup:
            closed = True
    return {"closed": closed, "answers": answers[:10], "circuits": 0}


async def garbage(address: str, target: bytes) -> dict[str, object]:
    key = SigningKey(os.urandom(32))
    circuits, refused = 0, []
    closed = False
    with trio.move_on_after(LIMIT):
        while True:
            try:
                channel = await _session(address, key)
            except (OSError, TidingsError, ChannelClosed) as exc:
                closed = True  # banned: the relay no longer lets us in
                refused.append(type(exc).__name__)
                break
            rep = Replication()
            try:
                await channel.write_now(rep.send(Connect(target=target)))
                while True:
                    event = rep.receive(await channel.receive())
                    if isinstance(event, Refused | Connected):
                        break
            except (ChannelClosed, TidingsError, OSError):
                closed = True
                break
            if isinstance(event, Refused):
                refused.append(event.code)
                closed = True
                break
            circuits += 1
            try:
                await channel.stream.send_all(os.urandom(2000))
                with trio.move_on_after(3):
                    await channel.stream.receive_some(65536)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await channel.stream.aclose()
    return {"closed": closed, "answers": refused[:10], "circuits": circuits}


def main() -> None:
    mode, address = sys.argv[1], sys.argv[2]
    start = time.monotonic()
    if mode == "reserve-flood":
        result = trio.run(reserve_flood, address)
    else:
        result = trio.run(garbage, address, bytes.fromhex(sys.argv[3]))
    result["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
