"""Strict input documents: one pydantic schema per document, and refusals a user can act on.

Every document a user writes or a tool hands on (the bundle spec, ``bundles.lock``, the site file,
plans, approvals, validation records) is checked against its schema before anything reads a field.
A refusal names the file, the line (YAML and JSON keep their line numbers), the key path, and
either the closest valid key ("did you mean `models`?") or the expected type. Nothing is coerced:
``threshold: 1.9`` and ``threshold: "2"`` are refused, not rounded or parsed.

Invariants: a document that passes :func:`validate_document` has exactly the keys and types of its
schema; a refusal is a :class:`edgebundle.errors.UsageError` (exit 2) and nothing has been acted on.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgebundle.boundedyaml import load_bounded
from edgebundle.digest import read_bounded
from edgebundle.errors import UsageError

#: Spec, lock and site files are small; a bigger one is not what its name says.
MAX_DOCUMENT_BYTES = 1024 * 1024

M = TypeVar("M", bound=BaseModel)

#: At most this many problems are listed in one refusal (the rest are counted).
MAX_LISTED = 8


class Strict(BaseModel):
    """Base of every document schema: unknown keys refused, no type coercion, read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Line (1-based) of every mapping key and sequence item of a YAML or JSON text, by path.

    Computed only when a document is refused, so the happy path parses once.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[str | int, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode):
                    lines[path + (k.value,)] = k.start_mark.line + 1
                    walk(v, path + (k.value,))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if node is not None:
        walk(node, ())
    return lines


def keys_of(model: type[BaseModel]) -> list[str]:
    """The keys a schema allows, as written in documents (aliases such as ``_type`` included)."""
    return [f.alias or n for n, f in model.model_fields.items()]


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The schema class that describes the mapping at ``loc`` (to suggest its keys)."""
    current: Any = model
    for part in loc:
        while True:  # unwrap Optional/list/tuple/dict to the model inside
            origin = typing.get_origin(current)
            if origin in (typing.Union, types.UnionType):
                inner = [a for a in typing.get_args(current) if a is not type(None)]
                current = inner[0] if inner else None
            elif origin in (list, tuple) and isinstance(part, int):
                current = typing.get_args(current)[0]
                break
            elif origin is dict and isinstance(part, str):
                current = typing.get_args(current)[1]
                break
            else:
                break
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        current = field.annotation
    while typing.get_origin(current) in (typing.Union, types.UnionType):
        current = next((a for a in typing.get_args(current) if a is not type(None)), None)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "string_type": "a string", "bool_type": "true or false", "float_type": "a number",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list", "tuple_type": "a list",
}


def _yaml_type(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def describe_errors(error: ValidationError, model: type[BaseModel], where: str,
                    lines: dict[tuple[str | int, ...], int]) -> list[str]:
    """One line per problem, in file order: ``FILE:LINE: key.path: what is wrong (what to write instead)``."""
    out: list[str] = []
    order: list[int] = []
    for e in error.errors():
        loc = tuple(e["loc"])
        line = lines.get(loc) or next((lines[loc[:i]] for i in range(len(loc) - 1, 0, -1)
                                       if loc[:i] in lines), None)
        at = f"{where}:{line}" if line else where
        order.append(line or 0)
        path = _dotted(loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            valid = keys_of(parent) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
            if close:
                tip = f"did you mean `{close[0]}`?"
            else:
                tip = f"valid keys here: {', '.join(valid)}" if valid else "remove it"
            out.append(f"{at}: {path}: unknown key ({tip})")
        elif kind == "missing":
            out.append(f"{at}: {path}: required key is missing")
        elif kind == "string_type" and isinstance(e["input"], (int, float)) and not isinstance(e["input"], bool):
            out.append(f"{at}: {path}: expected a string, got {e['input']!r} ({_yaml_type(e['input'])}); "
                       "put it in quotes as you mean it (YAML read it as a number)")
        elif kind in _EXPECTED:
            out.append(f"{at}: {path}: expected {_EXPECTED[kind]}, got {e['input']!r} ({_yaml_type(e['input'])})")
        else:
            out.append(f"{at}: {path}: {e['msg'][0].lower()}{e['msg'][1:]}, got {e['input']!r}")
    return [text for _, text in sorted(zip(order, out), key=lambda pair: pair[0])]


def validate_document(model: type[M], data: Any, *, what: str, where: Path | str, text: str | None = None,
                      doc_hint: str | None = None) -> M:
    """``data`` checked against ``model``; refuse (exit 2) listing every problem.

    ``text`` is the document's source, used for line numbers; ``what`` names the kind of document.
    """
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = describe_errors(e, model, str(where), key_lines(text) if text is not None else {})
        more = len(problems) - MAX_LISTED
        listed = problems[:MAX_LISTED] + ([f"(and {more} more)"] if more > 0 else [])
        if len(problems) == 1:
            message = f"{what} is invalid: {problems[0]}"
        else:
            message = f"{what} is invalid ({len(problems)} problems):" + "".join(f"\n  {p}" for p in listed)
        raise UsageError(message,
                         hint=f"fix the file{f'; {doc_hint} lists every field' if doc_hint else ''}") from None


def load_yaml_document(path: Path, what: str) -> tuple[Any, str]:
    """Parse a small YAML file (data, text): read bounded (a FIFO or a huge file is refused), parsed
    with alias, expansion and depth bounds; a missing file or bad YAML is a usage error naming the
    line."""
    try:
        raw = read_bounded(Path(path), MAX_DOCUMENT_BYTES, what)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read {what} {path}: {e}") from None
    try:
        return load_bounded(raw, f"{what} {path}"), text
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UsageError(f"{what} {at} is not valid YAML: {getattr(e, 'problem', None) or e}") from None


def schema_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key path a schema allows (``spec.images[].ref``), for docs that must list them all."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        inner = field.annotation
        suffix = ""
        for _ in range(3):
            origin = typing.get_origin(inner)
            if origin in (typing.Union, types.UnionType):
                inner = next((a for a in typing.get_args(inner) if a is not type(None)), None)
            elif origin in (list, tuple):
                inner, suffix = typing.get_args(inner)[0], "[]"
            else:
                break
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out += schema_fields(inner, f"{path}{suffix}.")
        else:
            out.append(path)
    return out
