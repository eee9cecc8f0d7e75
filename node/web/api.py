"""The JSON API's endpoints: the same store and node functions the CLI uses, the same JSON fields.

Reads and writes run on the node's database thread (``node.db.call``); writes are the actions of
node/actions.py (shared with the CLI), signed with the node's key, then the node is woken so
connected peers get the new entry at once. Lists come back as ``{"items": [...]}`` whose items have
the fields of the matching ``tidings ... --json`` line (spec/cli.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from tidings.node import actions
from tidings.node.ranking.registry import parse_weights
from tidings.node.ranking.timeline import rank_timeline, swarm_timeline
from tidings.node.web.blobs import profile_json, refs_from_json, with_attachments
from tidings.node.web.context import WebContext
from tidings.node.web.messages import ROUTES as MESSAGE_ROUTES
from tidings.node.web.routes import ApiError, Args, Param, Route
from tidings.node.web.routes import parse_feed as _feed
from tidings.protocol import EntryId, ProtocolError, feed_id_text
from tidings.storage import dht, peers
from tidings.storage.errors import NotFound

if TYPE_CHECKING:
    from tidings.storage.blobs import BlobStore
    from tidings.storage.store import Store

__all__ = ["ROUTES", "WebContext"]

MAX_LIMIT = 500


# -- helpers run on the database thread -----------------------------------------------------------------
def _log(store: Store, me: bytes, feed: str | None, limit: int | None) -> list[dict[str, Any]]:
    author = _feed(feed) if feed else me
    if author != me and store.feed_info(author) is None:
        raise NotFound(f"no feed {feed_id_text(author)} in this store")
    return store.log(author, limit=limit)


def _timeline(store: Store, ctx: WebContext, args: Args, config: dict[str, Any]) -> list[dict[str, Any]]:
    ranker, swarm, limit = args["ranker"], args["swarm"], args["limit"]
    members = None
    if swarm:
        if swarm not in dht.swarm_names(store):
            raise NotFound(f"not in swarm {swarm}: join it first")
        if ranker == "chronological":
            return swarm_timeline(store, ctx.me, swarm, limit)
        if ranker != "swarm":
            raise ApiError("swarm goes with the chronological or swarm ranker", code="needs_swarm")
        members = dht.swarm_members(store, swarm)
    return rank_timeline(
        store,
        ctx.me,
        ranker=ranker,
        weights=parse_weights(args["weight"]),
        limit=limit,
        explain=args["explain"],
        now=ctx.now(),
        config=config,
        swarm_members=members,
        registry=ctx.registry,
    )


def _status(store: Store, ctx: WebContext) -> dict[str, Any]:
    stats = store.stats()
    node = ctx.node.statistics()
    return {
        "running": True,
        "listen": node["listen"],
        "feed": node["feed"],
        "peers": len(node["connections"]),
        "feeds": stats["feeds"],
        "entries": stats["entries"],
        "services": node["services"],
        "connections": node["connections"],
        "ingested": node["ingested"],
    }


def _profile_get(store: Store, blobs: BlobStore, me: bytes, feed: str | None) -> dict[str, Any]:
    author = _feed(feed) if feed else me
    return profile_json(store, blobs, store.profile(author), author)


def _mute_target(args: Args) -> tuple[Literal["feed", "word"], str]:
    feed: str | None = args.get("feed")
    word: str | None = args.get("word")
    if feed is not None and word is None:
        return "feed", feed_id_text(_feed(feed))
    if feed is not None or word is None:
        raise ApiError("give either feed or word", code="bad_parameter")
    word = word.strip().lower()
    if not word:
        raise ApiError("word must not be empty", code="bad_parameter")
    return "word", word


def _check_swarm(name: str) -> str:
    try:
        return dht.check_swarm_name(name)
    except ValueError as exc:
        raise ApiError(str(exc), code="bad_swarm") from None


def _items(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"items": rows}


def _with_reactions(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``reactions`` (``{emoji: people}``) to posts and reposts: for a repost, the reposted entry's."""
    subjects: dict[int, bytes] = {}
    for i, row in enumerate(rows):
        content = row.get("content") or {}
        text = content.get("target") if row.get("type") == "repost" else row.get("id")
        if row.get("type") in ("post", "repost") and isinstance(text, str):
            try:
                subjects[i] = EntryId.parse(text).hash
            except ProtocolError:
                continue
    counts = store.reaction_counts(sorted(set(subjects.values()))) if subjects else {}
    for i, subject in subjects.items():
        rows[i]["reactions"] = counts.get(subject, {})
    return rows


