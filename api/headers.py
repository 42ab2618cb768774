"""Security headers on every response, in one place: pure ASGI middleware around the whole app.

Every HTML document the service sends (the home page, the API explorer at ``/docs``, the sign-in
and consent pages, the staff pages, the e-service, their error pages) gets:

* ``Content-Security-Policy``: nothing but the service's own scripts, styles, images and
  fonts (no inline script or style anywhere, no plugin, no ``<base>``), never framed
  (``frame-ancestors 'none'``), and forms submitted to the service only (``form-action 'self'``).
  Chrome applies ``form-action`` to every redirect that follows a form submission too, so a page
  whose form may end in a redirect elsewhere names that origin (``allow_form_targets``): the
  test IdP's and the commission choice's forms send the browser on to the app's redirect URI, and
  a staff or e-service form posted after the session ended goes to the sign-in, which may be the
  external identity provider's;
* ``X-Frame-Options: DENY`` (for browsers without ``frame-ancestors``) and
  ``Referrer-Policy: same-origin``.

Every response, HTML or not, gets ``X-Content-Type-Options: nosniff``. Being middleware, a page
added later cannot forget the headers; a route sets no CSP of its own.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fastapi import Request
from starlette.types import Message, Receive, Scope, Send

from api.asgi import HttpWrapper

POLICY = ("default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "font-src 'self'",
          "connect-src 'self'", "manifest-src 'self'", "object-src 'none'", "base-uri 'none'",
          "frame-ancestors 'none'")
_DOCUMENT_TYPES = (b"text/html", b"application/xhtml+xml", b"image/svg+xml")
_FORM_TARGETS = "csp_form_targets"  # request.state: origins a form of this page may end at
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_DOCUMENT_HEADERS = ((b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"))
_SET = frozenset({b"x-content-type-options", b"content-security-policy", b"x-frame-options", b"referrer-policy"})
_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, as a CSP source; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(host):
        return None
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"


def allow_form_targets(request: Request, *urls: str) -> None:
    """Let this response's forms end (after redirects) at the origins of ``urls`` too."""
    targets: list[str] = request.scope.setdefault("state", {}).setdefault(_FORM_TARGETS, [])
    targets.extend(origin for url in urls if (origin := origin_of(url)) and origin not in targets)


def policy(form_targets: list[str]) -> str:
    return "; ".join((*POLICY, " ".join(("form-action 'self'", *form_targets))))


class SecurityHeaders(HttpWrapper):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # raw header pairs (lower-case names): this runs for every response
                headers = [(k, v) for k, v in message.get("headers", ()) if k not in _SET]
                content_type = next((v for k, v in headers if k == b"content-type"), b"").lower()
                headers.append(_NOSNIFF)
                if content_type.startswith(_DOCUMENT_TYPES):
                    csp = policy(list(state.get(_FORM_TARGETS, ()))).encode("latin-1")
                    headers += [(b"content-security-policy", csp), *_DOCUMENT_HEADERS]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
