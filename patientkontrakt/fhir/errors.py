"""The one hierarchy of errors the core raises (design §2).

Each error maps to an HTTP status and to OperationOutcome issues with a precise
``issue.code`` (http://hl7.org/fhir/R4/valueset-issue-type.html), ``diagnostics`` in
English, ``details.text`` in Swedish where a person may read it, and ``expression``
pointing at the element. ``api/errors.py`` renders them; nothing else does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()
    details_sv: str | None = None

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.details_sv:
            issue["details"] = {"text": self.details_sv}
        issue["diagnostics"] = self.diagnostics
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


@dataclass
class FhirError(Exception):
    """Base of every error the FHIR core raises; ``status`` is the HTTP status."""

    diagnostics: str
    expression: tuple[str, ...] = ()
    details_sv: str | None = None
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    status: ClassVar[int] = 400
    code: ClassVar[str] = "processing"
    default_sv: ClassVar[str] = "Begäran kunde inte behandlas."

    def __post_init__(self) -> None:
        super().__init__(self.diagnostics)
        if not self.issues:
            self.issues = [
                Issue(
                    code=self.code,
                    diagnostics=self.diagnostics,
                    expression=tuple(self.expression),
                    details_sv=self.details_sv or self.default_sv,
                )
            ]

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)

    def __str__(self) -> str:
        return self.diagnostics


class BadRequest(FhirError):
    status = 400
    code = "invalid"
    default_sv = "Begäran är felaktig."


class InvalidResource(FhirError):
    """The resource could not be parsed or failed basic FHIR rules (R4 http.html: 400)."""

    status = 400
    code = "invalid"
    default_sv = "Resursen är ogiltig."


class Unauthorized(FhirError):
    status = 401
    code = "login"
    default_sv = "Inloggning krävs."


class Forbidden(FhirError):
    status = 403
    code = "forbidden"
    default_sv = "Du saknar behörighet för detta."


class NotFound(FhirError):
    status = 404
    code = "not-found"
    default_sv = "Det efterfrågade hittades inte."


class HiddenResource(NotFound):
    """404 for a resource that exists but that the caller may not see, answered exactly like an
    absent one — or for the absent one itself. Both go to the access log as refused attempts
    (so that the log shows the same for both), ``resource`` (the hidden one, None when absent)
    giving the entry its patient."""

    def __init__(self, diagnostics: str, resource: Any, **kwargs: Any) -> None:
        super().__init__(diagnostics, **kwargs)
        self.resource = resource


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"
    default_sv = "Åtgärden stöds inte här."


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"
    default_sv = "Tjänsten svarar bara med FHIR JSON."


class Conflict(FhirError):
    status = 409
    code = "conflict"
    default_sv = "Ändringen krockar med lagrade uppgifter."


class Gone(FhirError):
    status = 410
    code = "deleted"
    default_sv = "Resursen har tagits bort."


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"
    default_sv = "Villkoret för ändringen uppfylls inte; någon annan kan ha ändrat resursen."


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-long"
    default_sv = "Innehållet är för stort."


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"
    default_sv = "Innehållstypen stöds inte; skicka FHIR JSON."


class Unprocessable(FhirError):
    """Valid FHIR that breaks a profile or business rule (R4 http.html: 422)."""

    status = 422
    code = "business-rule"
    default_sv = "Innehållet bryter mot en regel."


class ServerError(FhirError):
    status = 500
    code = "exception"
    default_sv = "Ett internt fel uppstod."


class ServiceUnavailable(FhirError):
    """The service cannot answer now (its database is unavailable); the same request may succeed
    later (R4 issue-type ``transient``; HTTP 503 with ``Retry-After``)."""

    status = 503
    code = "transient"
    default_sv = "Tjänsten är inte tillgänglig just nu. Försök igen om en stund."
