"""Identity and writing: ``init``, ``id``, ``post``, ``react``, ``repost``, ``delete``, ``profile``.

Each write is one ``Store.append`` (one transaction) signed with the home's key.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from .common import (
    FeedType,
    Session,
    ask_passphrase,
    common_options,
    emit,
    json_option,
    pass_session,
    read_stdin_text,
)

if TYPE_CHECKING:
    from tidings.protocol import SigningKey
    from tidings.storage.store import Store

__all__ = ["COMMANDS", "report", "write"]


def write(session: Session) -> tuple[Store, SigningKey, int]:
    """What an action of node/actions.py takes: the store, the signing key, and the time now."""
    from tidings.node.clock import SYSTEM_CLOCK

    store = session.store()
    return store, session.key(), SYSTEM_CLOCK.wall_ms()


def report(written: dict[str, Any], as_json: bool, verb: str) -> None:
    """Print an entry just written: the JSON line, or ``VERB ID (seq N)``."""
    if as_json:
        emit(written)
    else:
        click.echo(f"{verb} {written['id']} (seq {written['seq']})")


@click.command()
@click.option("--name", help="Your display name (published in your profile).")
@click.option("--encrypt", is_flag=True, help="Protect the secret key with a passphrase (asked twice).")
@common_options
@json_option
@pass_session
def init(session: Session, name: str | None, encrypt: bool, as_json: bool) -> None:
    """Create this home's identity (an Ed25519 key) and its store.

    The key is encrypted when --encrypt is given or TIDINGS_PASSPHRASE is set (its value is then the
    passphrase). Refuses if the home already has an identity.
    """
    from tidings.node.home import HomeError
    from tidings.protocol import Profile, feed_id_text

    home = session.home
    if home.exists():
        raise HomeError(f"an identity already exists in {home.path}", code="exists")
    if name is not None:
        Profile(name=name)  # validate before anything is created
    passphrase = os.environ.get("TIDINGS_PASSPHRASE") or None
    if encrypt and passphrase is None:
        passphrase = ask_passphrase("new passphrase", confirm=True)
    key = home.init(name=name, passphrase=passphrase)
    feed = feed_id_text(key.public_key)
    if as_json:
        emit({"feed": feed})
    else:
        how = "encrypted with your passphrase" if passphrase else "not encrypted"
        click.echo(f"created identity {feed}")
        click.echo(f"home {home.path} (secret key {how})")


@click.command("id")
@common_options
@json_option
@pass_session
def id_(session: Session, as_json: bool) -> None:
    """Show this home's feed id."""
    from tidings.protocol import feed_id_text

    feed = feed_id_text(session.me())
    if as_json:
        emit({"feed": feed})
    else:
        click.echo(feed)


_FILE = click.Path(exists=True, dir_okay=False, readable=True)


@click.command()
@click.argument("text")
@click.option("--reply-to", "reply_to", metavar="ENTRY", help="Reply to this entry (id or unique prefix).")
@click.option(
    "--attach", "files", multiple=True, type=_FILE, metavar="FILE", help="Attach a picture or file (up to 4)."
)
@click.option(
    "--alt", "alts", multiple=True, metavar="TEXT", help="Alt text of the --attach given in the same place."
)
@click.option(
    "--keep-metadata", is_flag=True, help="Keep pictures' EXIF/GPS and other metadata (stripped by default)."
)
@common_options
@json_option
@pass_session
def post(
    session: Session,
    text: str,
    reply_to: str | None,
    files: tuple[str, ...],
    alts: tuple[str, ...],
    keep_metadata: bool,
    as_json: bool,
) -> None:
    """Append a post. TEXT '-' reads the text from standard input. Pictures are re-encoded here, so
    their metadata (EXIF, GPS, comments) never leaves this machine."""
    from tidings.node import actions

    if len(alts) > len(files):
        raise click.UsageError(
            "each --alt describes the --attach given in the same place: more --alt than --attach"
        )
    if len(files) > 4:
        raise click.UsageError("a post carries at most 4 attachments")
    if text == "-":
        text = read_stdin_text()
    store, key, now = write(session)
    blobs = session.home.open_blobs(store)
    refs = [
        actions.attach(blobs, path, alt=alts[i] if i < len(alts) else None, keep_metadata=keep_metadata)
        for i, path in enumerate(files)
    ]
    report(actions.post(store, key, text, reply_to=reply_to, attachments=refs, now=now), as_json, "posted")


@click.command()
@click.argument("entry")
@click.argument("emoji")
@common_options
@json_option
@pass_session
def react(session: Session, entry: str, emoji: str, as_json: bool) -> None:
    """Append a reaction (an emoji) to ENTRY."""
    from tidings.node import actions

    store, key, now = write(session)
    report(actions.react(store, key, entry, emoji, now=now), as_json, "reacted")


@click.command()
@click.argument("entry")
@common_options
@json_option
@pass_session
def repost(session: Session, entry: str, as_json: bool) -> None:
    """Append a repost of ENTRY."""
    from tidings.node import actions

    store, key, now = write(session)
    report(actions.repost(store, key, entry, now=now), as_json, "reposted")


@click.command()
@click.argument("entry")
@common_options
@json_option
@pass_session
def delete(session: Session, entry: str, as_json: bool) -> None:
    """Delete one of your own entries: its payload is dropped here and by peers; the log stays valid."""
    from tidings.node import actions

    store, key, now = write(session)
    report(actions.delete(store, key, entry, now=now), as_json, "deleted; tombstone")


@click.command()
@click.argument("feed", required=False, type=FeedType())
@click.option("--name", help="Set your display name.")
@click.option("--bio", help="Set your bio ('' clears it).")
@click.option(
    "--avatar", type=_FILE, metavar="FILE", help="Set your picture (re-encoded here, metadata stripped)."
)
@common_options
@json_option
@pass_session
def profile(
    session: Session, feed: bytes | None, name: str | None, bio: str | None, avatar: str | None, as_json: bool
) -> None:
    """Set your profile, or with no option show it (or the profile of FEED)."""
    from tidings.node import actions

    store = session.store()
    me = session.me()
    if name is not None or bio is not None or avatar is not None:
        if feed is not None and feed != me:
            raise click.UsageError("only your own profile can be set")
        store, key, now = write(session)
        blobs = None if avatar is None else session.home.open_blobs(store)
        picture = None if blobs is None or avatar is None else actions.attach(blobs, avatar, picture=True)
        shown = actions.set_profile(store, key, name=name, bio=bio, avatar=picture, now=now)
        if not as_json:
            click.echo(f"profile updated {shown['id']} (seq {shown['seq']})")
    else:
        shown = store.profile(feed if feed is not None else me)
    if as_json:
        emit(shown)
        return
    click.echo(f"feed  {shown['feed']}")
    click.echo(f"name  {shown['name'] if shown['name'] is not None else '(not set)'}")
    click.echo(f"bio   {shown['bio'] if shown['bio'] else '(not set)'}")


COMMANDS = [init, id_, post, react, repost, delete, profile]
