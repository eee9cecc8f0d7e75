"""The API's OpenAPI 3.1 document, built from the route table (``GET /api/openapi.json``).

Parameters come from each route's ``Param`` declarations, which are also what the server validates
against, so the document cannot promise what the code does not accept. The response schemas name the
fields of spec/cli.md's ``--json`` output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.node.web.api import ROUTES
from tidings.node.web.routes import Param, Route

__all__ = ["SCHEMAS", "openapi_document"]

_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_NULLSTR = {"type": ["string", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required if required is not None else list(props),
    }


_ENTRY = {
    "id": {**_STR, "description": "%base32 entry id"},
    "feed": {**_STR, "description": "@base32 feed id"},
    "seq": _INT,
    "ts": {**_INT, "description": "author's timestamp, ms since the epoch"},
    "type": _STR,
    "content": {"type": ["object", "null"], "description": "the decoded payload; null when deleted"},
}
_REACTIONS = {
    "type": "object",
    "additionalProperties": _INT,
    "description": "posts and reposts in the timeline, a log and a thread: emoji -> people who reacted "
    "with it (for a repost, to the reposted entry)",
}

_NULLINT = {"type": ["integer", "null"]}
_ATTACHMENT = _obj(
    {
        "blob": {**_STR, "description": "&base32 blob id"},
        "size": {**_INT, "description": "bytes"},
        "mime": {
            **_STR,
            "description": "image/jpeg, image/png, image/webp, image/gif, or another type: a file",
        },
        "width": _NULLINT,
        "height": _NULLINT,
        "alt": {**_NULLSTR, "description": "the description for those who cannot see it"},
        "preview": {**_NULLSTR, "description": "&base32 id of a small WebP preview"},
        "held": {**_BOOL, "description": "the blob is here (GET /api/blobs/{blob} serves it)"},
        "preview_held": {**_BOOL, "description": "the preview is here"},
    }
)
_ATTACHMENTS = {
    "type": "array",
    "items": {"$ref": "#/components/schemas/Attachment"},
    "description": "a post's pictures and files (spec §8.5), in order",
}
_PICTURE = {"$ref": "#/components/schemas/Attachment"}  # present when the profile shows one

# spec/cli.md, *Private messages*: a line of tidings conversation --json, or of tidings inbox --json
_MESSAGE = {
    "id": {**_STR, "description": "%base32 id of the box entry"},
    "feed": {**_STR, "description": "its author"},
    "ts": _INT,
    "text": {**_STR, "description": "absent when undecryptable"},
    "read": {**_BOOL, "description": "whether it had been read before"},
    "reply": {**_STR, "description": "the message it answers"},
    "undecryptable": {**_BOOL, "description": "a box that opened for you but not its message"},
    "reason": {**_STR, "description": "with undecryptable: why"},
}
_FEEDS = {"type": "array", "items": _STR}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR, "code": _STR}),
    "Object": {"type": "object"},
    "Attachment": _ATTACHMENT,
    "Entry": _obj(
        {**_ENTRY, "deleted": _BOOL, "reactions": _REACTIONS, "attachments": _ATTACHMENTS}, list(_ENTRY)
    ),
    "RankedEntry": _obj(
        {
            **_ENTRY,
            "score": {"type": "number"},
            "why": {"type": "array", "items": _STR},
            "reactions": _REACTIONS,
            "attachments": _ATTACHMENTS,
        },
        [*_ENTRY, "score"],
    ),
    "Written": _obj({"id": _STR, "feed": _STR, "seq": _INT, "ts": _INT, "type": _STR}),
    # a follow, unfollow, block or unblock (node/actions.py): when it changes nothing, no entry is
    # written and the fields are those of the entry that already decides (null when none ever did)
    "GraphWritten": _obj(
        {
            "id": _NULLSTR,
            "feed": _STR,
            "seq": {"type": ["integer", "null"]},
            "ts": {"type": ["integer", "null"]},
            "type": _STR,
            "changed": {**_BOOL, "description": "false: nothing was written (a repeat)"},
            "note": {**_STR, "description": "with changed false: what already holds"},
            "warning": {
                **_STR,
                "description": "a block of a feed you follow: the follow is inactive meanwhile",
            },
        },
        ["id", "feed", "seq", "ts", "type", "changed"],
    ),
    "SearchResult": _obj(
        {
            **_ENTRY,
            "deleted": _BOOL,
            "attachments": _ATTACHMENTS,
            "profile": {
                **_obj({"feed": _STR, "name": _NULLSTR, "bio": _NULLSTR}),
                "description": "a profile hit (type profile): the profile as it stands now",
            },
        },
        list(_ENTRY),
    ),
    "Status": _obj(
        {
            "running": _BOOL,
            "listen": _NULLSTR,
            "feed": _STR,
            "peers": _INT,
            "feeds": _INT,
            "entries": _INT,
            "services": {"type": "object"},
            "connections": {"type": "array", "items": {"type": "object"}},
            "ingested": _INT,
        }
    ),
    "Ranker": _obj(
        {
            "name": _STR,
            "description": _STR,
            "weights": {"type": "object", "additionalProperties": {"type": "number"}},
        }
    ),
    "Profile": _obj(
        {
            "feed": _STR,
            "name": _NULLSTR,
            "bio": _NULLSTR,
            "avatar": _PICTURE,
            "banner": _PICTURE,
            "id": _STR,
            "seq": _INT,
            "ts": _INT,
        },
        ["feed", "name", "bio"],
    ),
    "PrivateMessage": _obj(_MESSAGE, ["id", "feed", "ts"]),
    "InboxItem": _obj(
        {
            "with": {**_FEEDS, "description": "the other participants"},
            "messages": _INT,
            "unread": _INT,
            "ts": {**_INT, "description": "the newest message's timestamp"},
            "last": {"$ref": "#/components/schemas/PrivateMessage"},
            **{k: v for k, v in _MESSAGE.items() if k in ("id", "feed", "undecryptable", "reason")},
        },
        ["ts"],
    ),
    "Unread": _obj(
        {
            "unread": {**_INT, "description": "unread messages in the inbox's conversations"},
            "requests": {**_INT, "description": "unread messages from strangers (requests)"},
            "newest": {**_NULLSTR, "description": "the id of the newest message, by arrival"},
        }
    ),
    "DmWritten": _obj({"id": _STR, "feed": _STR, "seq": _INT, "ts": _INT, "type": _STR, "to": _FEEDS}),
    "Mute": _obj({"kind": _STR, "value": _STR, "muted": _BOOL, "changed": _BOOL}),
    "MuteRow": _obj({"kind": _STR, "value": _STR}),
    "Following": _obj({"feed": _STR, "name": _NULLSTR, "blocked": _BOOL}, ["feed", "name"]),
    "Swarm": _obj({"name": _STR, "joined": _INT, "members": _INT}),
    "SwarmJoined": _obj({"swarm": _STR, "joined": _BOOL}),
    "SwarmLeft": _obj({"swarm": _STR, "left": _BOOL}),
    "Peer": _obj(
        {
            "feed": _STR,
            "addresses": {"type": "array", "items": _STR},
            "last_seen": _INT,
            "connected": _BOOL,
            "source": _STR,
        }
    ),
}


_BINARY = {"type": "string", "format": "binary"}


def _schema(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.type}
    if param.schema:
        schema = {"$ref": f"#/components/schemas/{param.schema}"}
    if param.minimum is not None:
        schema["minimum"] = param.minimum
    if param.maximum is not None:
        schema["maximum"] = param.maximum
    if param.default is not None:
        schema["default"] = param.default
    return {"type": "array", "items": schema} if param.repeated else schema


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": (
            route.method.lower()
            + route.path.removeprefix("/api")
            .replace("/", "_")
            .replace(".", "_")
            .replace("{", "")
            .replace("}", "")
        ),
        "summary": route.summary,
        "tags": list(route.tags),
    }
    if route.method == "GET" and route.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": "path" if f"{{{p.name}}}" in route.path else "query",
                "required": p.required,
                "description": p.description,
                "schema": _schema(p),
                **({"explode": True} if p.repeated else {}),
            }
            for p in route.params
        ]
    if route.method == "POST" and route.body_type != "application/json":
        op["requestBody"] = {"required": True, "content": {route.body_type: {"schema": _BINARY}}}
    elif route.method == "POST":
        body = {
            "type": "object",
            "properties": {p.name: {**_schema(p), "description": p.description} for p in route.params},
            "required": [p.name for p in route.params if p.required],
            "additionalProperties": False,
        }
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if route.produces != "application/json":
        ok: dict[str, Any] = {
            "description": "the bytes: a checked picture with its image/* type, else application/octet-stream",
            "content": {"image/*": {"schema": _BINARY}, route.produces: {"schema": _BINARY}},
        }
    elif route.stream:
        ok = {
            "description": "event stream",
            "content": {"text/event-stream": {"schema": _STR}},
        }
    else:
        ref = {"$ref": f"#/components/schemas/{route.response}"}
        schema = _obj({"items": {"type": "array", "items": ref}}, ["items"]) if route.is_list else ref
        ok = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    op["responses"] = {
        "200": ok,
        "400": _error("bad input"),
        "401": _error("no valid token"),
        "403": _error("refused: another origin, or not yours"),
        "404": _error("unknown id"),
    }
    if route.body_type != "application/json":
        op["responses"]["413"] = _error("larger than max_blob")
    return op


def openapi_document(routes: Sequence[Route] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``routes`` (default: every route in ``api.ROUTES``)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tidings local API",
            "version": "1",
            "description": (
                "The JSON API of a running Tidings node (tidings run --http). Every request needs the token "
                "in HOME/web.token, as a Bearer header or the cookie the login link of 'tidings open' sets. "
                "Requests that change something must be same-origin and send application/json."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "tidings_PORT"},
            },
        },
    }
