"""What a ``Group`` is on this server: a care unit's own list of patients (R4 group.html), the
input of Group-level Bulk Data ``$export`` (``fhir/export.py``).

Only an actual group of persons whose members are Patients is kept (``type`` person, ``actual``
true, every ``member.entity`` a literal reference to a Patient): a definitional group, or one of
practitioners or devices, has no meaning for an export of patients' data. That each member is a
patient the unit may read is checked with every reference of a write (``Writer.check_references``:
one that is hidden and one that does not exist get the same 422), and who sees the Group at all
is the access rules' (``security/rules.py``, ``UNIT_OWN``).
"""

from __future__ import annotations

import re
from typing import Any

from patientkontrakt.fhir.errors import Issue

# A relative literal reference to a Patient on this server (R4 references.html#literal).
_PATIENT = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")


def group_issues(group: dict[str, Any]) -> list[Issue]:
    """What makes ``group`` something other than a list of patients."""
    issues = []
    if group.get("type") != "person":
        issues.append(Issue(code="business-rule", expression=("Group.type",),
                            diagnostics=f"Group.type must be person (a list of patients), not {group.get('type')!r}",
                            details_sv="En grupp här är en lista över patienter (type person)."))
    if group.get("actual") is not True:
        issues.append(Issue(code="business-rule", expression=("Group.actual",),
                            diagnostics="Group.actual must be true: a group here lists its members; one defined "
                                        "only by characteristics is not supported",
                            details_sv="Gruppen ska räkna upp sina medlemmar (actual true)."))
    for index, member in enumerate(group.get("member") or []):
        entity = member.get("entity") if isinstance(member, dict) else None
        reference = entity.get("reference") if isinstance(entity, dict) else None
        if not isinstance(reference, str) or not _PATIENT.match(reference):
            issues.append(Issue(code="business-rule", expression=(f"Group.member[{index}].entity",),
                                diagnostics=f"Group.member[{index}].entity must be a reference to a Patient "
                                            "on this server (Patient/[id])",
                                details_sv="En medlem i gruppen ska vara en patient."))
    return issues
