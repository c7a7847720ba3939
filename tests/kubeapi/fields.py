"""Field paths, managedFields and the patch flavours (merge, strategic merge, JSON patch, apply).

A field path is a tuple of elements in the managedFields ``FieldsV1`` vocabulary: ``f:name`` for a
map key, ``k:{"name":"web"}`` for an item of an associative list, ``.`` for "the item itself".
Ownership is tracked on *leaf* paths (scalars, empty maps, atomic lists); by construction no leaf
path is a prefix of another, so a set of leaf paths round-trips through FieldsV1 exactly.

Associative lists (merged by key rather than replaced) follow the Kubernetes schema for the common
cases: containers/env/volumes/... by ``name``, volumeMounts by ``mountPath``, ports by port number,
conditions by ``type``; any other list whose items all carry ``name`` is treated the same way.
Every other list is atomic: replaced whole, owned as one leaf.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from tests.kubeapi.errors import bad_request

JSONDict = dict[str, Any]
Path = tuple[str, ...]

_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "initContainers": ("name",), "ephemeralContainers": ("name",),
    "env": ("name",), "volumes": ("name",), "imagePullSecrets": ("name",), "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",), "conditions": ("type",), "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"), "resourceClaims": ("name",),
}
# Fields the apiserver owns; never part of anyone's managed set (as in structured-merge-diff).
_STRIPPED_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                  "managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")


def list_keys(name: str, items: list[Any]) -> tuple[str, ...] | None:
    """The key fields of list ``name``, or None if the list is atomic."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if name == "ports":
        port = "containerPort" if all("containerPort" in i for i in items) else "port"
        keys: tuple[str, ...] = (port, "protocol")
    else:
        keys = _LIST_KEYS.get(name, ("name",))
    return keys if all(keys[0] in i for i in items) else None


_KEY_DEFAULTS = {"protocol": "TCP"}


def item_key(item: JSONDict, keys: tuple[str, ...]) -> str:
    """The ``k:{...}`` element naming one associative-list item (defaulted key fields included)."""
    values = {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in keys if k in item or k in _KEY_DEFAULTS}
    return "k:" + json.dumps(values, separators=(",", ":"), sort_keys=True)


def managed_view(obj: JSONDict, with_status: bool) -> JSONDict:
    """The part of an object that field managers can own."""
    view = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if not with_status:
        view.pop("status", None)
    meta = {k: v for k, v in (view.get("metadata") or {}).items() if k not in _STRIPPED_META}
    if meta:
        view["metadata"] = meta
    else:
        view.pop("metadata", None)
    return view


def leaf_paths(value: Any, prefix: Path = (), name: str = "") -> set[Path]:
    """All owned leaf paths of ``value`` (see module docstring)."""
    if isinstance(value, dict):
        if not value:
            return {prefix} if prefix else set()
        out: set[Path] = set()
        for k, v in value.items():
            out |= leaf_paths(v, prefix + (f"f:{k}",), k)
        return out
    if isinstance(value, list):
        keys = list_keys(name, value)
        if keys is None:
            return {prefix}
        out = set()
        for item in value:
            item_path = prefix + (item_key(item, keys),)
            out.add(item_path + (".",))
            out |= leaf_paths(item, item_path)
        return out
    return {prefix}


def _step(cur: Any, element: str, parent_name: str) -> tuple[bool, Any]:
    if element.startswith("f:") and isinstance(cur, dict):
        key = element[2:]
        return (key in cur, cur.get(key))
    if element.startswith("k:") and isinstance(cur, list):
        keys = list_keys(parent_name, cur)
        for item in cur:
            if keys is not None and item_key(item, keys) == element:
                return (True, item)
        # fall back to the keys named in the element itself
        want = json.loads(element[2:])
        for item in cur:
            if isinstance(item, dict) and all(item.get(k) == v for k, v in want.items()):
                return (True, item)
    if element == ".":
        return (True, cur)
    return (False, None)


def get_path(obj: Any, path: Path) -> tuple[bool, Any]:
    """Follow ``path`` into ``obj``; (found, value)."""
    cur, name = obj, ""
    for element in path:
        found, cur = _step(cur, element, name)
        if not found:
            return (False, None)
        if element.startswith("f:"):
            name = element[2:]
    return (True, cur)


def delete_path(obj: JSONDict, path: Path) -> None:
    """Remove the field or list item at ``path`` if present."""
    if path and path[-1] == ".":
        path = path[:-1]
    if not path:
        return
    found, parent = get_path(obj, path[:-1])
    if not found:
        return
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        found, item = _step(parent, last, path[-2][2:] if len(path) > 1 else "")
        if found:
            parent.remove(item)


def to_fields_v1(paths: Iterable[Path]) -> JSONDict:
    root: JSONDict = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    return root


