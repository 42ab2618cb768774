"""``mitt/contact.html`` ("Så når du oss") rendered from the FHIR examples' agreement, in both
languages, with the out-of-hours settings (the browser tests cover the page as a whole)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from markupsafe import Markup, escape

from api.pages.views import agreement_view
from api.templating import ENV, translator
from patientkontrakt.config import PROJECT_ROOT, Settings

PROFILES = PROJECT_ROOT / "fhir_profiles" / "profiles"
ROLES = {"sv": {"fast-vardkontakt": "Fast vårdkontakt", "fast-lakarkontakt": "Fast läkarkontakt"},
         "en": {"fast-vardkontakt": "Named care coordinator", "fast-lakarkontakt": "Named doctor"}}


def _render(language: str, **settings: Any) -> str:
    examples = [json.loads(p.read_text(encoding="utf-8")) for p in PROFILES.glob("*.json")]
    bundle = {"entry": [{"resource": r} for r in examples if r["resourceType"] not in (
        "StructureDefinition", "CodeSystem", "ValueSet", "OperationDefinition")]}
    view = agreement_view(bundle)
    assert view is not None
    translations = translator(language)

    def gettext(message: str, **values: Any) -> str:
        text = translations.gettext(message)
        return Markup(escape(text)) % values if values else text

    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=Settings(**settings))))
    return ENV.get_template("mitt/contact.html").render(a=view, _=gettext, lang=language, request=request,
                                                        role_labels=ROLES[language])


def test_the_examples_agreement_in_swedish() -> None:
    html = _render("sv")
    assert "Fast vårdkontakt, Anna Andersson" in html
    assert 'Direktnummer: <a href="tel:+46101234521">+46 10 123 45 21</a>, svarar mån–tors 08.00–09.00' in html
    assert "Andra tider: ring Vårdcentralen Norr" in html
    # Erik Ek's direct number has no hours: no "other times"
    assert 'Fast läkarkontakt, Erik Ek</strong></p>\n      <p>Direktnummer: <a href="tel:+46101234530">' in html
    assert html.count("Andra tider") == 1
    assert "Telefontider: mån–fre 08.00–10.00" in html
    assert "Adress: Norra vägen 12, 123 45 Exempelstad" in html
    assert "Öppettider: mån–fre 08.00–17.00" in html
    assert '<a href="tel:1177">1177</a> (1177 Vårdguiden)' in html and '<a href="tel:112">112</a>' in html


def test_in_english() -> None:
    html = _render("en")
    assert "Direct number" in html and "answers Mon–Thu 08:00–09:00" in html
    assert "Telephone hours: Mon–Fri 08:00–10:00" in html
    assert "When the unit is closed" in html


@pytest.mark.parametrize("language", ["sv", "en"])
def test_the_regions_own_numbers_and_words(language: str) -> None:
    html = _render(language, advice_phone="0771-11 77 00", emergency_phone="112",
                   out_of_hours_text="Jourcentralen <Exempelstad> har öppet kvällar och helger.")
    assert '<a href="tel:0771-11 77 00">0771-11 77 00</a>.' in html and "1177 Vårdguiden" not in html
    assert "Jourcentralen &lt;Exempelstad&gt; har öppet kvällar och helger." in html  # as written, escaped
