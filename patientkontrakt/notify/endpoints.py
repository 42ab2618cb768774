"""Which URLs a subscription may deliver to (issue 15; docs/security.md, "Subscriptions").

A rest-hook endpoint is a URL a client chooses and the server then calls: without a check it would
be a way into the region's network (server-side request forgery). So an endpoint must be ``https``
to a public address, unless its host is in ``PK_SUBSCRIPTION_ALLOWED_HOSTS``. The check happens
twice: ``check_url`` when the Subscription is written (the URL's own form: scheme, userinfo, IP
literals in any spelling, names that are internal by convention), and ``resolve_checked`` at every
delivery (what the name resolves to now, every address of it). The delivery then connects to
exactly the addresses checked, so a name that resolves to something else a moment later (DNS
rebinding) gains nothing, and it follows no redirects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that are internal by convention (RFC 6761 localhost, RFC 6762 .local, ICANN's .internal,
# RFC 8375 .home.arpa) and a few that resolvers commonly hand to the local network.
_INTERNAL_NAMES = ("localhost",)
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan", ".intranet")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


class EndpointRefused(Exception):
    """The endpoint may not be called; ``reason`` says why, in English."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def allowed_hosts(setting: str) -> frozenset[str]:
    """``PK_SUBSCRIPTION_ALLOWED_HOSTS`` (comma-separated host names or addresses) as a set of
    normalised hosts: lower case, no trailing dot, addresses in their canonical form."""
    return frozenset(_normalise(part) for part in setting.split(",") if part.strip())


def _normalise(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _is_allowed(host: str, allowed: frozenset[str]) -> bool:
    return _normalise(host) in allowed


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None if it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (address.sixtofour if address.sixtofour else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"it embeds the IPv4 address {embedded}: {problem}" if problem else None
        if address.teredo:
            return "it is a Teredo tunnel address"
        if address in _NAT64_LOCAL:
            return "it is a local-use NAT64 address"
        if address.is_site_local:
            return "it is a site-local address"
    if address.is_unspecified:
        return "it is the unspecified address"
    if address.is_loopback:
        return "it is a loopback address"
    if address.is_link_local:
        return "it is a link-local address (such as the cloud metadata service 169.254.169.254)"
    if address.is_multicast:
        return "it is a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "it is a shared (carrier-grade NAT) address in 100.64.0.0/10"
    if address.is_private:
        return "it is a private address (RFC 1918, unique local or another non-public range)"
    if address.is_reserved:
        return "it is a reserved address"
    if not address.is_global:
        return "it is not a public address"
    return None


def _literal_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a resolver would make of ``host`` if it is an IPv4 literal in any spelling the
    C library accepts (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``), else None."""
    if not re.fullmatch(r"[0-9a-fx.]+", host) or not re.search(r"[0-9]", host.rsplit(".", 1)[-1] or "x"):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url(url: str, allowed: frozenset[str]) -> str | None:
    """None if ``url`` may be a subscription's endpoint, else the reason it may not (English).

    ``https`` only, unless the host is allowed (then ``http`` too); no user name or password in the
    URL; the host a public address or a name that is not internal by convention. What a name
    resolves to is checked at delivery (``resolve_checked``)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"the endpoint is not a valid URL ({exc})"
    if parts.scheme not in ("https", "http"):
        return "the endpoint must be an https URL"
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        return "the endpoint must not carry a user name or password (use channel.header for credentials)"
    raw = parts.hostname
    if not raw:
        return "the endpoint has no host"
    if port == 0:
        return "the endpoint's port must not be 0"
    host_allowed = _is_allowed(raw, allowed)
    if parts.scheme == "http" and not host_allowed:
        return "the endpoint must be an https URL (http only to a host in PK_SUBSCRIPTION_ALLOWED_HOSTS)"
    if host_allowed:
        return None
    return host_problem(raw)


def host_problem(raw: str) -> str | None:
    """Why the host of a URL (as ``urlsplit`` gives it: lower case, no brackets) may not be called
    without being allowed, or None."""
    if "%" in raw:
        return "the endpoint's host must not contain percent-encoding or an IPv6 zone"
    host = raw.rstrip(".")
    if ":" in host:
        try:
            v6 = ipaddress.IPv6Address(host)
        except ValueError:
            return "the endpoint's host is not a valid IPv6 address"
        problem = address_problem(v6)
        return f"the endpoint's address {v6} is not public: {problem}" if problem else None
    if not host.isascii():
        return "the endpoint's host must be written in ASCII (an internationalised name as its xn-- form)"
    try:
        v4 = ipaddress.IPv4Address(host)
    except ValueError:
        v4 = None
    if v4 is not None:
        problem = address_problem(v4)
        return f"the endpoint's address {v4} is not public: {problem}" if problem else None
    legacy = _literal_ipv4(host)
    if legacy is not None:
        return (f"the endpoint's host {host!r} is the address {legacy} written in a non-standard form; "
                "write an address as four decimal numbers")
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return "the endpoint's host is not a valid host name"
    if host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES):
        return f"the endpoint's host {host!r} is a local or internal name"
    if len(labels) < 2:
        return f"the endpoint's host {host!r} is a single-label name (resolved within the local network)"
    if labels[-1].isdigit():
        return "the endpoint's host is not a valid host name (its last label is a number)"
    return None


async def resolve_checked(host: str, port: int, allowed: frozenset[str]) -> list[str]:
    """The addresses ``host`` resolves to now, each of them public (unless the host, or that
    address, is allowed); raises ``EndpointRefused`` if any is not, or if the name does not
    resolve. The caller connects to these addresses and no others: no second lookup."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    problem = None if _is_allowed(bare, allowed) else host_problem(bare.lower())
    if problem:
        raise EndpointRefused(problem)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(bare, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise EndpointRefused(f"the endpoint's host does not resolve ({type(exc).__name__})") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        text = str(address)
        if text in addresses:
            continue
        if not _is_allowed(bare, allowed) and text not in allowed:
            problem = address_problem(address)
            if problem:
                raise EndpointRefused(f"the endpoint's host resolves to {text}, which is not public: {problem}")
        addresses.append(text)
    if not addresses:
        raise EndpointRefused("the endpoint's host resolves to no address")
    return addresses
