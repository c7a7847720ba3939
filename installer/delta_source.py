"""Install a delta: present it, with what the site already has, as its full target bundle.

A site that installed the base keeps exactly three things a delta can build on: the base's
images in its registry, the base's model files on its NAS, and the base's record in the state
directory. :class:`SiteBase` reads base inputs from the first two; :func:`wrap_if_delta` checks
the third, then checks that every input the delta names is really there (registry ``HEAD`` per
blob and manifest, NAS files hashed), and only then returns a :class:`~edgebundle.verify.VerifiedBundle`
whose root is the full target's and whose source rebuilds each blob on demand.

Invariants:
- Refuse before changing anything: a missing base record or a missing/changed input raises
  :class:`BaseMissingError` naming the base (name, version, root digest) and what is missing,
  before any destination runs.
- Every rebuilt blob is hashed against the signed digest as it streams (file digest first for
  re-encoded model layers); destinations re-check as usual.
- The wrapped bundle is the full target (:func:`edgebundle.rebuild.full_root`): the root digest,
  journals, NAS markers and ``installed.json`` are those a full install writes, so a later delta
  built against the full bundle finds its base.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from edgebundle.digest import hash_file
from edgebundle.errors import VerificationError
from edgebundle.rebuild import (
    ZSTD_VERSION,
    CheckedStream,
    ReconstructedSource,
    check_reconstruction,
    full_root,
    rebuild_order,
)
from edgebundle.root import KIND_DIRS, BaseRef, Root, parse_root
from edgebundle.verify import VerifiedBundle
from installer.site import Site
from installer.state import StateDir

if TYPE_CHECKING:  # the HTTP client is imported only when a delta needs the site registry
    from edgebundle.registry import Registry

#: How many missing inputs an error message lists before summarising.
SHOW_MISSING = 8


class BaseMissingError(VerificationError):
    """The site lacks the delta's base bundle, or part of what the delta rebuilds from."""


def site_registry(site: Site) -> Registry:
    """A client for the site registry, configured as the ``load`` destination configures it."""
    from edgebundle.registry import Registry

    insecure = (site.registry_address,) if site.registry_plain_http else ()
    return Registry(site.registry_address, insecure_hosts=insecure)


class SiteBase:
    """Base inputs from the site: registry blobs and manifests, NAS model files."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.registry = site_registry(site)
        self.description = f"site {site.name} (registry {site.registry_address}, NAS {site.models_root})"
        self._hashed: dict[Path, tuple[str, int]] = {}

    def nas_path(self, src: dict[str, Any]) -> Path:
        n = src["at"]["nas"]
        return self.site.models_root / KIND_DIRS[n["kind"]] / n["name"] / n["version"] / n["path"]

    def local_path(self, src: dict[str, Any]) -> Path | None:
        return self.nas_path(src) if "nas" in src["at"] else None

    @contextlib.contextmanager
    def open_input(self, src: dict[str, Any]) -> Iterator[BinaryIO]:
        at = src["at"]
        if "nas" in at:
            with open(self.nas_path(src), "rb") as f:
                yield f
            return
        repo = at["registry"]["repository"]
        what = f"site registry {repo}@{src['digest']}"
        if at["registry"]["endpoint"] == "manifests":
            yield io.BytesIO(self.registry.get_manifest(repo, src["digest"]).data)
        else:
            yield CheckedStream(self.registry.iter_blob(repo, src["digest"], src["size"]),  # type: ignore[misc]
                                src["digest"], src["size"], what)

    def missing(self, root: Root) -> list[str]:
        """Every base input the delta names that the site does not hold intact (nothing is changed)."""
        seen: set[str] = set()
        out: list[str] = []
        for e in (root.delta or {}).get("rebuild", {}).values():
            src = e.get("from")
            if src is None:
                continue
            key = repr(sorted(src["at"].items())) + src["digest"]
            if key in seen:
                continue
            seen.add(key)
            problem = self._check(src)
            if problem:
                out.append(problem)
        return out

    def _check(self, src: dict[str, Any]) -> str | None:
        at, digest = src["at"], src["digest"]
        if "nas" in at:
            path = self.nas_path(src)
            if not path.is_file():
                return f"model file {path} (missing)"
            if path.stat().st_size != src["size"]:
                return f"model file {path} ({path.stat().st_size} bytes, expected {src['size']})"
            if path not in self._hashed:
                self._hashed[path] = hash_file(path)
            if self._hashed[path] != (digest, src["size"]):
                return f"model file {path} (content changed: {self._hashed[path][0]}, expected {digest})"
            return None
        repo = at["registry"]["repository"]
        if at["registry"]["endpoint"] == "manifests":
            if self.registry.has_manifest(repo, digest) != digest:
                return f"manifest {self.site.registry_address}/{repo}@{digest}"
        elif not self.registry.has_blob(repo, digest):
            return f"blob {self.site.registry_address}/{repo}@{digest}"
        return None


def _equivalent_roots(state: StateDir, root_digest: str) -> set[str]:
    """``root_digest`` and, when its stored root is a delta's, the full root it stands for."""
    out = {root_digest}
    raw = state.bundle_root_bytes(root_digest)
    if raw:
        with contextlib.suppress(VerificationError):
            parsed = parse_root(raw)
            if parsed.is_delta:
                out.add(full_root(parsed).digest)
    return out


