"""Private messages on the web page: the inbox, a conversation, writing, and the unread badge.

Issue 19 item 5; spec/protocol.md §8.6, spec/cli.md *Private messages* and *Web*. Theory of
operation: each endpoint is the CLI command of the same name through the same functions
(node/dm.py), run on the node's database thread with the node's key, and answers with the fields of
its ``--json`` lines (``{"items": [...]}`` for lists):

- ``GET /api/inbox`` is ``tidings inbox``: conversations newest first with unread counts; with
  ``requests`` those of strangers instead, which the inbox never lists;
- ``GET /api/conversation?with=@a,@b`` is ``tidings conversation @a @b``: oldest first, and marks them
  read; a conversation with no messages yet is an empty list (the page writes the first one);
- ``POST /api/dm`` is ``tidings dm``: ``{"to": [...], "text"}`` or ``{"reply": "%...", "text"}``, refused
  with the CLI's codes (``unknown_feed``, ``too_many_recipients``, ``message_too_long``,
  ``no_recipients``, ``not_a_message``, ``bad_message``); then the node is woken so connected peers
  carry the box at once;
- ``GET /api/unread`` is the badge (``storage.messages.unread``): unread messages of the inbox and of
  the requests, and the newest message's id. The event stream (node/web/app.py) sends the same object
  in its ``hello`` and as a ``messages`` event whenever it changes after new entries were stored, so
  the page learns of a message for us without polling.

A message is read only here and in these views: timelines, search, profiles and the bridges never show
one (storage/messages.py), and the page renders none of the public views' boxes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidings.node import dm
from tidings.node.web.routes import ApiError, Args, Param, Route, parse_feed
from tidings.storage import messages as stored

if TYPE_CHECKING:
    from tidings.node.web.context import WebContext

__all__ = ["ROUTES", "unread_state"]


async def unread_state(ctx: WebContext) -> dict[str, Any]:
    """``{"unread", "requests", "newest"}``: what the page's badges show (``storage.messages.unread``)."""
    return await ctx.node.db.call(stored.unread, ctx.me)


def _feeds(values: list[str]) -> list[bytes]:
    """Feed ids from a list whose items may each hold several, separated by commas or spaces."""
    return [parse_feed(v) for value in values for v in value.replace(",", " ").split()]


async def get_inbox(ctx: WebContext, args: Args) -> Any:
    items = await ctx.node.db.call(dm.inbox, ctx.node.key, requests=args["requests"])
    return {"items": items}


async def get_conversation(ctx: WebContext, args: Args) -> Any:
    others = set(_feeds(args["with"])) - {ctx.me}
    if not others:
        raise ApiError("name at least one feed besides yourself", code="no_recipients")
    return {"items": await ctx.node.db.call(dm.conversation, ctx.node.key, sorted(others))}


async def get_unread(ctx: WebContext, args: Args) -> Any:
    return await unread_state(ctx)


async def post_dm(ctx: WebContext, args: Args) -> Any:
    to = _feeds(args["to"])
    sent = await ctx.node.db.call(
        dm.send, ctx.node.key, to, args["text"], reply=args["reply"] or None, now=ctx.now()
    )
    await ctx.changed()
    return sent


ROUTES: tuple[Route, ...] = (
    Route(
        method="GET", path="/api/inbox", handler=get_inbox, tags=("messages",),
        summary="Your private conversations, newest first, with unread counts (as tidings inbox --json).",
        params=(Param(name="requests", type="boolean", default=False, description="The conversations of strangers (feeds you neither follow nor are followed by) instead: never in the inbox."),),
        response="InboxItem", is_list=True,
    ),
    Route(
        method="GET", path="/api/conversation", handler=get_conversation, tags=("messages",),
        summary="The private messages between you and exactly these feeds, oldest first (as tidings conversation --json); marks them read.",
        params=(Param(name="with", required=True, repeated=True, description="The other feeds: feed ids separated by commas (or the parameter repeated)."),),
        response="PrivateMessage", is_list=True,
    ),
    Route(
        method="GET", path="/api/unread", handler=get_unread, tags=("messages",),
        summary="Unread private messages: in the inbox, in the requests, and the newest message's id.",
        response="Unread",
    ),
    Route(
        method="POST", path="/api/dm", handler=post_dm, tags=("messages",),
        summary="Write a private message (as tidings dm --json): to feeds this node knows, or as a reply to the people of a message you read.",
        params=(
            Param(name="to", repeated=True, description="Up to 31 feed ids besides you (may be left out with reply)."),
            Param(name="text", required=True, description="The text (at most 7000 bytes)."),
            Param(name="reply", description="Answer this message (id or unique prefix), to its people."),
        ),
        response="DmWritten",
    ),
)  # fmt: skip
