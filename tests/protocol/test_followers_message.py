"""The ``followers`` message (version 5, spec §12.1 and §12.3 *Follower notes*): its wire form, its
limits, and that it exists only on connections of version 5."""

from __future__ import annotations

import pytest
from tidings.protocol import Follow, SigningKey, create_entry, encode, encode_content
from tidings.protocol.errors import LocalProtocolError, RemoteProtocolError
from tidings.protocol.replication import Followers, Hello, Replication
from tidings.protocol.replication_events import MAX_FOLLOWER_NOTES


def note(i: int) -> tuple[bytes, bytes]:
    """A follow entry of feed ``i`` (seq 1) and its payload."""
    payload = encode_content(Follow(feed=bytes(32)))
    key = SigningKey(bytes([i + 1]) * 32)
    entry = create_entry(key, seq=1, backlink=None, skiplink=None, timestamp=i, payload=payload)
    return entry.raw, payload


def pair(peer_versions: tuple[int, ...] = (1, 2, 3, 4, 5)) -> Replication:
    """Our side, hellos exchanged with a peer that speaks ``peer_versions``."""
    ours = Replication()
    ours.send(Hello(agent="us"))
    ours.receive(encode(["hello", list(peer_versions), "peer"]))
    return ours


def test_followers_round_trip_under_version_5() -> None:
    sender, receiver = pair(), pair()
    items = tuple(note(i) for i in range(MAX_FOLLOWER_NOTES))
    (frame,) = sender.send(Followers(items=items))
    assert frame == encode(["followers", [list(item) for item in items]])
    assert receiver.receive(frame) == Followers(items=items)
    assert receiver.state == "ACTIVE"


def test_more_than_eight_notes_or_a_bad_item_is_bad_message() -> None:
    too_many = [list(note(i)) for i in range(MAX_FOLLOWER_NOTES + 1)]
    for args in (too_many, [[b"raw"]], [[b"raw", None]], [["raw", b"payload"]], [[b"x" * 257, b"p"]]):
        with pytest.raises(RemoteProtocolError) as info:
            pair().receive(encode(["followers", args]))
        assert info.value.code == "bad_message"
    with pytest.raises(LocalProtocolError):
        Followers(items=tuple(note(i) for i in range(MAX_FOLLOWER_NOTES + 1)))


def test_followers_exist_only_in_version_5() -> None:
    old = pair((1, 2, 3, 4))
    assert old.version == 4
    with pytest.raises(LocalProtocolError) as sent:
        old.send(Followers(items=(note(0),)))
    assert sent.value.code == "version"
    with pytest.raises(RemoteProtocolError) as received:
        pair((1, 2, 3, 4)).receive(encode(["followers", [list(note(0))]]))
    assert received.value.code == "bad_message"
