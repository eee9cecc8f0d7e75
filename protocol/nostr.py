"""Nostr events and relay messages (NIP-01), keys in NIP-19 form; sans-IO (spec §14.5).

An event is ``{id, pubkey, created_at, kind, tags, content, sig}``. Its id is the SHA-256 of the
serialization ``[0, pubkey, created_at, kind, tags, content]`` as compact JSON in UTF-8 where strings
escape only ``\\n \\" \\\\ \\r \\t \\b \\f`` and every other character is written as is (NIP-01). ``sig`` is
a BIP-340 Schnorr signature of the id bytes by the x-only secp256k1 key ``pubkey``.

Keys (the x-only public key of a secret, the NIP-19 ``npub`` form) are in ``nostr_keys`` and
re-exported here. Nothing here reads the clock or draws randomness: ``created_at`` and the signing ``aux`` randomness are
passed in. Events that come from outside are checked with ``parse_event`` (shape) and ``verify_event``
(id and signature); both raise ``RemoteProtocolError`` with a code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import coincurve

from .errors import LocalProtocolError, RemoteProtocolError
from .nostr_keys import decode_key, is_hex, npub, public_key

__all__ = [
    "MAX_CONTENT",
    "Caught",
    "Closed",
    "Eose",
    "Event",
    "Notice",
    "Ok",
    "Received",
    "Refused",
    "RelayEvent",
    "RelayMessage",
    "RelaySession",
    "SessionEvent",
    "close_message",
    "decode_key",
    "event_id",
    "event_message",
    "follow_filter",
    "npub",
    "parse_event",
    "parse_relay_message",
    "public_key",
    "reply_refs",
    "req_message",
    "serialize",
    "sign_event",
    "verify_event",
]

#: Limits on events accepted from relays (spec §14.5).
MAX_CONTENT = 65536
MAX_TAGS = 2000
MAX_TAG_ITEMS = 16
MAX_TAG_ITEM = 1024
MAX_MESSAGE = 262144

_ESCAPES = {"\n": "\\n", '"': '\\"', "\\": "\\\\", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _bad(message: str, code: str = "bad_event") -> RemoteProtocolError:
    return RemoteProtocolError(message, code=code)


def _json_string(value: str) -> str:
    return '"' + "".join(_ESCAPES.get(c, c) for c in value) + '"'


def serialize(
    pubkey: str, created_at: int, kind: int, tags: tuple[tuple[str, ...], ...], content: str
) -> bytes:
    """The NIP-01 serialization whose SHA-256 is the event id."""
    tag_text = ",".join("[" + ",".join(_json_string(t) for t in tag) + "]" for tag in tags)
    text = f"[0,{_json_string(pubkey)},{created_at},{kind},[{tag_text}],{_json_string(content)}]"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be UTF-8
        raise _bad("event text is not valid Unicode") from None


def event_id(pubkey: str, created_at: int, kind: int, tags: tuple[tuple[str, ...], ...], content: str) -> str:
    """Lowercase hex SHA-256 of ``serialize(...)``."""
    return hashlib.sha256(serialize(pubkey, created_at, kind, tags, content)).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A Nostr event of the right shape (its id and signature are checked by ``verify_event``)."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    sig: str

    def __post_init__(self) -> None:
        if not is_hex(self.id, 32) or not is_hex(self.pubkey, 32) or not is_hex(self.sig, 64):
            raise _bad("id, pubkey and sig are lowercase hex of 32, 32 and 64 bytes")
        for name in ("created_at", "kind"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
                raise _bad(f"{name} is a non-negative integer")
        if (
            not isinstance(self.content, str)
            or len(self.content.encode("utf-8", "surrogatepass")) > MAX_CONTENT
        ):
            raise _bad(f"content is text of at most {MAX_CONTENT} bytes")
        if not isinstance(self.tags, tuple) or len(self.tags) > MAX_TAGS:
            raise _bad(f"tags are an array of at most {MAX_TAGS} arrays")
        for tag in self.tags:
            if not isinstance(tag, tuple) or not 1 <= len(tag) <= MAX_TAG_ITEMS:
                raise _bad("each tag is a non-empty array of strings")
            for item in tag:
                if not isinstance(item, str) or len(item) > MAX_TAG_ITEM:
                    raise _bad(f"each tag item is a string of at most {MAX_TAG_ITEM} characters")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(t) for t in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def tag_values(self, name: str) -> list[tuple[str, ...]]:
        """The tags named ``name``, each without its name."""
        return [t[1:] for t in self.tags if t[0] == name]


def parse_event(value: Any) -> Event:
    """An ``Event`` from decoded JSON; ``RemoteProtocolError(code="bad_event")`` when malformed."""
    if not isinstance(value, dict):
        raise _bad("an event is a JSON object")
    try:
        tags = value["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, list) for t in tags):
            raise _bad("tags are an array of arrays")
        return Event(
            id=value["id"],
            pubkey=value["pubkey"],
            created_at=value["created_at"],
            kind=value["kind"],
            tags=tuple(tuple(t) for t in tags),
            content=value["content"],
            sig=value["sig"],
        )
    except KeyError as exc:
        raise _bad(f"an event has no {exc.args[0]!r}") from None


def _is_event_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def reply_refs(event: Event) -> tuple[str | None, str | None]:
    """``(root, reply)``: the event ids a kind-1 note answers, by NIP-10 (both None for a top-level note).

    Marked ``e`` tags (``["e", id, relay, "root" | "reply"]``) win; a note with only a ``root`` mark
    answers the root itself. Without marks, the deprecated positional form: the first ``e`` tag is the
    root, the last the note answered (one tag: both). ``mention`` marks and malformed ids are ignored.
    """
    marked: dict[str, str] = {}
    positional: list[str] = []
    for tag in event.tags:
        if len(tag) < 2 or tag[0] != "e" or not _is_event_id(tag[1]):
            continue
        mark = tag[3] if len(tag) > 3 else ""
        if mark in ("root", "reply"):
            marked.setdefault(mark, tag[1])
        elif mark == "":
            positional.append(tag[1])
    if marked:
        root = marked.get("root") or marked["reply"]
        return root, marked.get("reply") or root
    if positional:
        return positional[0], positional[-1]
    return None, None


def verify_event(event: Event) -> None:
    """Check the id (NIP-01) and the Schnorr signature (BIP-340); raise ``RemoteProtocolError``."""
    expected = event_id(event.pubkey, event.created_at, event.kind, event.tags, event.content)
    if expected != event.id:
        raise _bad("the event id is not the hash of its content", code="bad_event_id")
    try:
        key = coincurve.PublicKeyXOnly(bytes.fromhex(event.pubkey))
        ok = key.verify(bytes.fromhex(event.sig), bytes.fromhex(event.id))
    except ValueError:
        ok = False
    if not ok:
        raise _bad("invalid event signature", code="bad_signature")


def sign_event(
    secret: bytes,
    *,
    created_at: int,
    kind: int,
    tags: tuple[tuple[str, ...], ...],
    content: str,
    aux: bytes,
) -> Event:
    """A signed event; ``aux`` is 32 bytes of fresh randomness (BIP-340 auxiliary data)."""
    if len(aux) != 32:
        raise LocalProtocolError("aux randomness is 32 bytes", code="bad_aux")
    pubkey = public_key(secret)
    ident = event_id(pubkey, created_at, kind, tags, content)
    sig = coincurve.PrivateKey(secret).sign_schnorr(bytes.fromhex(ident), aux)
    return Event(
        id=ident, pubkey=pubkey, created_at=created_at, kind=kind, tags=tags, content=content, sig=sig.hex()
    )


# -- relay messages (NIP-01) -----------------------------------------------------------------------------
def event_message(event: Event) -> str:
    """``["EVENT", event]`` sent by a client to publish."""
    return json.dumps(["EVENT", event.to_json()], ensure_ascii=False, separators=(",", ":"))


def req_message(subscription: str, *filters: dict[str, Any]) -> str:
    """``["REQ", subscription, filter...]``."""
    return json.dumps(["REQ", subscription, *filters], ensure_ascii=False, separators=(",", ":"))


def close_message(subscription: str) -> str:
    return json.dumps(["CLOSE", subscription], separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RelayEvent:
    subscription: str
    event: Event


@dataclass(frozen=True, slots=True)
class Eose:
    subscription: str


@dataclass(frozen=True, slots=True)
class Ok:
    event_id: str
    accepted: bool
    message: str


@dataclass(frozen=True, slots=True)
class Notice:
    message: str


@dataclass(frozen=True, slots=True)
class Closed:
    subscription: str
    message: str


RelayMessage = RelayEvent | Eose | Ok | Notice | Closed


def parse_relay_message(text: str | bytes) -> RelayMessage | None:
    """One relay-to-client message; None for kinds this client does not use (AUTH, COUNT, ...).

    Malformed messages raise ``RemoteProtocolError(code="bad_message")``; an EVENT whose event is
    malformed raises ``code="bad_event"``. Signatures are not checked here: call ``verify_event``.
    """
    if len(text) > MAX_MESSAGE:
        raise _bad("relay message too large", code="bad_message")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise _bad("relay message is not JSON", code="bad_message") from None
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise _bad("relay message is not a JSON array starting with its type", code="bad_message")
    kind, args = value[0], value[1:]
    if kind == "EVENT" and len(args) == 2 and isinstance(args[0], str):
        return RelayEvent(args[0], parse_event(args[1]))
    if kind == "EOSE" and len(args) == 1 and isinstance(args[0], str):
        return Eose(args[0])
    if kind == "OK" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], bool):
        message = args[2] if len(args) > 2 and isinstance(args[2], str) else ""
        return Ok(args[0], args[1], message)
    if kind == "NOTICE" and len(args) >= 1 and isinstance(args[0], str):
        return Notice(args[0])
    if kind == "CLOSED" and len(args) >= 1 and isinstance(args[0], str):
        return Closed(args[0], args[1] if len(args) > 1 and isinstance(args[1], str) else "")
    if kind in ("EVENT", "EOSE", "OK", "NOTICE", "CLOSED"):
        raise _bad(f"malformed {kind} message", code="bad_message")
    return None


# -- one relay connection, sans-IO (spec §14.5) ----------------------------------------------------------
def follow_filter(
    authors: Iterable[str], newest: int, *, slack: int = 600, limit: int = 500
) -> dict[str, Any]:
    """The filter for followed authors' notes: kind 1, ``since`` = newest seen − ``slack`` once anything
    was seen (relays may learn events late), at most ``limit`` stored events."""
    flt: dict[str, Any] = {"authors": sorted(set(authors)), "kinds": [1], "limit": limit}
    if newest:
        flt["since"] = max(0, newest - slack)
    return flt


@dataclass(frozen=True, slots=True)
class Received:
    """A verified event of the open subscription; ``stored`` while the relay sends what it held (before
    ``EOSE``), False for events that arrive live after it."""

    event: Event
    stored: bool


@dataclass(frozen=True, slots=True)
class Caught:
    """``EOSE`` of the open subscription: every later event is live."""

    subscription: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A message or event that broke the rules (malformed, forged, not asked for): counted, never used."""

    code: str
    detail: str


