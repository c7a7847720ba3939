"""installer status: what this site has — installed bundles, registry images, NAS models, progress."""

from __future__ import annotations

from typing import Any

import click

from edgebundle import layout
from edgebundle import mediatypes as mt
from edgebundle.attached import attached_by_tag
from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.digest import check, sha256_bytes
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.progress import human
from edgebundle.rebuild import full_root_digest
from edgebundle.root import parse_root
from edgebundle.signing import verify as verify_envelope
from installer.approval import approval_on_file
from installer.commands.common import site_options
from installer.core import INSTALL_STEPS
from installer.destinations.nas import COMMIT_RECORD, complete_pending_stage, file_pins, list_staged, verify_staged
from installer.destinations.registry import RegistryDestination, list_images
from installer.revisions import RevisionStore, deployed_bundle
from installer.safefs import UnsafePathError
from installer.site import Site
from installer.state import StateDir, StateLockedError
from installer.trust import site_trust


def deployed_roots(site: Site, state: StateDir) -> set[str]:
    """Roots of every bundle that reached a healthy revision (all installed ones without a cluster)."""
    if not site.has_cluster_target:
        return {b["root"] for b in state.installed()}
    return {str((r.get("bundle") or {}).get("root")) for r in RevisionStore(state).all()
            if r.get("status") in ("deployed", "superseded")}


def running_revision(site: Site, state: StateDir) -> dict[str, Any] | None:
    """The revision the cluster runs, with who applied it and who approved its plan."""
    if not site.has_cluster_target:
        return None
    rec = RevisionStore(state).current()
    if rec is None:
        return None
    approval = approval_on_file(state, str(rec.get("planHash"))) or {}
    return {"revision": rec.get("revision"), "bundle": rec.get("bundle"), "appliedBy": rec.get("operator"),
            "appliedAt": rec.get("finishedAt") or rec.get("startedAt"),
            "approvedBy": approval.get("operator") if isinstance(approval, dict) else None}


def bundle_progress(state: StateDir, deployed: set[str] | None = None) -> list[dict[str, Any]]:
    """Every bundle the state dir has seen, with the steps its journal records, newest first.

    ``deployed``: roots that reached a healthy revision (None: every installed bundle counts)."""
    installed = {b["root"] for b in state.installed()}
    deployed = installed if deployed is None else deployed
    out = []
    for name in [n for n in state.safe.listdir(["journal"]) if n.endswith(".jsonl")]:
        root_digest = "sha256:" + name[: -len(".jsonl")]
        raw = state.bundle_root_bytes(root_digest)
        try:
            root = parse_root(raw) if raw else None
        except EdgebundleError:
            root = None
        journal = state.journal(root_digest)
        records = journal.records()
        steps = {}
        for step in ("verify", *INSTALL_STEPS):
            done = journal.step_done(step)
            items = len(journal.items(step))
            if done or items:
                steps[step] = {"done": done, "items": items}
        out.append({
            "name": root.name if root else None, "version": root.version if root else None,
            "root": root_digest, "steps": steps, "installed": root_digest in installed,
            "deployed": root_digest in deployed, "images": _digest_only(root),
            "lastActivity": records[-1].get("at") if records else None,
        })
    return sorted(out, key=lambda b: b["lastActivity"] or "", reverse=True)


def _digest_only(root: Any) -> list[tuple[str, str]]:
    """(repository, digest) of the bundle's images that have no tag (found only by digest)."""
    return [(im.repository, im.digest) for im in (root.images if root else []) if not im.tag]


def reached(b: dict[str, Any]) -> str:
    """One word for how far a bundle got: deployed, staged but not deployed, loaded, verified, or a
    step in progress."""
    if b["installed"]:
        return "installed, deployed" if b.get("deployed", True) else "staged, not deployed"
    steps = b["steps"]
    done = [s for s in INSTALL_STEPS if steps.get(s, {}).get("done")]
    partial = [f"{s} in progress ({steps[s]['items']} items)" for s in INSTALL_STEPS
               if s in steps and not steps[s]["done"]]
    words = [{"load": "loaded", "stage": "staged"}[s] for s in done] + partial
    return ", ".join(words) or ("verified" if steps.get("verify", {}).get("done") else "seen")


