"""bundle verify: check signatures and every blob, streaming, without unpacking."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.clikit import emit_json, handle_errors, json_option
from bundler.commands.common import pubkey_option, threshold_option, trust_store
from bundler.progress import Progress, human
from bundler.sources import open_source
from bundler.verify import Verifier


@click.command("verify")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@pubkey_option
@threshold_option
@json_option
@handle_errors
def command(bundle: Path, pubkeys: tuple[Path, ...], threshold: int, as_json: bool) -> None:
    """Verify BUNDLE (tar, directory or media) against trusted public keys."""
    source = open_source(bundle)
    progress = Progress("verify", sum(source.members().values()), enabled=None if not as_json else False)
    vb = Verifier(trust_store(pubkeys, threshold), progress=progress).verify(source)
    progress.done()
    r = vb.root
    if as_json:
        emit_json({"ok": True, "name": r.name, "version": r.version, "compatible": r.compatible,
                   "root": vb.root_digest, "signers": vb.signers, "blobs": len(r.blobs),
                   "bytes": progress.done_bytes})
    else:
        click.echo(f"OK: {r.name} {r.version} ({r.compatible}) signed by "
                   f"{', '.join(s[:16] for s in vb.signers)}; {len(r.blobs)} blobs, "
                   f"{human(progress.done_bytes)} checked")
