"""Plumbing shared by the commands: the session (home, store, key), common options, output, errors.

Heavy modules (the store, cryptography, the protocol) are imported inside functions, so ``--help`` and
usage errors stay fast and a command only pays for what it uses.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from tidings.protocol.errors import TidingsError

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.protocol import SigningKey
    from tidings.storage.store import Store

__all__ = [
    "CliError",
    "FeedType",
    "Session",
    "TidingsGroup",
    "UsageLine",
    "ask_passphrase",
    "common_options",
    "emit",
    "emit_lines",
    "json_option",
    "pass_session",
    "read_stdin_text",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class CliError(click.ClickException, TidingsError):
    """A failure the user can act on: printed as one ``error: ...`` line, exit status 1."""

    def __init__(self, message: str, *, code: str = "error") -> None:
        super().__init__(message)  # click.ClickException, then TidingsError (sets ``message``)
        self.code = code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class Session:
    """What one command works on, opened lazily: the home, its store and (for writes) the key."""

    def __init__(self) -> None:
        self.home_dir: str | None = None
        self.debug = False
        self._home: Home | None = None
        self._store: Store | None = None

    @property
    def home(self) -> Home:
        if self._home is None:
            from tidings.node.home import Home

            self._home = Home(self.home_dir)  # None: $TIDINGS_HOME or ~/.tidings
        return self._home

    def store(self) -> Store:
        """The home's store; an error (not a new empty store) when the home or its store is missing."""
        if self._store is None:
            from tidings.node.home import HomeError
            from tidings.storage.store import Store

            home = self.home
            if not home.exists():
                if not home.path.exists():
                    raise HomeError(f"no home at {home.path}; run 'tidings init' first", code="no_home")
                raise HomeError(f"no identity in {home.path}; run 'tidings init' first", code="no_identity")
            self._store = Store(home.store_path, create=False, blobs_folder=home.blobs_path)
        return self._store

    def me(self) -> bytes:
        """This home's feed key, read from the store (no passphrase needed)."""
        from tidings.node.home import HomeError

        key = self.store().own_feed()
        if key is None:
            raise HomeError(
                f"the store {self.home.store_path} does not name this home's identity: it is not this "
                "home's store; move it aside, then restore a backup with 'tidings import FILE'",
                code="no_identity",
            )
        return key

    def key(self) -> SigningKey:
        """The secret key, decrypted with ``TIDINGS_PASSPHRASE`` or a prompt on a terminal."""
        from tidings.node.home import HomeError

        me = self.me()
        key = self._load_key()
        if key.public_key != me:
            raise HomeError(
                f"the key in {self.home.key_path} does not belong to this store", code="key_mismatch"
            )
        return key

    def _load_key(self) -> SigningKey:
        home = self.home
        passphrase = os.environ.get("TIDINGS_PASSPHRASE")
        if not passphrase and home.key_is_encrypted():
            passphrase = ask_passphrase("passphrase", confirm=False)
        return home.load_key(passphrase)

    def recreate_store(self) -> Store:
        """A new, empty store for the existing identity (restoring after the store was lost)."""
        from tidings.storage.store import Store

        key = self._load_key()
        self._store = Store(self.home.store_path, blobs_folder=self.home.blobs_path)
        self._store.set_meta("self", key.public_key)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_session = click.make_pass_decorator(Session, ensure=True)


def ask_passphrase(label: str, *, confirm: bool) -> str:
    """Prompt on a terminal; without one, ask for ``TIDINGS_PASSPHRASE`` instead of blocking on stdin."""
    from tidings.node.home import HomeError

    if not sys.stdin.isatty():
        need = "--encrypt needs a passphrase" if confirm else "the secret key is encrypted"
        raise HomeError(
            f"{need} and there is no terminal to ask on: set TIDINGS_PASSPHRASE", code="passphrase_needed"
        )
    value: str = click.prompt(label.capitalize(), hide_input=True, confirmation_prompt=confirm, err=True)
    if not value:
        raise CliError("the passphrase must not be empty", code="empty_passphrase")
    return value


# -- options ------------------------------------------------------------------------------------------
def _set_home(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(Session).home_dir = value


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Session).debug = True


def common_options(fn: F) -> F:
    """``--home`` and ``--debug`` on a sub-command too (``tidings post --home X hi`` works)."""
    fn = click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help="Show tracebacks of errors.",
    )(fn)
    fn = click.option(
        "--home",
        metavar="DIR",
        expose_value=False,
        is_eager=True,
        callback=_set_home,
        help="Home folder (default: $TIDINGS_HOME or ~/.tidings).",
    )(fn)
    return fn


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (JSON Lines for lists).")(fn)


class FeedType(click.ParamType):
    """A feed id ``@base32``; malformed ids are usage errors (exit 2). Converts to the 32-byte key."""

    name = "FEED"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bytes:
        if isinstance(value, bytes):
            return value
        from tidings.protocol import FeedId, ProtocolError

        try:
            return FeedId.parse(str(value).strip()).key
        except ProtocolError as exc:  # the reason names what is wrong (protocol/identity.py)
            reason = exc.message.removeprefix("feed id: ")
            self.fail(f"{value!r} is not a feed id (@ + 52 base32 characters): {reason}", param, ctx)


