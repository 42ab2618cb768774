"""Server-rendered pages: Jinja2 templates, Swedish first, English on request.

Every string people read is in the message catalogues (``api/locale/<lang>/LC_MESSAGES/
messages.po``, gettext, managed with Babel: ``make messages``); templates only hold
``{{ _("…") }}``. The message ids are English, so English needs no catalogue; Swedish is the
default. The language is the ``pk_lang`` cookie if set (the switch on every page), else the
best of ``Accept-Language``, else Swedish. Catalogues are compiled in memory at start-up, so
there is no build step and no binary in the repository.
"""

from __future__ import annotations

import contextvars
import datetime
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from api.headers import allow_form_targets
from api.pages import labels
from patientkontrakt.domain import codes

HERE = Path(__file__).resolve().parent
LOCALES = HERE / "locale"
LANGUAGES = ("sv", "en")
DEFAULT_LANGUAGE = "sv"
LANGUAGE_COOKIE = "pk_lang"


def _load(language: str) -> NullTranslations:
    po = LOCALES / language / "LC_MESSAGES" / "messages.po"
    if not po.exists():
        return NullTranslations()
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer)


_TRANSLATIONS = {language: _load(language) for language in LANGUAGES}


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    return env


ENV = _environment()


def language_of(request: Request) -> str:
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    best: tuple[float, str] = (0.0, DEFAULT_LANGUAGE)
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        try:
            quality = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            quality = 0.0
        if primary in LANGUAGES and quality > best[0]:
            best = (quality, primary)
    return best[1]


def translator(language: str) -> NullTranslations:
    return _TRANSLATIONS.get(language, _TRANSLATIONS[DEFAULT_LANGUAGE])


def _format_date(value: Any) -> str:
    """2026-12-03 → 3 december 2026 (sv) / 3 December 2026 (en), from a date, datetime or ISO text."""
    if isinstance(value, str):
        try:
            value = datetime.date.fromisoformat(value[:10])
        except ValueError:
            return value
    if isinstance(value, datetime.datetime | datetime.date):
        return f"{value.day} {_MONTHS[_LANG.get()][value.month - 1]} {value.year}"
    return ""


def _format_datetime(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime.datetime):
        local = value.replace(tzinfo=datetime.UTC).astimezone() if value.tzinfo is None else value.astimezone()
        return f"{_format_date(local)} {local:%H:%M}"
    return ""


_MONTHS = {
    "sv": ("januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti", "september", "oktober",
           "november", "december"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
}
_LANG: contextvars.ContextVar[str] = contextvars.ContextVar("page_language", default=DEFAULT_LANGUAGE)


def render(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200,
           headers: dict[str, str] | None = None, form_targets: Iterable[str] = ()) -> HTMLResponse:
    """A page; ``form_targets``: URLs its forms may end at after redirects, besides the service
    (its Content-Security-Policy is set by ``api/headers.py``, like every response's)."""
    allow_form_targets(request, *form_targets)
    language = language_of(request)
    _LANG.set(language)
    translations = translator(language)
    template = ENV.get_template(name)
    defs = getattr(getattr(request.app.state, "service", None), "defs", None)
    def gettext(message: str, **values: Any) -> str:
        """Jinja's "newstyle" gettext: ``_("Hello %(name)s", name=x)``, values escaped."""
        text = translations.gettext(message)
        return Markup(escape(text)) % values if values else text

    def ngettext(singular: str, plural: str, number: int, **values: Any) -> str:
        text = translations.ngettext(singular, plural, number)
        return Markup(escape(text)) % {"num": number, **values}

    def say(message: Any) -> str:
        """A page's message: a message id, or a core message in both languages."""
        if hasattr(message, "sv") and hasattr(message, "en"):
            return str(message.sv if language == "sv" else message.en)
        return gettext(str(message))

    html = template.render(
        **context,
        _=gettext, gettext=gettext, ngettext=ngettext, say=say,
        lang=language, request=request, path=request.url.path, labels=labels,
        role_labels={**(defs.code_displays(codes.CARETEAM_ROLE, language) if defs else {}),
                     **{code: gettext(label) for code, label in labels.ROLE.items()}},
        kind_labels=defs.code_displays(codes.ACTIVITY_KIND, language) if defs else {},
        date=_format_date, datetime=_format_datetime,
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)
