"""Rebuilding the search index when the search parameters change.

The index rows and ``resource.patient_id`` are extracted at write time from the
SearchParameter definitions and the Patient CompartmentDefinition. When those change (a new
release registers a parameter), resources stored before lack the new rows. ``ensure_current``
compares a fingerprint of the definitions with the one the database was indexed with
(``server_state``) and re-extracts everything when they differ; ``patientkontrakt migrate``
runs it after the schema migrations, and ``patientkontrakt reindex`` forces it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

import orjson

from patientkontrakt.fhir.definitions import Definitions
from patientkontrakt.fhir.service import FhirService

log = logging.getLogger("patientkontrakt.reindex")
STATE_KEY = "search-index"
BATCH = 500


# How the rows and the patient are derived from the definitions; bumped when that code changes
# so that existing databases are re-extracted. 2: a Provenance's patient is its targets' (it was
# left empty, so patients could not read the Provenance of their own agreement). 3: the domain
# derives the owner of rows stored without one and what each Consent says (``hooks.reindexed``).
DERIVATION = 3


def fingerprint(defs: Definitions) -> str:
    """What the index depends on: every registered parameter's base, code, type and expression,
    the patient compartment, and the version of the code that derives them."""
    params = sorted({(base, p.code, p.type, p.expression)
                     for base, by_code in defs.search_params.items() for p in by_code.values()})
    compartment = sorted(defs.patient_compartment.items())
    return hashlib.sha256(orjson.dumps([params, compartment, DERIVATION])).hexdigest()


async def reindex(service: FhirService) -> int:
    """Re-extract the index rows and patient of every current resource; returns how many."""
    count, after = 0, 0
    while True:
        async with service.store.writing() as unit:
            batch = await unit.current_batch(after, BATCH)
            for stored in batch:
                tables = list(service.indexer.extract(orjson.loads(stored.body), service.base).tables())
                await unit.write_index(stored.pk, stored.type, tables, replace=True)
                patient = await service.writer.patient_of(unit, stored.type, stored.id, tables)
                await unit.set_patient(stored.pk, patient)
                await service.writer.hooks.reindexed(unit, replace(stored, patient_id=patient))
        if not batch:
            return count
        count += len(batch)
        after = batch[-1].pk


async def ensure_current(service: FhirService) -> int | None:
    """Reindex if the definitions changed since the database was indexed; None if nothing to do."""
    wanted = fingerprint(service.defs)
    async with service.store.reading() as unit:
        indexed = await unit.state(STATE_KEY)
    done = None
    if indexed != wanted:
        done = await reindex(service)
        log.info("reindexed %d resources for changed search parameters", done)
    async with service.store.writing() as unit:
        await unit.set_state(STATE_KEY, wanted)
    return done
