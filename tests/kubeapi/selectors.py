"""Label and field selectors, parsed and matched as the apiserver does.

Invariant: a selector string that the real apiserver rejects raises ``ApiError`` 400 here too;
an empty selector matches everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from tests.kubeapi.errors import bad_request

JSONDict = dict[str, Any]
Matcher = Callable[[JSONDict], bool]

_KEY = r"[A-Za-z0-9./_-]+"
_VALUE = r"[A-Za-z0-9._-]*"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_CMP = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


@dataclass(frozen=True)
class Requirement:
    """One clause: ``key op values`` with op in {=, !=, in, notin, exists, !}."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside a value set's parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """Parse the ``labelSelector`` query parameter."""
    reqs = []
    for part in _split(selector or ""):
        if m := _SET.match(part):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _CMP.match(part):
            reqs.append(Requirement(m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
        elif m := _EXISTS.match(part):
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise bad_request(f"unable to parse requirement: found '{part.strip()}', expected: in, notin, =, ==, !=, gt, lt")
    return reqs


def label_matcher(selector: str | None) -> Matcher:
    reqs = parse_label_selector(selector)

    def match(obj: JSONDict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in reqs)
    return match


def _dotted(obj: JSONDict, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def field_matcher(selector: str | None) -> Matcher:
    """Equality/inequality on dotted paths (``metadata.name=x``, ``status.phase!=Running``)."""
    clauses: list[tuple[str, bool, str]] = []
    for part in _split(selector or ""):
        m = re.match(r"^\s*([A-Za-z0-9.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        clauses.append((m.group(1), m.group(2) != "!=", m.group(3)))

    def match(obj: JSONDict) -> bool:
        return all((_dotted(obj, path) == value) == equal for path, equal, value in clauses)
    return match


def selector_matches(selector: JSONDict | None, labels: dict[str, str]) -> bool:
    """Match a structured LabelSelector (matchLabels + matchExpressions); None matches nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        req = Requirement(expr.get("key", ""), ops.get(expr.get("operator", ""), "in"), tuple(expr.get("values") or ()))
        if not req.matches(labels):
            return False
    return True
