"""Signed log entries (spec/protocol.md §4, §5, §7).

An entry is the canonical encoding of the array
``[version, author, seq, backlink, skiplink, timestamp, payload_hash, payload_size, signature]``.
The signature covers ``SIGNING_DOMAIN`` followed by the canonical encoding of the first eight fields.
The entry's hash (its id) is BLAKE2b-256 of its full encoding. The payload travels beside the entry,
so it can be deleted while the log stays verifiable.

Verification is split in parts a store can schedule separately: ``verify_signature`` (the costly part,
safe on worker threads), ``verify_links`` (against whichever neighbours are known) and
``verify_payload``. ``verify_entry`` runs them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from .encoding import decode, encode
from .errors import DecodeError, InvalidEntry, LocalProtocolError, ProtocolError
from .identity import (
    HASH_SIZE,
    KEY_SIZE,
    SIGNATURE_SIZE,
    EntryId,
    FeedId,
    SigningKey,
    hash_bytes,
)
from .identity import (
    verify_signature as _verify_sig,
)
from .lipmaa import skip_target

__all__ = [
    "MAX_ENTRY_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MAX_SEQ",
    "SIGNING_DOMAIN",
    "VERSION",
    "Entry",
    "ForkProof",
    "check_fork",
    "create_entry",
    "peek_fork",
    "peek_position",
    "verify_entry",
    "verify_links",
    "verify_payload",
    "verify_signature",
]

VERSION = 1
SIGNING_DOMAIN = b"tidings/entry/v1\x00"
MAX_PAYLOAD_SIZE = 16 * 1024
MAX_SEQ = 2**53 - 1
MAX_TIMESTAMP = 2**53 - 1
#: No valid entry encodes to more bytes than this (spec §4.3).
MAX_ENTRY_SIZE = 256


def _bad(code: str, message: str) -> InvalidEntry:
    return InvalidEntry(message, code=code)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One signed log entry. Structural rules (spec §4.2) are checked on construction."""

    version: int
    author: bytes
    seq: int
    backlink: bytes | None
    skiplink: bytes | None
    timestamp: int
    payload_hash: bytes
    payload_size: int
    signature: bytes
    _raw: bytes = field(init=False, repr=False, compare=False)
    _hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_structure(self)
        # Every field is now known to be bytes, int or None, for which msgpack's own packing is the
        # canonical form (spec §2.1): the generic ``encode`` walk is not needed on this hot path.
        raw: bytes = msgpack.packb(
            [
                self.version,
                self.author,
                self.seq,
                self.backlink,
                self.skiplink,
                self.timestamp,
                self.payload_hash,
                self.payload_size,
                self.signature,
            ],
            use_bin_type=True,
        )
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_hash", hash_bytes(raw))

    # -- forms -----------------------------------------------------------------------------------------
    @property
    def raw(self) -> bytes:
        """The canonical encoding (what is stored and sent)."""
        return self._raw

    @property
    def hash(self) -> bytes:
        """BLAKE2b-256 of the encoding: the entry's id."""
        return self._hash

    @property
    def id(self) -> EntryId:
        return EntryId(self._hash)

    @property
    def feed(self) -> FeedId:
        return FeedId(self.author)

    def signing_bytes(self) -> bytes:
        """What the signature covers (spec §5.1)."""
        return signing_bytes(
            author=self.author,
            seq=self.seq,
            backlink=self.backlink,
            skiplink=self.skiplink,
            timestamp=self.timestamp,
            payload_hash=self.payload_hash,
            payload_size=self.payload_size,
        )

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """Strictly decode an entry; raise ``DecodeError`` or ``InvalidEntry`` (spec §4)."""
        if len(data) > MAX_ENTRY_SIZE:
            raise DecodeError("entry larger than the maximum", code="too_large")
        fast = _decode_fast(cls, data)
        if fast is not None:
            return fast
        # Slow path: the same checks one by one, so every defect gets its precise code (spec §1.3).
        value = decode(data, max_size=MAX_ENTRY_SIZE)
        if not isinstance(value, list) or len(value) != 9:
            raise _bad("bad_shape", "an entry is an array of 9 fields")
        if value[0] != VERSION or isinstance(value[0], bool):
            raise _bad("unknown_version", f"unknown entry version {value[0]!r}")
        try:
            return _from_fields(cls, value)
        except LocalProtocolError as exc:  # pragma: no cover - _check_structure raises InvalidEntry
            raise _bad(exc.code, str(exc.args[0])) from None


def _from_fields(cls: type[Entry], value: list[Any]) -> Entry:
    """Build an entry from the 9 decoded fields in wire order (spec §4.1); checks §4.2."""
    return cls(
        version=value[0],
        author=value[1],
        seq=value[2],
        backlink=value[3],
        skiplink=value[4],
        timestamp=value[5],
        payload_hash=value[6],
        payload_size=value[7],
        signature=value[8],
    )


