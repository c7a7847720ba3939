"""YAML parsing with bounds, for documents a signed bundle carries (Kubernetes manifests).

A signature says who built a manifest, not that it is harmless: a compromised build host can
sign a "billion laughs" document (aliases that expand exponentially) or one nested thousands of
levels deep (PyYAML recurses per level). Both are refused here with a :class:`YamlBoundError`
naming the file, before anything is constructed from them.

Invariants:
- Depth is checked while the parser composes, so a deep document never reaches Python's
  recursion limit.
- Aliases are counted as they are composed, and each document's *expanded* node count (every
  alias counted as a full copy of its anchor) is computed in linear time before construction.
- Only the safe constructors run (``yaml.SafeLoader``).
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


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str, what: str) -> None:
        super().__init__(stream)
        self.what, self.depth, self.aliases = what, 0, 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise YamlBoundError(f"{self.what} uses more than {MAX_ALIASES} YAML aliases",
                                     hint="expand the aliases in the source manifest (Kubernetes needs none)")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise YamlBoundError(f"{self.what} nests deeper than {MAX_DEPTH} levels",
                                 hint="flatten the manifest; no Kubernetes object needs this depth")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


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
    loader = _BoundedLoader(text, what)
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
