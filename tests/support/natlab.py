"""A NAT lab: network namespaces with real Linux networking, for tests that need home routers.

Theory of operation. A lab is one "internet" namespace holding a bridge (``br0``) whose segment is the
benchmarking range 198.18.0.0/15 (RFC 2544) and nothing else. Every other namespace hangs off it by a veth
pair created directly between the two namespaces, so no interface, route or address of the lab ever appears
in the host's own namespace: nothing in the lab is routed to the host.

Every address on the bridge is in a /24 of its own (each ``wan0`` is configured as a /15, so they all reach
each other on the one segment), because the node groups peers by /24 (``node/addresses.address_range``): as
on the real internet, no two lab machines share a range.

- A public host has ``wan0`` on the bridge (198.18.1.10, 198.18.2.10, ...: the n-th at 198.18.n.10, up to
  ``MAX_PUBLIC``) and no default route.
- A home is a host namespace (``lan0`` at 10.N.0.2, default route via its router) behind a router namespace
  that masquerades out of its ``wan0`` with nftables and behaves like a home router: it forwards inbound
  only for established connections, and also drops unsolicited inbound at *input* (without that, a packet
  that reaches the router before the home's own outbound mapping exists is confirmed by conntrack as a
  local flow and takes the port, which breaks port preservation).
- Home n's router (for ``DOUBLE`` the carrier's router) is on the bridge at 198.18.(100+n).1, up to
  ``MAX_HOMES`` homes.
- Kinds of home: ``PRESERVING`` (``masquerade``: endpoint-independent mapping, the source port kept),
  ``SYMMETRIC`` (``masquerade fully-random``: a new random port per destination) and ``DOUBLE`` (a
  port-preserving home router whose WAN is on a carrier-grade NAT segment 100.64.N.0/24, behind a CGNAT
  router on the bridge that masquerades again).

Namespace names are ``<prefix><pid>x<counter>-<name>``, unique per lab and per process. Every command runs
with a timeout, and leaving the ``with`` block always stops the lab's processes (SIGTERM, then SIGKILL) and
deletes every namespace it made, also when the test failed or the lab was only half built.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO

import pytest

PRESERVING = "preserving"
SYMMETRIC = "symmetric"
DOUBLE = "double"
KINDS = (PRESERVING, SYMMETRIC, DOUBLE)

REQUIRE = "TIDINGS_REQUIRE_NATLAB"  # "1": a machine that cannot build the lab fails the tests instead
INSTALL = "apt-get install nftables iproute2, and run as root"
TIMEOUT = 10.0  # seconds for any one setup command
STOP = 5.0  # seconds the lab's processes get to end after SIGTERM when it closes
PREFIX = "tl"
SEGMENT = ipaddress.ip_network("198.18.0.0/15")  # the bridge; never routed to the host
MAX_PUBLIC = 99  # public host n is 198.18.n.10
MAX_HOMES = 155  # home n's router is 198.18.(100+n).1

_labs = itertools.count(1)

# The router's rules (see the module docstring). Chain names avoid nft keywords such as "fwd".
_ROUTER_RULES = """
table ip nat {{
  chain out {{ type nat hook postrouting priority 100; oifname "wan0" masquerade {mode}
  }}
}}
table ip filter {{
  chain fw {{ type filter hook forward priority 0; policy drop
    ct state established,related accept
    iifname "lan0" accept
  }}
  chain inp {{ type filter hook input priority 0; policy accept
    iifname "wan0" ct state new drop
  }}
}}
"""


def require_natlab(
    env: Mapping[str, str] = os.environ,
    which: Callable[[str], str | None] = shutil.which,
    euid: Callable[[], int] = os.geteuid,
) -> None:
    """Skip (one line, saying what is missing) unless this machine can build a lab: root, ``ip`` and
    ``nft``. With ``TIDINGS_REQUIRE_NATLAB=1`` (CI) the same line is a failure, never a skip."""
    missing = [tool for tool in ("ip", "nft") if which(tool) is None]
    if euid() != 0:
        missing.append("root")
    if missing:
        reason = f"the NAT lab needs {' and '.join(missing)}: {INSTALL}"
        if env.get(REQUIRE) == "1":
            pytest.fail(f"{reason}; {REQUIRE}=1 forbids skipping it", pytrace=False)
        pytest.skip(reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """A namespace in the lab where a program can run: its own address, and the address the public side
    sees for it (the same for a public host; its outermost router's public address for a home)."""

    name: str
    namespace: str
    address: str
    public_address: str


def _run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = TIMEOUT) -> None:
    out = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"natlab: {' '.join(argv)} failed: {out.stderr.strip()}")


