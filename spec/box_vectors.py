"""The private message vectors of spec/protocol.md §8.6 (``box.json``), for ``make_vectors.py``.

Boxes sealed with recorded randomness (a BLAKE2b stream: every draw is listed, so another
implementation can seal the same bytes), each opened by every participant and by an outsider; boxes
that are valid payloads but that a reader cannot open (replayed under another entry, a slot taken from
another box, a byte changed); and invalid boxes, each breaking one structure rule (``bad_box``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from tidings.protocol import Box, BoxKey, Message, Opened, SigningKey, encode, encode_content, open_box, seal
from tidings.protocol.box import MAX_BOX_TEXT, box_context


class Recorder:
    """A deterministic rng (BLAKE2b-512 of ``label || counter``, as many blocks as a draw needs)
    that keeps every draw, in order."""

    def __init__(self, label: str) -> None:
        self.label = label.encode()
        self.counter = 0
        self.draws: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.blake2b(self.label + self.counter.to_bytes(8, "big"), digest_size=64).digest()
            self.counter += 1
        self.draws.append(out[:n])
        return out[:n]


def replay(draws: list[bytes]) -> Callable[[int], bytes]:
    """An rng that gives back recorded draws in order (the tests re-seal with it)."""
    left = list(draws)

    def rng(n: int) -> bytes:
        data = left.pop(0)
        assert len(data) == n
        return data

    return rng


def boxes_doc(tagged: Callable[[Any], Any], seed: Callable[[str], bytes]) -> dict[str, Any]:
    """The document of ``box.json``; ``tagged`` and ``seed`` are make_vectors.py's helpers."""
    people = {name: SigningKey(seed(f"box-{name}")) for name in ("alice", "bob", "carol", "dave", "mallory")}
    crowd = [SigningKey(seed(f"box-crowd-{i}")) for i in range(30)]
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    back = hashlib.blake2b(b"the entry before", digest_size=32).digest()
    reply = hashlib.blake2b(b"an earlier message", digest_size=32).digest()
    cases: list[tuple[str, SigningKey, list[SigningKey], int, bytes | None, Message]] = [
        ("one recipient", alice, [bob], 2, back, Message(text="hello bob", to=(bob.public_key,))),
        (
            "two recipients and a reply",
            alice,
            [carol, people["dave"]],
            7,
            back,
            Message(
                text="à demain, les amis 🌱", to=(carol.public_key, people["dave"].public_key), reply=reply
            ),
        ),
        (
            "the first entry of a log, four recipients",
            bob,
            [alice, carol, people["dave"], crowd[0]],
            1,
            None,
            Message(
                text="x",
                to=(alice.public_key, carol.public_key, people["dave"].public_key, crowd[0].public_key),
            ),
        ),
        (
            "31 recipients and the longest text",
            alice,
            [bob, *crowd],
            40,
            back,
            Message(
                text="é" * (MAX_BOX_TEXT // 2),
                to=(bob.public_key, *(k.public_key for k in crowd)),
                reply=reply,
            ),
        ),
    ]
    valid, sealed = [], {}
    for name, author, readers, seq, backlink, message in cases:
        rng = Recorder(f"tidings/vectors/box/{name}")
        box = seal(message, author=author.public_key, seq=seq, backlink=backlink, rng=rng)
        sealed[name] = (box, author, seq, backlink)
        openers = []
        for reader in [author, *readers]:
            key = BoxKey(reader)
            opened = open_box(box, author=author.public_key, seq=seq, backlink=backlink, key=key)
            assert isinstance(opened, Opened) and opened.message == message
            slot = next(
                i for i, s in enumerate(box.slots) if _opens(s, box, author.public_key, seq, backlink, key)
            )
            openers.append(
                {
                    "seed": reader.seed.hex(),
                    "feed": reader.public_key.hex(),
                    "x25519": key.public.hex(),
                    "slot": slot,
                }
            )
        outsider = people["mallory"]
        assert (
            open_box(box, author=author.public_key, seq=seq, backlink=backlink, key=BoxKey(outsider)) is None
        )
        valid.append(
            {
                "name": name,
                "rule": "§8.6",
                "author": author.public_key.hex(),
                "seq": seq,
                "backlink": None if backlink is None else backlink.hex(),
                "message": tagged(message.to_map()),
                "plain": encode(message.to_map()).hex(),
                "draws": [d.hex() for d in rng.draws],
                "eph_secret": rng.draws[0].hex(),
                "content_key": rng.draws[1].hex(),
                "context": box_context(author.public_key, seq, backlink, box.eph, box.commit).hex(),
                "payload": encode_content(box).hex(),
                "slots": len(box.slots),
                "body": len(box.body),
                "openers": openers,
                "outsider": outsider.seed.hex(),
            }
        )
    return {
        "spec": "spec/protocol.md §8.6",
        "generator": "spec/make_vectors.py",
        "format": (
            "valid: sealing message (tagged, as in content.json; its encoding is plain) by author at seq after "
            "backlink with an rng that returns draws in order gives payload; context is the associated data of "
            "the slots; each of openers (an Ed25519 seed, its feed key and X25519 key) opens slot and reads "
            "message; outsider (a seed) opens nothing. unopenable: payload is a valid box; opened as the entry "
            "of author at seq after backlink by the reader with seed, the result is not_ours or undecryptable. "
            "invalid: decoding payload fails with code bad_box."
        ),
        "valid": valid,
        "unopenable": _unopenable(sealed, people),
        "invalid": _invalid(sealed["one recipient"][0]),
    }


def _opens(slot: bytes, box: Box, author: bytes, seq: int, backlink: bytes | None, key: BoxKey) -> bool:
    """Whether ``key`` opens ``slot`` alone (which slot is whose, for the vectors)."""
    alone = Box(eph=box.eph, commit=box.commit, slots=(slot,) * 4, body=box.body)
    return open_box(alone, author=author, seq=seq, backlink=backlink, key=key) is not None


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _unopenable(sealed: dict[str, Any], people: dict[str, SigningKey]) -> list[dict[str, Any]]:
    box, alice, seq, back = sealed["one recipient"]
    other, _, seq2, back2 = sealed["two recipients and a reply"]
    bob, carol, mallory = people["bob"], people["carol"], people["mallory"]
    bob_slot = next(s for s in box.slots if _opens(s, box, alice.public_key, seq, back, BoxKey(bob)))
    # bob's slot of the first box in place of the spare slot of the second (to carol and dave)
    readers = [BoxKey(k) for k in (alice, carol, people["dave"])]
    spare = next(
        i
        for i, s in enumerate(other.slots)
        if not any(_opens(s, other, alice.public_key, seq2, back2, k) for k in readers)
    )
    swapped = Box(
        eph=other.eph,
        commit=other.commit,
        slots=(*other.slots[:spare], bob_slot, *other.slots[spare + 1 :]),
        body=other.body,
    )
    body_flipped = Box(eph=box.eph, commit=box.commit, slots=box.slots, body=_flip(box.body, 100))
    commit_flipped = Box(eph=box.eph, commit=_flip(box.commit, 0), slots=box.slots, body=box.body)
    a = alice.public_key
    rows: list[tuple[str, Box, bytes, int, bytes | None, SigningKey, str]] = [
        ("replayed under another author's entry", box, mallory.public_key, seq, back, bob, "not_ours"),
        ("replayed at another seq of its author", box, a, seq + 1, back, bob, "not_ours"),
        ("replayed after another backlink", box, a, seq, bytes(32), bob, "not_ours"),
        ("a slot from another box, for its reader", swapped, a, seq2, back2, bob, "not_ours"),
        (
            "a slot from another box, for a reader of this one",
            swapped,
            a,
            seq2,
            back2,
            carol,
            "undecryptable",
        ),
        ("a byte of the body changed", body_flipped, a, seq, back, bob, "undecryptable"),
        ("a byte of the commitment changed", commit_flipped, a, seq, back, bob, "not_ours"),
    ]
    out = []
    for name, item, author, at, backlink, reader, result in rows:
        got = open_box(item, author=author, seq=at, backlink=backlink, key=BoxKey(reader))
        assert (got is None) == (result == "not_ours") and not isinstance(got, Opened), name
        out.append(
            {
                "name": name,
                "payload": encode_content(item).hex(),
                "author": author.hex(),
                "seq": at,
                "backlink": None if backlink is None else backlink.hex(),
                "seed": reader.seed.hex(),
                "result": result,
            }
        )
    return out


def _invalid(box: Box) -> list[dict[str, Any]]:
    good = box.to_map()

    def changed(**fields: Any) -> bytes:
        return encode({k: v for k, v in {**good, **fields}.items() if v is not ...})

    slot = box.slots[0]
    cases = [
        ("33 slots", changed(slots=[slot] * 33)),
        ("5 slots", changed(slots=[slot] * 5)),
        ("no slots", changed(slots=[])),
        ("a slot of 47 bytes", changed(slots=[slot[:47], *box.slots[1:]])),
        ("a slot of 49 bytes", changed(slots=[slot + b"\x00", *box.slots[1:]])),
        ("a slot that is text", changed(slots=["garbage", *box.slots[1:]])),
        ("slots as one byte string", changed(slots=b"".join(box.slots))),
        ("a body of 16000 bytes, larger than the largest bucket", changed(body=bytes(16000))),
        ("a body between two buckets", changed(body=box.body + b"\x00")),
        ("a body of 128 bytes", changed(body=box.body[:128])),
        ("an eph of 31 bytes", changed(eph=box.eph[:31])),
        ("a commit as text", changed(commit="commit")),
        ("no body", changed(body=...)),
        ("a nil eph", changed(eph=None)),
        ("an extra key", changed(to=b"\x00" * 32)),
    ]
    return [{"name": n, "payload": raw.hex(), "rule": "§8.6", "code": "bad_box"} for n, raw in cases]


__all__ = ["Recorder", "boxes_doc", "replay"]
