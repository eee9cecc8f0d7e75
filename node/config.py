"""config.toml: its schema, the one source of the node's defaults, and its validation (spec/config.md).

Theory of operation. ``load_config(path)`` reads the file and checks every table the node reads
before anything starts, so a wrong value is one line naming the file, the key and what is allowed
(``ConfigError``, code ``bad_config``) instead of a crash later:

- ``[limits]``: each key in ``LIMITS`` with its type (integer, or number: an integer or a float) and
  its inclusive range; a key not in ``LIMITS`` is refused (with the nearest known key), as are
  booleans for numbers and non-finite values;
- ``bootstrap``: a list of ``HOST:PORT`` strings;
- ``relay``: a boolean (relaying for private nodes, spec/protocol.md §12.10; default true);
- ``[filters]``: checked by ``FilterSettings.from_config`` (node/ranking/filters.py);
- ``[rankers.NAME]``: tables of finite numbers here; ``check_rankers`` (run by ``tidings run``)
  also checks each names an installed ranker and a weight it declares, in its allowed range;
- anything else at the top level is refused.

``DEFAULT_LIMITS`` is built from ``LIMITS``; node/net/node.py takes it from here. Values passed to
``Node(limits=...)`` directly (tests, the lab, the demo) are the caller's business and not checked.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidings.node.addresses import parse_address
from tidings.protocol.errors import TidingsError

__all__ = ["DEFAULT_LIMITS", "LIMITS", "TABLES", "ConfigError", "Limit", "check_rankers", "load_config"]


class ConfigError(TidingsError):
    """A config.toml that cannot be used: one line naming the file, the key and what is allowed."""

    def __init__(self, message: str, *, code: str = "bad_config") -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """One ``[limits]`` key: its type (``int``; ``float`` takes integers too), default, inclusive
    range, unit and a one-line description."""

    name: str
    kind: type[int] | type[float]
    default: int | float
    low: int | float
    high: int | float
    unit: str
    doc: str

    def allowed(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        unit = f" ({self.unit})" if self.unit else ""
        return f"{what} from {_num(self.low)} to {_num(self.high)}{unit}"


def _num(x: float) -> str:
    """A limit as the docs write it: ``0.01``, ``60``, ``-40``, ``1000000``."""
    return str(int(x)) if isinstance(x, int) or x.is_integer() else str(x)


# spec/protocol.md §12.5, §13.7 and §8.5 (blobs); spec/config.md lists the same table for users.
# fmt: off
_TABLE: tuple[tuple[str, type[int] | type[float], float, float, float, str, str], ...] = (
    # name, type, default, low, high (inclusive), unit, description
    ("max_connections", int, 64, 1, 10_000, "", "connections of all kinds before new incoming ones are closed"),
    ("reserved_slots", int, 16, 0, 10_000, "", "of max_connections, kept for the peers this node dials (pinned, followed)"),
    ("max_per_host", int, 8, 1, 1000, "", "incoming connections per IPv4 address or IPv6 /64"),
    ("max_per_range", int, 16, 1, 10_000, "", "incoming connections per IPv4 /24 or IPv6 /48"),
    ("handshake_timeout", float, 10.0, 0.5, 120.0, "s", "time for the Noise handshake, then again for hello"),
    ("idle_timeout", float, 15.0, 1.0, 3600.0, "s", "an incoming peer never useful this long after its handshake is closed"),
    ("frame_timeout", float, 10.0, 0.5, 600.0, "s", "a frame started must arrive whole within it (slow senders are cut off)"),
    ("write_timeout", float, 60.0, 1.0, 3600.0, "s", "a peer that reads nothing we send for this long is dropped"),
    ("frames_per_second", int, 2000, 100, 1_000_000, "", "frames a peer may send per second (burst: twice)"),
    ("entries_per_second", int, 50_000, 100, 10_000_000, "", "entries a peer may send per second (burst: twice)"),
    ("newest", int, 0, 0, 1_000_000_000, "entries", "partial sync: fetch only the newest N of a feed; 0: all"),
    ("hops", int, 2, 0, 4, "", "follow steps of the feeds replicated (1: follows; 2: also theirs)"),
    ("ban_seconds", float, 300.0, 1.0, 86_400.0, "s", "unit of ban lengths, which grow with each offence"),
    ("poll_interval", float, 0.1, 0.01, 60.0, "s", "how often the store is polled for new entries"),
    ("target_connections", int, 8, 0, 1000, "", "outgoing gossip connections to keep; 0: dial none"),
    ("manage_interval", float, 0.5, 0.05, 60.0, "s", "how often the connection manager looks for peers"),
    ("score_half_life", float, 600.0, 1.0, 604_800.0, "s", "half-life of peer scores"),
    ("score_threshold", float, -40.0, -1_000_000.0, -1.0, "", "a host scored below it is cut off and banned"),
    ("feed_entries_per_second", float, 20.0, 0.1, 1_000_000.0, "", "live budget of a feed on a connection"),
    ("feed_burst", int, 2000, 1, 10_000_000, "entries", "burst of that budget"),
    ("eager_peers", int, 3, 1, 64, "", "connections pushing a feed eagerly before a new one is lazy"),
    ("min_eager_peers", int, 2, 1, 64, "", "eager connections a feed keeps before one is pruned"),
    ("graft_delay", float, 0.3, 0.01, 60.0, "s", "wait after a have note before grafting"),
    ("have_interval", float, 0.5, 0.01, 60.0, "s", "how long lazy notes are gathered before sending"),
    ("pex_interval", float, 60.0, 1.0, 86_400.0, "s", "how often known peers are exchanged"),
    ("work_budget", float, 2000.0, 10.0, 10_000_000.0, "", "per connection: work a peer may ask for again (entries re-sent, proofs checked)"),
    ("proof_cache", int, 10_000, 100, 10_000_000, "", "fork proofs remembered as checked, so a replayed one costs no signature check"),
    ("record_ttl", float, 3600.0, 60.0, 86_400.0, "s", "lifetime of the node's own DHT records"),
    ("dht_timeout", float, 1.0, 0.05, 30.0, "s", "per DHT request"),
    ("discovery_interval", float, 1.0, 0.05, 60.0, "s", "tick of the discovery loop"),
    ("dht_records", int, 10_000, 100, 10_000_000, "", "values the node's DHT holds for others, in all"),
    ("dht_records_per_range", int, 1000, 1, 10_000_000, "", "signed records stored from one IPv4 /24 or IPv6 /48"),
    ("dht_plain_values", int, 1000, 0, 10_000_000, "", "unsigned values of stock kademlia nodes: a small share, evicted first"),
    ("dht_plain_per_range", int, 100, 0, 10_000_000, "", "unsigned values stored from one /24 or /48"),
    ("dht_plain_ttl", float, 10_800.0, 60.0, 86_400.0, "s", "how long an unsigned value lives after it was last stored"),
    ("swarm_interval", float, 30.0, 0.5, 3600.0, "s", "longest wait between member lookups of a swarm"),
    ("relay_reservations", int, 32, 0, 10_000, "", "reservations this node holds for private nodes it relays for (spec §12.10)"),
    ("relay_circuits", int, 64, 0, 10_000, "", "relayed connections this node carries at once"),
    ("relay_circuits_per_peer", int, 4, 1, 1_000, "", "relayed connections one feed may open through this node at once"),
    ("relay_circuit_bytes", int, 16_777_216, 65_536, 10_000_000_000, "bytes", "most bytes one relayed connection carries, both ways together"),
    ("relay_circuit_seconds", float, 600.0, 5.0, 86400.0, "s", "longest life of one relayed connection"),
    ("relay_reservation_seconds", float, 3600.0, 60.0, 86400.0, "s", "how long a reservation lasts before it must be renewed"),
    ("relay_keep", int, 2, 0, 8, "", "relays a private node keeps a reservation on"),
    ("dial_back_timeout", float, 3.0, 0.5, 60.0, "s", "time a dial-back (reachability check) may take"),
    ("dial_back_interval", float, 60.0, 1.0, 86400.0, "s", "a peer is dialled back at most once per interval"),
    ("reach_quorum", int, 2, 1, 16, "", "helpers in distinct address ranges that must agree before a node calls itself public"),
    ("reach_recheck", float, 600.0, 10.0, 86400.0, "s", "how often reachability is checked again"),
    ("punch_timeout", float, 5.0, 0.5, 60.0, "s", "time one hole-punching attempt may take"),
    ("punch_retry", float, 300.0, 5.0, 86400.0, "s", "wait before punching again after a failed attempt"),
    ("max_blob", int, 8_388_608, 65_536, 8_388_608, "bytes", "largest blob (picture, file) this node stores (spec §8.5)"),
    ("blob_quota", int, 1_073_741_824, 0, 1_000_000_000_000, "bytes", "blobs beyond it are evicted, least recently used first; yours and those of feeds you follow are kept"),
    ("blob_downloads", int, 4, 1, 64, "", "blobs fetched from peers at once (spec §12.12)"),
    ("blob_range_timeout", float, 30.0, 1.0, 600.0, "s", "time one requested range of a blob (up to 1 MiB) may take to arrive"),
    ("blob_ask_timeout", float, 5.0, 0.1, 120.0, "s", "wait for peers' blob_have answers before a wanted blob counts as not found for now"),
    ("blob_retry", float, 30.0, 0.1, 86400.0, "s", "first wait before a failed blob is tried again; it doubles with each failure, up to an hour"),
    ("blob_author_budget", int, 268_435_456, 0, 1_000_000_000_000, "bytes", "bytes of blobs fetched automatically for one feed per hour; more waits (or is fetched on request)"),
)
# fmt: on
LIMITS: tuple[Limit, ...] = tuple(
    Limit(name=n, kind=k, default=k(d), low=k(lo), high=k(hi), unit=u, doc=doc)
    for n, k, d, lo, hi, u, doc in _TABLE
)
_BY_NAME = {limit.name: limit for limit in LIMITS}

#: The defaults of every limit (node/net/node.py's ``DEFAULT_LIMITS``).
DEFAULT_LIMITS: dict[str, Any] = {limit.name: limit.default for limit in LIMITS}

#: Top-level keys of config.toml and what each holds.
TABLES = {
    "limits": "network limits (table)",
    "bootstrap": 'DHT nodes to join through (list of "HOST:PORT")',
    "filters": "timeline filters (table)",
    "rankers": "ranker weights ([rankers.NAME] tables)",
    "relay": "whether this node relays for private nodes (true or false; spec/protocol.md §12.10)",
    "web": "the web port's limits (table; its keys are checked by node/web/limits.py when the page starts)",
}


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked content of config.toml at ``path`` (``{}`` if there is none); ``ConfigError``."""
    where = Path(path)
    try:
        with where.open("rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start]
        raise ConfigError(f"{where}: not UTF-8 text (byte 0x{bad:02x} at offset {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}", code="io") from None
    check_config(config, where)
    return config


def check_config(config: Mapping[str, Any], where: Path | str) -> None:
    """Check every table of a parsed config.toml (see the module docstring)."""
    for key in config:
        if key not in TABLES:
            raise ConfigError(
                f"{where}: unknown key {key!r}{_near(key, TABLES)}; config.toml holds {', '.join(TABLES)}"
            )
    limits = config.get("limits", {})
    if not isinstance(limits, Mapping):
        raise ConfigError(f"{where}: limits must be a table ([limits])")
    for key, value in limits.items():
        _check_limit(key, value, where)
    if not isinstance(config.get("relay", True), bool):
        raise ConfigError(f"{where}: relay must be true or false")
    if not isinstance(config.get("web", {}), Mapping):
        raise ConfigError(f"{where}: web must be a table ([web])")
    _check_bootstrap(config.get("bootstrap", []), where)
    _check_filters(config, where)
    rankers = config.get("rankers", {})
    if not isinstance(rankers, Mapping):
        raise ConfigError(f"{where}: rankers must be tables ([rankers.NAME])")
    for name, table in rankers.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [rankers.{name}] must be a table of weights")
        for weight, value in table.items():
            if not _is_number(value) or not math.isfinite(value):
                raise ConfigError(f"{where}: [rankers.{name}] {weight} = {value!r}: must be a finite number")


def _check_limit(key: str, value: Any, where: Path | str) -> None:
    limit = _BY_NAME.get(key)
    if limit is None:
        raise ConfigError(f"{where}: [limits] has no key {key!r}{_near(key, _BY_NAME)}")
    ok = isinstance(value, int) if limit.kind is int else _is_number(value)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or not limit.low <= value <= limit.high:
        raise ConfigError(f"{where}: [limits] {key} = {_show(value)}: must be {limit.allowed()}")


def _check_bootstrap(value: Any, where: Path | str) -> None:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ConfigError(f'{where}: bootstrap must be a list of "HOST:PORT" strings')
    for address in value:
        try:
            parse_address(address)
        except ValueError as exc:
            raise ConfigError(f"{where}: bootstrap: {exc}") from None


def _check_filters(config: Mapping[str, Any], where: Path | str) -> None:
    from tidings.node.ranking.base import RankingError
    from tidings.node.ranking.filters import FilterSettings

    try:
        FilterSettings.from_config(config)
    except RankingError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('config.toml ')}") from None


def check_rankers(config: Mapping[str, Any], where: Path | str) -> None:
    """Each ``[rankers.NAME]`` names an installed ranker and only weights it declares, in range."""
    from tidings.node.ranking.base import RankingError
    from tidings.node.ranking.registry import load_rankers, resolve_weights

    tables = config.get("rankers", {})
    if not tables:
        return
    registry = load_rankers()
    for name in tables:
        try:
            resolve_weights(registry.get(name), config, None)
        except RankingError as exc:
            message = str(exc).removeprefix("config.toml ")
            if not message.startswith("["):
                message = f"[rankers.{name}]: {message}"
            raise ConfigError(f"{where}: {message}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    return (
        repr(value)
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _near(key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
