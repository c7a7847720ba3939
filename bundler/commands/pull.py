"""bundle pull: write a bundle from an OCI registry back to a tar or a directory."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.commands.common import plain_http_option, threshold_option, trust_store
from bundler.publish import pull
from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.parts import open_source
from edgebundle.progress import Progress, human
from edgebundle.remote import parse_location
from edgebundle.verify import Policy, Verifier


@click.command("pull")
@click.argument("location", metavar="oci://HOST[:PORT]/REPO:TAG")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Where to write the bundle: a .tar file, else a bundle directory.")
@click.option("--pubkey", "pubkeys", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also verify the signatures with this trusted public key (repeatable).")
@threshold_option
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@plain_http_option
@json_option
@handle_errors
def command(location: str, out: Path, pubkeys: tuple[Path, ...], threshold: int, force: bool,
            plain_http: tuple[str, ...], as_json: bool) -> None:
    """Write the bundle at oci://HOST[:PORT]/REPO:TAG to OUT, byte-identical to what was pushed.

    Every member is hashed against its digest as it streams; OUT appears only when complete.
    With --pubkey the signed root is verified too (as `bundle verify` does).
    """
    host = parse_location(location).registry
    bar = Progress("pull", None, enabled=False if as_json else None)
    t = pull(location, out, plain_http=True if host in plain_http else None, force=force, progress=bar)
    bar.done()
    signers: list[str] = []
    if pubkeys:
        signers = Verifier(trust_store(pubkeys, threshold), Policy()).verify(open_source(out), content=False).signers
    if as_json:
        emit_json({"ok": True, **t.to_dict(), "output": str(out), "verified": bool(pubkeys), "signers": signers})
        return
    click.echo(f"pulled {t.name} {t.version} (root {t.root[:19]}...) to {out}: {t.sent} member(s), "
               f"{human(t.sent_bytes)}" + (", signatures verified" if pubkeys else
                                           "; not verified: run bundle verify or installer verify"))
