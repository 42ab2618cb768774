"""The one ``_count``/``_offset`` check and the one builder of paging links."""

from __future__ import annotations

import pytest

from patientkontrakt.fhir.errors import BadRequest
from patientkontrakt.fhir.paging import MAX_OFFSET, page_links, page_number


@pytest.mark.parametrize("value", ["-1", "+5", " 5", "5.0", "abc", "", "٣", str(MAX_OFFSET + 1), "1" * 20])
def test_a_count_or_offset_is_a_plain_non_negative_integer(value: str) -> None:
    with pytest.raises(BadRequest) as refused:
        page_number("_offset", value)
    assert refused.value.issues[0].expression == ("_offset",)


def test_a_count_is_capped_not_refused() -> None:
    assert page_number("_count", "5000", 1000) == 1000
    assert page_number("_count", "0", 1000) == 0
    assert page_number("_offset", str(MAX_OFFSET)) == MAX_OFFSET


def test_the_links_of_a_middle_page_keep_the_other_parameters() -> None:
    links = {link["relation"]: link["url"] for link in page_links(
        "https://x/fhir/Goal", [("patient", "p1"), ("_count", "9"), ("_offset", "9")], 10, 20,
        has_next=True, total=45, ends=True)}
    assert links == {
        "self": "https://x/fhir/Goal?patient=p1&_count=10&_offset=20",
        "first": "https://x/fhir/Goal?patient=p1&_count=10",
        "previous": "https://x/fhir/Goal?patient=p1&_count=10&_offset=10",
        "next": "https://x/fhir/Goal?patient=p1&_count=10&_offset=30",
        "last": "https://x/fhir/Goal?patient=p1&_count=10&_offset=40",
    }


def test_a_first_page_has_no_previous_and_a_count_only_page_only_itself() -> None:
    assert [link["relation"] for link in page_links("u", [], 10, 0, has_next=False)] == ["self"]
    assert [link["relation"] for link in page_links("u", [], 0, 0, has_next=True, total=5, ends=True)] == ["self"]
    assert [link["relation"] for link in page_links("u", [], 10, 5, has_next=False)] == ["self", "previous"]
    assert page_links("u", [], 10, 5, has_next=False)[1]["url"] == "u?_count=10"
