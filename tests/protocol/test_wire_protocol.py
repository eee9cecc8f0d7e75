"""Sans-IO transport and replication state machines, paired in memory (spec/protocol.md §11, §12)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tidings.protocol import (
    LocalProtocolError,
    Post,
    ProtocolError,
    RemoteProtocolError,
    SigningKey,
    create_entry,
    encode,
    encode_content,
)
from tidings.protocol import handshake as hsmod
from tidings.protocol.handshake import MAX_FRAME, FrameDecoder, Handshake, encode_frame
from tidings.protocol.replication import (
    Bye,
    CaughtUp,
    Clock,
    ClockItem,
    Entries,
    Hello,
    Replication,
    pack_entries,
)

A = SigningKey(bytes([1]) * 32)
B = SigningKey(bytes([2]) * 32)


def make_pair(nk_a: bytes | None = None, nk_b: bytes | None = None, *, chunk: int | None = None):
    """Run a handshake between A (initiator) and B, feeding bytes in chunks; return both sides."""
    ini = Handshake(initiator=True, identity=A, transport_private=os.urandom(32), network_key=nk_a)
    res = Handshake(initiator=False, identity=B, transport_private=os.urandom(32), network_key=nk_b)
    to_res, to_ini = FrameDecoder(), FrameDecoder()

    def deliver(decoder: FrameDecoder, data: bytes) -> list[bytes]:
        frames = []
        step = chunk or len(data)
        for i in range(0, len(data), step):
            decoder.receive_data(data[i : i + step])
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
        return frames

    inbox = {id(ini): to_ini, id(res): to_res}
    while not (ini.finished and res.finished):
        assert ini.our_turn != res.our_turn  # exactly one side sends next
        sender, receiver = (ini, res) if ini.our_turn else (res, ini)
        for frame in deliver(inbox[id(receiver)], sender.send()):
            receiver.receive(frame)
    return ini, res


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_handshake_authenticates_both_feeds(chunk):
    ini, res = make_pair(chunk=chunk)
    assert ini.remote_feed == B.public_key
    assert res.remote_feed == A.public_key
    a, b = ini.session(), res.session()
    dec = FrameDecoder()
    dec.receive_data(a.encrypt(b"hello") + a.encrypt(b"again"))
    assert b.decrypt(dec.next_frame()) == b"hello"
    assert b.decrypt(dec.next_frame()) == b"again"
    dec.receive_data(b.encrypt(b"back"))
    assert a.decrypt(dec.next_frame()) == b"back"


def test_network_key_must_match():
    ini, res = make_pair(b"k" * 32, b"k" * 32)
    assert ini.finished and res.finished
    with pytest.raises(RemoteProtocolError) as info:
        make_pair(b"k" * 32, b"j" * 32)
    assert info.value.code == "handshake"
    with pytest.raises(RemoteProtocolError):
        make_pair(None, b"j" * 32)


def test_claiming_someone_elses_identity_is_refused(monkeypatch):
    # The peer names A's feed but can only sign with its own key: the binding signature fails.
    real = hsmod.identity_payload

    def forged(identity, transport_public):
        good = real(B, transport_public)
        return encode({"feed": A.public_key, "sig": good[-64:]})

    res = Handshake(initiator=False, identity=B, transport_private=os.urandom(32))
    ini = Handshake(initiator=True, identity=A, transport_private=os.urandom(32))
    monkeypatch.setattr(hsmod, "identity_payload", forged)
    dec = FrameDecoder()
    dec.receive_data(ini.send())
    res.receive(dec.next_frame())
    dec.receive_data(res.send())
    with pytest.raises(RemoteProtocolError) as info:
        ini.receive(dec.next_frame())
    assert info.value.code == "bad_identity"
    assert ini.failed


def test_garbage_handshake_is_a_typed_error():
    res = Handshake(initiator=False, identity=B, transport_private=os.urandom(32))
    with pytest.raises(RemoteProtocolError):
        res.receive(b"\x00" * 10)
    with pytest.raises(LocalProtocolError):
        res.receive(b"\x00" * 32)  # a failed handshake takes no more data


def test_tampered_ciphertext_is_refused():
    ini, res = make_pair()
    frame = bytearray(ini.session().encrypt(b"payload")[4:])
    frame[3] ^= 1
    with pytest.raises(RemoteProtocolError) as info:
        res.session().decrypt(bytes(frame))
    assert info.value.code == "decrypt"


def test_frame_decoder_limits():
    dec = FrameDecoder(max_frame=100)
    dec.receive_data((101).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        dec.next_frame()
    assert info.value.code == "frame_too_large"
    dec = FrameDecoder()
    dec.receive_data(encode_frame(b"abc")[:5])
    assert dec.next_frame() is None
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * (MAX_FRAME + 1))


# -- replication ---------------------------------------------------------------------------------------


def chain(key: SigningKey, n: int) -> list[tuple[bytes, bytes]]:
    from tidings.protocol import skip_target

    out, by_seq = [], {}
    for seq in range(1, n + 1):
        payload = encode_content(Post(text=f"post {seq}"))
        target = skip_target(seq)
        e = create_entry(
            key,
            seq=seq,
            backlink=by_seq[seq - 1].hash if seq > 1 else None,
            skiplink=by_seq[target].hash if target else None,
            timestamp=1000 + seq,
            payload=payload,
        )
        by_seq[seq] = e
        out.append((e.raw, payload))
    return out


def hello_frame(agent: str = "tidings") -> bytes:
    """A ``hello`` as a current node sends it."""
    (frame,) = Replication().send(Hello(agent=agent))
    return frame


def test_replication_pair_exchange():
    a, b = Replication(), Replication()
    (hello_a,) = a.send(Hello(agent="a"))
    (hello_b,) = b.send(Hello(agent="b"))
    assert isinstance(b.receive(hello_a), Hello)
    assert isinstance(a.receive(hello_b), Hello)
    (frame,) = a.send(Clock(items=[ClockItem(B.public_key, 3, 0)]))
    event = b.receive(frame)
    assert isinstance(event, Clock) and event.items[0].seq == 3
    assert b.peer_lacks(B.public_key, 4) and not b.peer_lacks(B.public_key, 3)
    assert not b.peer_lacks(A.public_key, 1)  # not wanted
    items = chain(B, 10)[3:]
    received = []
    for frame in b.send(Entries(items=items)):
        ev = a.receive(frame)
        assert isinstance(ev, Entries)
        received.extend(ev.items)
    assert received == items
    assert not b.peer_lacks(B.public_key, 10)
    (caught_up,) = b.send(CaughtUp())
    assert isinstance(a.receive(caught_up), CaughtUp)
    (bye,) = b.send(Bye(code="done", reason="bye"))
    ev = a.receive(bye)
    assert isinstance(ev, Bye) and ev.code == "done"
    with pytest.raises(LocalProtocolError):
        a.receive(b"\x91\xa3bye")


def test_entries_split_into_frames_that_fit():
    items = [(b"r" * 200, b"p" * 16000)] * 10
    frames = pack_entries(items)
    assert len(frames) > 1
    assert all(len(f) <= hsmod.MAX_PLAINTEXT for f in frames)


def test_first_message_must_be_hello_with_common_version():
    a = Replication()
    with pytest.raises(RemoteProtocolError):
        a.receive(encode(["clock", []]))
    with pytest.raises(RemoteProtocolError) as info:
        Replication().receive(encode(["hello", [99], "future"]))
    assert info.value.code == "version"


@pytest.mark.parametrize(
    "message",
    [
        ["clock", [[b"x" * 31, 1, 0]]],
        ["clock", [[b"x" * 32, -1, 0]]],
        ["clock", "nope"],
        ["entries", [[b"x" * 300, None]]],
        ["entries", [[b"x", b"y" * 20000]]],
        ["entries", [["text", None]]],
        ["caught_up", 1],
        ["forks", [1]],
        ["hello", [1], "again"],
        ["whatever"],
    ],
)
def test_malformed_messages_are_remote_errors(message):
    a = Replication()
    a.receive(hello_frame())
    with pytest.raises(RemoteProtocolError):
        a.receive(encode(message))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_frames_raise_only_protocol_errors(data):
    for active in (False, True):
        a = Replication()
        if active:
            a.receive(hello_frame())
        try:
            a.receive(data)
        except ProtocolError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=40))
def test_lossy_reordered_delivery_converges_by_clock(order):
    """Entries delivered in any order, with loss, then re-requested by clock, reach the full log."""
    items = chain(B, 10)
    have: dict[int, tuple[bytes, bytes]] = {}
    for i in order:  # a lossy, reordering link: some entries, any order, duplicates
        have[i + 1] = items[i]
    # the receiver asks again from its highest contiguous seq; the sender streams the rest
    contiguous = 0
    while contiguous + 1 in have:
        contiguous += 1
    sender, receiver = Replication(), Replication()
    sender.receive(*receiver.send(Hello(agent="receiver")))
    receiver.receive(*sender.send(Hello(agent="sender")))
    (clock,) = receiver.send(Clock(items=[ClockItem(B.public_key, contiguous, 0)]))
    wants = sender.receive(clock)
    assert isinstance(wants, Clock)
    for frame in sender.send(Entries(items=items[wants.items[0].seq :])):
        for raw, payload in receiver.receive(frame).items:
            from tidings.protocol import Entry

            have[Entry.decode(raw).seq] = (raw, payload)
    assert sorted(have) == list(range(1, 11))
    assert [have[s] for s in range(1, 11)] == items


def test_non_canonical_entries_frame_is_refused():
    def active() -> Replication:
        a = Replication()
        a.receive(hello_frame())
        return a

    good = b"\x92\xa7entries\x91\x92\xc4\x03abc\xc0"
    assert isinstance(active().receive(good), Entries)
    long_header = b"\x92\xa7entries\x91\x92\xc5\x00\x03abc\xc0"  # bin16 for 3 bytes
    with pytest.raises(RemoteProtocolError):
        active().receive(long_header)
    trailing = good + b"\x00"
    with pytest.raises(RemoteProtocolError):  # a fresh machine: the first error leaves it in ERROR
        active().receive(trailing)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=3), st.booleans())
def test_handshake_garbage_raises_only_protocol_errors(frames, initiator):
    hs = Handshake(initiator=initiator, identity=A, transport_private=bytes(range(32)))
    for frame in frames:
        try:
            if hs.our_turn:
                hs.send()
            hs.receive(frame)
        except ProtocolError:
            break
    assert not hs.finished
