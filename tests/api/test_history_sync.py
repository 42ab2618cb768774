"""History sync under concurrent writes (docs/api.md "History sync", patientkontrakt/fhir/history.py):
an EHR that syncs with ``_since`` = the last answer's ``meta.lastUpdated`` and follows the paging
links gets every version exactly once, however late the writes commit.

A live server (uvicorn on loopback, in a thread) on PostgreSQL and on SQLite; writers are asyncio
tasks over HTTP, and a test holds a write transaction open through the store itself.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import uvicorn

from api.app import create_app
from patientkontrakt.fhir.dates import format_instant, parse_range
from patientkontrakt.storage.database import create_engine, migrate
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import RESOURCE_VERSION
from tests.conftest import _empty, engine_token, make_settings
from tests.factories import organization, patient
from tests.processes import free_port

Version = tuple[str, str, str]  # type, id, versionId


@dataclass
class Live:
    url: str
    database_url: str
    headers: dict[str, str]


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def live_server(request: pytest.FixtureRequest, pg_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Live]:
    """The bare R4 engine (as the ``client`` fixture) served by uvicorn on a free loopback port."""
    if request.param == "postgresql":
        database_url = pg_url
    else:
        database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sync') / 'pk.db'}"
        migrate(database_url)
    port = free_port()
    settings = make_settings(database_url, base_url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(create_app(settings, domain_rules=False), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    headers = {"content-type": "application/fhir+json", "authorization": f"Bearer {engine_token(settings)}"}
    try:
        yield Live(f"http://127.0.0.1:{port}/fhir", database_url, headers)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
async def live(live_server: Live) -> Live:
    """The live server, its database emptied for this test."""
    if live_server.database_url.startswith("postgresql"):
        await _empty(live_server.database_url)
    else:
        engine = create_engine(live_server.database_url)
        async with engine.begin() as conn:
            for table in ("resource_version", "idx_token", "idx_string", "idx_date", "idx_reference", "idx_uri",
                          "resource"):
                await conn.execute(sa.text(f"DELETE FROM {table}"))
        await engine.dispose()
    return live_server


@pytest.fixture
async def http(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=live.headers, timeout=60) as client:
        yield client


@pytest.fixture
async def store(live: Live) -> AsyncIterator[Store]:
    store = Store(create_engine(live.database_url, pool_size=5))
    yield store
    await store.dispose()


# -- a syncing client ------------------------------------------------------------------------

@dataclass
class Sync:
    """One sync: every page of ``_history?_since=`` followed to the end."""

    versions: list[Version]
    point: str  # Bundle.meta.lastUpdated: the next sync's _since
    pages: int


def _versions(bundle: dict[str, Any]) -> list[Version]:
    found = []
    for entry in bundle.get("entry", []):
        type_, id_ = entry["fullUrl"].rsplit("/", 2)[-2:]
        found.append((type_, id_, entry["response"]["etag"][3:-1]))
    return found


def _next(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


async def sync(http: httpx.AsyncClient, live: Live, since: str | None, *, count: int = 10,
               between_pages: Any = None, path: str = "_history") -> Sync:
    params = {"_count": str(count), **({"_since": since} if since else {})}
    response = await http.get(f"{live.url}/{path}", params=params)
    seen: list[Version] = []
    point: str | None = None
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "history"
        if point is None:
            point = bundle["meta"]["lastUpdated"]
        assert bundle["meta"]["lastUpdated"] == point, "S is fixed at the first page"
        seen += _versions(bundle)
        pages += 1
        url = _next(bundle)
        if url is None:
            break
        if between_pages is not None:
            await between_pages()
        response = await http.get(url)
    assert point is not None
    return Sync(seen, point, pages)


async def all_versions(store: Store) -> list[Version]:
    async with store.reading() as unit:
        rows = (await unit.conn.execute(sa.select(RESOURCE_VERSION.c.res_type, RESOURCE_VERSION.c.res_id,
                                                  RESOURCE_VERSION.c.version_id))).all()
    return [(str(t), str(i), str(v)) for t, i, v in rows]


async def put(http: httpx.AsyncClient, live: Live, resource: dict[str, Any]) -> dict[str, Any]:
    response = await http.put(f"{live.url}/{resource['resourceType']}/{resource['id']}",
                              content=orjson.dumps(resource))
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def instant(text: str) -> datetime:
    return parse_range(text)[0]


async def _held_version(store: Store, id_: str) -> tuple[Any, datetime]:
    """Begin a write, stamp and insert a Patient version, and leave it uncommitted: the context
    manager and the stamp (the caller commits by leaving it)."""
    writing = store.writing()
    unit = await writing.__aenter__()
    stamp = await unit.stamp()
    body = orjson.dumps({**patient(), "id": id_, "meta": {"versionId": "1", "lastUpdated": format_instant(stamp)}})
    await unit.insert("Patient", id_, 1, stamp, body.decode())
    await unit.add_version("Patient", id_, 1, stamp, "PUT", body.decode())
    return writing, stamp


# -- the tests -------------------------------------------------------------------------------

async def test_meta_last_updated_is_the_safe_point_and_the_next_since(http: httpx.AsyncClient, live: Live) -> None:
    first = await put(http, live, {**patient(), "id": "p1"})
    await asyncio.sleep(0.01)
    one = await sync(http, live, None)
    assert one.versions == [("Patient", "p1", "1")]
    assert instant(first["meta"]["lastUpdated"]) < instant(one.point)
    again = await sync(http, live, one.point)
    assert again.versions == [] and instant(again.point) >= instant(one.point)
    await put(http, live, {**first, "gender": "female"})
    await asyncio.sleep(0.01)
    two = await sync(http, live, one.point)
    assert two.versions == [("Patient", "p1", "2")]
    assert instant(two.point) > instant(one.point)


async def test_a_write_in_flight_is_left_to_the_next_sync(http: httpx.AsyncClient, live: Live, store: Store) -> None:
    """A transaction stamped before a sync but committed after it: not in that sync, whose S is
    before it (PostgreSQL), or the sync waits for it (SQLite's single writer); in the next sync
    either way, exactly once."""
    await put(http, live, {**organization(), "id": "before"})
    await asyncio.sleep(0.01)
    writing, stamp = await _held_version(store, "late")
    try:
        await asyncio.sleep(0.01)
        if live.database_url.startswith("postgresql"):
            # A write that starts and commits while the first is in flight, stamped after it.
            await put(http, live, {**organization(), "id": "meanwhile"})
            await asyncio.sleep(0.01)
            during = await sync(http, live, None)
            assert during.versions == [("Organization", "before", "1")]
            assert instant(during.point) <= stamp
        else:
            waiting = asyncio.create_task(sync(http, live, None))
            await asyncio.sleep(0.3)
            assert not waiting.done(), "the safe point waits for the write lock"
    finally:
        await writing.__aexit__(None, None, None)
    await asyncio.sleep(0.01)
    if live.database_url.startswith("postgresql"):
        after = await sync(http, live, during.point)
        assert sorted(after.versions) == [("Organization", "meanwhile", "1"), ("Patient", "late", "1")]
        everything = during.versions + after.versions
    else:
        during = await waiting
        assert sorted(during.versions) == [("Organization", "before", "1"), ("Patient", "late", "1")]
        assert instant(during.point) > stamp
        everything = during.versions + (await sync(http, live, during.point)).versions
    assert sorted(everything) == sorted(await all_versions(store))


async def test_pages_stay_put_while_versions_are_written(http: httpx.AsyncClient, live: Live, store: Store) -> None:
    """Writes between the pages of one history (new resources and new versions of ones already
    paged and not yet paged) neither shift its pages nor appear in it; the next sync has them."""
    ids = [f"p{n}" for n in range(12)]
    for id_ in ids:
        await put(http, live, {**patient(pnr=f"19{int(id_[1:]):02d}01019800"), "id": id_})
    await asyncio.sleep(0.01)
    before = set(await all_versions(store))
    written = iter(range(100))

    async def write_some() -> None:
        n = next(written)
        await put(http, live, {**patient(), "id": ids[n % len(ids)], "gender": "female" if n % 2 else "other"})
        await put(http, live, {**organization(), "id": f"new{n}"})

    one = await sync(http, live, None, count=5, between_pages=write_some)
    assert one.pages == 3
    assert sorted(one.versions) == sorted(before)
    assert len(set(one.versions)) == len(one.versions)
    await asyncio.sleep(0.01)
    two = await sync(http, live, one.point, count=5)
    assert sorted(two.versions) == sorted(set(await all_versions(store)) - before)


async def test_ehr_down_then_catching_up_under_concurrent_writers(http: httpx.AsyncClient, live: Live,
                                                                  store: Store) -> None:
    """Many writers at once (creates, updates, deletes over HTTP) while an EHR syncs in a loop
    with ``_since`` = the last S and small pages: the union of its syncs is every version in the
    database, none twice."""
    rng = random.Random(15)

    async def writer(w: int) -> None:
        async with httpx.AsyncClient(headers=live.headers, timeout=60) as own:
            current: dict[str, dict[str, Any]] = {}
            for n in range(12):
                id_ = f"w{w}-{rng.randrange(4)}"
                if id_ in current and rng.random() < 0.2:
                    assert (await own.delete(f"{live.url}/Patient/{id_}")).status_code == 204
                    del current[id_]
                    continue
                gender = rng.choice(["male", "female"])
                resource = {**patient(pnr=f"19{w + 10:02d}{n % 12 + 1:02d}019800"), "id": id_, "gender": gender}
                current[id_] = await put(own, live, resource)
                await asyncio.sleep(rng.random() * 0.01)

    async def writers() -> None:
        await asyncio.gather(*(writer(w) for w in range(8)))

    got: list[Version] = []
    syncs = 0
    writing = asyncio.create_task(writers())
    since: str | None = None
    async with asyncio.timeout(120):
        while True:
            finished = writing.done()
            if finished:
                writing.result()  # a writer's failure, if any
                await asyncio.sleep(0.01)  # S passes the last stamp's millisecond
            result = await sync(http, live, since, count=7, between_pages=lambda: asyncio.sleep(0.002))
            got += result.versions
            since = result.point
            syncs += 1
            if finished and not result.versions:
                break  # a sync begun after the last commit (and a millisecond later) found nothing new
            await asyncio.sleep(0.005)
    await writing
    everything = await all_versions(store)
    assert len(everything) > 60
    assert len(got) == len(set(got)), "no version twice"
    assert sorted(got) == sorted(everything), "no version missing"
    assert syncs > 2


async def test_previous_links_and_oldest_first(http: httpx.AsyncClient, live: Live) -> None:
    for n in range(7):
        await put(http, live, {**organization(), "id": f"o{n}"})
    await asyncio.sleep(0.01)
    newest_first = (await sync(http, live, None, count=100)).versions
    assert newest_first == [("Organization", f"o{n}", "1") for n in reversed(range(7))]
    oldest = await http.get(f"{live.url}/Organization/_history", params={"_sort": "_lastUpdated", "_count": "3"})
    pages = [oldest.json()]
    while (url := _next(pages[-1])) is not None:
        pages.append((await http.get(url)).json())
    assert [v for page in pages for v in _versions(page)] == list(reversed(newest_first))
    # Back from the last page by the previous links: the same pages, in reverse.
    back = [pages[-1]]
    while (url := next((lk["url"] for lk in back[-1]["link"] if lk["relation"] == "previous"), None)) is not None:
        back.append((await http.get(url)).json())
    assert [_versions(p) for p in back] == [_versions(p) for p in reversed(pages)]


@pytest.mark.parametrize("params", [
    {"_cursor": "yesterday"}, {"_cursor": "1.2.3"}, {"_cursor": "1.2.3.x"}, {"_cursor": "9" * 19},
    {"_cursor": "99999999999999999.1.1.n"}, {"_sort": "_id"},
])
async def test_bad_cursor_or_sort_is_400(http: httpx.AsyncClient, live: Live, params: dict[str, str]) -> None:
    response = await http.get(f"{live.url}/_history", params=params)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "invalid"
    assert issue["expression"] == [next(iter(params))]
    assert issue["details"]["text"]