#: What ``RelaySession.receive_data`` reports. ``Ok`` answers an event we published (``accepted`` is
#: also true for ``duplicate:``); ``Closed`` means the relay ended the open subscription.
SessionEvent = Received | Caught | Refused | Ok | Notice | Closed

# Theory of operation: a connection carries at most one subscription of ours at a time. It is IDLE (no
# REQ open), STORED (REQ sent; the relay sends the events it holds) or LIVE (EOSE seen; each event is
# new). ``subscribe`` from any state replaces the open subscription (CLOSE, then a REQ under a new id);
# events still arriving under an old id are dropped silently, as they may be in flight.
IDLE, STORED, LIVE = "idle", "stored", "live"
_NEXT: dict[tuple[str, str], str] = {
    (IDLE, "subscribe"): STORED,
    (STORED, "subscribe"): STORED,
    (LIVE, "subscribe"): STORED,
    (STORED, "EOSE"): LIVE,
    (STORED, "CLOSED"): IDLE,
    (LIVE, "CLOSED"): IDLE,
    (STORED, "unsubscribe"): IDLE,
    (LIVE, "unsubscribe"): IDLE,
    (IDLE, "unsubscribe"): IDLE,
}


def _matches(event: Event, filters: tuple[dict[str, Any], ...]) -> bool:
    """Whether ``event`` fits the ``authors`` and ``kinds`` of one of ``filters`` (other fields are the
    relay's business: a wrong ``since`` costs nothing, a wrong author would import a stranger)."""
    for flt in filters:
        authors, kinds = flt.get("authors"), flt.get("kinds")
        if (authors is None or event.pubkey in authors) and (kinds is None or event.kind in kinds):
            return True
    return False


