"""The form of ``/personal/enhet``: what staff type becomes contact details, or errors by field."""

from __future__ import annotations

from api.pages.unit import _form_of, _read_form
from patientkontrakt.domain.contact_paths import DAYS, Hours, Phone, PostalAddress, with_contact_details


def _post(**fields: str) -> dict[str, str]:
    rows = {f"{kind}-{i}-{part}": "" for kind in ("phone_hours", "opening") for i in range(3)
            for part in ("days", "start", "end")}
    return {"phone": "0123-101 10", "line": "", "postal_code": "", "city": "", "version": "3", **rows, **fields}


def test_rows_become_hours_and_the_postal_code_is_normalised() -> None:
    form, errors, phone, address, opening = _read_form(_post(**{
        "phone_hours-0-days": "mon-fri", "phone_hours-0-start": "08:00", "phone_hours-0-end": "10:00",
        "opening-1-days": "sat-sun", "line": "Storgatan 1", "postal_code": "12345", "city": "Exempelstad"}))
    assert errors == {}
    assert phone == Phone("0123-101 10", (Hours(DAYS[:5], "08:00", "10:00"),))
    assert address == PostalAddress("Storgatan 1", "123 45", "Exempelstad")
    assert opening == [Hours(("sat", "sun"), all_day=True)]  # no times: all day
    assert form["postal_code"] == "123 45"


def test_errors_name_their_fields() -> None:
    _form, errors, *_ = _read_form(_post(**{
        "phone": "ring oss", "postal_code": "1234",
        "phone_hours-0-days": "mon", "phone_hours-0-start": "10:00", "phone_hours-0-end": "09:00",
        "phone_hours-1-start": "08:00", "opening-0-days": "someday", "opening-1-days": "fri",
        "opening-1-start": "8", "opening-1-end": "16:00"}))
    assert set(errors) == {"phone", "postal_code", "phone_hours-0-end", "phone_hours-1-days", "opening-0-days",
                           "opening-1-start"}


def test_hours_need_a_phone_number() -> None:
    _form, errors, *_ = _read_form(_post(**{"phone": "", "phone_hours-0-days": "mon-sun"}))
    assert set(errors) == {"phone"}


def test_the_form_shows_what_is_stored() -> None:
    org = with_contact_details({"resourceType": "Organization", "id": "x", "name": "VC", "meta": {"versionId": "7"}},
                               Phone("010-1", (Hours(("mon", "wed"), "08:00", "09:00"),)), PostalAddress(),
                               (Hours(DAYS[:4], "08:00", "17:00"),))
    form = _form_of({**org, "meta": {"versionId": "7"}})
    assert form["phone"] == "010-1" and form["version"] == "7"
    # days no choice covers get a row each; at least one empty row to add more
    assert form["phone_hours"] == [{"days": "mon", "start": "08:00", "end": "09:00"},
                                   {"days": "wed", "start": "08:00", "end": "09:00"},
                                   {"days": "", "start": "", "end": ""}]
    assert form["opening"][0] == {"days": "mon-thu", "start": "08:00", "end": "17:00"}
    assert len(form["opening"]) == 3
