"""Site garbage collection: model versions and registry images no recent deployment uses.

What is kept: everything the bundles of the last N deployed revisions carry (their signed roots
say exactly which model versions and image digests), the running bundle whatever N is, and the
bundles loaded and staged after it that wait to be applied. On a site without a cluster target
the last N installed (loaded and staged) bundles count as deployed.

What may go: a model version on the NAS that edgebundle staged (it has our marker) and no kept
bundle carries, and an image manifest in the site registry, in a repository of a bundle this site
has seen, whose digest no kept bundle carries. Other applications' repositories and directories
are never touched. Deleting a manifest frees no disk space by itself: the registry's own
``garbage-collect`` does (docs/SITE.md).

Invariants: the plan is computed from the state directory and what is there, before anything is
deleted; a model version disappears whole (renamed aside, then removed); a rerun finishes what a
killed run left.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebundle.errors import EdgebundleError
from edgebundle.root import Root, parse_root, version_key
from installer.destinations.nas import list_staged
from installer.destinations.registry import list_images
from installer.revisions import RevisionStore, deployed_bundle
from installer.site import Site
from installer.state import StateDir

#: Prefix of a model version directory being removed (hidden, so nothing loads it meanwhile).
PRUNING = ".pruning-"


class PruneError(EdgebundleError):
    """Prune cannot tell safely what is still in use; nothing was deleted."""


@dataclass
class PrunePlan:
    kept: list[dict[str, str]]  # bundles kept: name, version, root, why
    models: list[dict[str, Any]] = field(default_factory=list)  # list_staged entries to delete
    images: list[dict[str, Any]] = field(default_factory=list)  # repository, tag, digest to delete

    @property
    def empty(self) -> bool:
        return not self.models and not self.images

    def to_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "models": self.models, "images": self.images}


def _root(state: StateDir, root_digest: str) -> Root:
    raw = state.bundle_root_bytes(root_digest)
    if raw is None:
        raise PruneError(f"the state directory no longer has the root of bundle {root_digest}, so what it "
                         "uses is unknown", hint="verify that bundle again (installer verify), then prune")
    return parse_root(raw)


def kept_bundles(site: Site, state: StateDir, keep: int) -> list[dict[str, str]]:
    """The bundles whose content stays: last ``keep`` deployed, the running one, pending ones."""
    if keep < 1:
        raise PruneError("--keep must be at least 1 (the running bundle is always kept)")
    running = deployed_bundle(site, state)
    if running is None:
        raise PruneError(f"site {site.name} has no deployed bundle, so nothing is known to be unused",
                         hint="prune after a deployment (installer apply or install)")
    kept: dict[str, dict[str, str]] = {}

    def add(b: dict[str, Any], why: str) -> None:
        kept.setdefault(str(b["root"]), {"name": b["name"], "version": b["version"], "root": b["root"], "why": why})

    add(running, "running")
    if site.has_cluster_target:
        healthy = [r for r in reversed(RevisionStore(state).all()) if r.get("status") in ("deployed", "superseded")]
        for rec in healthy[:keep]:
            add(rec["bundle"], f"revision {rec['revision']}")
    else:
        for b in list(reversed(state.installed()))[:keep]:
            add(b, "installed")
    for b in state.installed():  # staged after the running one, waiting to be applied
        if b["name"] == running["name"] and version_key(b["version"]) > version_key(running["version"]):
            add(b, "staged, not deployed yet")
    return list(kept.values())


def plan_prune(site: Site, state: StateDir, registry: Any, keep: int) -> PrunePlan:
    """What ``installer prune`` would delete (reads only)."""
    kept = kept_bundles(site, state, keep)
    roots = [_root(state, b["root"]) for b in kept]
    keep_models = {(m.kind, m.name, m.version) for r in roots for m in r.models}
    keep_images = {(im.repository, d) for r in roots for im in r.images
                   for d in (im.digest, *(a.digest for a in im.attached))}  # its signatures too
    plan = PrunePlan(kept)
    if site.models_root.is_dir():
        plan.models = [m for m in list_staged(site.models_root)
                       if not m["partial"] and m.get("bundle") and (m["kind"], m["name"], m["version"]) not in keep_models]
    seen_repos = set()
    for name in state.safe.listdir(["bundles"]):  # below the state dir, following no link
        try:
            seen_repos |= {im.repository for im in _root(state, "sha256:" + name).images}
        except EdgebundleError:
            continue
    plan.images = [im for im in list_images(registry)
                   if im["repository"] in seen_repos and (im["repository"], im["digest"]) not in keep_images]
    return plan


def remove_model_version(path: Path, models_root: Path) -> None:
    """Rename the version aside (it vanishes at once), then delete it; refuses anything outside the root."""
    root = models_root.resolve()
    if path.is_symlink() or root not in path.resolve().parents:
        raise PruneError(f"{path} is not a directory inside {root}; not deleting it")
    aside = path.with_name(f"{PRUNING}{path.name}")
    path.rename(aside)
    shutil.rmtree(aside)


def finish_interrupted(models_root: Path) -> None:
    """Remove versions a killed prune had renamed aside."""
    for aside in models_root.glob(f"*/*/{PRUNING}*"):
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)


def execute(plan: PrunePlan, site: Site, registry: Any, log: Any) -> None:
    finish_interrupted(site.models_root)
    for m in plan.models:
        remove_model_version(Path(m["path"]), site.models_root)
        log(f"deleted model {m['kind']} {m['name']} {m['version']}")
    for digest_key in sorted({(im["repository"], im["digest"]) for im in plan.images}):
        registry.delete_manifest(*digest_key)
        log(f"deleted image manifest {digest_key[0]}@{digest_key[1]}")
