"""Who may use the local web API: the home's token, one-time login codes, and same-origin checks.

Theory of operation:

- ``HOME/web.token`` (mode 0600, created on first use) holds a random token. Every request under
  ``/api/`` must carry it, as the cookie set by the login link or as ``Authorization: Bearer TOKEN``
  (scripts read the file). Whoever can read the home can read the token, and nobody else.
- ``tidings open`` (another process) writes a one-time login code: a file in ``HOME/web-login/`` named
  by the code's hash and holding its expiry. ``GET /login?code=...`` removes that file (an atomic
  ``unlink``, so a code works once even when two requests race) and sets the token cookie. A code is
  useless after ``CODE_SECONDS``.
- Browsers send cookies with requests other sites trigger, so a request that changes state must come
  from our own page: no ``Origin`` of another origin, no ``Sec-Fetch-Site`` other than ``same-origin``
  or ``none``, and a JSON body (a form on another site cannot send ``application/json`` without a CORS
  preflight, which we never answer); an upload sends ``application/octet-stream``, for the same
  reason. The ``Host`` header must name the address we serve, so a DNS rebinding page
  (``evil.example`` resolving to 127.0.0.1) is refused too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from pathlib import Path

from tidings.node.clock import SYSTEM_CLOCK
from tidings.node.web.routes import ApiError
from tidings.storage.files import make_private_dir, read_private, write_file

__all__ = [
    "CODE_SECONDS",
    "AuthError",
    "check_host",
    "check_same_origin",
    "cookie_name",
    "load_token",
    "new_login_code",
    "redeem_login_code",
]

CODE_SECONDS = 120.0
TOKEN_FILE = "web.token"
CODES_DIR = "web-login"
_WILDCARD = {"0.0.0.0", "::", ""}


class AuthError(ApiError):
    """A refused request: ``status`` is the HTTP status (401 or 403), ``code`` machine-readable."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message, status=status, code=code)


def load_token(home_path: Path) -> str:
    """The home's web token (``HOME/web.token``), created 0600 on first use.

    A token file that others may read or write is refused (``FileError``), like a key file.
    """
    path = home_path / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        token = read_private(path).decode("ascii", "replace").strip()
        if len(token) >= 32:
            return token
    token = secrets.token_urlsafe(32)
    write_file(path, token.encode(), replace=True)
    return token


def _code_path(home_path: Path, code: str) -> Path:
    digest = hashlib.sha256(code.encode("utf-8", "replace")).hexdigest()
    return home_path / CODES_DIR / digest


def new_login_code(home_path: Path, *, now: float | None = None) -> str:
    """Create a one-time login code valid for ``CODE_SECONDS``; expired codes are removed on the way."""
    now = _seconds() if now is None else now
    folder = make_private_dir(home_path / CODES_DIR)
    for old in folder.iterdir():
        with contextlib.suppress(OSError, ValueError):
            if float(old.read_text()) < now:
                old.unlink()
    code = secrets.token_urlsafe(24)
    write_file(_code_path(home_path, code), f"{now + CODE_SECONDS:.3f}".encode())
    return code


def redeem_login_code(home_path: Path, code: str, *, now: float | None = None) -> bool:
    """True once for a valid, unexpired code made by ``new_login_code``; the code is used up."""
    if not code or len(code) > 200:
        return False
    path = _code_path(home_path, code)
    try:
        expiry = float(path.read_text())
        path.unlink()  # whoever unlinks first wins: the code works once
    except (OSError, ValueError):
        return False
    return (_seconds() if now is None else now) <= expiry


def _seconds() -> float:
    """Wall-clock seconds from the node's clock seam (the codes are shared by processes, so wall time)."""
    return SYSTEM_CLOCK.wall_ms() / 1000


def cookie_name(port: int) -> str:
    """Cookies ignore ports: two nodes on one host keep separate cookies by naming them by port."""
    return f"tidings_{port}"


def token_matches(token: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(token.encode(), offered.encode())


def check_host(host_header: str | None, bound_host: str, port: int) -> None:
    """Refuse a ``Host`` that is not the address we serve (DNS rebinding); any host if bound to all."""
    if bound_host in _WILDCARD:
        return
    allowed = {bound_host, "localhost"} | ({"127.0.0.1"} if bound_host.startswith("127.") else set())
    names = {f"{h}:{port}" for h in allowed} | {f"[{h}]:{port}" for h in allowed if ":" in h}
    if host_header is None or host_header.lower() not in names:
        raise AuthError(f"unexpected Host header {host_header!r}", status=403, code="bad_host")


def check_same_origin(
    *,
    method: str,
    origin: str | None,
    fetch_site: str | None,
    content_type: str | None,
    host: str | None,
    body_type: str = "application/json",
) -> None:
    """Refuse requests another site made a browser send (see the module docstring). ``body_type`` is
    the type a request that changes something must send: JSON, or ``application/octet-stream`` for
    an upload (neither is a type a form or a plain cross-site request may send)."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise AuthError(f"refused a {fetch_site} request", status=403, code="cross_origin")
    if method in ("GET", "HEAD"):
        return
    if origin is not None and (host is None or origin.lower() != f"http://{host.lower()}"):
        raise AuthError(f"refused a request from origin {origin}", status=403, code="cross_origin")
    if (content_type or "").split(";")[0].strip().lower() != body_type:
        raise AuthError(
            f"requests that change something here must send {body_type}",
            status=403,
            code="not_json" if body_type == "application/json" else "bad_content_type",
        )
