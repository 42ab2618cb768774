"""The benchmark's notification receiver and export client (bench/notify.py, bench/export.py),
over real loopback HTTP: what they count is what the latency and throughput figures are made of.
The Bulk Data side here is a small loopback site that answers as the IG says (the real export is
what ``make bench`` runs against)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import orjson

from bench import export, notify


def _careplan(id_: str, version: int) -> dict[str, object]:
    return {"resourceType": "CarePlan", "id": id_, "meta": {"versionId": str(version)}}


def test_notified_reads_resources_bundles_and_id_only_entries() -> None:
    assert notify.notified(orjson.dumps(_careplan("a", 2))) == [("CarePlan", "a", 2)]
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": {"resourceType": "Parameters", "parameter": []}},
        {"fullUrl": "http://x/fhir/CarePlan/b/_history/3"},
        {"fullUrl": "urn:uuid:c", "resource": _careplan("c", 1)},
        {"request": {"method": "PUT", "url": "CarePlan/d/_history/7"}},
        {"fullUrl": "http://x/fhir/CarePlan/e"},  # no version: cannot be matched
    ]}
    assert notify.notified(orjson.dumps(bundle)) == [("CarePlan", "b", 3), ("CarePlan", "c", 1),
                                                     ("CarePlan", "d", 7)]
    assert notify.notified(b"") == []
    assert notify.notified(b"not json") == []
    handshake = {"resourceType": "Bundle", "type": "history",
                 "entry": [{"resource": {"resourceType": "SubscriptionStatus", "type": "handshake"}}]}
    assert notify.notified(orjson.dumps(handshake)) == []


async def test_receiver_records_each_version_on_a_kept_alive_connection() -> None:
    async with notify.Receiver() as receiver, httpx.AsyncClient() as client:
        before = time.time()
        for body in (_careplan("a", 1), _careplan("a", 2), _careplan("a", 2), {"resourceType": "Bundle"}):
            response = await client.post(receiver.url, content=orjson.dumps(body),
                                         headers={"Content-Type": "application/fhir+json"})
            assert response.status_code == 200
        # A chunked body (a sender that streams) is read whole too.

        async def chunks():  # type: ignore[no-untyped-def]
            data = orjson.dumps(_careplan("b", 4))
            yield data[:10]
            yield data[10:]

        assert (await client.put(receiver.url + "/CarePlan/b", content=chunks())).status_code == 200
    assert set(receiver.arrivals) == {("CarePlan", "a", 1), ("CarePlan", "a", 2), ("CarePlan", "b", 4)}
    assert receiver.duplicates() == 1
    assert receiver.requests == 5 and receiver.empty == 1
    first = receiver.first_arrival(("CarePlan", "a", 1))
    assert first is not None and before <= first <= time.time()


def test_written_reads_the_version_from_the_answer() -> None:
    request = httpx.Request("PUT", "http://x/fhir/CarePlan/a")
    located = httpx.Response(201, headers={"Location": "http://x/fhir/CarePlan/a/_history/5"}, request=request)
    assert notify.written(located) == ("CarePlan", "a", 5)
    body = httpx.Response(200, headers={"ETag": 'W/"6"'}, content=orjson.dumps({"resourceType": "CarePlan",
                                                                                 "id": "a"}), request=request)
    assert notify.written(body) == ("CarePlan", "a", 6)
    assert notify.written(httpx.Response(200, content=b"", request=request)) is None


def test_latency_report_counts_missing_and_bounds() -> None:
    receiver = notify.Receiver()
    now = time.time()
    receiver.arrivals = {("CarePlan", "a", 2): [now + 0.010, now + 0.5], ("CarePlan", "z", 1): [now]}
    load = notify.WriteLoad(answered={("CarePlan", "a", 2): now, ("CarePlan", "b", 1): now}, requests=3, errors=1,
                            unread=0, seconds=1.0, latencies_s=[0.02, 0.03])
    stamped = {("CarePlan", "a", 2): datetime.fromtimestamp(now - 0.020, UTC).replace(tzinfo=None)}
    row = notify.latency_report(receiver, load, stamped, 1.5)
    assert (row["expected"], row["delivered"], row["missing"], row["duplicates"]) == (2, 1, 1, 1)
    assert row["other_versions_notified"] == 1
    assert abs(row["from_response"]["p50_ms"] - 10.0) < 1.0
    assert abs(row["from_last_updated"]["p50_ms"] - 30.0) < 1.0


async def _bulk_site(polls_before_done: int) -> tuple[asyncio.base_events.Server, str, dict[str, int]]:
    """A loopback Bulk Data server: kick-off 202, ``polls_before_done`` polls of 202, then the
    manifest of two files (one without a final newline), DELETE 202."""
    seen = {"polls": 0, "deletes": 0, "unauthorized": 0}
    files = {"/f/1.ndjson": b'{"resourceType":"Patient","id":"1"}\n{"resourceType":"Patient","id":"2"}\n',
             "/f/2.ndjson": b'{"resourceType":"CarePlan","id":"3"}'}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line.strip():
                break
            method, target, _ = line.decode().split(" ", 2)
            headers = {}
            while (h := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = h.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            status, extra, body = "200 OK", "", b""
            if headers.get("authorization") != "Bearer t":
                seen["unauthorized"] += 1
                status = "401 Unauthorized"
            elif target.startswith("/fhir/$export"):
                assert headers.get("prefer") == "respond-async"
                status, extra = "202 Accepted", f"Content-Location: {base}/status/1\r\n"
            elif target == "/status/1" and method == "DELETE":
                seen["deletes"] += 1
                status = "202 Accepted"
            elif target == "/status/1":
                seen["polls"] += 1
                if seen["polls"] <= polls_before_done:
                    status, extra = "202 Accepted", "Retry-After: 120\r\nX-Progress: busy\r\n"
                else:
                    body = orjson.dumps({"transactionTime": "2026-01-01T00:00:00Z", "requiresAccessToken": True,
                                         "output": [{"type": "Patient", "url": f"{base}/f/1.ndjson", "count": 2},
                                                    {"type": "CarePlan", "url": f"{base}/f/2.ndjson"}],
                                         "error": []})
            else:
                body = files[target]
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    return server, base, seen


async def test_export_client_polls_downloads_and_counts_lines() -> None:
    server, base, seen = await _bulk_site(polls_before_done=2)
    try:
        result = await export.run_export(base, "t", poll=0.05, timeout=10)
    finally:
        server.close()
    assert result.by_type == {"CarePlan": 1, "Patient": 2}
    assert result.resources == 3 and result.files == 2 and result.polls == 3
    assert result.manifest_counts == {"Patient": 2}
    assert seen == {"polls": 3, "deletes": 1, "unauthorized": 0}
    assert result.seconds < 5  # Retry-After: 120 was capped at the poll interval
    assert result.as_dict()["resources_per_s"] > 0
