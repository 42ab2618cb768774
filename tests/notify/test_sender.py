"""Sending one request to an endpoint: checked addresses only, the name kept for Host (and SNI),
no redirect followed, a slow endpoint cut off, credentials never in the failure's reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from patientkontrakt.notify.delivery import DeliveryFailed, Request, Sender, channel_headers
from tests.notify.delivery_tools import Receiver, receiving


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


async def test_the_request_goes_to_the_resolved_address_with_the_name_as_host(receiver: Receiver) -> None:
    port = receiver.origin.rsplit(":", 1)[1]
    sender = Sender(frozenset({"localhost"}), timeout=5)
    try:
        url = f"http://localhost:{port}/hook?x=1"
        assert await sender.send(Request("POST", url, b"{}", {"Content-Type": "application/fhir+json"}),
                                 ("Authorization: Bearer abc", "Host: evil.example", "Content-Length: 9")) == 200
    finally:
        await sender.close()
    [got] = receiver.at("/hook")
    assert got.path == "/hook?x=1" and got.body == b"{}"
    assert got.headers["host"] == f"localhost:{port}"  # not the channel's Host line
    assert got.headers["authorization"] == "Bearer abc"
    assert got.headers["content-length"] == "2"


async def test_not_allowed_names_and_addresses_are_refused_before_any_connection(receiver: Receiver) -> None:
    sender = Sender(frozenset(), timeout=5)
    try:
        for url in (receiver.url("/x"), receiver.url("/x").replace("127.0.0.1", "localhost"),
                    receiver.url("/x").replace("127.0.0.1", "[::1]")):
            with pytest.raises(DeliveryFailed) as failed:
                await sender.send(Request("POST", url), ("Authorization: Bearer the-secret",))
            assert "the-secret" not in failed.value.reason
    finally:
        await sender.close()
    assert receiver.at("/") == []


async def test_a_redirect_is_a_failure_and_not_followed(receiver: Receiver) -> None:
    receiver.status = 307
    sender = Sender(frozenset({"127.0.0.1"}), timeout=5)
    try:
        with pytest.raises(DeliveryFailed, match="answered 307"):
            await sender.send(Request("POST", receiver.url("/moved")), ())
    finally:
        await sender.close()


async def test_a_slow_endpoint_is_cut_off(receiver: Receiver) -> None:
    receiver.delay = 2
    sender = Sender(frozenset({"127.0.0.1"}), timeout=0.5)
    try:
        with pytest.raises(DeliveryFailed, match="in time"):
            await sender.send(Request("POST", receiver.url("/slow")), ())
    finally:
        await sender.close()


async def test_a_closed_port_cannot_be_connected() -> None:
    sender = Sender(frozenset({"127.0.0.1"}), timeout=2)
    try:
        with pytest.raises(DeliveryFailed, match="cannot connect"):
            await sender.send(Request("POST", "http://127.0.0.1:9/"), ())
    finally:
        await sender.close()


def test_channel_headers_drop_what_the_server_sets() -> None:
    assert channel_headers(("Authorization: Bearer a:b", "X-A:1", "Host: x", "no colon",
                            "X-Subscription-Event-Number: 7", "X-Request-ID: 1", "x-correlation-id: 2")) == {
        "Authorization": "Bearer a:b", "X-A": "1"}
