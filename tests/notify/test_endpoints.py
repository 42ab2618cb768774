"""Which URLs a subscription may deliver to: the forms of an internal address an attacker would
try, refused; public names and addresses, and the allowed hosts, accepted."""

from __future__ import annotations

import pytest

from patientkontrakt.notify.endpoints import EndpointRefused, allowed_hosts, check_url, resolve_checked

NONE: frozenset[str] = frozenset()

REFUSED = [
    # scheme
    "http://example.com/hook", "ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/",
    "example.com/hook", "",
    # userinfo
    "https://user:pw@example.com/hook", "https://user@example.com/hook", "https://example.com@127.0.0.1/",
    # loopback, unspecified
    "https://127.0.0.1/", "https://127.8.9.10:8443/", "https://0.0.0.0/", "https://[::1]/", "https://[::]/",
    # private, CGNAT, link-local and the cloud metadata service
    "https://10.0.0.5/", "https://172.16.3.4/", "https://172.31.255.255/", "https://192.168.1.1/",
    "https://100.64.0.1/", "https://100.127.255.254/", "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/", "https://[fc00::1]/", "https://[fd12:3456::1]/", "https://[fec0::1]/",
    # multicast, reserved, broadcast, documentation
    "https://224.0.0.1/", "https://[ff02::1]/", "https://240.0.0.1/", "https://255.255.255.255/",
    "https://192.0.2.10/", "https://198.18.0.1/",
    # IPv4 inside IPv6
    "https://[::ffff:127.0.0.1]/", "https://[::ffff:7f00:1]/", "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:10.0.0.1]/", "https://[64:ff9b::a00:1]/", "https://[2002:a00:1::]/",
    "https://[::127.0.0.1]/", "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    # decimal, octal, hex and short spellings
    "https://2130706433/", "https://0x7f000001/", "https://0177.0.0.1/", "https://0x7f.0.0.1/",
    "https://127.1/", "https://0/", "https://017700000001/", "https://0xa9fea9fe/", "https://3232235777/",
    "https://8.8.8.010/",
    # names
    "https://localhost/", "https://LOCALHOST/", "https://localhost./", "https://api.localhost/",
    "https://printer.local/", "https://db.internal/", "https://metadata.google.internal/", "https://intranet/",
    "https://router.home.arpa/", "https://127.0.0.1./",
    # not a host
    "https://exa%6dple.com/", "https://[fe80::1%25eth0]/", "https://ex_ample.com/", "https://-bad.com/",
    "https://1.2.3.4.5/", "https:///nohost", "https://example.com:99999/", "https://exämple.se/",
]

ACCEPTED = [
    "https://example.com/hook", "https://ehr.region.se:8443/fhir/notify?x=1", "https://EXAMPLE.com./hook",
    "https://8.8.8.8/", "https://[2001:4860:4860::8888]/", "https://1e100.net/", "https://xn--exmple-cua.se/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused(url: str) -> None:
    reason = check_url(url, NONE)
    assert reason is not None and reason.startswith("the endpoint"), (url, reason)


@pytest.mark.parametrize("url", ACCEPTED)
def test_accepted(url: str) -> None:
    assert check_url(url, NONE) is None


def test_allowed_hosts_may_be_internal_and_plain_http() -> None:
    allowed = allowed_hosts(" 127.0.0.1, Receiver.Internal. ,::1,")
    assert allowed == frozenset({"127.0.0.1", "receiver.internal", "::1"})
    for url in ("http://127.0.0.1:9000/hook", "https://127.0.0.1/", "http://receiver.internal/x",
                "http://[::1]:8080/", "http://[0:0:0:0:0:0:0:1]/"):
        assert check_url(url, allowed) is None, url
    # allowing one address allows no other spelling of it, and no neighbour
    for url in ("http://127.1/", "http://2130706433/", "http://127.0.0.2/", "http://localhost/",
                "http://user@127.0.0.1/", "ftp://127.0.0.1/"):
        assert check_url(url, allowed) is not None, url


def test_the_reason_says_what_is_wrong() -> None:
    assert "https" in (check_url("http://example.com/", NONE) or "")
    assert "169.254.169.254" in (check_url("https://[::ffff:a9fe:a9fe]/", NONE) or "")
    assert "non-standard" in (check_url("https://0x7f.1/", NONE) or "")
    assert "channel.header" in (check_url("https://a:b@example.com/", NONE) or "")


async def test_resolve_refuses_a_name_that_resolves_to_loopback() -> None:
    # "localhost" is refused by name; a name whose resolution is loopback is refused by address
    with pytest.raises(EndpointRefused, match="local or internal"):
        await resolve_checked("localhost", 443, NONE)
    with pytest.raises(EndpointRefused, match="not public"):
        await resolve_checked("127.0.0.1", 443, NONE)
    with pytest.raises(EndpointRefused, match="not public"):
        await resolve_checked("[::1]", 443, NONE)
    with pytest.raises(EndpointRefused, match="does not resolve"):
        await resolve_checked("no-such-host.invalid", 443, NONE)


async def test_resolve_gives_the_addresses_to_connect_to() -> None:
    assert await resolve_checked("127.0.0.1", 80, frozenset({"127.0.0.1"})) == ["127.0.0.1"]
    assert await resolve_checked("[::1]", 80, frozenset({"::1"})) == ["::1"]
    assert await resolve_checked("8.8.8.8", 443, NONE) == ["8.8.8.8"]
    # an allowed name resolves to whatever it resolves to
    assert "127.0.0.1" in await resolve_checked("localhost", 80, frozenset({"localhost"}))
