"""The Noise XX handshake's states (spec/protocol.md §11.1): per-side states across the three messages,
calls out of turn, sticky ERROR, and arbitrary call sequences (Hypothesis)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from tidings.protocol import LocalProtocolError, ProtocolError, RemoteProtocolError, SigningKey
from tidings.protocol.handshake import TRANSITIONS, FrameDecoder, Handshake, HandshakeState, Role

S = HandshakeState
A = SigningKey(bytes([1]) * 32)
B = SigningKey(bytes([2]) * 32)


def body(framed: bytes) -> bytes:
    """The body of one framed handshake message."""
    decoder = FrameDecoder()
    decoder.receive_data(framed)
    frame = decoder.next_frame()
    assert frame is not None and decoder.buffered == 0
    return frame


def pair(nk_a: bytes | None = None, nk_b: bytes | None = None) -> tuple[Handshake, Handshake]:
    ini = Handshake(initiator=True, identity=A, transport_private=os.urandom(32), network_key=nk_a)
    res = Handshake(initiator=False, identity=B, transport_private=os.urandom(32), network_key=nk_b)
    return ini, res


def states(hs: Handshake) -> tuple[HandshakeState, HandshakeState]:
    return hs.our_state, hs.their_state


def test_the_three_messages_move_both_sides_through_the_table() -> None:
    ini, res = pair()
    assert states(ini) == (S.SEND_1, S.WAIT_1) and ini.our_turn
    assert states(res) == (S.WAIT_1, S.SEND_1) and not res.our_turn
    msg1 = ini.send()
    assert len(body(msg1)) == 32  # just e (§11.1)
    assert states(ini) == (S.WAIT_2, S.SEND_2)
    res.receive(body(msg1))
    assert states(res) == (S.SEND_2, S.WAIT_2) and res.remote_feed is None
    msg2 = res.send()
    assert states(res) == (S.WAIT_3, S.SEND_3)
    ini.receive(body(msg2))
    assert states(ini) == (S.SEND_3, S.WAIT_3) and ini.remote_feed == B.public_key
    assert not ini.finished
    msg3 = ini.send()
    assert states(ini) == (S.DONE, S.DONE) and ini.finished and not ini.our_turn
    res.receive(body(msg3))
    assert states(res) == (S.DONE, S.DONE) and res.finished and res.remote_feed == A.public_key
    # the states a side passes through are those of the table, for both roles
    for role, path in ((Role.INITIATOR, [S.SEND_1, S.WAIT_2, S.SEND_3, S.DONE]),
                       (Role.RESPONDER, [S.WAIT_1, S.SEND_2, S.WAIT_3, S.DONE])):  # fmt: skip
        assert [TRANSITIONS[role][state][n] for n, state in enumerate(path[:-1], 1)] == path[1:]
    a, b = ini.session(), res.session()
    assert b.decrypt(body(a.encrypt(b"hi"))) == b"hi"


def advanced(initiator: bool, steps: int) -> tuple[Handshake, Handshake]:
    """``(ours, peer)`` after ``steps`` of the three messages."""
    ini, res = pair()
    for number in range(1, steps + 1):
        sender, receiver = (ini, res) if number % 2 else (res, ini)
        receiver.receive(body(sender.send()))
    return (ini, res) if initiator else (res, ini)


def assert_failed(hs: Handshake) -> None:
    """ERROR is sticky: every later call raises ``LocalProtocolError`` (``handshake_state``)."""
    assert hs.failed and not hs.finished
    for call in (hs.send, lambda: hs.receive(b"\x00" * 32), hs.session):
        with pytest.raises(LocalProtocolError) as info:
            call()
        assert info.value.code == "handshake_state"


@pytest.mark.parametrize("initiator", [True, False])
@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_calls_out_of_turn_are_local_errors(initiator: bool, steps: int) -> None:
    ours, _ = advanced(initiator, steps)
    # our turn: the peer cannot have sent anything; its turn or done: we have nothing to send
    wrong = (lambda: ours.receive(b"\x00" * 32)) if ours.our_turn else ours.send
    theirs = ours.their_state
    with pytest.raises(LocalProtocolError) as info:
        wrong()
    assert info.value.code == "handshake_state"
    assert (ours.our_state, ours.their_state) == (S.ERROR, theirs)
    assert_failed(ours)


def test_a_finished_handshake_takes_no_more_messages() -> None:
    ini, res = advanced(True, 3)
    with pytest.raises(LocalProtocolError) as info:
        ini.receive(b"\x00" * 48)
    assert info.value.code == "handshake_state"
    assert_failed(ini)
    assert res.finished


def test_session_before_the_end_is_refused_without_failing() -> None:
    ini, _ = advanced(True, 2)
    with pytest.raises(LocalProtocolError) as info:
        ini.session()
    assert info.value.code == "handshake_state"
    assert not ini.failed  # asking early is not a transition: the handshake goes on
    ini.send()
    assert ini.session().remote_feed == B.public_key


@pytest.mark.parametrize("initiator", [True, False])
def test_garbage_from_the_peer_puts_their_side_in_error(initiator: bool) -> None:
    ours, _ = advanced(initiator, 1 if initiator else 0)
    assert not ours.our_turn
    before = ours.our_state
    with pytest.raises(RemoteProtocolError) as info:
        ours.receive(b"\x01" * 10)
    assert info.value.code == "handshake"
    assert (ours.our_state, ours.their_state) == (before, S.ERROR)
    assert_failed(ours)


def test_a_payload_in_message_1_is_refused() -> None:
    ini, res = pair(None, b"k" * 32)  # only the responder has a network key
    with pytest.raises(RemoteProtocolError) as info:
        res.receive(body(ini.send()))
    assert info.value.code == "handshake"
    assert res.their_state is S.ERROR
    ini, res = pair(b"k" * 32, None)  # only the initiator: a 48-byte message 1 with a payload
    with pytest.raises(RemoteProtocolError) as info:
        res.receive(body(ini.send()))
    assert info.value.code == "handshake"
    assert_failed(res)


def test_different_network_keys_fail_at_message_3_on_the_responder() -> None:
    ini, res = pair(b"k" * 32, b"j" * 32)
    res.receive(body(ini.send()))
    ini.receive(body(res.send()))
    msg3 = ini.send()
    assert ini.finished  # it learns of the failure only when the responder closes (§11.1)
    with pytest.raises(RemoteProtocolError) as info:
        res.receive(body(msg3))
    assert info.value.code == "handshake"
    assert (res.our_state, res.their_state) == (S.WAIT_3, S.ERROR)
    assert_failed(res)


def test_a_forged_identity_in_message_2_stops_message_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from tidings.protocol import encode
    from tidings.protocol import handshake as hsmod

    real = hsmod.identity_payload

    def forged(identity: SigningKey, transport_public: bytes) -> bytes:  # names A's feed, signs as B
        return encode({"feed": A.public_key, "sig": real(B, transport_public)[-64:]})

    ini, res = pair()
    res.receive(body(ini.send()))
    monkeypatch.setattr(hsmod, "identity_payload", forged)
    msg2 = res.send()
    with pytest.raises(RemoteProtocolError) as info:
        ini.receive(body(msg2))
    assert info.value.code == "bad_identity"
    assert (ini.our_state, ini.their_state) == (S.WAIT_2, S.ERROR)
    assert ini.remote_feed is None
    assert_failed(ini)  # message 3 is never sent


# -- arbitrary call sequences (Hypothesis) --------------------------------------------------------------

calls = st.lists(
    st.one_of(
        st.just(("send", None)),
        st.just(("deliver", None)),
        st.just(("send", None)),
        st.just(("deliver", None)),
        st.tuples(st.just("garbage"), st.binary(max_size=100)),
        st.just(("session", None)),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.sampled_from([None, b"k" * 32]), calls)
def test_arbitrary_calls_never_leave_a_side_undefined(
    initiator: bool, network_key: bytes | None, steps: list[tuple[str, Any]]
) -> None:
    """One side driven at random against a well-behaved peer: states stay in the table, every error is
    a ``ProtocolError`` that leaves a side in ERROR for good, and ``finished`` means both sides DONE."""
    ini, res = pair(network_key, network_key)
    ours, peer = (ini, res) if initiator else (res, ini)
    inbox: list[bytes] = []
    for kind, arg in steps:
        if peer.our_turn and not peer.failed:
            inbox.append(body(peer.send()))
        before = states(ours)
        failed = ours.failed
        try:
            if kind == "send":
                frame = body(ours.send())
                if not peer.failed:
                    peer.receive(frame)
            elif kind == "deliver":
                if not inbox:
                    continue
                ours.receive(inbox.pop(0))
            elif kind == "garbage":
                ours.receive(arg)
            else:
                ours.session()
        except ProtocolError as exc:
            if failed:
                assert isinstance(exc, LocalProtocolError) and exc.code == "handshake_state"
                assert states(ours) == before
            elif kind == "session":
                assert not ours.finished and states(ours) == before
            else:
                assert ours.failed
                at_fault = ours.their_state if isinstance(exc, RemoteProtocolError) else ours.our_state
                assert at_fault is S.ERROR
            continue
        assert not failed
        assert ours.our_state in S and ours.their_state in S
        assert ours.finished == (states(ours) == (S.DONE, S.DONE))
        for now, then, role in zip(states(ours), before, (ours.our_role, ours.their_role), strict=True):
            assert now is then or now in TRANSITIONS[role][then].values()
    event(f"end {ours.our_state}/{ours.their_state}")
    if ours.finished:
        assert ours.session().remote_feed == (B if initiator else A).public_key