class NatLab:
    """A lab of network namespaces (see the module docstring); use it as a context manager, then add
    public hosts and homes, and run commands in them with :meth:`run` and :meth:`popen`."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.tag = f"{prefix}{os.getpid()}x{next(_labs)}"
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self._procs: list[subprocess.Popen[str]] = []
        self._ports = itertools.count(1)
        self._homes = itertools.count(1)
        self._publics = itertools.count(1)
        self._wan = ""

    def __enter__(self) -> NatLab:
        try:
            self._wan = self._namespace("wan")
            _run(["ip", "-n", self._wan, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", self._wan, "link", "set", "br0", "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- building ---------------------------------------------------------------------------------

    def add_public(self, name: str) -> Host:
        """A public host on the bridge."""
        n = next(self._publics)
        if n > MAX_PUBLIC:
            raise ValueError(f"natlab: at most {MAX_PUBLIC} public hosts in one lab")
        address = f"198.18.{n}.10"
        ns = self._namespace(name)
        self._attach(ns, address)
        return self._host(name, ns, address, address)

    def add_home(self, name: str, kind: str = PRESERVING) -> Host:
        """A home of the given kind: a host behind its own NAT router (two routers for ``DOUBLE``)."""
        if kind not in KINDS:
            raise ValueError(f"natlab: unknown kind of home {kind!r}, expected one of {KINDS}")
        n = next(self._homes)
        if n > MAX_HOMES:
            raise ValueError(f"natlab: at most {MAX_HOMES} homes in one lab")
        public = f"198.18.{100 + n}.1"
        edge = self._namespace(f"r{n}")
        self._attach(edge, public)
        if kind == DOUBLE:
            # The carrier's router on the bridge; the home router's WAN sits on its 100.64.N.0/24 segment.
            router = self._namespace(f"h{n}")
            self._link(edge, "lan0", f"100.64.{n}.1/24", router, ("wan0", f"100.64.{n}.2/24"))
            _run(["ip", "-n", router, "route", "add", "default", "via", f"100.64.{n}.1"])
            self._masquerade(edge, "")
            self._masquerade(router, "")
        else:
            router = edge
            self._masquerade(router, "fully-random" if kind == SYMMETRIC else "")
        ns = self._namespace(name)
        self._link(router, "lan0", f"10.{n}.0.1/24", ns, ("lan0", f"10.{n}.0.2/24"))
        _run(["ip", "-n", ns, "route", "add", "default", "via", f"10.{n}.0.1"])
        return self._host(name, ns, f"10.{n}.0.2", public)

    def _namespace(self, name: str) -> str:
        ns = f"{self.tag}-{name}"
        _run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def _host(self, name: str, ns: str, address: str, public: str) -> Host:
        host = Host(name=name, namespace=ns, address=address, public_address=public)
        self.hosts[name] = host
        return host

    def _attach(self, ns: str, address: str) -> None:
        """``wan0`` in ``ns`` on the bridge, at ``address`` in the bridge's /15 (``SEGMENT``)."""
        port = f"p{next(self._ports)}"
        _run(
            ["ip", "-n", ns, "link", "add", "wan0", "type", "veth", "peer", "name", port, "netns", self._wan]
        )
        _run(["ip", "-n", self._wan, "link", "set", port, "master", "br0"])
        _run(["ip", "-n", self._wan, "link", "set", port, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{address}/{SEGMENT.prefixlen}", "dev", "wan0"])
        _run(["ip", "-n", ns, "link", "set", "wan0", "up"])

    def _link(self, ns: str, ifname: str, cidr: str, peer: str, peer_side: tuple[str, str]) -> None:
        """A veth pair from ``ns`` (``ifname`` at ``cidr``) to ``peer`` (``peer_side``: name, cidr); the
        pair is made inside the namespaces, so its names never meet the host's."""
        peer_if, peer_cidr = peer_side
        _run(["ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", peer_if, "netns", peer])
        for where, name, addr in ((ns, ifname, cidr), (peer, peer_if, peer_cidr)):
            _run(["ip", "-n", where, "addr", "add", addr, "dev", name])
            _run(["ip", "-n", where, "link", "set", name, "up"])

    def _masquerade(self, router: str, mode: str) -> None:
        _run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        _run(["ip", "netns", "exec", router, "nft", "-f", "-"], stdin=_ROUTER_RULES.format(mode=mode))

    # -- using ------------------------------------------------------------------------------------

    def _argv(self, name: str, argv: Sequence[str]) -> list[str]:
        ns = self.hosts[name].namespace if name in self.hosts else f"{self.tag}-{name}"
        return ["ip", "netns", "exec", ns, *argv]

    def run(
        self, name: str, argv: Sequence[str], *, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the namespace of host ``name`` (or of a lab namespace such as ``r1``) to the end,
        within ``timeout`` seconds; its output is captured as text."""
        return subprocess.run(self._argv(name, argv), capture_output=True, text=True, timeout=timeout)

    def popen(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stdin: bool = False,
        stdout: int | IO[str] = subprocess.PIPE,
        stderr: int | IO[str] = subprocess.PIPE,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in the namespace of host ``name``, stdout and stderr (and with ``stdin`` its
        input) piped as text unless a file is given (a long-lived process that writes much should write
        to a file: a full pipe stalls it); the lab stops it when it closes."""
        proc = subprocess.Popen(
            self._argv(name, argv),
            stdin=subprocess.PIPE if stdin else None,
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop the lab's processes (SIGTERM, then SIGKILL for any still running after ``STOP`` seconds) and
        delete every namespace it made (also ones a failed step left)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP
        for proc in self._procs:
            try:
                proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.communicate(timeout=TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
        self._procs.clear()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT)
        left = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
        for ns in [*reversed(self.namespaces), *sorted(n for n in left if n.startswith(f"{self.tag}-"))]:
            if ns in left:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=TIMEOUT)
                left.discard(ns)
        self.namespaces.clear()
