"""The patient data of the tests, which no log may hold: every personnummer (and samordningsnummer)
and name of the demo region and of the patients in ``tests/data``, in every form they take.

The demo region (``DemoGenerator``) is loaded with seed 1 (``tests/security``, the live servers)
and seed 7 (``tests/domain/support.py``), anchored on today's local or UTC date; its names come
from the generator's lists (patients and staff alike). A number is found in its 12-digit form,
its 10-digit form, and with the separator (``19430305-0068``, ``430305-0068``, ``430305+0068``);
a name as written and as the search index stores it (casefolded, without accents:
``fiktivsson``, ``pahittad``).
"""

from __future__ import annotations

import datetime
import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from patientkontrakt.domain.demo import FAMILY_NAMES, FIRST_NAMES_F, FIRST_NAMES_M, DemoGenerator

SEEDS = (1, 7)
AGREEMENTS = 64  # more than any test loads
DATA = Path(__file__).resolve().parent / "data"
_NUMBER_SYSTEMS = ("personnummer", "samordningsnummer")
# Given names that are also English words a log line may hold in lower case.
_ENGLISH = frozenset({"per"})


def _folded(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def number_forms(number: str) -> set[str]:
    """A 12-digit personnummer in every form it is written."""
    short = number[2:]
    return {number, short, f"{number[:8]}-{number[8:]}", f"{short[:6]}-{short[6:]}", f"{short[:6]}+{short[6:]}"}


def _patients() -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    today = {datetime.date.today(), datetime.datetime.now(datetime.UTC).date()}
    for seed in SEEDS:
        for day in today:
            found.extend(resources[0] for resources in DemoGenerator(seed=seed, today=day).agreements(AGREEMENTS))
    for path in sorted(DATA.glob("patient-*.json")):
        found.append(json.loads(path.read_text()))
    return found


@lru_cache(maxsize=1)
def needles() -> tuple[frozenset[str], frozenset[str]]:
    """(every form of every number, every name)."""
    numbers: set[str] = set()
    names: set[str] = set(FIRST_NAMES_F) | set(FIRST_NAMES_M) | set(FAMILY_NAMES)
    for patient in _patients():
        for identifier in patient.get("identifier", []):  # type: ignore[attr-defined]
            if str(identifier.get("system", "")).endswith(_NUMBER_SYSTEMS):
                numbers |= number_forms(str(identifier["value"]))
        for name in patient.get("name", []):  # type: ignore[attr-defined]
            names.update(name.get("given", []))
            if name.get("family"):
                names.add(name["family"])
    return frozenset(numbers), frozenset(names)


@lru_cache(maxsize=1)
def _pattern() -> re.Pattern[str]:
    numbers, names = needles()
    folded = {_folded(n) for n in names} - _ENGLISH
    words = sorted(names | folded, key=len, reverse=True)
    digits = sorted(numbers, key=len, reverse=True)
    return re.compile(r"(?<![0-9])(?:" + "|".join(map(re.escape, digits)) + r")(?![0-9])"
                      r"|\b(?:" + "|".join(map(re.escape, words)) + r")\b")


def patient_data_in(text: str) -> list[str]:
    """Each personnummer or name found in ``text``, with a little of its context."""
    return [text[max(0, m.start() - 60):m.end() + 60].replace("\n", "⏎") for m in _pattern().finditer(text)]