def read_stdin_text() -> str:
    """Standard input as text (TEXT ``-``), its final line break dropped. Bytes that are not UTF-8
    are refused as the same bytes in an argument are (``text is not valid Unicode text``), naming
    the first one: decoding them with the locale's error handler would fail later, or guess."""
    data = click.get_binary_stream("stdin").read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(
            f"text is not valid Unicode text: standard input has byte 0x{data[exc.start]:02x} "
            f"at offset {exc.start}, which is not UTF-8",
            code="invalid_content",
        ) from None
    return text.rstrip("\r\n")


def run_trio(main: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run(main, *args)`` that a Ctrl-C stops cleanly: SIGINT is taken as a signal (trio's
    default turns it into ``KeyboardInterrupt`` wherever the run happens to be, its own internals
    included, which then fail as ``TrioInternalError``), cancels ``main`` at its next checkpoint, and
    is raised as ``KeyboardInterrupt`` once the run has unwound (click prints "Aborted!", exit 1)."""
    import signal

    import trio

    interrupted = False
    result: list[T] = []

    async def guarded() -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            try:
                async with trio.open_nursery() as nursery:

                    async def watch() -> None:
                        nonlocal interrupted
                        async for _ in signals:
                            interrupted = True
                            nursery.cancel_scope.cancel()
                            return

                    nursery.start_soon(watch)
                    result.append(await main(*args))
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:  # main's own failure, as trio.run(main) raises it
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise

    trio.run(guarded)
    if interrupted or not result:
        raise KeyboardInterrupt
    return result[0]


# -- output -------------------------------------------------------------------------------------------
def emit(obj: Any) -> None:
    """One JSON object on one line."""
    click.echo(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")))


def emit_lines(items: Iterable[Any]) -> None:
    for item in items:
        emit(item)


# -- errors -------------------------------------------------------------------------------------------
_RESTORE = "restore a backup with 'tidings import FILE'"

#: What to do next, by error code: the store is damaged or missing (the message names which store).
_HINTS = {
    "corrupt_store": "{message} ({store}); move it aside, then " + _RESTORE,
    "store_too_new": "{message} ({store}); move it aside, then " + _RESTORE,
    "no_store": "the store {store} is missing; " + _RESTORE,
}


def describe(exc: BaseException, session: Session | None) -> tuple[str, str]:
    """``(message, code)`` for an exception: the one line the user sees."""
    import sqlite3

    store_path = session.home.store_path if session is not None else "the store"
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a failure inside trio nurseries: what failed, not the nurseries
    if isinstance(exc, TidingsError):  # every error of ours: its message and code, a hint for some
        hint = _HINTS.get(exc.code)
        return (hint.format(message=exc.message, store=store_path) if hint else exc.message), exc.code
    if isinstance(exc, sqlite3.DatabaseError) and any(
        word in str(exc) for word in ("malformed", "not a database", "corrupt")
    ):
        return f"the store is damaged ({store_path}): {exc}", "corrupt_store"
    if isinstance(exc, sqlite3.Error):
        return f"database error: {exc}", "store_error"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", "io"
    return f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)", "internal"


class UsageLine(click.UsageError):
    """A usage error (a wrong command, option or argument) as one ``error:`` line that names the
    command's ``--help``; exit status 2, as click gives it (spec/cli.md, *Errors*)."""

    def __init__(self, error: click.UsageError) -> None:
        # click builds some messages when shown (a missing argument, "Invalid value for '--listen'")
        super().__init__(error.format_message(), error.ctx)

    def show(self, file: Any = None) -> None:
        text = " ".join(self.format_message().split()).rstrip(".")
        if text[:1].isupper() and text[1:2].islower():  # click's "Missing argument", "No such option"
            text = text[0].lower() + text[1:]
        path = self.ctx.command_path if self.ctx is not None else "tidings"
        click.echo(f"error: {text} (see '{path} --help')", err=True)


def _usage(error: click.UsageError) -> click.ClickException | click.exceptions.Exit:
    """What a usage error becomes: one line; a group given no command prints its help instead."""
    if isinstance(error, click.exceptions.NoArgsIsHelpError):
        click.echo(error.ctx.get_help())
        return click.exceptions.Exit(0)
    return error if isinstance(error, UsageLine) else UsageLine(error)


class TidingsGroup(click.Group):
    """A click group that turns every error of a command into one ``error:`` line (unless --debug)."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:  # the top-level options are parsed here, before ``invoke``
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # of a sub-command (or a group under this one)
            raise _usage(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BaseExceptionGroup as group:
            # Ctrl-C inside a trio nursery arrives wrapped in a group: click then says "Aborted!"
            if group.subgroup(lambda e: isinstance(e, KeyboardInterrupt)) is not None:
                raise KeyboardInterrupt from None
            if not isinstance(group, Exception):
                raise
            self._fail(ctx, group)
        except Exception as exc:
            self._fail(ctx, exc)

    @staticmethod
    def _fail(ctx: click.Context, exc: Exception) -> NoReturn:
        """One ``error:`` line for ``exc`` (called while it is being handled)."""
        session = ctx.find_object(Session)
        if (session is not None and session.debug) or (
            isinstance(exc, OSError) and exc.errno == errno.EPIPE  # click exits quietly on EPIPE
        ):
            raise exc
        message, code = describe(exc, session)
        raise CliError(message, code=code) from None
