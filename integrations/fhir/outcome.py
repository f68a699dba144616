"""OperationOutcome: the body of every FHIR error (and of single-resource write answers).

https://hl7.org/fhir/R4/operationoutcome.html — ``issue.code`` comes from the IssueType value
set; ``expression`` is a FHIRPath to the element at fault. Diagnostics never carry PHI: they
name fields and reason codes, never values.
"""

from __future__ import annotations

# HTTP status → IssueType code for errors raised outside the FHIR mapping (DRF, auth, routing).
_STATUS_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                 406: "not-supported", 409: "conflict", 413: "too-costly", 415: "not-supported", 422: "processing",
                 429: "throttled"}


def issue(code: str, diagnostics: str, expression: str | list[str] | None = None,
          severity: str = "error") -> dict:
    item = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        item["expression"] = [expression] if isinstance(expression, str) else list(expression)
    return item


def outcome(issues: list[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues}


def code_for_status(status: int) -> str:
    return _STATUS_CODES.get(status, "exception" if status >= 500 else "invalid")


class FhirError(Exception):
    """A rejected request or entry: an HTTP status and the OperationOutcome issues explaining it."""

    def __init__(self, status: int, issues: list[dict]):
        super().__init__(f"FHIR request rejected ({status})")
        self.status = status
        self.issues = issues


def reject(status: int, code: str, diagnostics: str, expression: str | None = None) -> FhirError:
    return FhirError(status, [issue(code, diagnostics, expression)])
