"""Identity and writing: ``init``, ``id``, ``post``, ``react``, ``repost``, ``delete``, ``profile``.

Each write is one ``Store.append`` (one transaction) signed with the home's key.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from .common import (
    CliError,
    FeedType,
    Session,
    ask_passphrase,
    common_options,
    emit,
    json_option,
    pass_session,
)

if TYPE_CHECKING:
    from tidings.protocol import Content
    from tidings.storage.store import Store

__all__ = ["COMMANDS"]


def append(session: Session, content: Content, as_json: bool, verb: str) -> None:
    """Sign and store ``content`` as our next entry, then report it."""
    from tidings.protocol import type_of
    from tidings.storage.reads import entry_written

    key = session.key()
    entry = session.store().append(key, content)
    out = entry_written(entry, type_of(content))
    if as_json:
        emit(out)
    else:
        click.echo(f"{verb} {out['id']} (seq {out['seq']})")


def resolve(store: Store, text: str) -> bytes:
    """A stored entry's hash from a full ``%id`` or a unique prefix (errors: not found, ambiguous,
    malformed). ``Store.resolve_entry`` returns a full id as is; we also require the entry here."""
    hash_ = store.resolve_entry(text)
    store.entry_author(hash_)  # NotFound when this store does not hold it
    return hash_


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


@click.command()
@click.argument("text")
@click.option("--reply-to", "reply_to", metavar="ENTRY", help="Reply to this entry (id or unique prefix).")
@common_options
@json_option
@pass_session
def post(session: Session, text: str, reply_to: str | None, as_json: bool) -> None:
    """Append a post. TEXT '-' reads the text from standard input."""
    from tidings.protocol import EntryId, Post, ProtocolError

    if text == "-":
        text = click.get_text_stream("stdin").read().rstrip("\r\n")
    reply = root = None
    if reply_to is not None:
        store = session.store()
        reply = resolve(store, reply_to)
        parent = store.entry(reply)
        root = reply  # spec: root = the parent's root if it has one, else the parent
        parent_root = (parent.get("content") or {}).get("root")
        if isinstance(parent_root, str):
            try:
                root = EntryId.parse(parent_root).hash
            except ProtocolError:
                root = reply
    append(session, Post(text=text, reply=reply, root=root), as_json, "posted")


@click.command()
@click.argument("entry")
@click.argument("emoji")
@common_options
@json_option
@pass_session
def react(session: Session, entry: str, emoji: str, as_json: bool) -> None:
    """Append a reaction (an emoji) to ENTRY."""
    from tidings.protocol import Reaction

    target = resolve(session.store(), entry)
    append(session, Reaction(target=target, emoji=emoji), as_json, "reacted")


@click.command()
@click.argument("entry")
@common_options
@json_option
@pass_session
def repost(session: Session, entry: str, as_json: bool) -> None:
    """Append a repost of ENTRY."""
    from tidings.protocol import Repost

    target = resolve(session.store(), entry)
    append(session, Repost(target=target), as_json, "reposted")


@click.command()
@click.argument("entry")
@common_options
@json_option
@pass_session
def delete(session: Session, entry: str, as_json: bool) -> None:
    """Delete one of your own entries: its payload is dropped here and by peers; the log stays valid."""
    from tidings.protocol import Delete, entry_id_text
    from tidings.storage.errors import NotYours

    store = session.store()
    target = resolve(store, entry)
    if store.entry_author(target) != session.me():
        raise NotYours(f"{entry_id_text(target)} is someone else's entry: you can only delete your own")
    if store.entry(target).get("deleted"):
        raise CliError(f"{entry_id_text(target)} is already deleted", code="already_deleted")
    append(session, Delete(target=target), as_json, "deleted; tombstone")


@click.command()
@click.argument("feed", required=False, type=FeedType())
@click.option("--name", help="Set your display name.")
@click.option("--bio", help="Set your bio ('' clears it).")
@common_options
@json_option
@pass_session
def profile(session: Session, feed: bytes | None, name: str | None, bio: str | None, as_json: bool) -> None:
    """Set your profile, or with no option show it (or the profile of FEED)."""
    from tidings.protocol import Profile, type_of
    from tidings.storage.reads import entry_written

    store = session.store()
    me = session.me()
    written: dict[str, Any] = {}
    if name is not None or bio is not None:
        if feed is not None and feed != me:
            raise click.UsageError("only your own profile can be set")
        content = Profile(name=name, bio=bio)
        entry = store.append(session.key(), content)
        written = entry_written(entry, type_of(content))
    shown = store.profile(feed if feed is not None else me)
    if as_json:
        if written:
            shown = {**shown, "id": written["id"], "seq": written["seq"], "ts": written["ts"]}
        emit(shown)
        return
    if written:
        click.echo(f"profile updated {written['id']} (seq {written['seq']})")
    click.echo(f"feed  {shown['feed']}")
    click.echo(f"name  {shown['name'] if shown['name'] is not None else '(not set)'}")
    click.echo(f"bio   {shown['bio'] if shown['bio'] else '(not set)'}")


COMMANDS = [init, id_, post, react, repost, delete, profile]