def find_base_record(state: StateDir, base: BaseRef) -> dict[str, Any] | None:
    """The ``installed.json`` entry of the delta's base (a delta install counts as its full target)."""
    for entry in reversed(state.installed()):
        if base.root in _equivalent_roots(state, entry["root"]):
            return entry
    return None


def _name_base(root: Root) -> str:
    assert root.base is not None
    return f"base {root.base.name} {root.base.version} (root {root.base.root})"


def preflight(root: Root, base: SiteBase, state: StateDir) -> None:
    """Refuse unless the site installed the base and still holds every input the delta names."""
    assert root.base is not None
    hint = (f"install the full bundle {root.name} {root.version} instead, or first install "
            f"{root.base.name} {root.base.version}")
    if find_base_record(state, root.base) is None:
        have = ", ".join(f"{b['name']} {b['version']} (root {b['root']})" for b in state.installed()[-3:])
        raise BaseMissingError(
            f"delta {root.name} {root.version} applies to {_name_base(root)}, which this site has not "
            f"installed (installed: {have or 'nothing'})", hint=hint)
    missing = base.missing(root)
    if missing:
        more = f" and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
        raise BaseMissingError(
            f"delta {root.name} {root.version} rebuilds from {_name_base(root)}, but this site lacks "
            f"{len(missing)} of its inputs: " + "; ".join(missing[:SHOW_MISSING]) + more, hint=hint)


def wrap_if_delta(vb: VerifiedBundle, site: Site, state: StateDir) -> VerifiedBundle:
    """``vb`` itself for a full bundle; for a verified delta, the full target it rebuilds.

    Checks (nothing is changed before they pass): the base is recorded as installed, every base
    input is at the site and intact. When this libzstd differs from the builder's, every
    re-encoded blob is also rebuilt and hashed now (the rest are rebuilt and hashed as they are
    staged). The full root is remembered in the state directory beside the delta's signed root,
    which it is derived from. The returned bundle carries no envelope: the caller keeps the
    delta's own (installer/core.py).
    """
    root = vb.root
    if not root.is_delta:
        return vb
    base = SiteBase(site)
    preflight(root, base, state)
    source = ReconstructedSource(vb.source, root, base, state.scratch)
    # only blobs whose re-encoding this libzstd might not reproduce
    digests = [d for d in rebuild_order(root)
               if root.delta["rebuild"][d].get("zstd") not in (None, ZSTD_VERSION)]  # type: ignore[index]
    try:
        check_reconstruction(source, digests)
    except VerificationError as e:
        raise BaseMissingError(f"delta {root.name} {root.version} cannot be rebuilt at this site: "
                               f"{e.message}", hint=e.hint or f"install the full bundle {root.name} "
                                                                f"{root.version} instead") from None
    full = full_root(root)
    full_bytes = full.to_bytes()
    if state.bundle_root_bytes(full.digest) is None:  # keep the delta's signed root beside it
        state.write_bytes(f"bundles/{full.digest.split(':', 1)[1]}/delta-root.json", vb.root_bytes)
        state.remember_bundle(full.digest, full_bytes, vb.envelope)
    return VerifiedBundle(full, full_bytes, vb.signers, source)  # signed via the delta's root


__all__ = ["BaseMissingError", "SiteBase", "find_base_record", "preflight",
           "site_registry", "wrap_if_delta"]
