"""Field diffs between Kubernetes objects, in the paths a person reads in a plan.

Two comparisons, one path syntax (``spec.template.spec.containers[name=llm].image``,
``data["sources.yaml"]``):

- :func:`diff_object` compares what we would write with what is live, looking only at fields the
  rendered object sets (a subset comparison). It is the plan for a target that cannot dry-run (a
  k3s manifests directory): ``status``, server-filled metadata and defaulted fields never show.
- :func:`diff_result` compares the live object with the server's dry-run result of applying ours.
  Both come from the server, so defaulting, list-map keys, quantities and omitted empty values are
  the server's; only metadata the server rewrites on every write and ``status`` are set aside.

Lists of objects are matched by their merge key (``name``, ``containerPort``, ``mountPath``...),
other lists by position; quantities compare by value (``1Gi == 1073741824``).
"""

from __future__ import annotations

import re
from typing import Any

_MERGE_KEYS = ("name", "containerPort", "mountPath", "devicePath", "port", "ip")
_QUANTITY_HINTS = ("resources", "capacity", "sizeLimit", "storage", "allocatable")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Metadata the server rewrites on writes, and annotations edgebundle or controllers keep there:
#: never a change a person approves.
VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink")
VOLATILE_ANNOTATIONS = frozenset({"edgebundle.dev/revision", "deployment.kubernetes.io/revision"})


def _seg(path: str, key: str) -> str:
    if not _IDENT.match(key):
        return f'{path}["{key}"]'
    return f"{path}.{key}" if path else key


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for k in _MERGE_KEYS:
        vals = [i.get(k) for i in items]
        if all(v is not None for v in vals) and len(set(map(str, vals))) == len(vals):
            return k
    return None


def _index(items: Any, key: str) -> dict[str, Any]:
    return {str(i[key]): i for i in items or [] if isinstance(i, dict) and key in i} if isinstance(items, list) else {}


def _same(a: Any, b: Any, path: str) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if a == b:
        return True
    if any(h in path for h in _QUANTITY_HINTS) and isinstance(a, (str, int, float)) \
            and isinstance(b, (str, int, float)):
        from kubernetes.utils import parse_quantity  # here, not at import: the client costs ~0.3 s

        try:
            return bool(parse_quantity(a) == parse_quantity(b))
        except ValueError:
            return False
    return False


def _compare(desired: Any, live: Any, path: str, out: list[dict[str, str]]) -> None:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            out.append({"path": path or ".", "op": "change"})
            return
        for k, v in desired.items():
            if v is None or (not path and k == "status"):
                continue
            p = _seg(path, k)
            if k not in live or live[k] is None:
                out.append({"path": p, "op": "add"})
            else:
                _compare(v, live[k], p, out)
    elif isinstance(desired, list):
        if not isinstance(live, list):
            out.append({"path": path, "op": "change"})
            return
        key = _merge_key(desired)
        if key is None:
            if len(desired) != len(live):
                out.append({"path": path, "op": "change"})
                return
            for i, (d, lv) in enumerate(zip(desired, live)):
                _compare(d, lv, f"{path}[{i}]", out)
            return
        live_by = _index(live, key)
        for item in desired:
            p = f"{path}[{key}={item[key]}]"
            if str(item[key]) not in live_by:
                out.append({"path": p, "op": "add"})
            else:
                _compare(item, live_by[str(item[key])], p, out)
    elif not _same(desired, live, path):
        out.append({"path": path, "op": "change"})