def _decode_fast(cls: type[Entry], data: bytes) -> Entry | None:
    """The valid-entry fast path: unpack, build (which checks §4.2), compare with the canonical form.

    Returns None whenever anything is off; ``Entry.decode`` then runs the step-by-step path, which
    raises the precise error. On success the result equals the slow path's.
    """
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except Exception:
        return None
    if type(value) is not list or len(value) != 9 or value[0] != VERSION or type(value[0]) is not int:
        return None
    try:
        entry = _from_fields(cls, value)
    except ProtocolError:
        return None
    return entry if entry._raw == data else None


def peek_position(data: bytes) -> tuple[bytes, int]:
    """(author, seq) of an encoded entry without verifying it: routing only, never trust.

    Raises ``DecodeError`` when the bytes are not even shaped like an entry.
    """
    try:
        value = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=False)
    except Exception:
        raise DecodeError("not an entry", code="malformed") from None
    if (
        type(value) is not tuple
        or len(value) != 9
        or type(value[1]) is not bytes
        or len(value[1]) != KEY_SIZE
        or type(value[2]) is not int
    ):
        raise DecodeError("not an entry", code="bad_shape")
    return value[1], value[2]


def _is_bytes(value: Any, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_structure(e: Entry) -> None:
    """Field types, lengths and the link presence rules of spec §4.2.

    Written with ``type(x) is`` checks (bool is not int here) because it runs for every entry taken in.
    """
    if type(e.version) is not int or e.version != VERSION:
        raise _bad("unknown_version", f"unknown entry version {e.version!r}")
    if type(e.author) is not bytes or len(e.author) != KEY_SIZE:
        raise _bad("bad_author", "author must be a 32-byte key")
    seq = e.seq
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise _bad("bad_seq", "seq must be an integer from 1")
    if type(e.timestamp) is not int or not 0 <= e.timestamp <= MAX_TIMESTAMP:
        raise _bad("bad_timestamp", "timestamp must be a non-negative integer (ms)")
    if type(e.payload_hash) is not bytes or len(e.payload_hash) != HASH_SIZE:
        raise _bad("bad_payload_hash", "payload hash must be 32 bytes")
    if type(e.payload_size) is not int or not 0 <= e.payload_size <= MAX_PAYLOAD_SIZE:
        raise _bad("bad_payload_size", f"payload size must be 0..{MAX_PAYLOAD_SIZE}")
    if type(e.signature) is not bytes or len(e.signature) != SIGNATURE_SIZE:
        raise _bad("bad_signature_field", "signature must be 64 bytes")
    if seq == 1:
        if e.backlink is not None:
            raise _bad("bad_backlink", "seq 1 has no backlink")
    elif type(e.backlink) is not bytes or len(e.backlink) != HASH_SIZE:
        raise _bad("bad_backlink", "backlink must be a 32-byte hash")
    if skip_target(seq) is None:
        if e.skiplink is not None:
            raise _bad("bad_skiplink", "this seq carries no skip link")
    elif type(e.skiplink) is not bytes or len(e.skiplink) != HASH_SIZE:
        raise _bad("bad_skiplink", "skip link must be a 32-byte hash")


def signing_bytes(
    *,
    author: bytes,
    seq: int,
    backlink: bytes | None,
    skiplink: bytes | None,
    timestamp: int,
    payload_hash: bytes,
    payload_size: int,
) -> bytes:
    """Domain-separated encoding of the unsigned fields (spec §5.1)."""
    body = encode([VERSION, author, seq, backlink, skiplink, timestamp, payload_hash, payload_size])
    return SIGNING_DOMAIN + body


def create_entry(
    key: SigningKey,
    *,
    seq: int,
    backlink: bytes | None,
    skiplink: bytes | None,
    timestamp: int,
    payload: bytes,
) -> Entry:
    """Sign a new entry. The caller supplies the links (hashes of seq-1 and of ``lipmaa(seq)``)."""
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise LocalProtocolError("payload too large", code="payload_too_large")
    fields: dict[str, Any] = {
        "author": key.public_key,
        "seq": seq,
        "backlink": backlink,
        "skiplink": skiplink,
        "timestamp": timestamp,
        "payload_hash": hash_bytes(payload),
        "payload_size": len(payload),
    }
    try:
        signature = key.sign(signing_bytes(**fields))
        return Entry(version=VERSION, signature=signature, **fields)
    except InvalidEntry as exc:
        raise LocalProtocolError(f"cannot create entry: {exc.args[0]}", code=exc.code) from None


def verify_signature(entry: Entry) -> None:
    """Raise ``InvalidEntry`` (``bad_signature``) unless the author signed this entry (spec §5.2)."""
    if not _verify_sig(entry.author, entry.signature, entry.signing_bytes()):
        raise _bad("bad_signature", f"invalid signature on seq {entry.seq}")


def signature_ok(entry: Entry) -> bool:
    """Boolean form of ``verify_signature``, for batch verifiers on worker threads."""
    return _verify_sig(entry.author, entry.signature, entry.signing_bytes())


def _check_link(entry: Entry, target: Entry, link: bytes | None, want_seq: int, name: str) -> None:
    if target.author != entry.author:
        raise _bad("author_mismatch", f"{name} target has another author")
    if target.seq != want_seq:
        raise _bad(f"bad_{name}", f"{name} target has seq {target.seq}, expected {want_seq}")
    if link != target.hash:
        raise _bad(f"bad_{name}", f"{name} of seq {entry.seq} does not match seq {want_seq}")
    if entry.timestamp < target.timestamp:
        raise _bad("timestamp_order", f"timestamp of seq {entry.seq} is before seq {want_seq}")


def verify_links(entry: Entry, *, previous: Entry | None = None, skip: Entry | None = None) -> None:
    """Check the links against the neighbours the caller has (spec §5.3).

    ``previous`` is the entry at ``seq - 1``; ``skip`` the one at ``lipmaa(seq)``. Either may be None
    when not known (partial logs): that link is then not checked here.
    """
    if previous is not None:
        _check_link(entry, previous, entry.backlink, entry.seq - 1, "backlink")
    target = skip_target(entry.seq)
    if skip is not None and target is not None:
        _check_link(entry, skip, entry.skiplink, target, "skiplink")


def verify_payload(entry: Entry, payload: bytes) -> None:
    """Check size and hash of a payload against its entry (spec §5.4)."""
    if len(payload) != entry.payload_size:
        raise _bad("payload_size", f"payload of seq {entry.seq} has the wrong size")
    if hash_bytes(payload) != entry.payload_hash:
        raise _bad("payload_hash", f"payload of seq {entry.seq} does not match its hash")


def verify_entry(
    entry: Entry,
    *,
    previous: Entry | None = None,
    skip: Entry | None = None,
    payload: bytes | None = None,
) -> None:
    """All checks of spec §5 that the given neighbours and payload allow."""
    verify_signature(entry)
    verify_links(entry, previous=previous, skip=skip)
    if payload is not None:
        verify_payload(entry, payload)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkProof:
    """Two validly signed, different entries of one author at one seq (spec §7).

    ``first`` is always the entry with the lower hash, whatever order the constructor got.
    """

    first: Entry
    second: Entry

    def __post_init__(self) -> None:
        a, b = self.first, self.second
        if a.author != b.author or a.seq != b.seq or a.hash == b.hash:
            raise _bad("not_a_fork", "a fork proof needs two different entries of one author and seq")
        verify_signature(a)
        verify_signature(b)
        if a.hash > b.hash:  # one proof, one value: lower hash first, as encoded (spec §7.2)
            object.__setattr__(self, "first", b)
            object.__setattr__(self, "second", a)

    @property
    def author(self) -> bytes:
        return self.first.author

    @property
    def seq(self) -> int:
        return self.first.seq

    def encode(self) -> bytes:
        """Canonical form: the two raw entries, lower hash first (spec §7.2)."""
        return encode([self.first.raw, self.second.raw])

    @classmethod
    def decode(cls, data: bytes) -> ForkProof:
        """Strictly decode and check a fork proof (spec §7.2); raise a ``RemoteProtocolError``."""
        value = decode(data, max_size=4 * MAX_ENTRY_SIZE)
        if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, bytes) for v in value):
            raise _bad("bad_shape", "a fork proof is an array of two entries")
        first, second = Entry.decode(value[0]), Entry.decode(value[1])
        if first.hash > second.hash:
            raise DecodeError("fork proof entries out of order", code="non_canonical")
        return cls(first=first, second=second)


def peek_fork(data: bytes) -> tuple[bytes, int, bytes]:
    """(author, seq, hash) of an encoded fork proof without checking its signatures (spec §12.4): so
    that proofs of unwanted feeds and known proofs cost no signature check. Never trust the result;
    raises ``DecodeError`` or ``InvalidEntry`` when the bytes are not shaped like a proof (§7.2 steps 1–2).
    """
    value = decode(data, max_size=4 * MAX_ENTRY_SIZE)
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, bytes) for v in value):
        raise _bad("bad_shape", "a fork proof is an array of two entries")
    author, seq = peek_position(value[0])
    return author, seq, hash_bytes(data)


def check_fork(stored: Entry, incoming: Entry) -> ForkProof | None:
    """Return a fork proof if ``incoming`` is a different valid entry at the seq of ``stored``."""
    if stored.author != incoming.author or stored.seq != incoming.seq or stored.hash == incoming.hash:
        return None
    return ForkProof(first=stored, second=incoming)
