"""The installer core: prove a bundle genuine, then feed it into destinations.

Read it like pypa/installer: :func:`open_verified` turns a path into a :class:`VerifiedBundle`
(or refuses it), :func:`install` hands that bundle to each :class:`Destination` in turn and
records the outcome. Everything site-specific lives in the destinations
(``installer/destinations/``); everything about trust lives in :mod:`edgebundle.verify`.

Invariants:
- Nothing becomes visible at the site (a registry tag or manifest, a model version directory,
  a cluster object) before its bytes are proven against the signed root.
- Nothing is pushed or written anywhere before :func:`open_verified` has checked the signed
  root: signatures, strict parse, policy and completeness. ``installer verify`` (``content=True``)
  also hashes every blob; ``load``, ``stage`` and ``install`` (``content=False``) hash only what
  they use, once, while they write it: each blob is hashed as it streams to the registry (which
  checks the digest again before storing it) and each model file as it is written to its
  temporary name, renamed only on a match; manifests and cluster documents are re-hashed when read.
  A tag or manifest is pushed only after every blob it names is in the registry under its digest.
- Destinations record each finished item in the bundle's journal, so a killed run resumes
  where it stopped.
- A bundle is recorded in ``installed.json`` only once both ``load`` and ``stage`` completed.
  Rollback protection compares with the *deployed* bundle (:func:`deployed_bundle`): the newest
  one that reached a healthy revision, so a bundle staged but never applied blocks nothing.
- The bundle's location is only ever read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgebundle import layout
from edgebundle.digest import DigestMismatchError
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.faults import faultpoint
from edgebundle.parts import open_source
from edgebundle.progress import Progress
from edgebundle.rebuild import describe_carried, full_root_digest
from edgebundle.root import version_key
from edgebundle.verify import Policy, VerifiedBundle, Verifier
from installer.delta_source import wrap_if_delta
from installer.destinations import QUIET, Destination, ProgressFactory, StepResult
from installer.imageplan import plan_image
from installer.revisions import deployed_bundle
from installer.site import Site
from installer.state import Journal, StateDir, now_iso, operator_name
from installer.trust import site_trust

#: The steps that together make a bundle "installed".
INSTALL_STEPS = ("load", "stage")


def open_verified(bundle_path: Path | str, site: Site, *, state: StateDir | None = None,
                  allow_downgrade: str | None = None, allow_expired: str | None = None,
                  progress: bool | None = False, content: bool = True) -> VerifiedBundle:
    """Verify the bundle at ``bundle_path`` against ``site``; raise a VerificationError if not.

    ``content=False`` stops before hashing every blob: for steps whose destinations prove each
    blob they use while they write it (see the module invariants), so no byte is hashed twice.
    A delta is always hashed whole: its carried patches feed decoders, and it is small.

    The rollback check needs the bundle's name, which is only trusted once the signature is: a
    cheap first pass (signature, root, compatibility, completeness) learns it, then the full
    pass runs with ``installed`` set from ``installed.json``. ``allow_downgrade`` is the
    operator's reason for installing an older version, ``allow_expired`` for installing a bundle
    past its signed ``expires``; each is journaled (and audited) when used.
    The verified root envelope is kept in the state directory.
    """
    state = state or StateDir(site.state_dir)
    source = open_source(bundle_path)
    trust = site_trust(site, state)
    expired_ok = bool(allow_expired and allow_expired.strip())
    signed = Verifier(trust, Policy(compatible=site.compatible, allow_expired=expired_ok)).signed_root(source)
    current = state.current(signed.root.name)
    running = deployed_bundle(site, state, signed.root.name)  # what rollback protection compares with
    policy = Policy(
        compatible=site.compatible,
        installed=(running["name"], running["version"]) if running else None,
        allow_downgrade=bool(allow_downgrade),
        # A delta whose full target is already installed is a rerun, not a wrong base.
        base_root=None if current is None or current["root"] == full_root_digest(signed.root) else current["root"],
        allow_expired=expired_ok,
    )
    content = content or signed.root.is_delta  # a delta's carried members (small) are all proven first
    bar = Progress("verify", sum(source.members().values()) if content else 0, enabled=progress if content else False)
    try:
        vb = Verifier(trust, policy, progress=bar).verify(source, content=content)
    except DigestMismatchError as e:
        raise _name_blob(e, signed) from None
    finally:
        bar.done()
    if vb.root.name != signed.root.name:
        raise VerificationError(f"{source.description} changed while it was being verified",
                                hint="make sure nothing writes to the bundle, then run again")
    full = wrap_if_delta(vb, site, state)  # a delta: its base checked at the site, then its full target
    state.remember_bundle(vb.root_digest, vb.root_bytes, vb.envelope)  # only once nothing refused it
    sbom = vb.read_sbom()  # proven against its signed pin as it is read
    if sbom is not None:  # kept for `installer status --sbom` (a delta's under its full root too)
        for digest in {vb.root_digest, full.root_digest}:
            state.remember_sbom(digest, sbom)
    vb = full
    journal = state.journal(vb.root_digest)
    if running and version_key(vb.root.version) < version_key(running["version"]):
        journal.mark_item("verify", "downgrade", reason=allow_downgrade, installed=running["version"],
                          operator=operator_name())
    if vb.root.expires_at is not None and time.time() >= vb.root.expires_at:
        journal.mark_item("verify", "expired", reason=allow_expired, expires=vb.root.expires,
                          operator=operator_name())
    journal.mark_step("verify", signers=vb.signers, content=content)
    faultpoint("verify.done")
    return vb


def describe_blob(vb: VerifiedBundle, digest: str) -> str | None:
    """What a blob is, in the terms of the signed root: a model file, a manifest, an image part."""
    root = vb.root
    for m in root.models:
        if digest == m.manifest:
            return f"the artifact manifest of model {m.name} {m.version}"
        for f in m.files:
            if f.blob == digest:
                return f"model {m.name} {m.version}, file {f.path}"
    for mf in root.manifests.files if root.manifests else []:
        if mf.digest == digest:
            return f"Kubernetes manifest {mf.path}"
    for im in root.images:
        if im.digest == digest:
            return f"the manifest of image {im.ref}"
    for im in root.images:  # layers and configs: look inside the (intact) image manifests
        try:
            plan = plan_image(vb, im)
        except EdgebundleError:
            continue
        if any(d.digest == digest for d in plan.children) or any(p.digest == digest for p in plan.blobs):
            return f"part of image {im.ref}"
    return None


def _name_blob(e: DigestMismatchError, signed: VerifiedBundle) -> DigestMismatchError:
    """The same error, saying which model file or image the bad blob belongs to."""
    digest = layout.digest_of_blob_path(e.message.split(":", 1)[0])
    what = (describe_carried(signed.root, digest) or describe_blob(signed, digest)) if digest else None
    return DigestMismatchError(f"{e.message} ({what})", hint=e.hint) if what else e


def install(vb: VerifiedBundle, destinations: Sequence[Destination], state: StateDir,
            progress: ProgressFactory = QUIET) -> list[StepResult]:
    """Feed ``vb`` into each destination in order; record it as installed once load+stage are done."""
    if vb.root.is_delta:
        raise UsageError(f"{vb.root.name} {vb.root.version} is a delta bundle; load and stage need a "
                         "full bundle", hint="rebuild it as a full bundle (bundle create without --base)")
    journal = state.journal(vb.root_digest)
    results = []
    for dest in destinations:
        results.append(dest.apply(vb, journal, progress))
        if not journal.step_done(dest.step, target=dest.target):
            journal.mark_step(dest.step, target=dest.target)
            faultpoint("step.journaled")
    if all(journal.step_done(step) for step in INSTALL_STEPS):
        faultpoint("installed.before")
        record_installed(vb, journal, state)
    return results


def record_installed(vb: VerifiedBundle, journal: Journal, state: StateDir) -> dict[str, Any]:
    """Write the ``installed.json`` entry rollback protection compares against."""
    entry: dict[str, Any] = {"name": vb.root.name, "version": vb.root.version,
                             "root": vb.root_digest, "compatible": vb.root.compatible,
                             "installedAt": now_iso(), "operator": operator_name(),
                             "signers": vb.signers}
    downgrades = [r for r in journal.items("verify") if r.get("item") == "downgrade"]
    if downgrades:
        entry["downgradeReason"] = downgrades[-1].get("reason")
    state.record_installed(entry)
    return entry


