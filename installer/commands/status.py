"""installer status: what this site has — installed bundles, registry images, NAS models, progress."""

from __future__ import annotations

from typing import Any

import click

from bundler.clikit import emit_json, handle_errors, json_option
from bundler.errors import EdgebundleError, VerificationError
from bundler.progress import human
from bundler.root import parse_root
from installer.commands.common import site_options
from installer.core import INSTALL_STEPS
from installer.destinations.nas import file_pins, list_staged, verify_staged
from installer.destinations.registry import RegistryDestination, list_images
from installer.site import Site
from installer.state import StateDir


def bundle_progress(state: StateDir) -> list[dict[str, Any]]:
    """Every bundle the state dir has seen, with the steps its journal records, newest first."""
    installed = {b["root"] for b in state.installed()}
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
            "lastActivity": records[-1].get("at") if records else None,
        })
    return sorted(out, key=lambda b: b["lastActivity"] or "", reverse=True)


def reached(b: dict[str, Any]) -> str:
    """One word for how far a bundle got: installed, staged, loaded, verified, or a step in progress."""
    if b["installed"]:
        return "installed"
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


def collect(site: Site, verify: bool = False) -> dict[str, Any]:
    state = StateDir(site.state_dir)
    doc: dict[str, Any] = {
        "site": {"name": site.name, "compatible": site.compatible, "stateDir": str(site.state_dir),
                 "registry": site.registry_address, "modelsRoot": str(site.models_root)},
        "installed": state.installed(), "bundles": bundle_progress(state),
    }
    try:
        with RegistryDestination.for_site(site).registry as reg:
            reg.retries, reg.retry_budget = 1, 3.0  # status should answer quickly
            doc["registry"] = {"address": site.registry_address, "images": list_images(reg)}
    except EdgebundleError as e:
        doc["registry"] = {"address": site.registry_address, "error": e.message}
    if site.models_root.is_dir():
        try:
            doc["models"] = {"root": str(site.models_root), "versions": staged_models(site, state, verify)}
        except EdgebundleError as e:
            doc["models"] = {"root": str(site.models_root), "error": e.message}
    else:
        doc["models"] = {"root": str(site.models_root), "error": "models root does not exist (NAS not mounted?)"}
    return doc


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
        for im in reg["images"] or []:
            click.echo(f"  {im['repository'] + ':' + im['tag']:<44} {im['digest']}")
        if not reg["images"]:
            click.echo("  (no images)")
    models = doc["models"]
    click.echo(f"\nMODELS {models['root']}")
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
@json_option
@handle_errors
def command(site: Site, verify: bool, as_json: bool) -> None:
    """Show installed bundles, images in the site registry, model versions on the NAS, and how
    far each bundle got (from the journals)."""
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