class RelaySession:
    """The client side of one relay connection: one subscription, and events we publish awaiting ``OK``.

    ``subscribe``/``unsubscribe``/``publish`` return the text messages to send; ``receive_data`` takes
    one text message from the relay and returns what it means. Every event is checked here (shape, id,
    signature, and that it fits the subscription's authors and kinds); one that fails is ``Refused``.
    """

    def __init__(self) -> None:
        self.state = IDLE
        self.subscription: str | None = None
        self.filters: tuple[dict[str, Any], ...] = ()
        self._seen: set[str] = set()
        self._pending: set[str] = set()

    def _move(self, what: str) -> None:
        self.state = _NEXT[(self.state, what)]

    def subscribe(self, subscription: str, *filters: dict[str, Any]) -> list[str]:
        """Open ``subscription`` (closing the open one first); the messages to send."""
        if not filters:
            raise LocalProtocolError("a subscription needs at least one filter", code="bad_argument")
        if subscription == self.subscription:
            raise LocalProtocolError("a new subscription needs a new id", code="bad_argument")
        out = self.unsubscribe()
        self._move("subscribe")
        self.subscription, self.filters = subscription, filters
        self._seen = set()
        return [*out, req_message(subscription, *filters)]

    def unsubscribe(self) -> list[str]:
        """Close the open subscription, if any; the messages to send."""
        out = [close_message(self.subscription)] if self.state != IDLE and self.subscription else []
        self._move("unsubscribe")
        return out

    def publish(self, event: Event) -> str:
        """The ``EVENT`` message for ``event``; its ``OK`` will be reported."""
        self._pending.add(event.id)
        return event_message(event)

    def receive_data(self, text: str | bytes) -> list[SessionEvent]:
        """What one relay message means for us (nothing for messages about other subscriptions)."""
        try:
            msg = parse_relay_message(text)
        except RemoteProtocolError as exc:
            return [Refused(exc.code, str(exc.args[0]))]
        current = self.state != IDLE and self.subscription is not None
        if isinstance(msg, RelayEvent):
            if not current or msg.subscription != self.subscription:
                return []
            try:
                verify_event(msg.event)
            except RemoteProtocolError as exc:
                return [Refused(exc.code, f"event {msg.event.id}")]
            if not _matches(msg.event, self.filters):
                return [Refused("not_asked", f"event {msg.event.id} does not fit the subscription")]
            if msg.event.id in self._seen:
                return []
            self._seen.add(msg.event.id)
            return [Received(msg.event, stored=self.state == STORED)]
        if isinstance(msg, Eose):
            if self.state == STORED and msg.subscription == self.subscription:
                self._move("EOSE")
                return [Caught(msg.subscription)]
            return []
        if isinstance(msg, Closed):
            if current and msg.subscription == self.subscription:
                self._move("CLOSED")
                return [msg]
            return []
        if isinstance(msg, Ok):
            if msg.event_id not in self._pending:
                return []
            self._pending.discard(msg.event_id)
            accepted = msg.accepted or msg.message.startswith("duplicate:")
            return [Ok(msg.event_id, accepted, msg.message)]
        if isinstance(msg, Notice):
            return [msg]
        return []
