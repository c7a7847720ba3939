"""What ``installer verify``, ``load`` and ``stage`` share: options, the verified run, the summary.

Every verb that acts on a bundle goes through :func:`run_steps`: take the state lock, check the
signed root (:func:`installer.core.open_verified` without the content pass: the destinations
hash each blob they use while they write it), and only then build the destinations and hand the
bundle to :func:`installer.core.install`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from edgebundle.clikit import BundleLocation, emit_json, handle_errors, json_option
from edgebundle.progress import human
from edgebundle.verify import VerifiedBundle
from installer.commands.common import site_options
from installer.core import install, open_verified
from installer.destinations import Destination, StepResult, progress_factory
from installer.site import Site
from installer.state import StateDir

bundle_argument = click.argument("bundle", type=BundleLocation())

downgrade_option = click.option(
    "--allow-downgrade", "allow_downgrade", metavar="REASON",
    help="Accept a bundle older than the installed one (rollback); REASON is recorded.")

expired_option = click.option(
    "--allow-expired", "allow_expired", metavar="REASON",
    help="Accept a bundle past its signed expiry date; REASON is journaled and audited.")


def bundle_verb(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A verb over one bundle at one site: ``fn(bundle, site, allow_downgrade, allow_expired, as_json)``."""

    def make(fn: Callable[..., Any]) -> click.Command:
        for decorate in (handle_errors, json_option, expired_option, downgrade_option, site_options,
                         bundle_argument):
            fn = decorate(fn)
        return click.command(name)(fn)

    return make


def progress_enabled(as_json: bool) -> bool | None:
    """Bars only on a terminal, and never when the output is JSON."""
    return False if as_json else None


def verified_summary(vb: VerifiedBundle) -> dict[str, Any]:
    r = vb.root
    return {"name": r.name, "version": r.version, "compatible": r.compatible, "root": vb.root_digest,
            "signers": vb.signers, "blobs": len(r.blobs), "bytes": r.total_size(),
            "images": len(r.images), "models": len(r.models)}


def verdict_line(vb: VerifiedBundle, content: bool = True) -> str:
    """The one-line verdict; without the content pass it says blobs are checked as they are written."""
    r = vb.root
    head, checked = ("OK", "verified") if content else ("Signed", "each hashed as it is written")
    return (f"{head}: {r.name} {r.version} for {r.compatible}, signed by "
            f"{', '.join(s[:16] for s in vb.signers)}; {len(r.blobs)} blobs ({human(r.total_size())}) "
            f"{checked}; root {vb.root_digest}")


def run_steps(bundle: Path, site: Site, make: Callable[[Site], Sequence[Destination]],
              allow_downgrade: str | None, as_json: bool, allow_expired: str | None = None) -> None:
    """Verify ``bundle`` against ``site``, then apply the destinations ``make(site)`` builds."""
    state = StateDir(site.state_dir)
    with state.locked():
        vb = open_verified(bundle, site, state=state, allow_downgrade=allow_downgrade,
                           allow_expired=allow_expired,
                           progress=progress_enabled(as_json), content=False)
        if not as_json:
            click.echo(verdict_line(vb, content=False), err=True)
        results = install(vb, make(site), state, progress_factory(progress_enabled(as_json)))
        installed = state.is_installed(vb.root_digest)
    if as_json:
        emit_json({"ok": True, **verified_summary(vb), "installed": installed,
                   "steps": [r.to_dict() for r in results]})
        return
    for r in results:
        click.echo(step_line(r))
    if installed:
        click.echo(f"installed: {vb.root.name} {vb.root.version} (load and stage complete)")


def step_line(r: StepResult) -> str:
    noun = {"load": "item(s) pushed", "stage": "model version(s) staged"}.get(r.step, "item(s) done")
    line = f"{r.step} -> {r.target}: {r.done} {noun}, {r.skipped} already in place, {human(r.bytes)} written"
    notes = [d["note"] for d in r.details if "note" in d]
    return line + "".join(f"\n  note: {n}" for n in notes)


__all__ = ["bundle_argument", "downgrade_option", "expired_option", "run_steps", "step_line", "verdict_line",
           "verified_summary"]
