"""YAML parsing with bounds, for documents a signed bundle carries (Kubernetes manifests).

A signature says who built a manifest, not that it is harmless: a compromised build host can
sign a "billion laughs" document (aliases that expand exponentially) or one nested thousands of
levels deep (PyYAML recurses per level). Both are refused here with a :class:`YamlBoundError`
naming the file, before anything is constructed from them.

Invariants:
- Depth and aliases are checked over the flat event stream before anything is composed, so a
  deep document never reaches the (recursive) composer.
- Aliases are counted there too, and each document's *expanded* node count (every
  alias counted as a full copy of its anchor) is computed in linear time before construction.
- Only the safe constructors run (``yaml.CSafeLoader``, libyaml's parser, where PyYAML has it:
  manifests are parsed several times on the build host and at the site, and the C parser is
  about ten times faster; else ``yaml.SafeLoader``).
"""

from __future__ import annotations

from typing import Any

import yaml

from edgebundle.errors import UsageError

#: Deepest nesting accepted (Kubernetes objects are rarely deeper than 20).
MAX_DEPTH = 64
#: Most aliases (``*name``) accepted in one file.
MAX_ALIASES = 256
#: Most nodes one document may expand to, every alias counted as a copy.
MAX_EXPANDED_NODES = 200_000


class YamlBoundError(UsageError):
    """A YAML document exceeds a bound (depth, aliases, expanded size) or is not valid YAML."""


#: libyaml's parser and composer (C) when PyYAML was built with it, else PyYAML's own (Python).
_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _too_deep(what: str) -> YamlBoundError:
    return YamlBoundError(f"{what} nests deeper than {MAX_DEPTH} levels",
                          hint="flatten the manifest; no Kubernetes object needs this depth")


def _check_events(text: str, what: str) -> None:
    """Refuse past the depth and alias bounds from the event stream, before anything is composed.

    Events come flat (no recursion), so a document nested a million levels deep is refused here
    and never reaches a recursive composer. Depth counts nodes as the composer would: a
    collection with ``k`` enclosing collections is at depth ``k + 1``, a scalar or alias inside it
    one deeper.
    """
    depth = aliases = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            continue
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise YamlBoundError(f"{what} uses more than {MAX_ALIASES} YAML aliases",
                                     hint="expand the aliases in the source manifest (Kubernetes needs none)")
        if isinstance(event, yaml.NodeEvent):
            opens = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
            if depth + 1 > MAX_DEPTH:
                raise _too_deep(what)
            depth += opens


def _expanded(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes ``node`` stands for when every alias is copied out (iterative, memoised: linear)."""
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        n, ready = stack.pop()
        if id(n) in memo:
            continue
        if isinstance(n, yaml.ScalarNode):
            memo[id(n)] = 1
            continue
        children = ([c for kv in n.value for c in kv] if isinstance(n, yaml.MappingNode) else list(n.value))
        if ready:
            memo[id(n)] = 1 + sum(memo[id(c)] for c in children)
            if memo[id(n)] > MAX_EXPANDED_NODES:
                return memo[id(n)]
        else:
            stack.append((n, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(node)]


def load_all_bounded(data: bytes, what: str) -> list[Any]:
    """Every document of the YAML ``data`` (the file ``what``), refused past the module's bounds."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlBoundError(f"{what} is not UTF-8 text: {e}") from None
    try:
        _check_events(text, what)
    except yaml.YAMLError as e:
        if "maximum nesting depth" in str(e):  # libyaml's own bound (1,000) met while scanning ahead
            raise _too_deep(what) from None
        raise YamlBoundError(f"{what} is not valid YAML: {e}") from None
    loader = _Loader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            size = _expanded(node, {})
            if size > MAX_EXPANDED_NODES:
                raise YamlBoundError(
                    f"{what} expands to more than {MAX_EXPANDED_NODES:,} YAML nodes through its aliases",
                    hint="this looks like an alias bomb (\"billion laughs\"); expand aliases in the source")
            docs.append(loader.construct_document(node))
    except yaml.YAMLError as e:
        raise YamlBoundError(f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        raise YamlBoundError(f"{what} nests too deeply to parse") from None
    finally:
        loader.dispose()
    return docs


def load_bounded(data: bytes, what: str) -> Any:
    """The single YAML document in ``data`` (None when empty), bounded like :func:`load_all_bounded`."""
    docs = load_all_bounded(data, what)
    if len(docs) > 1:
        raise YamlBoundError(f"{what} holds {len(docs)} YAML documents, expected one")
    return docs[0] if docs else None


__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_EXPANDED_NODES", "YamlBoundError", "load_all_bounded", "load_bounded"]
