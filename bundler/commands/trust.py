"""bundle trust rotate: a signed trust update that changes (or revokes) the keys sites trust."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.digest import atomic_write
from edgebundle.signing import keyid, load_private_key, load_public_key, read_passphrase
from edgebundle.trustupdate import make_update


@click.group("trust")
def command() -> None:
    """Rotate or revoke the keys sites trust (docs/SECURITY.md, key rotation)."""


@command.command("rotate")
@click.option("--keys", "new_keys", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Public key of the NEW trusted set (repeatable); leave a key out to revoke it.")
@click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many of the new keys must sign a bundle.")
@click.option("--version", "version", type=click.IntRange(min=2), required=True,
              help="Trust version of this update; must exceed the site's current one (a site file is 1).")
@click.option("--sign-with", "sign_with", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Private key to sign with (repeatable): a threshold of the CURRENT keys and of the new ones.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the update [default: trust-VERSION.dsse.json].")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Passphrase for encrypted keys (or set EDGEBUNDLE_KEY_PASSPHRASE).")
@json_option
@handle_errors
def rotate(new_keys: tuple[Path, ...], threshold: int, version: int, sign_with: tuple[Path, ...],
           output: Path | None, passphrase_file: Path | None, as_json: bool) -> None:
    """Write a trust update; carry it to each site and run: installer trust update FILE --site SITE."""
    passphrase = read_passphrase(passphrase_file)
    pubs = [load_public_key(p) for p in new_keys]
    data = make_update(pubs, threshold, version, [load_private_key(k, passphrase) for k in sign_with])
    out = output or Path(f"trust-{version}.dsse.json")
    atomic_write(out, data)
    ids = sorted({keyid(k) for k in pubs})
    if as_json:
        emit_json({"ok": True, "output": str(out), "version": version, "threshold": threshold, "keys": ids})
    else:
        click.echo(f"wrote {out}: trust version {version}, {threshold} of {len(ids)} key(s) "
                   f"{', '.join(i[:16] for i in ids)}")
