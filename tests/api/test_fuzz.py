"""No input a client can send makes the server answer 5xx (property-based, with Hypothesis).

Every test drives the whole app over HTTP semantics (``TestClient``) with generated requests:
arbitrary JSON, mutations of valid resources, raw bytes, batch/transaction Bundles, search
query strings for every served type, and random paths, methods and headers; each runs against
the bare FHIR engine (``client``) and against the service as deployed, with the Patientkontrakt
profiles and rules (``pk_client``). The properties:

* the status is below 500 (the ``client`` fixture re-raises an unhandled server exception, so
  a crash fails the test with its traceback, and Hypothesis shrinks the input);
* every status >= 400 carries an OperationOutcome as FHIR JSON;
* every other answer with a body is JSON.

Hypothesis runs a test body many times against one app and one database per test function,
seeded with valid resources (ours for the engine, the profile examples for the service); the
database fills up as examples run (writes may even delete the seeds); no assertion depends on
what is stored. Content-Length mismatches are out of scope.

The example counts keep the file at about a minute; ``PK_FUZZ_SCALE=10`` multiplies them for
a deeper run (``--hypothesis-seed=N`` varies it).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from api.rest import wants_plain_json
from patientkontrakt.config import PROJECT_ROOT, Settings
from patientkontrakt.fhir.definitions import load_definitions
from patientkontrakt.fhir.search.params import RESULT_PARAMS
from patientkontrakt.fhir.service import RESOURCE_TYPES
from tests.conftest import BASE_URL
from tests.factories import HSA, PNR, care_plan, care_team, goal, organization, patient, practitioner

pytestmark = [
    pytest.mark.slow,
    # A deprecated SQL construct is tomorrow's 500: fail on it today.
    pytest.mark.filterwarnings("error::sqlalchemy.exc.SADeprecationWarning"),
]

FHIR_JSON = "application/fhir+json"
BASE = f"{BASE_URL}/fhir"
TYPES = list(RESOURCE_TYPES)
_DEFS = load_definitions(Settings().profiles_dir)
PARAMS = {t: _DEFS.params_for(t) for t in TYPES}
REFERENCE_PARAMS = {t: [code for code, p in PARAMS[t].items() if p.type == "reference"] for t in TYPES}

# Seeded once per test function with these ids, so generated requests can hit real resources.
SEED_IDS = {
    "Patient": "fz-pat",
    "Organization": "fz-org",
    "Practitioner": "fz-prac",
    "PractitionerRole": "fz-role",
    "CareTeam": "fz-team",
    "Goal": "fz-goal",
    "CarePlan": "fz-plan",
    "Appointment": "fz-appt",
    "Provenance": "fz-prov",
}


def _valid_resources() -> dict[str, dict[str, Any]]:
    """One valid resource per served type, referencing each other (in seeding order)."""
    return {
        "Patient": patient(
            contained=[{"resourceType": "Organization", "id": "c1", "name": "Inbäddad"}],
            managingOrganization={"reference": "#c1"},
            telecom=[{"system": "phone", "value": "+46701234567", "use": "mobile"}],
            address=[{"line": ["Storgatan 1"], "city": "Umeå", "postalCode": "90325"}],
        ),
        "Organization": organization(type=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                         "organization-type", "code": "prov"}]}]),
        "Practitioner": practitioner(),
        "PractitionerRole": {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": "Practitioner/fz-prac"},
            "organization": {"reference": "Organization/fz-org"},
            "code": [{"text": "Fast vårdkontakt"}],
        },
        "CareTeam": care_team("fz-pat", ["Practitioner/fz-prac", "Organization/fz-org"]),
        "Goal": goal("fz-pat"),
        "CarePlan": care_plan(
            "fz-pat", "fz-team",
            author={"reference": "Organization/fz-org"},
            goal=[{"reference": "Goal/fz-goal"}],
            identifier=[{"system": HSA, "value": "plan-1"}],
            activity=[{"detail": {
                "status": "scheduled",
                "description": "Promenad varje dag",
                "scheduledPeriod": {"start": "2024-03-01", "end": "2024-06-01T12:00:00+01:00"},
                "performer": [{"reference": "Practitioner/fz-prac"}],
            }}],
        ),
        "Appointment": {
            "resourceType": "Appointment",
            "status": "booked",
            "start": "2024-05-01T09:00:00Z",
            "end": "2024-05-01T09:30:00Z",
            "participant": [
                {"actor": {"reference": "Patient/fz-pat"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/fz-prac"}, "status": "accepted"},
            ],
        },
        "Provenance": {
            "resourceType": "Provenance",
            "target": [{"reference": "CarePlan/fz-plan"}],
            "recorded": "2024-03-01T10:00:00.000+01:00",
            "agent": [{"who": {"reference": "Practitioner/fz-prac"}}],
        },
    }


VALID = _valid_resources()
# The examples of our profiles: valid for the service with its Patientkontrakt rules.
EXAMPLES = [json.loads(path.read_text()) for path in
            sorted((PROJECT_ROOT / "fhir_profiles" / "profiles").glob("*-pk-example-*.json"))]
_SEED_ORDER = ["Organization", "Practitioner", "PractitionerRole", "Patient", "CareTeam", "Goal", "Appointment"]
EXAMPLES.sort(key=lambda r: (_SEED_ORDER.index(r["resourceType"]) if r["resourceType"] in _SEED_ORDER else 99,
                             "partOf" in r))
# Valid resources per type, to mutate (a newly served type is searched at once, mutated once it has one).
BASES = {t: [r for r in [VALID.get(t), *EXAMPLES] if r is not None and r["resourceType"] == t] for t in TYPES}
WRITABLE = [t for t in TYPES if BASES[t]]
KNOWN_IDS = {t: [*([SEED_IDS[t]] if t in SEED_IDS else []), *(r["id"] for r in EXAMPLES if r["resourceType"] == t)]
             for t in TYPES}


def _seed(client: TestClient, resources: list[dict[str, Any]]) -> None:
    """PUT every resource, in as many rounds as their references to each other need."""
    pending, refused = [r for r in resources if r["resourceType"] in TYPES], []
    while pending:
        refused = [(r, response) for r in pending
                   if (response := client.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r)).status_code >= 300]
        if len(refused) == len(pending):
            break
        pending = [r for r, _ in refused]
    assert not refused, [f"{r['resourceType']}/{r['id']}: {response.text}" for r, response in refused]


@pytest.fixture(params=["engine", "service"])
def api(request: pytest.FixtureRequest) -> TestClient:
    """The bare FHIR engine (``client``) or the service as deployed (``pk_client``), each on its
    own clean database for the test function, seeded with resources valid for it."""
    if request.param == "engine":
        client: TestClient = request.getfixturevalue("client")
        _seed(client, [{**resource, "id": SEED_IDS[type_]} for type_, resource in VALID.items()])
    else:
        client = request.getfixturevalue("pk_client")
        _seed(client, EXAMPLES)
    return client


def check(response: httpx.Response) -> None:
    """The properties every answer must have."""
    request = response.request
    where = f"{request.method} {request.url} -> {response.status_code}"
    event(f"status {response.status_code}")
    assert response.status_code < 500, f"{where}: {response.text[:2000]}"
    if request.method == "HEAD":
        assert response.content == b"", where
        return
    # application/fhir+json, or application/json where that was asked for (api/rest.py)
    media_type = "application/json" if request.url.path.startswith("/fhir") and wants_plain_json(
        request.url.query, request.headers.get("accept")) else FHIR_JSON
    if response.status_code >= 400:
        assert response.headers.get("content-type", "").startswith(media_type), where
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome", where
        assert outcome["issue"], where
        for issue in outcome["issue"]:
            assert issue["severity"] in ("fatal", "error", "warning", "information"), where
            assert isinstance(issue["code"], str) and issue["code"], where
    elif response.content and request.url.path.startswith("/fhir"):
        assert response.headers.get("content-type", "").startswith(media_type), where
        assert isinstance(json.loads(response.content), dict), where


def to_json(value: Any) -> bytes:
    """JSON text as a careless client writes it: NaN/Infinity tokens, lone surrogates as escapes."""
    return json.dumps(value, allow_nan=True, ensure_ascii=True).encode()


def fuzz(max_examples: int) -> settings:
    """Settings for one property: ``max_examples`` times ``PK_FUZZ_SCALE`` (default 1)."""
    return settings(
        max_examples=round(max_examples * float(os.environ.get("PK_FUZZ_SCALE", "1"))),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )


def _q(text: str, safe: str = "") -> str:
    """Percent-encode; a lone surrogate goes out as its (invalid) UTF-8 bytes."""
    return quote(text, safe=safe, errors="surrogatepass")


# -- building blocks -----------------------------------------------------------------------

# Every code point, including controls, U+0000 and lone surrogates (sent as \\udXXX escapes).
ANY_CHAR = st.characters(exclude_categories=())
WEIRD_REFERENCES = [
    "Patient/", "/Patient/fz-pat", "Patient//fz-pat", "Patient/fz-pat/", "urn:uuid:x", "urn:uuid:", "urn:oid:1.2",
    "Patient?x=y", "Patient?", "Patient?identifier=" + PNR + "|191212121212", "Organization?name=Vård",
    "#c", "#", "#c1", "http://example.org/fhir/Patient/1", "https://example.org/", f"{BASE}/Patient/fz-pat",
    f"{BASE}/Patient/fz-pat/_history/1", f"{BASE}/Patient/", "Patient/fz-pat/_history/1",
    "Patient/fz-pat/_history/99999999999999999999", "Observation/1", "Group/1", "patient/fz-pat",
    "Patient/" + "a" * 65, "A" * 100 + "/x", "http://example.org/" + "B" * 100 + "/" + "c" * 100,
    "Patient/a b", "Patient/ä", "Patient/fz-pat?x=1", "Patient/\x00", "Patient/%2F", "CarePlan/fz-plan",
    "x" * 3000,
]
INTERESTING_STRINGS = [
    "", " ", "\t", "\x00", "a\x00b", "\x7f", "\ud800", "\udfff", "\u202e", "\ufeff", "é", "Å", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "null", "true", "0", "-1", "1e400", "NaN", "%00", "%", "../..", "\\", "|", "a,b", "*", "$",
    "'; DROP TABLE resource; --",
    "2024-13-45", "2024-02-30", "2024-02-29T25:00:00Z", "0001-01-01", "9999-12-31T23:59:59+14:00",
    "0000-01-01", "10000-01-01", "2024-03-01T10:00:00.1234567890Z", "2024", "2024-03", "T10:00",
    "http://", "urn:", "bogus", "active", "male", "fz-pat", "A" * 65, "é" * 600, "x" * 3000,
    "http://x/" + "s" * 3000, *WEIRD_REFERENCES,
]
LONG_NUMBERS = [0, -1, 1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**400),
                1e308, -1e308, 5e-324, -0.0, 0.1, float("nan"), float("inf"), float("-inf")]


def _scrambled(seed: int, length: int, low: int) -> str:
    """A long string of varied characters from ``low`` up, cheap to generate and to shrink."""
    codes = (low + (seed * 7919 * i) % 0xFFFF for i in range(1, length + 1))
    return "".join("x" if 0xD800 <= c <= 0xDFFF else chr(c) for c in codes)


# Long multi-byte strings that do not compress: what index size limits react to.
long_texts = st.builds(_scrambled, st.integers(1, 2**16), st.sampled_from([300, 600]),
                       st.sampled_from([0x800, 0x10000]))
texts = st.one_of(st.text(ANY_CHAR, max_size=30), st.sampled_from(INTERESTING_STRINGS), long_texts)
numbers = st.one_of(st.integers(), st.floats(), st.sampled_from(LONG_NUMBERS))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
FHIR_KEYS = [
    "resourceType", "id", "meta", "versionId", "lastUpdated", "profile", "extension", "url", "valueString",
    "reference", "contained", "identifier", "system", "value", "code", "coding", "display", "text", "status",
    "subject", "name", "family", "given", "period", "start", "end", "_birthDate", "_given", "active", "entry",
    "request", "method", "resource", "fullUrl", "type", "participant", "member",
]
keys = st.one_of(st.sampled_from(FHIR_KEYS), st.text(ANY_CHAR, max_size=12))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=25,
)


def _nested(depth: int, kind: str) -> dict[str, Any]:
    """A resource with ``depth`` levels of contained resources or of nested extensions."""
    if kind == "contained":
        node: dict[str, Any] = {"resourceType": "Organization", "id": f"c{depth}", "name": "x"}
        for level in range(depth - 1, 0, -1):
            node = {"resourceType": "Organization", "id": f"c{level}", "contained": [node]}
        return {"resourceType": "Patient", "contained": [node]}
    ext: dict[str, Any] = {"url": "http://example.org/x", "valueString": "x"}
    for _ in range(depth):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    return {"resourceType": "Patient", "extension": [ext]}


def _nested_text(depth: int, kind: str) -> bytes:
    """``_nested`` as JSON text, built without recursion (deeper than json.dumps can go)."""
    if kind == "contained":
        head = '{"resourceType":"Organization","id":"c","contained":['
        inner = '{"resourceType":"Organization","id":"c","name":"x"}'
    else:
        head = '{"url":"http://example.org/x","extension":['
        inner = '{"url":"http://example.org/x","valueString":"x"}'
    return f'{{"resourceType":"Patient","{kind}":[{head * depth}{inner}{"]}" * depth}]}}'.encode()


replacements = st.one_of(
    st.sampled_from([None, [], {}, "", "bogus", [None], [{}], [[]], {"reference": None}, {"reference": ""},
                     "x" * 70_000, "\U0001d518" * 3000]),
    st.sampled_from(WEIRD_REFERENCES).map(lambda r: {"reference": r}),
    st.sampled_from([r for bases in BASES.values() for r in bases]),
    st.builds(_nested, st.sampled_from([2, 10, 60, 120]), st.sampled_from(["contained", "extension"])),
    json_values,
).map(copy.deepcopy)


def _paths(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if len(here) > 12:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*here, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*here, index))


@st.composite
def mutated_resources(draw: st.DrawFn, type_: str | None = None) -> dict[str, Any]:
    """A valid resource with one to four random mutations (JSON-safe: sent through to_json)."""
    resource = json.loads(json.dumps(draw(st.sampled_from(BASES[type_ or draw(st.sampled_from(WRITABLE))]))))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(resource))))
        if not path:
            key = draw(keys)
            resource[key] = draw(replacements)
            continue
        parent = resource
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        op = draw(st.sampled_from(["delete", "replace", "replace", "string", "string", "wrap", "unwrap", "add",
                                   "retype"]))
        if op == "string" and isinstance(parent[last], str):
            parent[last] = draw(st.one_of(
                st.sampled_from(INTERESTING_STRINGS),
                st.builds(lambda old, new, front: new + old if front else old + new,
                          st.just(parent[last]), st.one_of(st.sampled_from(INTERESTING_STRINGS), texts), st.booleans()),
            ))
        elif op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(replacements)
        elif op == "wrap":
            parent[last] = [parent[last]]
        elif op == "unwrap" and isinstance(parent[last], list) and parent[last]:
            parent[last] = parent[last][0]
        elif op == "add" and isinstance(parent[last], dict):
            parent[last][draw(keys)] = draw(replacements)
        elif op == "retype":
            resource["resourceType"] = draw(st.one_of(st.sampled_from([*TYPES, "Observation", "Bundle", "patient"]),
                                                      texts, json_values))
    return resource


@st.composite
def serialised(draw: st.DrawFn, resource: Any) -> bytes:
    """``resource`` as JSON text, sometimes with a duplicated top-level key in front."""
    text = to_json(resource)
    if isinstance(resource, dict) and resource and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(resource, key=str)))
        text = b"{" + to_json(key) + b":" + to_json(draw(replacements)) + b"," + text[1:]
    return text


ids = st.one_of(
    st.sampled_from([*SEED_IDS.values(), *(r["id"] for r in EXAMPLES), "fz-new", "c1", "1", "a" * 64, "a" * 65,
                     "-", ".", "..", "a.b-c",
                     "a b", "ä", "a%00", "a%2Fb", "a/b", "$everything", "_history", "_search", "%FF", "x" * 300]),
    st.text(ANY_CHAR.filter(lambda c: c not in "/?#"), min_size=1, max_size=20),
)
versions = st.sampled_from(["1", "2", "0", "-1", "99999999999999999999", "999999999", "1000000000", "²", "١",
                            "1.0", "01", "x", " 1", "%00"])
etags = st.sampled_from(['W/"1"', 'W/"2"', '"1"', "1", 'W/"0"', 'W/""', "W/", "*", 'W/"99999999999999999999"',
                         'W/"x"', "", " ", 'W/"1", W/"2"', 'W/"²"'])
GOOD_CONTENT_TYPES = ["application/fhir+json", "application/json", "application/json+fhir",
                      "application/fhir+json; charset=utf-8", "application/fhir+json;fhirVersion=4.0"]
CONTENT_TYPES = [*GOOD_CONTENT_TYPES,
                 "application/fhir+xml", "application/xml", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "", "*/*", "application/FHIR+JSON", ";", "application/"]
GOOD_ACCEPTS = ["application/fhir+json", "application/json", "*/*", "application/*",
                "application/fhir+json;q=0.1, application/xml;q=0.9"]
ACCEPTS = [*GOOD_ACCEPTS, "application/fhir+xml", "text/html", "", ",", ";;", "*", "text/*",
           "application/fhir+json; fhirVersion=3.0"]
PREFERS = ["return=minimal", "return=representation", "return=OperationOutcome", "return=bogus", "handling=strict",
           "handling=lenient", "handling=strict, return=minimal", "respond-async", "", ";", "=", "return=",
           'return="minimal"', "handling=strict;return=minimal"]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)


def header_value(choices: list[str], good: list[str] | None = None) -> st.SearchStrategy[bytes]:
    """One of ``choices`` or arbitrary text; one of ``good`` (what real clients send) half the time."""
    odd = st.one_of(st.sampled_from(choices), header_text)
    value = st.one_of(st.sampled_from(good), odd) if good else odd
    return value.map(lambda s: s.encode("latin-1"))


headers = st.fixed_dictionaries({}, optional={
    "content-type": header_value(CONTENT_TYPES, GOOD_CONTENT_TYPES),
    "accept": header_value(ACCEPTS, GOOD_ACCEPTS),
    "prefer": header_value(PREFERS),
    "if-match": st.one_of(etags, header_text).map(lambda s: s.encode("latin-1")),
    "if-none-match": st.one_of(etags, header_text).map(lambda s: s.encode("latin-1")),
    "if-none-exist": st.sampled_from(["identifier=" + PNR + "|191212121212", "name=Tolvansson", "", "?", "x=y",
                                      "_id=fz-pat", "Patient?_id=fz-pat", "name:foo=x", "_id=a%00b",
                                      "identifier=a&identifier=b", "_count=1"]).map(str.encode),
    "if-modified-since": header_value(["Sat, 01 Jan 2000 00:00:00 GMT", "yesterday", ""]),
})


# -- search query strings ------------------------------------------------------------------

MODIFIERS = ["not", "missing", "exact", "contains", "below", "above", "text", "in", "of-type", "identifier",
             "iterate", "Patient", "Organization", "foo", "", "Patient.name", "missing:not"]
PREFIXES = ["eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap", "xx", "EQ", "e", "", "gtgt"]
RESULT_VALUES = {
    "_count": ["0", "1", "-1", "1000", "1001", "99999999999999999999", "1e3", "abc", "²", "١٢", " 5", "5 ", "0x10"],
    "_offset": ["0", "1", "-1", "20", "9223372036854775807", "9223372036854775808", "99999999999999999999",
                "1" * 5000, "²", "abc"],
    "_total": ["none", "estimate", "accurate", "bogus", "NONE"],
    "_summary": ["true", "false", "count", "data", "text", "bogus", "TRUE"],
    "_format": ["json", "application/fhir+json", "xml", "application/fhir+xml", "html", "json;q=1"],
    "_pretty": ["true", "false", "x"],
}
DATE_VALUES = ["2024", "2024-03", "2024-03-01", "2024-03-01T10:00", "2024-03-01T10:00:00Z",
               "2024-03-01T10:00:00.123+01:00", "0001-01-01", "9999-12-31", "9999-12-31T23:59:59-14:00",
               "0001-01-01T00:00:00+14:00", "2024-02-30", "2024-13", "24", "now", "", "2024-03-01T25:00:00Z"]


@st.composite
def search_values(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(
        st.builds(lambda p, d: p + d, st.sampled_from(PREFIXES), st.sampled_from(DATE_VALUES)),
        st.sampled_from([PNR + "|191212121212", "|191212121212", PNR + "|", "|", "||", "a\\|b", "a\\,b", "a\\",
                         "\\", "\\\\", "true", "false", "male", "active", "Tolvan", "tolv", "Umeå", "UMEA",
                         "Patient/fz-pat", "fz-pat", "Patient/", "urn:uuid:x", f"{BASE}/Patient/fz-pat",
                         "http://example.org/fhir/Patient/1", "Practitioner/fz-prac", "*", "%", "_", "%25",
                         "%00", "%FF", "%zz", "+", "x" * 600, "é" * 600]),
        texts,
    ), min_size=1, max_size=3))
    return ",".join(parts)


@st.composite
def search_pairs(draw: st.DrawFn, type_: str) -> list[tuple[str, str]]:
    params = sorted(PARAMS[type_])
    pairs = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["param", "param", "modifier", "chain", "result", "include", "random"]))
        if kind == "param":
            pairs.append((draw(st.sampled_from(params)), draw(search_values())))
        elif kind == "modifier":
            name = f"{draw(st.sampled_from(params))}:{draw(st.sampled_from(MODIFIERS))}"
            pairs.append((name, draw(st.one_of(st.sampled_from(["true", "false", "TRUE", ""]), search_values()))))
        elif kind == "chain":
            ref = draw(st.sampled_from(REFERENCE_PARAMS[type_] or params))
            target = draw(st.sampled_from([*TYPES, "Foo", ""]))
            child = draw(st.sampled_from([*PARAMS[target if target in PARAMS else "Patient"], "foo", "name.family"]))
            modifier = f":{target}" if target and draw(st.booleans()) else ""
            tail = f":{draw(st.sampled_from(MODIFIERS))}" if draw(st.booleans()) else ""
            pairs.append((f"{ref}{modifier}.{child}{tail}", draw(search_values())))
        elif kind == "result":
            name = draw(st.sampled_from(sorted(RESULT_PARAMS)))
            if name == "_sort":
                keys_ = draw(st.lists(st.sampled_from([*params, "foo", "", "-", "--name", "_score"]), max_size=3))
                value = ",".join(("-" if draw(st.booleans()) else "") + k for k in keys_)
            elif name == "_elements":
                value = ",".join(draw(st.lists(st.sampled_from(["id", "name", "meta", "identifier", "name.family",
                                                                 "", "*", "foo", "_birthDate"]), max_size=4)))
            elif name in RESULT_VALUES:
                value = draw(st.one_of(st.sampled_from(RESULT_VALUES[name]), texts))
            else:
                value = draw(texts)
            pairs.append((name, value))
        elif kind == "include":
            name = draw(st.sampled_from(["_include", "_revinclude", "_include:iterate", "_revinclude:iterate",
                                         "_include:recurse", "_include:foo", "_includes"]))
            source = draw(st.sampled_from([*TYPES, "Foo", "*"]))
            code = draw(st.sampled_from([*REFERENCE_PARAMS.get(source, []), "name", "foo", "*", ""]))
            target = draw(st.sampled_from(["", ":Patient", ":Foo", ":Organization:x"]))
            value = "*" if source == "*" else f"{source}:{code}{target}"
            pairs.append((name, draw(st.one_of(st.just(value), texts))))
        else:
            pairs.append((draw(st.one_of(texts, st.sampled_from(["_has:CarePlan:patient:status", "_id:below",
                                                                  "_lastUpdated:missing", "_text", "_content",
                                                                  "_list", "_query", "_filter", "_type"]))),
                          draw(search_values())))
    return pairs


@st.composite
def query_strings(draw: st.DrawFn, type_: str) -> str:
    """A query string, each part percent-encoded more or less strictly (or not at all)."""
    safe = draw(st.sampled_from(["", ":,|.-", ":,|.-$*\\", ":,|.-$*\\%"]))
    parts = [f"{_q(k, safe)}={_q(v, safe)}" for k, v in draw(search_pairs(type_))]
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(["&", "=", "==", "a", "=x", "%", "%%", "&&x=1", ";", "x=%E9", "x=%C3%28"])))
    return "&".join(parts)


def known_ids(type_: str) -> st.SearchStrategy[str]:
    """The id of a seeded resource of ``type_`` (of a Patient for other segments)."""
    return st.sampled_from(KNOWN_IDS.get(type_) or KNOWN_IDS["Patient"])


typed_ids = st.sampled_from(TYPES).flatmap(lambda t: st.tuples(st.just(t), known_ids(t)))


# -- the properties ------------------------------------------------------------------------


@fuzz(120)
@given(body=json_values, as_resource=st.booleans(), where=st.integers(0, 5), typed=typed_ids)
def test_arbitrary_json_bodies(api: TestClient, body: Any, as_resource: bool, where: int,
                               typed: tuple[str, str]) -> None:
    type_, target = typed
    if as_resource and isinstance(body, dict):
        body = {**body, "resourceType": type_}
    content = to_json(body)
    if where == 0:
        check(api.post(f"/fhir/{type_}", content=content))
    elif where == 1:
        check(api.put(f"/fhir/{type_}/{target}", content=content))
    elif where == 2:
        check(api.put(f"/fhir/{type_}?_id={target}", content=content))
    elif where == 3:
        check(api.post("/fhir", content=content))
    elif where == 4:
        check(api.post("/fhir", content=to_json({"resourceType": "Bundle", "type": "transaction", "entry": body})))
    else:
        check(api.post("/fhir", content=to_json({"resourceType": "Bundle", "type": "batch",
                                                 "entry": [{"request": {"method": "POST", "url": type_},
                                                            "resource": body}]})))


@fuzz(200)
@given(data=st.data(), type_=st.sampled_from(WRITABLE), how=st.integers(0, 8))
def test_mutated_resources(api: TestClient, data: st.DataObject, type_: str, how: int) -> None:
    resource = data.draw(mutated_resources(type_))
    if how == 0:
        check(api.post(f"/fhir/{type_}", content=data.draw(serialised(resource))))
        return
    if how == 1:
        id_ = data.draw(st.one_of(known_ids(type_), ids))
        if isinstance(resource, dict) and data.draw(st.booleans()):
            resource["id"] = id_
        check(api.put(f"/fhir/{type_}/{_q(id_)}", content=data.draw(serialised(resource)),
                      headers={"if-match": data.draw(etags).encode("latin-1")} if data.draw(st.booleans()) else {}))
        return
    if how == 2:
        check(api.put(f"/fhir/{type_}?{data.draw(query_strings(type_))}", content=data.draw(serialised(resource))))
        return
    if how == 3:
        check(api.post(f"/fhir/{type_}", content=data.draw(serialised(resource)),
                       headers={"if-none-exist": data.draw(query_strings(type_)),
                                "prefer": data.draw(st.sampled_from(PREFERS))}))
        return
    if how in (7, 8):
        params = _q(data.draw(st.sampled_from(["", "mode=create", "mode=update", "mode=delete", "mode=bogus",
                                               "profile=https://patientkontrakt.se/fhir/StructureDefinition/pk-patient",
                                               "profile=http://example.org/none", "mode=update&mode=create"])), "=&")
        if data.draw(st.booleans()):
            resource = {"resourceType": "Parameters", "parameter": [
                {"name": "resource", "resource": resource},
                {"name": data.draw(st.sampled_from(["mode", "profile", "foo"])), "valueCode": data.draw(texts)}]}
        instance = "" if how == 7 else _q(data.draw(st.one_of(known_ids(type_), ids))) + "/"
        where = f"{type_}/{instance}$validate"
        check(api.post(f"/fhir/{where}?{params}", content=data.draw(serialised(resource))))
        return
    kind = "transaction" if how in (4, 5) else "batch"
    entry = {"fullUrl": "urn:uuid:6f1b0f52-0b8e-4a51-9d61-5d2f0b0e6d11", "resource": resource,
             "request": {"method": "PUT" if how == 5 else "POST",
                         "url": f"{type_}/{data.draw(known_ids(type_))}" if how == 5 else type_}}
    check(api.post("/fhir", content=to_json({"resourceType": "Bundle", "type": kind, "entry": [entry]})))


def _truncated(draw: st.DrawFn) -> bytes:
    text = to_json(draw(st.sampled_from(BASES[draw(st.sampled_from(WRITABLE))])))
    return text[: draw(st.integers(0, len(text) - 1))]


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "truncated", "bad-utf8", "encoding", "framing"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        return _truncated(draw)
    valid = json.dumps(draw(st.sampled_from(BASES[draw(st.sampled_from(WRITABLE))])), ensure_ascii=False).encode()
    if kind == "bad-utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                                    b"\xe2\x82", b"\x80", b"\x00", b"\xef\xbb\xbf"]))
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + bad + valid[at:]
    if kind == "encoding":
        text = valid.decode()
        return draw(st.sampled_from([b"\xef\xbb\xbf" + valid, text.encode("utf-16"), text.encode("utf-32"),
                                     text.encode("latin-1", errors="replace")]))
    return draw(st.sampled_from([valid + b"garbage", valid + b"{}", b"[" + valid + b"]", valid * 2, b" \n\t " + valid,
                                 b"null", b"[]", b'""', b"1e999999", b"-", b"{" * 2000 + b"}" * 2000,
                                 b"[" * 5000, b'{"resourceType":"Patient"' + b',"a":1' * 5000 + b"}",
                                 *(_nested_text(depth, kind) for depth in (150, 300, 600, 1100)
                                   for kind in ("contained", "extension"))]))


@fuzz(150)
@given(body=raw_bodies(), typed=typed_ids, where=st.integers(0, 4),
       content_type=st.one_of(st.sampled_from(GOOD_CONTENT_TYPES), st.sampled_from(CONTENT_TYPES)))
def test_raw_bodies(api: TestClient, body: bytes, typed: tuple[str, str], where: int, content_type: str) -> None:
    type_, target = typed
    header = {"content-type": content_type}
    if where == 0:
        check(api.post(f"/fhir/{type_}", content=body, headers=header))
    elif where == 1:
        check(api.put(f"/fhir/{type_}/{target}", content=body, headers=header))
    elif where == 2:
        check(api.post("/fhir", content=body, headers=header))
    elif where == 3:
        check(api.post(f"/fhir/{type_}/_search", content=body, headers=header))
    else:
        check(api.put(f"/fhir/{type_}?_id={target}", content=body, headers=header))


FULL_URLS = [f"urn:uuid:00000000-0000-4000-8000-00000000000{i}" for i in range(4)]
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "get", "Post", "", "OPTIONS"]


@st.composite
def bundle_urls(draw: st.DrawFn) -> str:
    type_ = draw(st.sampled_from([*TYPES, "Observation", "", "patient", "Bundle"]))
    id_ = draw(st.one_of(known_ids(type_), ids))
    return draw(st.sampled_from([
        type_, f"{type_}/{id_}", f"{type_}/{id_}/_history/{draw(versions)}", f"{type_}/{id_}/_history",
        f"{type_}?{draw(query_strings(type_ if type_ in PARAMS else 'Patient'))}", f"{BASE}/{type_}/{id_}",
        f"{BASE}/{type_}", f"http://elsewhere.example/fhir/{type_}/{id_}", "", "/", "?", "/fhir/Patient",
        f"{type_}/{id_}/x/y/z", f"{type_}/{id_}/$everything", "metadata", "_history", f"{type_}/_search",
        f"{type_}/{id_}/_history/1/x",
    ]))


@st.composite
def bundle_resources(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["valid", "mutated", "linked", "json"]))
    if kind == "valid":
        return json.loads(json.dumps(draw(st.sampled_from(BASES[draw(st.sampled_from(WRITABLE))]))))
    if kind == "mutated":
        return draw(mutated_resources())
    if kind == "linked":
        return {**VALID["CarePlan"],
                "subject": {"reference": draw(st.sampled_from([*FULL_URLS, *WEIRD_REFERENCES]))},
                "careTeam": [{"reference": draw(st.sampled_from([*FULL_URLS, "CareTeam?status=active"]))}]}
    return draw(json_values)


@st.composite
def bundle_entries(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    request: dict[str, Any] = {"method": draw(st.one_of(st.sampled_from(METHODS), json_values)),
                               "url": draw(st.one_of(bundle_urls(), json_values))}
    for field in ("ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince"):
        if draw(st.integers(0, 4)) == 0:
            request[field] = draw(st.one_of(etags, st.just("identifier=" + PNR + "|191212121212"), json_values))
    entry: dict[str, Any] = {"request": request}
    if draw(st.integers(0, 3)):
        entry["resource"] = draw(bundle_resources())
    if draw(st.booleans()):
        entry["fullUrl"] = draw(st.one_of(st.sampled_from([*FULL_URLS, f"{BASE}/Patient/fz-pat", ""]), json_values))
    if draw(st.integers(0, 9)) == 0:
        del entry["request"]
    return entry


@fuzz(120)
@given(kind=st.one_of(st.sampled_from(["batch", "transaction"]), json_values),
       entries=st.one_of(st.lists(bundle_entries(), max_size=6), json_values),
       prefer=st.sampled_from(PREFERS), extra=st.dictionaries(keys, json_values, max_size=2))
def test_bundles(api: TestClient, kind: Any, entries: Any, prefer: str, extra: dict[str, Any]) -> None:
    bundle = {**extra, "resourceType": "Bundle", "type": kind, "entry": entries}
    check(api.post("/fhir", content=to_json(bundle), headers={"prefer": prefer}))


@fuzz(250)
@given(data=st.data(), type_=st.sampled_from(TYPES), how=st.integers(0, 5),
       prefer=st.sampled_from(["handling=strict", "handling=lenient", ""]))
def test_search(api: TestClient, data: st.DataObject, type_: str, how: int, prefer: str) -> None:
    query = data.draw(query_strings(type_))
    hdrs = {"prefer": prefer}
    if how <= 2:
        check(api.get(f"/fhir/{type_}?{query}", headers=hdrs))
    elif how == 3:
        check(api.post(f"/fhir/{type_}/_search", content=query.encode(),
                       headers={**hdrs, "content-type": "application/x-www-form-urlencoded"}))
    elif how == 4:
        check(api.delete(f"/fhir/{type_}?{query}", headers=hdrs))
    else:
        seed = f"/fhir/{type_}/{data.draw(known_ids(type_))}"
        overview = data.draw(st.sampled_from(["Patient", "CarePlan"]))
        overview = f"/fhir/{overview}/{_q(data.draw(st.one_of(known_ids(overview), ids)))}/$patientkontrakt"
        path = data.draw(st.sampled_from(["/fhir/_history", f"/fhir/{type_}/_history", f"{seed}/_history", seed,
                                          overview]))
        extra = "&".join(f"{k}={_q(v)}" for k, v in data.draw(st.lists(st.tuples(
            st.sampled_from(["_since", "_at", "_count", "_offset", "_summary", "_elements", "_format", "_list"]),
            st.one_of(st.sampled_from(DATE_VALUES + RESULT_VALUES["_count"] + RESULT_VALUES["_offset"]), texts),
        ), max_size=3)))
        check(api.get(f"{path}?{extra}&{query}" if data.draw(st.booleans()) else f"{path}?{extra}"))


SEGMENTS = [*TYPES, "Observation", "AuditEvent", "Subscription", "patient", "", "_history", "_search",
            "metadata", "$validate", "$everything", "$patientkontrakt", "%2F", "%00", "%FF", "..", ".", "a b",
            "é", "x" * 300, "*", "fz-pat", "1"]


@st.composite
def paths(draw: st.DrawFn) -> str:
    type_ = draw(st.sampled_from(SEGMENTS))
    id_ = draw(st.one_of(known_ids(type_), ids))
    shape = draw(st.sampled_from([
        f"/fhir/{type_}", f"/fhir/{type_}/{id_}", f"/fhir/{type_}/{id_}/_history",
        f"/fhir/{type_}/{id_}/_history/{draw(versions)}", f"/fhir/{type_}/{id_}/_history/{draw(versions)}/x",
        "/fhir", "/fhir/", "/fhir//", "/fhir/metadata", "/fhir/_history", f"/fhir/{type_}/_history",
        f"/fhir/{type_}/_search", f"/fhir/{type_}/{id_}/{draw(st.sampled_from(SEGMENTS))}",
        "/" + "/".join(draw(st.lists(st.sampled_from(SEGMENTS), max_size=5))),
    ]))
    encoded = _q(shape, draw(st.sampled_from(["/", "/%", "/%$*"])))
    if draw(st.booleans()):
        encoded += "?" + draw(query_strings(type_ if type_ in PARAMS else "Patient"))
    return encoded


@fuzz(250)
@given(method=st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
                        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]),
                        st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=1, max_size=8)),
       path=paths(), hdrs=headers,
       body=st.one_of(st.none(), st.sampled_from([*VALID.values(), *EXAMPLES]).map(to_json), raw_bodies(),
                      json_values.map(to_json)))
def test_paths_methods_headers(api: TestClient, method: str, path: str, hdrs: dict[str, bytes],
                               body: bytes | None) -> None:
    if body is not None and "content-type" not in hdrs:
        hdrs = {**hdrs, "content-type": FHIR_JSON.encode()}
    request = api.build_request(method, path, content=body, headers=hdrs)
    if "content-type" not in hdrs:
        del request.headers["content-type"]  # the fixture's default, not this example's
    check(api.send(request))
