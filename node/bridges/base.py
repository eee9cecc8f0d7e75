"""The bridge plugin interface (spec §14; ARCHITECTURE.md, *Bridges*).

A bridge is a plugin in the entry point group ``tidings.bridges`` whose object is a ``Bridge`` subclass,
an instance, or a factory returning one. It declares:

- ``name`` (the entry point name) and a one-line ``description``;
- ``settings``: the ``Setting`` s it reads, changed with ``tidings bridge config NAME KEY VALUE``;
- ``command()``: a click group mounted as ``tidings bridge NAME ...`` (or None). A plugin may build it
  with click and the CLI's public helpers; the bridges shipped with Tidings keep theirs in ``cli/``
  (``cli/commands_bridge_NAME.py``), since ``node/`` never imports the CLI;
- ``service(ctx)``: a service run inside ``tidings run`` (node/services.py) when the user enabled
  something, else None. Every bridge is opt-in: nothing runs until a setting or a source says so;
- ``status(ctx)``: what ``tidings bridge list`` shows (default: its settings and sources).

Inbound posts go to *bridge feeds*, logs signed by keys the bridge owns (``keys.feed_key``), never to
the user's own feed; each post carries its ``origin`` (spec §14.2). ``sources`` follows and unfollows
them for the user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.protocol.errors import TidingsError

if TYPE_CHECKING:
    import click
    from tidings.node.home import Home
    from tidings.storage.store import Store

__all__ = [
    "Backoff",
    "Bridge",
    "BridgeContext",
    "BridgeError",
    "Setting",
]


class BridgeError(TidingsError):
    """A bridge request that cannot be served; ``code`` is machine-readable.

    Codes: ``unknown_bridge``, ``bridge_unavailable`` (the plugin failed to load), ``unknown_setting``,
    ``bad_setting``, ``bad_url``, ``not_a_feed``, ``unreachable``, ``http_error``, ``bad_key``,
    ``not_found``, ``relay_error``, ``no_relays``; for fetches (spec §14.6): ``too_large``, ``too_slow``,
    ``too_many_redirects``, ``forbidden_address`` (the outbound policy refused it), ``bad_encoding``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class Setting:
    """One setting of a bridge: its name, default (text), help, and a parser that checks a new value.

    ``parse`` returns the normalised text to store or raises ``ValueError`` with a clear message.
    """

    name: str
    default: str
    help: str
    parse: Callable[[str], str] = field(default=lambda v: v)


@dataclass
class BridgeContext:
    """What a bridge sees from the CLI or at node start: the home, its store, its settings, and the
    clock its services read (the node's clock seam, ``node/clock.py``)."""

    home: Home
    store: Store
    settings: dict[str, str]
    clock: Clock = SYSTEM_CLOCK


class Bridge:
    """Base class of bridges; subclasses set the class attributes and override what they offer."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    settings: ClassVar[tuple[Setting, ...]] = ()

    def command(self) -> click.Group | None:
        """The ``tidings bridge NAME`` click group, or None."""
        return None

    def service(self, ctx: BridgeContext) -> Any:
        """A service to run inside ``tidings run`` (node/services.py), or None when nothing is enabled."""
        return None

    def status(self, ctx: BridgeContext) -> dict[str, Any]:
        """State shown by ``tidings bridge list``: its sources and their polling state."""
        from tidings.protocol import feed_id_text
        from tidings.storage import bridges as db

        out = []
        for src in db.sources(ctx.store, self.name):
            out.append(
                {
                    "kind": src["kind"],
                    "source": src["source"],
                    "feed": feed_id_text(src["feed"]) if src["feed"] else None,
                    "title": src["title"],
                    "last_poll": src["last_poll"],
                    "last_ok": src["last_ok"],
                    "error": src["last_error"],
                    "failures": src["failures"],
                }
            )
        return {"sources": out}

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.settings) or "none"
        raise BridgeError(
            f"the {self.name} bridge has no setting {name!r} (settings: {known})", code="unknown_setting"
        )

    def settings_of(self, store: Store) -> dict[str, str]:
        """Defaults overlaid with the stored values."""
        from tidings.storage import bridges as db

        stored = db.get_settings(store, self.name)
        return {s.name: stored.get(s.name, s.default) for s in self.settings}


class Backoff:
    """When to poll a source next: the interval after a success, doubling delays after failures.

    ``delay(failures)`` is ``base * 2 ** (failures - 1)`` seconds, at most ``cap`` (spec §14.1).
    """

    def __init__(self, *, interval: float, base: float = 5.0, cap: float = 3600.0) -> None:
        self.interval = interval
        self.base = base
        self.cap = cap

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return self.interval
        return float(min(self.cap, self.base * 2 ** min(failures - 1, 30)))


def parse_bool(value: str) -> str:
    """``on``/``off`` (also true/false, yes/no, 1/0)."""
    v = value.strip().lower()
    if v in ("on", "true", "yes", "1"):
        return "on"
    if v in ("off", "false", "no", "0"):
        return "off"
    raise ValueError(f"{value!r} is not on or off")


def parse_seconds(value: str) -> str:
    """A positive number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not 0 < seconds <= 7 * 86400:
        raise ValueError("a number of seconds between 0 and a week")
    return f"{seconds:g}"


def parse_count(low: int, high: int) -> Callable[[str], str]:
    """A parser of whole numbers from ``low`` to ``high``."""

    def parse(value: str) -> str:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return str(number)

    return parse


def parse_listen(value: str) -> str:
    """``HOST:PORT`` or ``off``; a host other than loopback is refused unless it is written out."""
    if value.strip().lower() == "off":
        return "off"
    from tidings.node.addresses import parse_address

    host, port = parse_address(value.strip())
    return f"{host}:{port}"
