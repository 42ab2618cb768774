"""Three FHIR clients nobody here wrote, behind one small interface for the interop tests:
``fhirpy`` (Python), ``fhirclient`` (SMART's Python client) and ``fhir-kit-client`` (npm, driven
by ``tests/interop/node/client.mjs`` in a Node subprocess).

Each method uses the client's own call where it has one; what a client lacks is said at the
method (fhirpy sends a JSON Patch through its request method with the content type set, as
fhirpy's ``patch()`` sends a merge patch as ``application/json``; fhirclient has no patch call,
so its own requests session and its own header signing send it). An HTTP error comes back as
``Refused`` with the status and the OperationOutcome the server sent.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from fhirclient.models.bundle import Bundle as FHIRClientBundle
from fhirclient.server import (
    FHIRNotFoundException,
    FHIRPermissionDeniedException,
    FHIRServer,
    FHIRUnauthorizedException,
)
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import BaseFHIRError, OperationOutcome

from patientkontrakt.config import PROJECT_ROOT

NODE_DIR = PROJECT_ROOT / "tests" / "interop" / "node"
Resource = dict[str, Any]


class Refused(Exception):
    """An HTTP error answer, as the client reported it."""

    def __init__(self, status: int | None, outcome: Any) -> None:
        super().__init__(f"{status}: {json.dumps(outcome)[:2000]}")
        self.status = status
        self.outcome = outcome


@dataclass
class Pages:
    """A searchset followed to its end: how many pages, the first page's ``total``, every entry's
    ``Type/id`` in the order served (outcome entries left out)."""

    pages: int
    total: int | None
    ids: list[str]


def _keys(bundle: Resource) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"]


def _next(bundle: Resource) -> str | None:
    return next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


class Client(ABC):
    name: str

    def __init__(self, fhir_base: str, token: str) -> None:
        self.fhir_base = fhir_base
        self.token = token

    @abstractmethod
    def transaction(self, bundle: Resource) -> Resource: ...

    @abstractmethod
    def read(self, resource_type: str, id_: str) -> Resource: ...

    @abstractmethod
    def search(self, resource_type: str, params: dict[str, str]) -> list[str]:
        """Every match (``Type/id``), all pages."""

    @abstractmethod
    def everything(self, patient: str, count: int) -> Pages: ...

    @abstractmethod
    def patch(self, resource_type: str, id_: str, operations: Any) -> Resource: ...

    @abstractmethod
    def create(self, resource: Resource) -> Resource: ...

    @abstractmethod
    def operation(self, resource_type: str, id_: str, name: str) -> Resource:
        """``GET {type}/{id}/${name}``."""


class Fhirpy(Client):
    name = "fhirpy"

    def __init__(self, fhir_base: str, token: str) -> None:
        super().__init__(fhir_base, token)
        self.client = SyncFHIRClient(fhir_base, authorization=f"Bearer {token}")

    @staticmethod
    def _refused(error: BaseFHIRError) -> Refused:
        """fhirpy reports no status: its exception classes stand for them."""
        if isinstance(error, OperationOutcome):
            return Refused(None, error.resource)
        return Refused(None, json.loads(str(error)))  # 401, 403, 404/410, 412: the body as text

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self.client._do_request(method, path, **kwargs)
        except BaseFHIRError as error:
            raise self._refused(error) from error

    def transaction(self, bundle: Resource) -> Resource:
        try:
            return dict(self.client.execute("", method="post", data=bundle))
        except BaseFHIRError as error:
            raise self._refused(error) from error

    def read(self, resource_type: str, id_: str) -> Resource:
        try:
            return dict(self.client.get(resource_type, id_))
        except BaseFHIRError as error:
            raise self._refused(error) from error

    def search(self, resource_type: str, params: dict[str, str]) -> list[str]:
        found = self.client.resources(resource_type).search(**params).limit(7).fetch_all()
        return [f"{r.resource_type}/{r.id}" for r in found]

    def everything(self, patient: str, count: int) -> Pages:
        page = self.client.execute(f"Patient/{patient}/$everything", method="get", params={"_count": count})
        first, ids, pages = page, _keys(page), 1
        while (url := _next(page)) is not None:
            page = self.client.execute(url, method="get")
            ids += _keys(page)
            pages += 1
        return Pages(pages, first.get("total"), ids)

    def patch(self, resource_type: str, id_: str, operations: Any) -> Resource:
        # fhirpy's patch() sends its keyword arguments as a merge patch (application/json); a JSON
        # Patch goes through the request method every fhirpy call ends in, with its content type.
        return dict(self._call("patch", f"{resource_type}/{id_}", data=operations,
                               extra_headers={"Content-Type": "application/json-patch+json"}))

    def create(self, resource: Resource) -> Resource:
        body = {k: v for k, v in resource.items() if k != "resourceType"}
        created = self.client.resource(resource["resourceType"], **body)
        try:
            created.save()
        except BaseFHIRError as error:
            raise self._refused(error) from error
        return dict(created.serialize())

    def operation(self, resource_type: str, id_: str, name: str) -> Resource:
        try:
            return dict(self.client.execute(f"{resource_type}/{id_}/${name}", method="get"))
        except BaseFHIRError as error:
            raise self._refused(error) from error


class Fhirclient(Client):
    name = "fhirclient"

    def __init__(self, fhir_base: str, token: str) -> None:
        super().__init__(fhir_base, token)
        # the state a signed-in FHIRClient saves (fhirclient keeps its base with a trailing slash)
        self.server = FHIRServer(None, state={"base_uri": f"{fhir_base}/", "auth_type": "oauth2",
                                              "auth": {"access_token": token}})

    @staticmethod
    def _model(resource_type: str) -> Any:
        return getattr(importlib.import_module(f"fhirclient.models.{resource_type.lower()}"), resource_type)

    @staticmethod
    @contextmanager
    def _errors() -> Iterator[None]:
        """fhirclient's exceptions (its own for 401, 403 and 404, requests' otherwise) carry the
        response."""
        try:
            yield
        except (requests.HTTPError, FHIRUnauthorizedException, FHIRPermissionDeniedException,
                FHIRNotFoundException) as error:
            response = error.response
            raise Refused(response.status_code, response.json()) from error

    def transaction(self, bundle: Resource) -> Resource:
        # a Bundle model of type transaction creates itself at the base (fhirclient's createPath)
        with self._errors():
            return dict(FHIRClientBundle(bundle).create(self.server))

    def read(self, resource_type: str, id_: str) -> Resource:
        with self._errors():
            return dict(self._model(resource_type).read(id_, self.server).as_json())

    def search(self, resource_type: str, params: dict[str, str]) -> list[str]:
        search = self._model(resource_type).where(struct={**params, "_count": "7"})
        return [f"{r.resource_type}/{r.id}" for r in search.perform_resources_iter(self.server)]

    def everything(self, patient: str, count: int) -> Pages:
        page = FHIRClientBundle.read_from(f"Patient/{patient}/$everything?_count={count}", self.server).as_json()
        first, ids, pages = page, _keys(page), 1
        while (url := _next(page)) is not None:
            page = FHIRClientBundle.read_from(url, self.server).as_json()
            ids += _keys(page)
            pages += 1
        return Pages(pages, first.get("total"), ids)

    def patch(self, resource_type: str, id_: str, operations: Any) -> Resource:
        # fhirclient has no patch call: its own session, with the headers its auth signs
        headers = self.server.auth.signed_headers({"Content-Type": "application/json-patch+json",
                                                   "Accept": "application/fhir+json"})
        response = self.server.session.patch(urljoin(self.server.base_uri, f"{resource_type}/{id_}"),
                                             headers=headers, data=json.dumps(operations))
        with self._errors():
            self.server.raise_for_status(response)
        return dict(response.json())

    def create(self, resource: Resource) -> Resource:
        with self._errors():
            answer = self._model(resource["resourceType"])(resource).create(self.server)
        return dict(answer) if answer else {}

    def operation(self, resource_type: str, id_: str, name: str) -> Resource:
        with self._errors():
            return dict(self.server.request_json(f"{resource_type}/{id_}/${name}"))


class FhirKit(Client):
    """fhir-kit-client, through ``node client.mjs``: one Node process per call."""

    name = "fhir-kit-client"

    def __init__(self, fhir_base: str, token: str) -> None:
        super().__init__(fhir_base, token)
        if not (NODE_DIR / "node_modules" / "fhir-kit-client").is_dir():
            pytest.fail(f"fhir-kit-client is not installed: run `make test`, or `npm ci` in {NODE_DIR}")

    def run(self, *args: str) -> Any:
        node = shutil.which("node")
        assert node, "the interop tests need Node.js (20 or newer)"
        done = subprocess.run([node, "client.mjs", self.fhir_base, self.token, *args], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, f"client.mjs {args[0]} failed:\n{done.stdout}\n{done.stderr}"
        answer = json.loads(done.stdout)
        if not answer["ok"]:
            raise Refused(answer["status"], answer["outcome"])
        return answer["result"]

    def _with_file(self, command: str, resource: Resource, *before: str) -> Any:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "body.json"
            path.write_text(json.dumps(resource))
            return self.run(command, *before, str(path))

    def transaction(self, bundle: Resource) -> Resource:
        return dict(self._with_file("transaction", bundle))

    def read(self, resource_type: str, id_: str) -> Resource:
        return dict(self.run("read", f"{resource_type}/{id_}"))

    def search(self, resource_type: str, params: dict[str, str]) -> list[str]:
        query = "&".join(f"{k}={v}" for k, v in {**params, "_count": "7"}.items())
        return list(self.run("search", resource_type, query)["ids"])

    def everything(self, patient: str, count: int) -> Pages:
        result = self.run("everything", patient, str(count))
        return Pages(result["pages"], result["total"], result["ids"])

    def patch(self, resource_type: str, id_: str, operations: Any) -> Resource:
        return dict(self.run("patch", f"{resource_type}/{id_}", json.dumps(operations)))

    def create(self, resource: Resource) -> Resource:
        return dict(self._with_file("create", resource, resource["resourceType"]))

    def operation(self, resource_type: str, id_: str, name: str) -> Resource:
        return dict(self.run("operation", f"{resource_type}/{id_}", name))

    def export(self, path: str, query: str = "") -> Resource:
        return dict(self.run("export", path, *([query] if query else [])))


CLIENTS: dict[str, type[Client]] = {c.name: c for c in (Fhirpy, Fhirclient, FhirKit)}
