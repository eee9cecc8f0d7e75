"""The API's route table: each route declares its parameters once, for validation and for OpenAPI.

A route is ``(method, path)`` -> handler. Query parameters (GET) and JSON body fields (POST) are
declared as ``Param`` s; ``parse_args`` checks and converts what a request sent against them, so a
handler receives clean, typed ``args`` and the OpenAPI document (node/web/openapi.py) is generated
from the same declarations and cannot drift from what the code accepts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidings.protocol import FeedId, ProtocolError
from tidings.protocol.errors import TidingsError

if TYPE_CHECKING:
    from tidings.node.web.context import WebContext

__all__ = ["ApiError", "Param", "Route", "parse_args", "parse_feed"]

Args = dict[str, Any]
Handler = Callable[["WebContext", Args], Awaitable[Any]]

_TYPES = ("string", "integer", "boolean", "object")


class ApiError(TidingsError):
    """A request the API refuses: ``status`` (400, 404, ...) and a machine-readable ``code``."""

    def __init__(self, message: str, *, status: int = 400, code: str = "bad_request") -> None:
        super().__init__(message, code=code)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """One query parameter or JSON body field."""

    name: str
    type: str = "string"
    description: str = ""
    schema: str = ""  # an object's schema name in openapi.SCHEMAS (documentation only)
    required: bool = False
    default: Any = None
    repeated: bool = False  # a query parameter given several times (a JSON array in a body)
    minimum: int | None = None
    maximum: int | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"parameter type must be one of {_TYPES}, not {self.type!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """An API endpoint: ``method`` and exact ``path``, its handler and its documentation."""

    method: str
    path: str
    handler: Handler
    summary: str
    params: tuple[Param, ...] = ()
    response: str = "Object"  # a schema name in openapi.SCHEMAS
    is_list: bool = False  # the response is {"items": [response...]}
    stream: bool = False  # a text/event-stream, not JSON
    tags: tuple[str, ...] = field(default=())
    body_type: str = "application/json"  # what a POST sends (application/octet-stream: raw bytes)
    produces: str = "application/json"  # what a 200 answer is (another type: the bytes of a blob)


def parse_feed(text: str) -> bytes:
    """The key of the feed id ``text``; ApiError ``bad_feed`` saying what is wrong with it."""
    try:
        return FeedId.parse(text.strip()).key
    except ProtocolError as exc:
        reason = exc.message.removeprefix("feed id: ")  # what is wrong (protocol/identity.py)
        raise ApiError(
            f"{text!r} is not a feed id (@ + 52 base32 characters): {reason}", code="bad_feed"
        ) from exc


def _convert(param: Param, value: Any, *, from_query: bool) -> Any:
    where = f"parameter {param.name!r}"
    if param.type == "integer":
        if from_query:
            if not isinstance(value, str) or not value.strip().lstrip("-").isdigit():
                raise ApiError(f"{where} must be an integer", code="bad_parameter")
            value = int(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(f"{where} must be an integer", code="bad_parameter")
        if param.minimum is not None and value < param.minimum:
            raise ApiError(f"{where} must be at least {param.minimum}", code="bad_parameter")
        if param.maximum is not None and value > param.maximum:
            raise ApiError(f"{where} must be at most {param.maximum}", code="bad_parameter")
        return value
    if param.type == "object":  # a JSON object in a body (a query string has none)
        if from_query or not isinstance(value, dict):
            raise ApiError(f"{where} must be an object", code="bad_parameter")
        return value
    if param.type == "boolean":
        if from_query:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off", ""):
                return False
        elif isinstance(value, bool):
            return value
        raise ApiError(f"{where} must be true or false", code="bad_parameter")
    if not isinstance(value, str):
        raise ApiError(f"{where} must be a string", code="bad_parameter")
    return value


def parse_args(route: Route, query: Mapping[str, list[str]], body: Any) -> Args:
    """The declared parameters of ``route``, converted; ApiError(400) for anything wrong or unknown."""
    from_query = route.method == "GET"
    if from_query:
        source: Mapping[str, Any] = query
    else:
        if not isinstance(body, dict):
            raise ApiError("the request body must be a JSON object", code="bad_json")
        source = body
    declared = {p.name for p in route.params}
    unknown = sorted(set(source) - declared)
    if unknown:
        raise ApiError(f"unknown parameter {unknown[0]!r}", code="unknown_parameter")
    args: Args = {}
    for param in route.params:
        if param.name not in source or (from_query and not source[param.name]):
            if param.required:
                raise ApiError(f"parameter {param.name!r} is required", code="missing_parameter")
            args[param.name] = [] if param.repeated else param.default
            continue
        raw = source[param.name]
        if from_query:
            values = raw if param.repeated else raw[-1:]
        elif param.repeated:
            if not isinstance(raw, list):
                raise ApiError(f"parameter {param.name!r} must be a list", code="bad_parameter")
            values = raw
        else:
            values = [raw]
        converted = [_convert(param, v, from_query=from_query) for v in values]
        args[param.name] = converted if param.repeated else converted[0]
    return args
