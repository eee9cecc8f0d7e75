"""One error base: every error class with a ``code`` derives from ``TidingsError``, and the two front
ends (cli/common.py, node/web/app.py) turn any of them, even one they have never heard of, into one
message and its code."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import textwrap
from types import ModuleType
from typing import Any

import click
import trio
from click.testing import CliRunner
from tidings.cli.common import CliError, TidingsGroup, describe
from tidings.node.ranking.base import RankingError
from tidings.node.web.app import WebApp, error_status
from tidings.node.web.auth import AuthError
from tidings.node.web.context import WebContext
from tidings.node.web.routes import ApiError
from tidings.protocol import LocalProtocolError, ProtocolError, RemoteProtocolError, TidingsError
from tidings.storage.errors import CorruptStore, NotFound, NotYours, StoreError

PACKAGES = ("tidings.protocol", "tidings.storage", "tidings.node", "tidings.cli")


class OddError(TidingsError):
    """An error neither front end names."""

    code = "odd"


def _modules() -> list[ModuleType]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=name + "."):
            found.append(importlib.import_module(info.name))
    return found


def _sets_code(cls: type) -> bool:
    """The class itself gives instances a ``code``: a class attribute, or ``self.code = ...``."""
    if "code" in vars(cls):
        return True
    init = vars(cls).get("__init__")
    if init is None or not inspect.isfunction(init):
        return False
    tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    return any(
        isinstance(node, ast.Attribute) and node.attr == "code" and isinstance(node.ctx, ast.Store)
        for node in ast.walk(tree)
    )


def _error_classes() -> list[type[BaseException]]:
    classes: dict[str, type[BaseException]] = {}
    for module in _modules():
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("tidings.")
            ):
                classes[f"{value.__module__}.{value.__qualname__}"] = value
    return list(classes.values())


def test_every_error_with_a_code_derives_from_the_base():
    classes = _error_classes()
    assert len(classes) > 10  # the walk found the packages' errors
    with_code = [
        c for c in classes if any(_sets_code(k) for k in c.__mro__ if k.__module__.startswith("tidings."))
    ]
    offenders = sorted(
        f"{c.__module__}.{c.__qualname__}" for c in with_code if not issubclass(c, TidingsError)
    )
    assert not offenders, "error classes with a code that do not derive from TidingsError:\n  " + "\n  ".join(
        offenders
    )


def test_the_named_roots_derive_from_the_base_and_keep_their_codes():
    from tidings.node.bridges.base import BridgeError
    from tidings.node.home import HomeError

    for cls in (
        ProtocolError,
        StoreError,
        HomeError,
        RankingError,
        BridgeError,
        CliError,
        ApiError,
        AuthError,
    ):
        assert issubclass(cls, TidingsError), cls
    assert issubclass(LocalProtocolError, ProtocolError) and issubclass(RemoteProtocolError, ProtocolError)
    assert (ProtocolError.code, LocalProtocolError.code, RemoteProtocolError.code) == (
        "protocol_error",
        "local_error",
        "remote_error",
    )
    error = ProtocolError("bad bytes", code="decode")
    assert (error.message, error.code, str(error)) == ("bad bytes", "decode", "bad bytes [decode]")
    cli_error = CliError("nope", code="self")
    assert (cli_error.message, cli_error.code, cli_error.exit_code) == ("nope", "self", 1)


# -- the CLI --------------------------------------------------------------------------------------------
def test_the_cli_describes_errors_as_before():
    assert describe(NotFound("no entry %x"), None) == ("no entry %x", "not_found")
    assert describe(ProtocolError("bad id", code="bad_id"), None) == ("bad id", "bad_id")
    assert describe(CorruptStore("the store file is damaged: x"), None) == (
        "the store file is damaged: x (the store); move it aside, then restore a backup with "
        "'tidings import FILE'",
        "corrupt_store",
    )
    assert describe(StoreError("no store at X", code="no_store"), None) == (
        "the store the store is missing; restore a backup with 'tidings import FILE'",
        "no_store",
    )
    assert describe(StoreError("x is not a Tidings archive", code="bad_archive"), None) == (
        "x is not a Tidings archive",
        "bad_archive",
    )
    assert describe(ValueError("boom"), None) == (
        "unexpected ValueError: boom (rerun with --debug for details)",
        "internal",
    )


def test_the_cli_maps_an_unknown_error_cleanly():
    assert describe(OddError("something odd"), None) == ("something odd", "odd")

    @click.group(cls=TidingsGroup)
    def group() -> None:
        pass

    @group.command()
    def odd() -> None:
        raise OddError("something odd")

    done = CliRunner().invoke(group, ["odd"])
    assert done.exit_code == 1
    assert done.output.strip() == "error: something odd"
    assert done.exception is None or isinstance(done.exception, SystemExit)


# -- the web API ----------------------------------------------------------------------------------------
def test_the_web_maps_errors_as_before():
    assert error_status(ApiError("no endpoint /x", status=404, code="not_found")) == (
        404,
        "not_found",
        "no endpoint /x",
    )
    assert error_status(AuthError("no token", status=401, code="unauthorized")) == (
        401,
        "unauthorized",
        "no token",
    )
    assert error_status(NotFound("no entry %x")) == (404, "not_found", "no entry %x")
    assert error_status(NotYours("not yours")) == (403, "not_yours", "not yours")
    for code in ("bad_id", "ambiguous_id", "bad_query", "feed_forked"):
        assert error_status(StoreError("bad", code=code))[0] == 400
    for error in (StoreError("database error: x"), CorruptStore("damaged"), StoreError("gap", code="gap")):
        assert error_status(error)[0] == 500
    assert error_status(ProtocolError("bad bytes", code="decode")) == (400, "decode", "bad bytes")
    assert error_status(RankingError("no such ranker", code="unknown_ranker"))[0] == 400
    assert error_status(RankingError("it broke", code="ranker_failed"))[0] == 500
    assert error_status(ValueError("x")) == (500, "internal", "internal error: ValueError")


class _RaisingDatabase:
    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise OddError("something odd")


class _Node:
    """Just enough of a node for a request whose database call fails."""

    key = None
    db = _RaisingDatabase()


async def test_the_web_maps_an_unknown_error_cleanly():
    assert error_status(OddError("something odd")) == (400, "odd", "something odd")
    ctx = WebContext(_Node(), None, openapi=dict)  # type: ignore[arg-type]
    app = WebApp(ctx, token="t" * 40, bound_host="127.0.0.1", port=8080)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/status",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"authorization", b"Bearer " + b"t" * 40)],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {"error": "something odd", "code": "odd"}
