"""What the delivery tests share: a receiver (a real HTTP server on loopback), subscriptions
created through the API, outbox rows (from real writes, or written as a matching write writes
them where a test needs many), workers in-process or as real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi.testclient import TestClient

from patientkontrakt.audit.log import AuditLog
from patientkontrakt.config import PROJECT_ROOT, Settings
from patientkontrakt.domain.setup import build_service
from patientkontrakt.fhir.dates import now_utc
from patientkontrakt.notify.worker import Worker
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from patientkontrakt.storage.tables import SUBSCRIPTION, SUBSCRIPTION_OUTBOX
from tests.conftest import SERVER_LOGS, make_settings
from tests.processes import stop

# -- the receiver -------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event_number(self) -> int | None:
        value = self.headers.get("x-subscription-event-number")
        return int(value) if value else None

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Records every request; answers ``status`` (``failing`` requests first answer 503), after
    ``delay`` seconds."""

    origin: str = ""
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    failing: int = 0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return self.origin + path

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path)]

    def wait_for(self, path: str, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.at(path))} requests, not {count}, within {timeout} s")


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            if receiver.delay:
                time.sleep(receiver.delay)
            with receiver.lock:
                if receiver.failing > 0:
                    receiver.failing -= 1
                    status = 503
                else:
                    status = receiver.status
                    if 200 <= status < 300:
                        receiver.requests.append(Received(self.command, self.path,
                                                          {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# -- subscriptions in the database ----------------------------------------------------------------


def delivery_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "subscription_allowed_hosts": "127.0.0.1", "subscription_backoff": 0.05, "subscription_backoff_max": 0.2,
        "subscription_max_failures": 100, "worker_lease": 5.0, "worker_poll_interval": 0.05,
        "worker_status_interval": 0, "subscription_timeout": 5.0}
    return make_settings(url, **{**values, **overrides})


def _db(settings: Settings, work: Callable[[Store], Any]) -> Any:
    async def go() -> Any:
        store = Store(create_engine(settings.database_url, pool_size=1))
        try:
            return await work(store)
        finally:
            await store.dispose()
    return asyncio.run(go())


BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def subscription(endpoint: str, *, criteria: str = "CarePlan", topic: str | None = None,
                 content: str = "full-resource", headers: tuple[str, ...] = (),
                 filters: tuple[str, ...] = ()) -> dict[str, Any]:
    """A Subscription as a client writes it: R4 (``criteria``; content full-resource or empty) or
    the backport form (``topic``, ``filters``, content empty, id-only or full-resource)."""
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if headers:
        channel["header"] = list(headers)
    body: dict[str, Any] = {"resourceType": "Subscription", "status": "requested", "reason": "test",
                            "criteria": criteria, "channel": channel}
    if topic is None:
        if content == "full-resource":
            channel["payload"] = "application/fhir+json"
        return body
    body["criteria"] = topic
    channel["payload"] = "application/fhir+json"
    channel["_payload"] = {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": content}]}
    if filters:
        body["_criteria"] = {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f}
                                           for f in filters]}
    return body


def subscribe(app: TestClient, caller: dict[str, str], endpoint: str, **kwargs: Any) -> int:
    """POST a Subscription through the API with the ``caller``'s headers; its ``subscription`` pk."""
    response = app.post("/fhir/Subscription", json=subscription(endpoint, **kwargs), headers=caller)
    assert response.status_code == 201, response.text
    id_ = response.json()["id"]
    settings = app.app.state.settings  # type: ignore[attr-defined]

    async def work(store: Store) -> int:
        async with store.reading() as unit:
            pk = (await unit.conn.execute(sa.select(SUBSCRIPTION.c.resource_pk).where(
                SUBSCRIPTION.c.res_id == id_))).scalar_one()
        return int(pk)
    result: int = _db(settings, work)
    return result


def announce(settings: Settings, pk: int, events: list[tuple[str, str, int]]) -> None:
    """Outbox rows for changes (type, id, version), as a write that matches would add them."""
    async def work(store: Store) -> None:
        async with store.writing() as unit:
            for type_, id_, version in events:
                await unit.conn.execute(SUBSCRIPTION_OUTBOX.insert().values(
                    subscription_pk=pk, kind="event", res_type=type_, res_id=id_, version_id=version,
                    created=now_utc(), attempts=0))
    _db(settings, work)


def state(settings: Settings, pk: int) -> tuple[Any, list[Any]]:
    async def work(store: Store) -> tuple[Any, list[Any]]:
        async with store.reading() as unit:
            row = (await unit.conn.execute(sa.select(SUBSCRIPTION).where(SUBSCRIPTION.c.resource_pk == pk))).one()
            rows = (await unit.conn.execute(sa.select(SUBSCRIPTION_OUTBOX).where(
                SUBSCRIPTION_OUTBOX.c.subscription_pk == pk).order_by(SUBSCRIPTION_OUTBOX.c.id))).all()
        return row, list(rows)
    result: tuple[Any, list[Any]] = _db(settings, work)
    return result


def forget_subscriptions(settings: Settings) -> None:
    """Every subscription ``off`` and nothing owed: the next test's worker finds only its own."""
    async def work(store: Store) -> None:
        async with store.writing() as unit:
            await unit.conn.execute(SUBSCRIPTION_OUTBOX.delete())
            await unit.conn.execute(SUBSCRIPTION.update().values(status="off", lease_owner=None, lease_until=None))
    _db(settings, work)


# -- workers ----------------------------------------------------------------------------------------


@asynccontextmanager
async def worker_of(settings: Settings) -> AsyncIterator[Worker]:
    """A ``Worker`` over its own store, closed with it."""
    store = Store(create_engine(settings.database_url, pool_size=2))
    worker = Worker(build_service(settings, store, log=AuditLog(store)), settings)
    try:
        yield worker
    finally:
        await worker.close()
        await store.dispose()


@contextmanager
def in_thread(work: Callable[[threading.Event], Awaitable[None]]) -> Iterator[list[BaseException]]:
    """``work(stop)`` on an event loop of its own in a thread, for the block; then ``stop`` is set
    and the thread joined. Yields the list its failure goes into, raised when the block ends."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work(stop))
        except BaseException as exc:  # handed to the test
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield failure
    finally:
        stop.set()
        thread.join(timeout=30)
    if failure:
        raise failure[0]


def deliver(settings: Settings, done: Callable[[], bool], timeout: float = 30) -> None:
    """An in-process worker (its own thread and event loop) delivers until ``done()``."""
    async def work(stop: threading.Event) -> None:
        async with worker_of(settings) as worker:
            while not stop.is_set():
                if not await worker.run_once():
                    await asyncio.sleep(0.02)

    with in_thread(work) as failure:
        deadline = time.monotonic() + timeout
        while not done() and not failure:
            assert time.monotonic() < deadline, "not delivered in time"
            time.sleep(0.05)


@contextmanager
def worker_process(settings: Settings, folder: Path, name: str, log_format: str = "text"
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """``patientkontrakt worker`` as a real process; its log (``folder/name.log``) is checked for
    patient data last."""
    env = {**os.environ, "PK_DATABASE_URL": settings.database_url, "PK_BASE_URL": settings.base_url,
           "PK_LOG_LEVEL": "info", "PK_LOG_FORMAT": log_format,
           "PK_SUBSCRIPTION_ALLOWED_HOSTS": settings.subscription_allowed_hosts,
           "PK_WORKER_LEASE": str(settings.worker_lease), "PK_WORKER_POLL_INTERVAL": "0.05",
           "PK_WORKER_STATUS_INTERVAL": "1", "PK_SUBSCRIPTION_BACKOFF": str(settings.subscription_backoff),
           "PK_SUBSCRIPTION_BACKOFF_MAX": str(settings.subscription_backoff_max)}
    log_path = folder / f"{name}.log"
    SERVER_LOGS.append(log_path)
    command = [str(Path(sys.executable).parent / "patientkontrakt"), "worker"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            stop(process)
