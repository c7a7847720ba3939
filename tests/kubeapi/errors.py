"""Kubernetes API errors as the real apiserver reports them.

Invariant: every failure leaves the server as a ``kind: Status`` document with ``status: Failure``,
an HTTP ``code`` equal to the response status, a ``reason`` from the apimachinery vocabulary
(NotFound, AlreadyExists, Conflict, Invalid, BadRequest, ...) and messages worded like the real
apiserver's, so product code that reads ``ApiException.reason``/``status``/``body`` behaves the
same here as against a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class Cause:
    """One field error, rendered like apimachinery's ``field.Error``."""

    field: str
    reason: str
    message: str

    def as_dict(self) -> JSONDict:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def go_value(value: Any) -> str:
    """Format a value the way Go's ``%#v`` shows it in apiserver messages (strings quoted)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(str(k))}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + inner + "}"
    if value is None:
        return "null"
    return str(value)


def required(path: str, detail: str = "") -> Cause:
    """A field that must be set is missing."""
    return Cause(path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def invalid(path: str, value: Any, detail: str) -> Cause:
    """A field holds a value the API does not accept."""
    return Cause(path, "FieldValueInvalid", f"Invalid value: {go_value(value)}: {detail}")


def forbidden(path: str, detail: str) -> Cause:
    """A field may not be set or changed."""
    return Cause(path, "FieldValueForbidden", f"Forbidden: {detail}")


def unsupported(path: str, value: Any, supported: list[str]) -> Cause:
    """A field holds a value outside an enumeration."""
    allowed = ", ".join(json.dumps(s) for s in supported)
    return Cause(path, "FieldValueNotSupported", f"Unsupported value: {go_value(value)}: supported values: {allowed}")


def duplicate(path: str, value: Any) -> Cause:
    """A list item key occurs twice."""
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {go_value(value)}")


def too_long(path: str, limit: int) -> Cause:
    """A field exceeds its size limit."""
    return Cause(path, "FieldValueTooLong", f"Too long: must have at most {limit} bytes")


class ApiError(Exception):
    """A request failure that the HTTP layer turns into a ``Status`` response."""

    def __init__(self, code: int, reason: str, message: str, details: JSONDict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSONDict:
        """The ``Status`` body the apiserver would send."""
        doc: JSONDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            doc["details"] = self.details
        doc["code"] = self.code
        return doc


@dataclass(frozen=True)
class Target:
    """What a request addressed: enough to word NotFound/AlreadyExists/Conflict like the apiserver."""

    group: str
    plural: str
    kind: str
    name: str = ""

    @property
    def qualified(self) -> str:
        """``deployments.apps`` or ``pods``: the group-resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def details(self, **more: Any) -> JSONDict:
        doc: JSONDict = {"name": self.name}
        if self.group:
            doc["group"] = self.group
        doc["kind"] = self.plural
        doc.update(more)
        return doc


def not_found(t: Target) -> ApiError:
    return ApiError(404, "NotFound", f'{t.qualified} "{t.name}" not found', t.details())


def already_exists(t: Target) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{t.qualified} "{t.name}" already exists', t.details())


def conflict(t: Target, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {t.qualified} "{t.name}": {why}', t.details())


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def invalid_object(t: Target, causes: list[Cause]) -> ApiError:
    """422 Invalid, worded ``Deployment.apps "web" is invalid: <causes>``."""
    kind = f"{t.kind}.{t.group}" if t.group else t.kind
    text = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(str(c) for c in causes) + "]"
    details: JSONDict = {"name": t.name}
    if t.group:
        details["group"] = t.group
    details["kind"] = t.kind
    details["causes"] = [c.as_dict() for c in causes]
    return ApiError(422, "Invalid", f'{kind} "{t.name}" is invalid: {text}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unknown_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got "{content_type}")')


def too_large() -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)