def _shown(store: Store, blobs: BlobStore, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries as the page shows them: with their reactions and their attachments (node/web/blobs.py)."""
    return with_attachments(blobs, _with_reactions(store, rows))


# -- handlers -------------------------------------------------------------------------------------------
async def get_status(ctx: WebContext, args: Args) -> Any:
    return await ctx.node.db.call(_status, ctx)


async def get_rankers(ctx: WebContext, args: Args) -> Any:
    rows = [
        {**row, "weights": dict(getattr(ctx.registry.rankers[row["name"]], "defaults", {}))}
        for row in ctx.registry.describe()
    ]
    return {"items": rows, "problems": [str(p) for p in ctx.registry.problems]}


async def get_timeline(ctx: WebContext, args: Args) -> Any:
    config = ctx.home.config()
    blobs = await ctx.blobs()
    rows = await ctx.node.db.call(lambda store: _shown(store, blobs, _timeline(store, ctx, args, config)))
    if not args["explain"]:
        for row in rows:
            row.pop("why", None)
    return _items(rows)


async def get_log(ctx: WebContext, args: Args) -> Any:
    blobs = await ctx.blobs()
    return _items(
        await ctx.node.db.call(
            lambda store: _shown(store, blobs, _log(store, ctx.me, args["feed"], args["limit"]))
        )
    )


async def get_thread(ctx: WebContext, args: Args) -> Any:
    blobs = await ctx.blobs()

    def thread(store: Store) -> list[dict[str, Any]]:
        return _shown(store, blobs, store.thread(actions.resolve(store, args["entry"])))

    return _items(await ctx.node.db.call(thread))


async def get_entry(ctx: WebContext, args: Args) -> Any:
    blobs = await ctx.blobs()

    def entry(store: Store) -> dict[str, Any]:
        return with_attachments(blobs, [store.entry(actions.resolve(store, args["entry"]))])[0]

    return await ctx.node.db.call(entry)


async def get_search(ctx: WebContext, args: Args) -> Any:
    if not args["q"].strip():
        raise ApiError("give some words to search for", code="missing_parameter")
    blobs = await ctx.blobs()

    def search(store: Store) -> list[dict[str, Any]]:
        return with_attachments(blobs, store.search(args["q"], limit=args["limit"], fts=args["fts"]))

    return _items(await ctx.node.db.call(search))


async def _write(
    ctx: WebContext, action: Callable[..., Any], *args: Any, wants: bool = False, **kw: Any
) -> Any:
    """Run ``action`` (node/actions.py) with the node's key and the time, then tell the node."""
    out = await ctx.node.db.call(action, ctx.node.key, *args, now=ctx.now(), **kw)
    await ctx.changed(wants=wants)
    return out


async def post_post(ctx: WebContext, args: Args) -> Any:
    # an empty reply_to is a post, not a reply
    refs = await refs_from_json(ctx, args["attachments"])
    return await _write(ctx, actions.post, args["text"], reply_to=args["reply_to"] or None, attachments=refs)


async def post_reply(ctx: WebContext, args: Args) -> Any:
    refs = await refs_from_json(ctx, args["attachments"])
    return await _write(ctx, actions.post, args["text"], reply_to=args["entry"], attachments=refs)


async def post_react(ctx: WebContext, args: Args) -> Any:
    return await _write(ctx, actions.react, args["entry"], args["emoji"])


async def post_repost(ctx: WebContext, args: Args) -> Any:
    return await _write(ctx, actions.repost, args["entry"])


async def post_delete(ctx: WebContext, args: Args) -> Any:
    return await _write(ctx, actions.delete, args["entry"])


def _graph_handler(kind: actions.GraphKind) -> Any:
    async def handler(ctx: WebContext, args: Args) -> Any:
        return await _write(ctx, actions.graph, kind, _feed(args["feed"]), wants=True)

    return handler


async def post_mute(ctx: WebContext, args: Args) -> Any:
    kind, value = _mute_target(args)
    return await ctx.node.db.call(actions.mute, ctx.me, kind, value)


async def post_unmute(ctx: WebContext, args: Args) -> Any:
    kind, value = _mute_target(args)
    return await ctx.node.db.call(actions.unmute, kind, value)


async def get_mutes(ctx: WebContext, args: Args) -> Any:
    return _items(await ctx.node.db.call(lambda s: s.mutes()))


async def get_following(ctx: WebContext, args: Args) -> Any:
    return _items(await ctx.node.db.call(lambda s: s.following(ctx.me)))


async def get_profile(ctx: WebContext, args: Args) -> Any:
    blobs = await ctx.blobs()
    return await ctx.node.db.call(_profile_get, blobs, ctx.me, args["feed"])


async def post_profile(ctx: WebContext, args: Args) -> Any:
    name, bio = args["name"], args["bio"]
    avatar = None
    if args["avatar"] is not None:
        (avatar,) = await refs_from_json(ctx, [args["avatar"]], what="avatar")
        if not avatar.is_image:
            raise ApiError("an avatar is a picture (JPEG, PNG, WebP or GIF)", code="not_a_picture")
    if name is None and bio is None and avatar is None:
        raise ApiError("give a name, a bio or an avatar", code="missing_parameter")
    written = await _write(ctx, actions.set_profile, name=name, bio=bio, avatar=avatar)
    blobs = await ctx.blobs()
    return await ctx.node.db.call(lambda store: profile_json(store, blobs, written, ctx.me))


async def post_blobs(ctx: WebContext, args: Args) -> Any:  # served by app.py (node/web/blobs.py)
    raise ApiError("a file is sent as the raw request body", code="raw_body")


async def get_blob(ctx: WebContext, args: Args) -> Any:  # served by app.py (node/web/blobs.py)
    raise ApiError("a blob is its bytes", code="raw_body")


async def get_swarms(ctx: WebContext, args: Args) -> Any:
    return _items(await ctx.node.db.call(dht.list_swarms))


async def post_swarm_join(ctx: WebContext, args: Args) -> Any:
    name = _check_swarm(args["name"])
    joined = await ctx.node.db.call(dht.join_swarm, name, ctx.now())
    await ctx.changed(wants=True)
    return {"swarm": name, "joined": joined}


async def post_swarm_leave(ctx: WebContext, args: Args) -> Any:
    name = args["name"]
    left = await ctx.node.db.call(dht.leave_swarm, name)
    await ctx.changed(wants=True)
    return {"swarm": name, "left": left}


async def get_peers(ctx: WebContext, args: Args) -> Any:
    return _items(await ctx.node.db.call(peers.list_peers))


async def get_openapi(ctx: WebContext, args: Args) -> Any:
    return ctx.openapi()


async def get_events(ctx: WebContext, args: Args) -> Any:  # served as a stream by app.py
    raise ApiError("events are a stream", code="stream")


# -- the table ------------------------------------------------------------------------------------------
_LIMIT = Param(name="limit", type="integer", minimum=1, maximum=MAX_LIMIT, description="At most N entries.")
_ENTRY = Param(name="entry", required=True, description="An entry id (%...) or a unique prefix of one.")
_FEED = Param(name="feed", required=True, description="A feed id (@...).")
_ATTACHMENTS = Param(
    name="attachments", type="object", repeated=True, schema="Attachment",
    description="Up to 4 files uploaded first (POST /api/blobs), each as that answer gave it, with an alt text.",
)  # fmt: skip


def _graph_route(kind: actions.GraphKind, summary: str) -> Route:
    return Route(
        method="POST", path=f"/api/{kind}", handler=_graph_handler(kind), summary=summary,
        params=(_FEED,), response="GraphWritten", tags=("graph",),
    )  # fmt: skip


ROUTES: tuple[Route, ...] = (
    Route(method="GET", path="/api/status", handler=get_status, summary="The node: address, feed, peers, store size, services.", response="Status", tags=("network",)),
    Route(method="GET", path="/api/rankers", handler=get_rankers, summary="Available rankers and their default weights.", response="Ranker", is_list=True, tags=("reading",)),
    Route(
        method="GET", path="/api/timeline", handler=get_timeline, tags=("reading",),
        summary="Your timeline, ranked here by the ranker you choose (as tidings timeline --json).",
        params=(
            Param(name="ranker", default="chronological", description="A ranker name (see /api/rankers)."),
            Param(name="weight", repeated=True, description="NAME=VALUE: one of the ranker's weights (repeatable)."),
            Param(name="explain", type="boolean", default=False, description="Add why: the reasons of each entry."),
            Param(name="swarm", description="Only the posts of this swarm's members (a swarm you joined)."),
            Param(name="limit", type="integer", minimum=1, maximum=MAX_LIMIT, default=50, description="At most N entries."),
        ),
        response="RankedEntry", is_list=True,
    ),
    Route(method="GET", path="/api/log", handler=get_log, summary="One feed's entries, newest first (default: yours).", params=(Param(name="feed", description="A feed id (@...); default yours."), _LIMIT), response="Entry", is_list=True, tags=("reading",)),
    Route(method="GET", path="/api/entry", handler=get_entry, summary="One entry (as a line of tidings log --json).", params=(_ENTRY,), response="Entry", tags=("reading",)),
    Route(method="GET", path="/api/thread", handler=get_thread, summary="The conversation an entry belongs to, in order.", params=(_ENTRY,), response="Entry", is_list=True, tags=("reading",)),
    Route(method="GET", path="/api/search", handler=get_search, summary="Search stored profiles and posts (as tidings search --json): profiles first, then posts.", params=(Param(name="q", required=True, description="The query: plain words, each of which must appear (word* for a prefix)."), Param(name="fts", type="boolean", default=False, description="Read q as SQLite FTS5 query syntax."), Param(name="limit", type="integer", minimum=1, maximum=MAX_LIMIT, default=50, description="At most N results.")), response="SearchResult", is_list=True, tags=("reading",)),
    Route(method="POST", path="/api/post", handler=post_post, summary="Append a post.", params=(Param(name="text", required=True, description="The text."), Param(name="reply_to", description="Reply to this entry (id or unique prefix)."), _ATTACHMENTS), response="Written", tags=("writing",)),
    Route(method="POST", path="/api/reply", handler=post_reply, summary="Append a reply to an entry.", params=(_ENTRY, Param(name="text", required=True, description="The text."), _ATTACHMENTS), response="Written", tags=("writing",)),
    Route(method="POST", path="/api/blobs", handler=post_blobs, summary="Upload a file to attach (the raw body, at most max_blob bytes): a picture is re-encoded without its metadata, with a preview; anything else is an opaque file.", body_type="application/octet-stream", response="Attachment", tags=("writing",)),
    Route(method="GET", path="/api/blobs/{blob}", handler=get_blob, summary="A blob's bytes: a picture a stored post or profile names, checked, with its type; anything else as a download (application/octet-stream).", params=(Param(name="blob", required=True, description="A blob id (&...)."),), produces="application/octet-stream", tags=("reading",)),
    Route(method="POST", path="/api/react", handler=post_react, summary="Append a reaction (an emoji) to an entry.", params=(_ENTRY, Param(name="emoji", required=True, description="One emoji.")), response="Written", tags=("writing",)),
    Route(method="POST", path="/api/repost", handler=post_repost, summary="Append a repost of an entry.", params=(_ENTRY,), response="Written", tags=("writing",)),
    Route(method="POST", path="/api/delete", handler=post_delete, summary="Delete one of your own entries (its payload is dropped here and by peers).", params=(_ENTRY,), response="Written", tags=("writing",)),
    _graph_route("follow", "Follow a feed (a public entry in your log)."),
    _graph_route("unfollow", "Stop following a feed."),
    _graph_route("block", "Block a feed: hidden everywhere, not replicated."),
    _graph_route("unblock", "Lift a block."),
    Route(method="POST", path="/api/mute", handler=post_mute, summary="Hide a feed or a word from your timeline (local only).", params=(Param(name="feed", description="A feed id."), Param(name="word", description="A word (case-insensitive).")), response="Mute", tags=("graph",)),
    Route(method="POST", path="/api/unmute", handler=post_unmute, summary="Show a muted feed or word again.", params=(Param(name="feed", description="A feed id."), Param(name="word", description="A word.")), response="Mute", tags=("graph",)),
    Route(method="GET", path="/api/mutes", handler=get_mutes, summary="Current mutes.", response="MuteRow", is_list=True, tags=("graph",)),
    Route(method="GET", path="/api/following", handler=get_following, summary="The feeds you follow.", response="Following", is_list=True, tags=("graph",)),
    Route(method="GET", path="/api/profile", handler=get_profile, summary="A profile (default: yours).", params=(Param(name="feed", description="A feed id; default yours."),), response="Profile", tags=("writing",)),
    Route(method="POST", path="/api/profile", handler=post_profile, summary="Set your name, bio and/or avatar.", params=(Param(name="name", description="Your display name."), Param(name="bio", description="Your bio ('' clears it)."), Param(name="avatar", type="object", schema="Attachment", description="A picture uploaded first (POST /api/blobs).")), response="Profile", tags=("writing",)),
    Route(method="GET", path="/api/swarms", handler=get_swarms, summary="Swarms joined.", response="Swarm", is_list=True, tags=("network",)),
    Route(method="POST", path="/api/swarms/join", handler=post_swarm_join, summary="Join a swarm.", params=(Param(name="name", required=True, description="The swarm's name."),), response="SwarmJoined", tags=("network",)),
    Route(method="POST", path="/api/swarms/leave", handler=post_swarm_leave, summary="Leave a swarm.", params=(Param(name="name", required=True, description="The swarm's name."),), response="SwarmLeft", tags=("network",)),
    Route(method="GET", path="/api/peers", handler=get_peers, summary="Peers met: addresses, last seen, connected now.", response="Peer", is_list=True, tags=("network",)),
    *MESSAGE_ROUTES,
    Route(method="GET", path="/api/events", handler=get_events, summary="Server-sent events: 'hello' on connecting (with the unread messages, as /api/unread), 'changed' when new entries are stored, 'messages' when the unread messages or the newest message changed.", stream=True, tags=("network",)),
    Route(method="GET", path="/api/openapi.json", handler=get_openapi, summary="This document.", response="Object", tags=("meta",)),
)  # fmt: skip