def from_fields_v1(doc: JSONDict, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for element, child in (doc or {}).items():
        path = prefix + (element,)
        if isinstance(child, dict) and child:
            out |= from_fields_v1(child, path)
        else:
            out.add(path)
    return out


def render_path(path: Path) -> str:
    """``.spec.template.spec.containers[name="web"].image``, as in SSA conflict messages."""
    out = ""
    for element in path:
        if element.startswith("f:"):
            out += "." + element[2:]
        elif element.startswith("k:"):
            keys = json.loads(element[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
    return out


@dataclass
class ManagerEntry:
    """One managedFields entry, with its FieldsV1 as a set of leaf paths."""

    manager: str
    operation: str
    api_version: str
    time: str
    paths: set[Path] = field(default_factory=set)
    subresource: str = ""

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.manager, self.operation, self.subresource)

    def as_dict(self) -> JSONDict:
        doc: JSONDict = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version,
                         "time": self.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(self.paths)}
        if self.subresource:
            doc["subresource"] = self.subresource
        return doc


def parse_entries(obj: JSONDict) -> list[ManagerEntry]:
    out = []
    for raw in (obj.get("metadata") or {}).get("managedFields") or []:
        out.append(ManagerEntry(raw.get("manager", ""), raw.get("operation", "Update"), raw.get("apiVersion", ""),
                                raw.get("time", ""), from_fields_v1(raw.get("fieldsV1") or {}),
                                raw.get("subresource", "")))
    return out


def entries_equal(a: list[ManagerEntry], b: list[ManagerEntry]) -> bool:
    """Same owners of the same fields, ignoring timestamps."""
    def norm(es: list[ManagerEntry]) -> list[tuple[Any, ...]]:
        return sorted((e.ident, e.api_version, tuple(sorted(e.paths))) for e in es)
    return norm(a) == norm(b)


def _entry(entries: list[ManagerEntry], manager: str, operation: str, api_version: str, now: str,
           subresource: str = "") -> ManagerEntry:
    for e in entries:
        if e.ident == (manager, operation, subresource):
            e.api_version = api_version
            return e
    e = ManagerEntry(manager, operation, api_version, now, set(), subresource)
    entries.append(e)
    return e


def record_update(entries: list[ManagerEntry], manager: str, api_version: str, now: str,
                  old_view: JSONDict, new_view: JSONDict, subresource: str = "") -> list[ManagerEntry]:
    """Ownership after a non-apply write: the writer takes every field it added or changed."""
    new_paths = leaf_paths(new_view)
    removed = leaf_paths(old_view) - new_paths
    changed = {p for p in new_paths if get_path(old_view, p) != get_path(new_view, p)}
    for e in entries:
        e.paths -= removed
        e.paths -= changed
    if changed:
        mine = _entry(entries, manager, "Update", api_version, now, subresource)
        mine.paths |= changed
        mine.time = now
    return [e for e in entries if e.paths]


@dataclass(frozen=True)
class ApplyConflict:
    manager: str
    api_version: str
    path: Path


def conflict_message(conflicts: list[ApplyConflict]) -> str:
    """Worded like structured-merge-diff's conflict error."""
    n = len(conflicts)
    head = f"Apply failed with {n} conflict{'s' if n > 1 else ''}: "
    by_manager: dict[tuple[str, str], list[Path]] = {}
    for c in conflicts:
        by_manager.setdefault((c.manager, c.api_version), []).append(c.path)
    blocks = []
    for (manager, api_version), paths in by_manager.items():
        if n == 1:
            blocks.append(f'conflict with "{manager}" using {api_version}: {render_path(paths[0])}')
        else:
            lines = "".join(f"\n- {render_path(p)}" for p in sorted(paths))
            blocks.append(f'conflicts with "{manager}" using {api_version}:{lines}')
    return head + "\n".join(blocks)


def merge_apply(live: Any, applied: Any, name: str = "") -> Any:
    """Merge an applied configuration into a live value: maps recursively, keyed lists by key."""
    if isinstance(live, dict) and isinstance(applied, dict):
        out = copy.deepcopy(live)
        for k, v in applied.items():
            out[k] = merge_apply(live[k], v, k) if k in live else copy.deepcopy(v)
        return out
    if isinstance(live, list) and isinstance(applied, list):
        keys = list_keys(name, live + applied)
        if keys is None:
            return copy.deepcopy(applied)
        merged = copy.deepcopy(live)
        index = {item_key(item, keys): i for i, item in enumerate(merged)}
        for item in applied:
            k = item_key(item, keys)
            if k in index:
                merged[index[k]] = merge_apply(merged[index[k]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(applied)


def apply_ownership(entries: list[ManagerEntry], manager: str, api_version: str, now: str, live_view: JSONDict,
                    applied_view: JSONDict, force: bool,
                    subresource: str = "") -> tuple[list[ManagerEntry], list[ApplyConflict], set[Path]]:
    """Compute ownership for an apply; return (entries, conflicts, paths to prune from the live object).

    A conflict is a field the applier sets to a value different from the live one while another
    manager owns it. Prunable paths were applied by this manager before, are absent from this
    apply, and nobody else owns them (or anything beneath them).
    """
    new_paths = leaf_paths(applied_view)
    mine = _entry(entries, manager, "Apply", api_version, now, subresource)
    others = [e for e in entries if e is not mine]
    conflicts: list[ApplyConflict] = []
    for p in sorted(new_paths):
        if p[-1] == ".":
            continue
        live = get_path(live_view, p)
        if not live[0] or live == get_path(applied_view, p):
            continue
        for e in others:
            if p in e.paths:
                conflicts.append(ApplyConflict(e.manager, e.api_version, p))
    if force:
        taken = {c.path for c in conflicts}
        for e in others:
            e.paths -= taken
        conflicts = []

    def claimed(p: Path, by: Iterable[Path]) -> bool:
        base = p[:-1] if p[-1] == "." else p
        return any(q[:len(base)] == base for q in by)

    other_paths = set().union(*(e.paths for e in others)) if others else set()
    prune = {p for p in mine.paths - new_paths if not claimed(p, new_paths) and not claimed(p, other_paths)}
    mine.paths = set(new_paths)
    mine.time = now
    return [e for e in entries if e.paths], conflicts, prune


def prune(obj: JSONDict, paths: set[Path], keep: set[Path]) -> None:
    """Delete ``paths`` (deepest first), then maps left empty that nobody in ``keep`` reaches into.

    Fields inside a list item that is itself pruned are skipped: the item goes whole (deleting its
    key fields first would make it impossible to find).
    """
    items = {p[:-1] for p in paths if p[-1] == "."}
    paths = {p for p in paths if p[-1] == "." or not any(p[:len(i)] == i for i in items)}
    for p in sorted(paths, key=len, reverse=True):
        delete_path(obj, p)
        parent = p[:-2] if p[-1] == "." else p[:-1]
        while len(parent) > 1:
            found, value = get_path(obj, parent)
            if not found or value not in ({}, []) or any(q[:len(parent)] == parent for q in keep):
                break
            delete_path(obj, parent)
            parent = parent[:-1]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target: Any, patch: Any, name: str = "") -> Any:
    """Strategic merge patch: merge patch, but keyed lists merge by key and honour ``$patch``."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
        if patch.get("$patch") == "delete":
            return None
        out = copy.deepcopy(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if k.startswith("$"):
                continue
            if v is None:
                out.pop(k, None)
                continue
            result = strategic_merge_patch(out.get(k), v, k)
            if result is None:
                out.pop(k, None)
            else:
                out[k] = result
        return out
    if isinstance(patch, list) and isinstance(target, list):
        keys = list_keys(name, target + [p for p in patch if isinstance(p, dict)])
        if keys is None:
            return copy.deepcopy(patch)
        merged = copy.deepcopy(target)
        for item in patch:
            k = item_key(item, keys)
            idx = next((i for i, cur in enumerate(merged) if item_key(cur, keys) == k), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    merged.pop(idx)
            elif idx is not None:
                merged[idx] = strategic_merge_patch(merged[idx], item)
            else:
                merged.append({kk: vv for kk, vv in item.items() if not kk.startswith("$")})
        return merged
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"the server rejected our request due to an error in our request: invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, list):
            cur = cur[int(part)]
        elif isinstance(cur, dict):
            cur = cur[part]
        else:
            raise KeyError(part)
    return cur


def json_patch(doc: JSONDict, ops: Any) -> JSONDict:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise bad_request("the server rejected our request due to an error in our request: a JSON patch is a list of operations")
    out = copy.deepcopy(doc)
    for op in ops:
        try:
            kind = op["op"]
            parts = _pointer(op["path"])
            if kind in ("move", "copy"):
                src = _pointer(op["from"])
                value = copy.deepcopy(_container(out, src))
                if kind == "move":
                    parent = _container(out, src[:-1])
                    del parent[int(src[-1]) if isinstance(parent, list) else src[-1]]
                kind, op = "add", {"value": value}
            parent = _container(out, parts[:-1])
            last = parts[-1] if parts else ""
            if kind == "test":
                if _container(out, parts) != op["value"]:
                    raise bad_request(f"the server rejected our request due to an error in our request: testing value {op['path']} failed")
            elif kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind == "replace":
                _container(out, parts)
                parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
            elif kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
                else:
                    parent[last] = copy.deepcopy(op["value"])
            else:
                raise bad_request(f"the server rejected our request due to an error in our request: unknown op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise bad_request(f"the server rejected our request due to an error in our request: json patch failed: {e}") from None
    return out