def _signed_pins(state: StateDir, entry: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The file pins of a staged version from the signed root its marker names, if the state kept it."""
    bundle = entry.get("bundle")
    root_digest = bundle.get("root") if isinstance(bundle, dict) else None
    try:
        raw = state.bundle_root_bytes(root_digest) if isinstance(root_digest, str) and ":" in root_digest else None
        root = parse_root(raw) if raw else None
    except EdgebundleError:
        return None
    for m in root.models if root else []:
        if (m.kind, m.name, m.version) == (entry["kind"], entry["name"], entry["version"]):
            return file_pins(m)
    return None


def staged_models(site: Site, state: StateDir, verify: bool) -> list[dict[str, Any]]:
    """The versions on the NAS; with ``verify``, each complete one hashed again (``verified``/``problem``)."""
    out = []
    for entry in list_staged(site.models_root):
        if verify and not entry["partial"]:
            pins = _signed_pins(state, entry)
            problem = verify_staged(site.models_root, entry, pins)
            entry["verified"] = problem is None
            entry["against"] = "signed root" if pins is not None else "unsigned marker"
            if problem:
                entry["problem"] = problem
        entry.pop("_marker", None)
        out.append(entry)
    return out


def finish_interrupted_stage(site: Site, state: StateDir) -> str | None:
    """Complete (or roll back) a stage commit a killed run left, so status shows all or nothing."""
    if state.read_bytes(COMMIT_RECORD) is None:
        return None
    try:
        with state.locked():
            return complete_pending_stage(site.models_root, state)
    except StateLockedError:
        return "a stage commit is in progress: another installer is finishing it"


def collect(site: Site, verify: bool = False) -> dict[str, Any]:
    state = StateDir(site.state_dir)
    doc: dict[str, Any] = {
        "site": {"name": site.name, "compatible": site.compatible, "stateDir": str(site.state_dir),
                 "registry": site.registry_address, "modelsRoot": str(site.models_root)},
        "installed": state.installed(), "bundles": bundle_progress(state, deployed_roots(site, state)),
        "deployed": deployed_bundle(site, state), "revision": running_revision(site, state),
    }
    by_digest = {im for b in doc["bundles"] for im in b.pop("images")}
    try:
        with RegistryDestination.for_site(site).registry as reg:
            reg.retries, reg.retry_budget = 1, 3.0  # status should answer quickly
            images = list_images(reg)
            listed = {(im["repository"], im["digest"]) for im in images}
            for repo, digest in sorted(by_digest - listed):
                if reg.has_manifest(repo, digest):  # pushed by digest only: no tag lists it
                    images.append({"repository": repo, "tag": None, "digest": digest})
            for im in images:  # a signature, attestation or SBOM is shown with its image, not as one
                attached = attached_by_tag(im["tag"] or "")
                if attached:
                    im["attachedTo"], im["kind"] = attached
            doc["registry"] = {"address": site.registry_address, "images": images}
    except EdgebundleError as e:
        doc["registry"] = {"address": site.registry_address, "error": e.message}
    if site.models_root.is_dir():
        note = finish_interrupted_stage(site, state)
        try:
            doc["models"] = {"root": str(site.models_root), "versions": staged_models(site, state, verify)}
        except UnsafePathError:
            raise  # a planted link or file where a directory belongs: refuse, naming it
        except EdgebundleError as e:
            doc["models"] = {"root": str(site.models_root), "error": e.message}
        if note:
            doc["models"]["note"] = note
    else:
        doc["models"] = {"root": str(site.models_root), "error": "models root does not exist (NAS not mounted?)"}
    return doc


def installed_sbom(site: Site, state: StateDir) -> bytes:
    """The SBOM of the bundle the site runs (else the last installed), proven now: the kept root
    envelope against the site's trust, the kept SBOM against the digest that root pins."""
    entry = deployed_bundle(site, state) or state.current()
    if entry is None:
        raise UsageError("no bundle is installed at this site", hint="install one first: installer install BUNDLE")
    root_digest, what = entry["root"], f"bundle {entry.get('name')} {entry.get('version')} ({entry['root'][:19]})"
    envelope, sbom = state.bundle_envelope_bytes(root_digest), state.bundle_sbom_bytes(root_digest)
    if envelope is None or sbom is None:
        raise UsageError(f"the state directory keeps no SBOM for {what}",
                         hint="bundles built before edgebundle wrote SBOMs have none; for a newer one, "
                              "run installer verify BUNDLE again to keep it")
    payload = verify_envelope(envelope, mt.ROOT_PAYLOAD_TYPES, site_trust(site, state), layout.ROOT,
                              layout.MAX_ROOT_ENVELOPE_BYTES).payload
    root = parse_root(payload)
    if root_digest not in (sha256_bytes(payload), full_root_digest(root)) or layout.SBOM not in root.files:
        raise VerificationError(f"the root envelope kept for {what} is not that bundle's",
                                hint="the state directory was altered; run installer verify BUNDLE again")
    pin = root.files[layout.SBOM]
    check(f"the SBOM kept for {what}", pin.digest, pin.size, sha256_bytes(sbom), len(sbom))
    return sbom


def _print(doc: dict[str, Any]) -> None:
    s = doc["site"]
    click.echo(f"site {s['name']} ({s['compatible']})  state {s['stateDir']}")
    click.echo("\nINSTALLED BUNDLES")
    if not doc["installed"]:
        click.echo("  (none)")
    for b in reversed(doc["installed"]):
        extra = f"  downgrade: {b['downgradeReason']}" if b.get("downgradeReason") else ""
        click.echo(f"  {b['name']:<20} {b['version']:<10} {b['root'][:19]}  {b.get('installedAt', '?')} "
                   f"by {b.get('operator', '?')}{extra}")
    dep, rev = doc.get("deployed"), doc.get("revision")
    if dep:
        click.echo(f"\nDEPLOYED  {dep['name']} {dep['version']} {dep['root'][:19]}"
                   + (f"  revision {rev['revision']}, applied by {rev['appliedBy'] or '?'} at {rev['appliedAt']}, "
                      f"approved by {rev['approvedBy'] or '?'}" if rev else "  (no cluster: loaded and staged)"))
    click.echo("\nBUNDLES SEEN (journal)")
    if not doc["bundles"]:
        click.echo("  (none)")
    for b in doc["bundles"]:
        click.echo(f"  {b['name'] or '?':<20} {b['version'] or '?':<10} {b['root'][:19]}  {reached(b)}")
    reg = doc["registry"]
    click.echo(f"\nREGISTRY {reg['address']}")
    if "error" in reg:
        click.echo(f"  unreachable: {reg['error']}")
    else:
        images = [im for im in reg["images"] or [] if "attachedTo" not in im]
        attached = [im for im in reg["images"] or [] if "attachedTo" in im]
        shown: set[tuple[str, str]] = set()
        for im in images:
            name = im["repository"] + (":" + im["tag"] if im["tag"] else "  (by digest only)")
            click.echo(f"  {name:<44} {im['digest']}")
            if (im["repository"], im["digest"]) not in shown:  # under its first tag only
                shown.add((im["repository"], im["digest"]))
                for a in attached:
                    if (a["repository"], a["attachedTo"]) == (im["repository"], im["digest"]):
                        click.echo(f"    {a['kind']:<12} {a['tag']:<29} {a['digest']}")
        for a in attached:  # its image is not in the registry (pruned, or never pushed)
            if (a["repository"], a["attachedTo"]) not in shown:
                click.echo(f"  {a['repository']}:{a['tag']}  ({a['kind']} of {a['attachedTo'][:19]}..., "
                           f"an image not in the registry)  {a['digest']}")
        if not reg["images"]:
            click.echo("  (no images)")
    models = doc["models"]
    click.echo(f"\nMODELS {models['root']}")
    if models.get("note"):
        click.echo(f"  note: {models['note']}")
    if "error" in models:
        click.echo(f"  {models['error']}")
        return
    for m in models["versions"]:
        flag = "  (partial, hidden)" if m["partial"] else ""
        src = f"  from {m['bundle']['name']} {m['bundle']['version']}" if m.get("bundle") else ""
        check = "" if "verified" not in m else ("  verified" if m["verified"] else f"  TAMPERED: {m['problem']}")
        click.echo(f"  {m['kind']:<10} {m['name']:<24} {m['version']:<10} {m['files']:>3} file(s) "
                   f"{human(m['size']):>10}{src}{flag}{check}")
    if not models["versions"]:
        click.echo("  (no models)")


@click.command("status")
@site_options
@click.option("--verify", "verify", is_flag=True,
              help="Hash every staged model version again against the signed root the state kept "
                   "(or its marker); exit 4 when any differs.")
@click.option("--sbom", is_flag=True,
              help="Print the CycloneDX SBOM of the bundle the site runs (JSON), proven against its "
                   "signed root; nothing else.")
@json_option
@handle_errors
def command(site: Site, verify: bool, sbom: bool, as_json: bool) -> None:
    """Show installed bundles, images in the site registry, model versions on the NAS, and how
    far each bundle got (from the journals).

    A stage killed in its commit is finished first (all its model versions visible, or none)."""
    if sbom:
        click.echo(installed_sbom(site, StateDir(site.state_dir)).decode())
        return
    doc = collect(site, verify)
    bad = [m for m in doc["models"].get("versions", []) if m.get("verified") is False]
    if as_json:
        emit_json({"ok": not bad, **doc})
        if bad:
            raise SystemExit(VerificationError.exit_code)
        return
    _print(doc)
    if bad:
        raise VerificationError(
            f"{len(bad)} staged model version(s) differ from what was signed: "
            + "; ".join(f"{m['path']}: {m['problem']}" for m in bad[:3]),
            hint="move the tampered version(s) away and run installer stage again to restore them")
