"""No patient data in any log of the whole test run (docs/operations.md#logging).

Runs after every other test of the session (``runs_last``, tests/conftest.py): it reads every log
record this process emitted (the service in-process, at DEBUG, tracebacks included) and the
output of every server process the tests started (tests/interop, tests/browser, tests/api), and
looks for each personnummer and name of the demo region and of ``tests/data`` in every form
(tests/patient_data.py). The tests meanwhile read, search and write patients by personnummer
and name, and some make the database fail on exactly those values (tests/api/test_logging.py).
"""

from __future__ import annotations

import pytest

from tests.conftest import SESSION_LOG, leaks_in, run_logs
from tests.patient_data import needles, patient_data_in


def test_the_search_for_patient_data_finds_every_form() -> None:
    """The needles are right: a leak in any of its forms would be found."""
    numbers, names = needles()
    sample = sorted(n for n in numbers if len(n) == 12)[0]
    for form in (sample, sample[2:], f"{sample[:8]}-{sample[8:]}", f"{sample[2:8]}-{sample[8:]}"):
        assert patient_data_in(f"error: invalid input syntax for type bigint: \"{form}\"")
    assert patient_data_in("[parameters: ('Patient', 'name', 'fiktivsson%', 1000)]")
    assert patient_data_in("DETAIL: Failing row contains (Påhittad, Åke)")
    assert patient_data_in("name=pahittad")
    assert "Fiktivsson" in names and "Anna" in names
    assert not patient_data_in("GET /fhir/Patient/{id_} 200 2.4ms; 1234567890123 rows; per request; Annan")


@pytest.mark.runs_last
def test_no_log_of_the_test_run_holds_a_personnummer_or_a_name() -> None:
    """In one process; under pytest-xdist the controller runs the same search over every
    worker's logs when the run ends (tests/conftest.py ``_CheckWorkerLogs``)."""
    assert SESSION_LOG, "the session's log records were not captured"
    found = leaks_in(run_logs())
    assert not found, found