def _removed(prev: Any, desired: Any, live: Any, path: str, out: list[dict[str, str]]) -> None:
    if isinstance(prev, dict) and isinstance(desired, dict):
        for k, v in prev.items():
            if v is None or (not path and k == "status"):
                continue
            p = _seg(path, k)
            live_v = live.get(k) if isinstance(live, dict) else None
            if desired.get(k) is None:
                if live_v is not None:
                    out.append({"path": p, "op": "remove"})
            else:
                _removed(v, desired[k], live_v, p, out)
    elif isinstance(prev, list) and isinstance(desired, list):
        key = _merge_key(prev)
        if key is None:
            return  # positional lists: a shorter list already shows as a change
        want, have = _index(desired, key), _index(live, key)
        for item in prev:
            k = str(item[key])
            p = f"{path}[{key}={k}]"
            if k not in want:
                if k in have:
                    out.append({"path": p, "op": "remove"})
            else:
                _removed(item, want[k], have.get(k), p, out)


def diff_object(desired: dict[str, Any], live: dict[str, Any],
                previous: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Field paths where ``live`` differs from ``desired`` (see the module docstring)."""
    out: list[dict[str, str]] = []
    _compare(desired, live, "", out)
    if previous is not None:
        _removed(previous, desired, live, "", out)
    return out


def comparable(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """``obj`` without ``status`` and the server's bookkeeping (see :data:`VOLATILE_METADATA`)."""
    if obj is None:
        return None
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(out.get("metadata") or {})
    for k in VOLATILE_METADATA:
        meta.pop(k, None)
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in VOLATILE_ANNOTATIONS}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


def _walk_both(before: Any, after: Any, path: str, out: list[dict[str, str]]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for k in sorted(set(before) | set(after), key=str):
            b, a = before.get(k), after.get(k)
            if a == b:
                continue
            p = _seg(path, str(k))
            if b is None:
                out.append({"path": p, "op": "add"})
            elif a is None:
                out.append({"path": p, "op": "remove"})
            else:
                _walk_both(b, a, p, out)
        return
    if isinstance(before, list) and isinstance(after, list):
        key = _merge_key(after) or _merge_key(before)
        if key is not None and (not before or _merge_key(before) == key) and (not after or _merge_key(after) == key):
            have, want = _index(before, key), _index(after, key)
            for k in list(dict.fromkeys([*want, *have])):
                p = f"{path}[{key}={k}]"
                if k not in have:
                    out.append({"path": p, "op": "add"})
                elif k not in want:
                    out.append({"path": p, "op": "remove"})
                elif have[k] != want[k]:
                    _walk_both(have[k], want[k], p, out)
            return
        if len(before) == len(after):
            for i, (b, a) in enumerate(zip(before, after)):
                if a != b:
                    _walk_both(b, a, f"{path}[{i}]", out)
            return
    if not _same(after, before, path):
        out.append({"path": path or ".", "op": "change"})


def diff_result(live: dict[str, Any], result: dict[str, Any]) -> list[dict[str, str]]:
    """What applying would change: the paths where the server's dry-run ``result`` differs from
    ``live`` (both as the server returned them; see :func:`comparable`)."""
    out: list[dict[str, str]] = []
    _walk_both(comparable(live), comparable(result), "", out)
    return out


def dropped_fields(request: Any, result: Any, path: str = "") -> list[str]:
    """Paths we sent with a value that the server's result does not have at all: fields its
    schema does not know (pruned), on servers without strict field validation.

    Empty values (``""``, ``{}``, ``[]``, null) are skipped: the server omits those legitimately.
    """
    out: list[str] = []
    if isinstance(request, dict):
        if not isinstance(result, dict):
            return out
        for k, v in request.items():
            if v in (None, "", {}, []):
                continue
            p = _seg(path, str(k))
            if k not in result:
                out.append(p)
            else:
                out.extend(dropped_fields(v, result[k], p))
    elif isinstance(request, list) and isinstance(result, list):
        key = _merge_key(request)
        if key is not None:
            got = _index(result, key)
            for item in request:
                k = str(item[key])
                if k in got:
                    out.extend(dropped_fields(item, got[k], f"{path}[{key}={k}]"))
        elif len(request) == len(result):
            for i, (a, b) in enumerate(zip(request, result)):
                out.extend(dropped_fields(a, b, f"{path}[{i}]"))
    return out
